#!/usr/bin/env bash
# Two bench_server modes measured in alternation, for a difference smaller than the noise of
# one run: A, B, A, B, ... each round a fresh server and a short wrk run, then the median of
# the per-round ratios B/A (req/s) and the medians of server CPU per request. On a shared
# machine one disturbed round moves a single-run table by ±0.1; the median of paired rounds
# does not follow it.
#
#   benches/load/ab.sh bare layer_xxh3                 # 1 KiB 200s, 8 rounds of 3 s
#   benches/load/ab.sh minimal_xxh3 layer_xxh3         # the layer against a hand-written minimum
#   INM=1 benches/load/ab.sh bare fast                 # 304s: B's ETag in If-None-Match
#   SIZE=65536 INM=1 ROUNDS=6 benches/load/ab.sh bare blake3
#
# INM=1 sends the tag B's server gives the body in If-None-Match to both modes (A answers
# a bare 200 to the same request). Modes: those of examples/bench_server.rs.
#
# PIN=1 gives each side a core of its own: the server on core 0 with one Tokio worker, wrk
# on core 1 (taskset), so that the scheduler's placement of three busy threads on two cores
# is not part of the figure. What other tenants of a shared machine do remains: on ours an
# A/A run (bare against bare, 8 rounds) still spread 0.93-1.03 pinned.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/load/lib.sh

[ $# -eq 2 ] || { echo "usage: $0 MODE_A MODE_B (bench_server modes)"; exit 2; }
A=$1
B=$2
ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
SIZE=${SIZE:-1024}
CONNECTIONS=${CONNECTIONS:-64}
INM=${INM:-0}

need_wrk
need_curl
cargo build --release --example bench_server --features blake3 -q
BIN=target/release/examples/bench_server
OUT=$(mktemp -d)
trap 'stop_server; rm -rf "$OUT"' EXIT

pin_server=()
pin_wrk=()
if [ "${PIN:-0}" = 1 ]; then
  command -v taskset >/dev/null 2>&1 || { echo "PIN=1 needs taskset (util-linux)"; exit 1; }
  [ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs two cores"; exit 1; }
  export TOKIO_WORKER_THREADS=1
  pin_server=(taskset -c 0)
  pin_wrk=(taskset -c 1)
  echo "pinned: server on core 0 (one Tokio worker), wrk on core 1"
fi

header=()
if [ "$INM" = 1 ]; then
  start_server "$OUT/tag.log" "$BIN" --mode "$B" --addr 127.0.0.1:0 || { echo "$B did not start"; exit 1; }
  tag=$(etag_of "http://$SERVER_ADDR/bytes/$SIZE")
  stop_server
  [ -n "$tag" ] || { echo "$B sent no ETag for /bytes/$SIZE"; exit 1; }
  header=(-H "If-None-Match: $tag")
  echo "If-None-Match: $tag"
fi

# One measurement: prints "req/s server-CPU-µs-per-request".
measure() {
  start_server "$OUT/$1.log" "${pin_server[@]}" "$BIN" --mode "$1" --addr 127.0.0.1:0 || { echo "$1 did not start" >&2; exit 1; }
  local url="http://$SERVER_ADDR/bytes/$SIZE"
  "${pin_wrk[@]}" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${header[@]}" "$url" > /dev/null
  local t0 t1 out
  t0=$(cpu_ticks "$SERVER_PID")
  out=$("${pin_wrk[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "${header[@]}" "$url")
  t1=$(cpu_ticks "$SERVER_PID")
  stop_server
  awk -v t="$((t1 - t0))" -v hz="$CLK_TCK" '
    /requests in/ {n = $1}
    /Requests\/sec/ {r = $2}
    END {printf "%s %.2f\n", r, t / hz * 1e6 / n}' <<< "$out"
}

echo "round  $A req/s  $B req/s  ratio  ($A, $B server CPU µs/req)"
: > "$OUT/rows"
for round in $(seq "$ROUNDS"); do
  read -r ra ca < <(measure "$A")
  read -r rb cb < <(measure "$B")
  echo "$ra $rb $ca $cb" >> "$OUT/rows"
  awk -v n="$round" -v ra="$ra" -v rb="$rb" -v ca="$ca" -v cb="$cb" \
    'BEGIN {printf "%5d  %9.0f  %9.0f  %.3f  (%.2f, %.2f)\n", n, ra, rb, rb / ra, ca, cb}'
done
python3 - "$OUT/rows" "$A" "$B" <<'EOF'
import statistics as st, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
a, b = sys.argv[2], sys.argv[3]
ratios = [r[1] / r[0] for r in rows]
print(f"median {b}/{a} req/s: {st.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f})")
print(f"median server CPU µs/req: {a} {st.median(r[2] for r in rows):.2f}, "
      f"{b} {st.median(r[3] for r in rows):.2f}")
EOF
