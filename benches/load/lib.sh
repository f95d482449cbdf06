# Helpers shared by benches/load/run.sh and benches/load/soak.sh (sourced, not run).
# Everything here talks to 127.0.0.1 only and every wait is bounded.

# wrk is what drives the load: install it when missing (Debian, as root), else stop.
need_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "wrk is missing: installing it (apt-get install wrk)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  fi
  command -v wrk >/dev/null 2>&1 || { echo "wrk is not installed and could not be (apt-get install wrk)"; exit 1; }
}

need_curl() {
  command -v curl >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
  fi
  command -v curl >/dev/null 2>&1 || { echo "curl is not installed and could not be"; exit 1; }
}

# start_server OUTFILE CMD... : starts CMD in the background, waits (at most 10 s) for its
# first line `listening on http://IP:PORT ...`; sets SERVER_PID and SERVER_ADDR. Returns 1
# (with the server stopped) when no such line comes.
start_server() {
  local out=$1
  shift
  : > "$out"
  "$@" > "$out" 2>&1 &
  SERVER_PID=$!
  SERVER_ADDR=""
  local i
  for i in $(seq 200); do
    if grep -q '^listening on http://' "$out" 2>/dev/null; then
      SERVER_ADDR=$(grep -m1 '^listening on http://' "$out" | sed -E 's#^listening on http://([^ /]+).*#\1#')
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  stop_server
  return 1
}

# Stops the server started last: SIGTERM, then SIGKILL after 5 s.
stop_server() {
  [ -n "${SERVER_PID:-}" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  local i
  for i in $(seq 50); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# user + system CPU time of a process (all its threads), in clock ticks.
cpu_ticks() { sed -E 's/^.*\) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
CLK_TCK=$(getconf CLK_TCK)
# The whole machine's CPU time, in clock ticks summed over all cores: "busy total" (busy is
# everything but idle and iowait).
machine_ticks() { awk '$1=="cpu" {t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6, t; exit}' /proc/stat; }

# The ETag a GET of URL answers (empty when none).
etag_of() { curl -s -m 5 -D - -o /dev/null "$1" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r'; }

# wrk's latency as milliseconds: 812.00us, 1.23ms, 2.01s, 1.50m.
wrk_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n
  }'
}

# wait_quiet MAX_SECONDS: waits (in 1 s samples, at most MAX_SECONDS) until the machine is
# quiet (under 10% busy over a second), so a scenario does not start while something else
# runs. Returns 1 when it never got quiet.
wait_quiet() {
  local deadline=$(( $(date +%s) + $1 )) a b
  while :; do
    a=$(machine_ticks)
    sleep 1
    b=$(machine_ticks)
    if awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); exit !(y[2] > x[2] && (y[1] - x[1]) * 10 < (y[2] - x[2])) }'; then
      return 0
    fi
    [ "$(date +%s)" -lt "$deadline" ] || return 1
  done
}
