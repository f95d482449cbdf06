#!/usr/bin/env bash
# The load harness: one hyper server process per scenario (bare, behind the layer, answering
# 304, the lookup fast path), wrk on 127.0.0.1 for a bounded time, and one table of req/s,
# p50/p99 latency, peak RSS and the ratio to bare, all from one run. Then the memory check:
# 16 clients each streaming 64 MiB through the layer (max_buffer 1 MiB).
#
#   benches/load/run.sh            # 5 s per scenario
#   DURATION=10 CONNECTIONS=64 benches/load/run.sh
#
# Needs wrk (Debian: apt-get install wrk) and curl. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }

cargo build --release --example bench_server --features blake3 -q
cargo build --release --manifest-path benches/peer/Cargo.toml -q
BIN=target/release/examples/bench_server
PEER=benches/peer/target/release/conditional-peer
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

start() { # mode -> sets PID and ADDR
  if [ "$1" = salvo ]; then
    "$PEER" --addr 127.0.0.1:0 > "$OUT/server.out" &
  else
    "$BIN" --mode "$1" --addr 127.0.0.1:0 > "$OUT/server.out" &
  fi
  PID=$!
  for _ in $(seq 100); do [ -s "$OUT/server.out" ] && break; sleep 0.05; done
  ADDR=$(head -1 "$OUT/server.out" | sed -E 's#listening on http://([^ ]+).*#\1#')
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; }
peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# scenario: name mode path [if-none-match]
run() {
  local name=$1 mode=$2 path=$3 inm=${4:-}
  start "$mode"
  local tag=""
  if [ -n "$inm" ]; then
    tag=$(curl -s -D - -o /dev/null "http://$ADDR$path" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')
    [ -n "$tag" ] || { echo "no ETag for $path in mode $mode"; exit 1; }
  fi
  local hdr=()
  [ -n "$tag" ] && hdr=(-H "If-None-Match: $tag")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${hdr[@]}" "http://$ADDR$path" > "$OUT/$name.wrk"
  local rps p50 p99 status
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/$name.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$OUT/$name.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$OUT/$name.wrk")
  status=$(curl -s -o /dev/null -w '%{http_code}' "${hdr[@]}" "http://$ADDR$path")
  echo "$name $rps $p50 $p99 $(peak_rss_kib "$PID") $status" >> "$OUT/results"
  stop
}

run bare_1k        bare  /bytes/1024
run layer_1k       layer /bytes/1024
run bare_64k       bare  /bytes/65536
run layer_64k      layer /bytes/65536
run layer_304_64k  layer /bytes/65536 inm
run fast_304_64k   fast  /bytes/65536 inm
run blake3_1k      blake3 /bytes/1024
run blake3_64k     blake3 /bytes/65536
run blake3_304_64k blake3 /bytes/65536 inm
run salvo_1k       salvo /bytes/1024
run salvo_64k      salvo /bytes/65536
run salvo_304_64k  salvo /bytes/65536 inm

printf '\n%-14s %10s %9s %9s %10s %6s %9s\n' scenario req/s p50 p99 peakRSS status vs_bare
awk '
  { rps[$1]=$2; line[NR]=$0 }
  END {
    for (i = 1; i <= NR; i++) {
      split(line[i], f, " ")
      base = (f[1] ~ /1k$/) ? rps["bare_1k"] : rps["bare_64k"]
      printf "%-14s %10.0f %9s %9s %8.1fMB %6s %8.2fx\n", f[1], f[2], f[3], f[4], f[5]/1024, f[6], f[2]/base
    }
  }' "$OUT/results"
echo
echo "ours vs the peer (salvo CachingHeaders), req/s ratio:"
awk '{ rps[$1]=$2 } END {
  printf "  1 KiB 200:  sha256 %.2fx, blake3 %.2fx\n", rps["layer_1k"]/rps["salvo_1k"], rps["blake3_1k"]/rps["salvo_1k"]
  printf "  64 KiB 200: sha256 %.2fx, blake3 %.2fx\n", rps["layer_64k"]/rps["salvo_64k"], rps["blake3_64k"]/rps["salvo_64k"]
  printf "  64 KiB 304: sha256 %.2fx, blake3 %.2fx, lookup fast path %.2fx\n", rps["layer_304_64k"]/rps["salvo_304_64k"], rps["blake3_304_64k"]/rps["salvo_304_64k"], rps["fast_304_64k"]/rps["salvo_304_64k"]
}' "$OUT/results"

echo
echo "memory: 16 clients each streaming 64 MiB through the layer (max_buffer 1 MiB)"
start layer
sleep 0.2
idle=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
for i in $(seq 16); do curl -s -o /dev/null -w '%{size_download}\n' "http://$ADDR/stream/67108864" >> "$OUT/sizes" & done
wait $(jobs -p | grep -v "^$PID$") 2>/dev/null || true
peak=$(peak_rss_kib "$PID")
echo "downloaded: $(awk '{n++; s+=$1} END {printf "%d streams, %.0f MiB in all", n, s/1048576}' "$OUT/sizes")"
stop
budget=$(( 16 * 1024 + 32 * 1024 ))
printf 'idle RSS %.1f MB, peak RSS %.1f MB, growth %.1f MB (budget 16 x max_buffer + 32 MiB = %.0f MB): %s\n' \
  "$(echo "$idle/1024" | bc -l)" "$(echo "$peak/1024" | bc -l)" "$(echo "($peak-$idle)/1024" | bc -l)" "$(echo "$budget/1024" | bc -l)" \
  "$([ $((peak - idle)) -le $budget ] && echo within || echo OVER)"
