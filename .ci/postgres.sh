#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 cluster as an unprivileged user on 127.0.0.1 and prints
# `export DATABASE_URL=…` and `export PG_STOP=…` lines for the caller to eval.
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGUSER_OS=${PGUSER_OS:-pgci}
if [ ! -x "$PGBIN/initdb" ]; then
  echo "echo 'PostgreSQL binaries not found under $PGBIN: the PostgreSQL tests will skip' >&2"
  exit 0
fi
id -u "$PGUSER_OS" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$PGUSER_OS"
data=$(mktemp -d /tmp/pgci.XXXXXX)
chown "$PGUSER_OS" "$data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
su "$PGUSER_OS" -c "$PGBIN/initdb -D $data/db -A trust -U $PGUSER_OS -E UTF8 --no-sync" >/dev/null
su "$PGUSER_OS" -c "$PGBIN/pg_ctl -D $data/db -l $data/log -w -o '-k $data -p $port -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50' start" >/dev/null
su "$PGUSER_OS" -c "$PGBIN/createdb -h 127.0.0.1 -p $port conditional"
echo "export DATABASE_URL=postgres://$PGUSER_OS@127.0.0.1:$port/conditional"
# Stopping also removes the cluster (41 MB a run, left in /tmp otherwise).
echo "export PG_STOP=\"su $PGUSER_OS -c '$PGBIN/pg_ctl -D $data/db -m immediate stop'; rm -rf $data\""
