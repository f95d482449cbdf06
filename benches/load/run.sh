#!/usr/bin/env bash
# The load harness: one server process per scenario, wrk on 127.0.0.1 for a bounded time,
# and one table from one run: req/s, p50/p99 latency, peak RSS, server CPU per request and
# the ratio to bare hyper, for
#   - bare hyper (examples/bench_server.rs --mode bare),
#   - ours: the layer hashing with SHA-256 (default), BLAKE3, XXH3-128 (plugged in through
#     HashAlgorithm::custom), and the lookup fast path (lookup_reads) for 304s,
#   - salvo's CachingHeaders (benches/peer, XXH3-128),
#   - Fastify 5 + @fastify/etag (benches/fastify; its default sha1, and sha256),
# over 1 KiB and 64 KiB bodies, 200s and 304s (clients sending a matching If-None-Match).
# Then ours against each peer on equal hash terms, the budget of DESIGN.md §7, and the memory
# check: 16 clients each streaming 64 MiB through the layer (max_buffer 1 MiB).
#
#   benches/load/run.sh                      # 5 s per scenario after 1 s of warm-up
#   DURATION=10 CONNECTIONS=64 benches/load/run.sh
#   ONLY='_1k$' DURATION=2 benches/load/run.sh   # a subset (ids matching the regex)
#
# Writes benches/load/results.csv and results.meta.tsv (the raw figures, the machine, the
# hash floor), results.md (the table) and results.svg (the chart), the last two by chart.py,
# which can redraw them from the first two alone:
#   python3 benches/load/chart.py --csv benches/load/results.csv \
#     --meta benches/load/results.meta.tsv --md benches/load/results.md --svg benches/load/results.svg
# A peer whose toolchain is missing (node/npm too old or absent, npm ci failing, or its crate
# not building) is skipped with the reason printed and written in its rows; the run goes on.
# Needs wrk and curl (installed with apt-get when missing and run as root), cargo, and
# python3 for the table and chart. Everything stays on 127.0.0.1; every wait is bounded.
# The figures are ratios within one run: on a shared 2-core machine, compare the spread of
# the three bare hyper runs (printed) before reading a difference between two ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
# How long a scenario waits for the machine to be quiet (under 10% busy) before it starts.
QUIET_WAIT=${QUIET_WAIT:-60}
# A regular expression over scenario ids to run a subset (e.g. ONLY='_1k$'); empty: all.
ONLY=${ONLY:-}
# A scenario during which other processes took much CPU (over 40% of a core used by neither
# the server nor wrk) is measured again, at most this many times; the least disturbed
# attempt is kept (and marked in the table when even that one was disturbed).
RETRIES=${RETRIES:-2}
# Where results.{csv,meta.tsv,md,svg} go; MEMORY=0 skips the memory check.
RESULTS=${RESULTS:-benches/load}
MEMORY=${MEMORY:-1}
LOAD=benches/load
# shellcheck source=lib.sh
. "$LOAD/lib.sh"
need_wrk
need_curl

OUT=$(mktemp -d)
SERVER_PID=""
trap 'stop_server; rm -rf "$OUT"' EXIT
SKIPPED=()

echo "building the servers (release)"
cargo build --release --example bench_server --features blake3 -q
BIN=target/release/examples/bench_server

SALVO="" SALVO_WHY=""
if cargo build --release --manifest-path benches/peer/Cargo.toml -q 2> "$OUT/salvo.build"; then
  SALVO=benches/peer/target/release/conditional-peer
else
  SALVO_WHY="benches/peer did not build: $(grep -m1 -i error "$OUT/salvo.build" || tail -1 "$OUT/salvo.build")"
  SKIPPED+=("salvo: $SALVO_WHY")
fi

fastify_missing() { # prints why the Fastify peer cannot run, nothing when it can
  command -v node >/dev/null 2>&1 || { echo "node is not installed (Fastify 5 needs Node.js 20 or later)"; return; }
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || { echo "node $(node --version) is too old (Fastify 5 needs 20 or later)"; return; }
  command -v npm >/dev/null 2>&1 || { echo "npm is not installed"; return; }
  local dir=benches/fastify
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    if ! (cd "$dir" && timeout 300 npm ci --no-audit --no-fund --loglevel=error) > "$OUT/npm.log" 2>&1; then
      echo "npm ci in $dir failed: $(tail -1 "$OUT/npm.log")"
      return
    fi
  fi
  (cd "$dir" && node -e "require('fastify'); require('@fastify/etag')") 2> "$OUT/node.err" \
    || echo "fastify does not load: $(grep -m1 -i error "$OUT/node.err")"
}
FASTIFY_WHY=$(fastify_missing)
if [ -z "$FASTIFY_WHY" ]; then FASTIFY=1; else FASTIFY=""; SKIPPED+=("Fastify: $FASTIFY_WHY"); fi
for s in "${SKIPPED[@]}"; do echo "SKIPPED $s"; done

echo "hash floor (each hash alone, one core, no load running)"
"$BIN" --hash-floor | tee "$OUT/floor"

CSV=$OUT/results.csv
echo "id,group,impl,hash,rps,p50_ms,p99_ms,peak_rss_kib,cpu_us_per_req,machine_us_per_req,machine_busy_pct,other_cpu_pct,status,requests,socket_errors,note" > "$CSV"

# scenario ID GROUP IMPL HASH SERVER PATH [inm]
#   SERVER: a bench_server mode, `salvo`, or `fastify:HASH`; inm: send the current ETag in
#   If-None-Match (so the answer is a 304).
scenario() {
  local id=$1 group=$2 impl=$3 hash=$4 server=$5 path=$6 inm=${7:-}
  [ -z "$ONLY" ] || [[ $id =~ $ONLY ]] || return 0
  local cmd=() peer=""
  case $server in
    salvo)
      peer=salvo
      cmd=("$SALVO" --addr 127.0.0.1:0) ;;
    fastify:*)
      peer=Fastify
      cmd=(node benches/fastify/server.js --addr 127.0.0.1:0 --hash "${server#fastify:}") ;;
    *)
      cmd=("$BIN" --mode "$server" --addr 127.0.0.1:0) ;;
  esac
  skip_row() {
    echo "$id,$group,$impl,$hash,,,,,,,,,,,,skipped: $(echo "$1" | tr ',' ';')" >> "$CSV"
    printf '%-24s skipped: %s\n' "$id" "$1"
  }
  if [ "$peer" = salvo ] && [ -z "$SALVO" ]; then skip_row "$SALVO_WHY"; return; fi
  if [ "$peer" = Fastify ] && [ -z "$FASTIFY" ]; then skip_row "$FASTIFY_WHY"; return; fi
  local attempt best="" best_other=""
  for attempt in $(seq $((RETRIES + 1))); do
    local quiet=1
    wait_quiet "$QUIET_WAIT" || quiet=0
    if ! start_server "$OUT/server.out" "${cmd[@]}"; then
      if [ -n "$peer" ]; then
        skip_row "$peer server did not start: $(head -c 200 "$OUT/server.out" | tr '\n' ' ')"
        return
      fi
      echo "$id: bench_server --mode $server did not start:"; cat "$OUT/server.out"; exit 1
    fi
    local url="http://$SERVER_ADDR$path" hdr=() expect=200
    if [ -n "$inm" ]; then
      local tag
      tag=$(etag_of "$url")
      if [ -z "$tag" ]; then
        stop_server
        [ -n "$peer" ] && { skip_row "$peer sent no ETag for $path"; return; }
        echo "$id: no ETag for $path"; exit 1
      fi
      hdr=(-H "If-None-Match: $tag")
      expect=304
    fi
    if [ "$WARMUP" != 0 ]; then
      wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "${hdr[@]}" "$url" > /dev/null 2>&1 || true
    fi
    local t0 t1 m0 m1 TIMEFORMAT='%U %S'
    t0=$(cpu_ticks "$SERVER_PID")
    m0=$(machine_ticks)
    # bash's `time` gives wrk's own CPU time (user, system seconds) on its last line.
    { time wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${hdr[@]}" "$url" > "$OUT/$id.wrk"; } 2> "$OUT/$id.time"
    m1=$(machine_ticks)
    t1=$(cpu_ticks "$SERVER_PID")
    local status rss
    status=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "${hdr[@]}" "$url")
    rss=$(peak_rss_kib "$SERVER_PID")
    stop_server
    local rps p50 p99 requests errors non2xx note=""
    rps=$(awk '/^Requests\/sec/ {print $2}' "$OUT/$id.wrk")
    p50=$(wrk_ms "$(awk '$1=="50%" {print $2}' "$OUT/$id.wrk")")
    p99=$(wrk_ms "$(awk '$1=="99%" {print $2}' "$OUT/$id.wrk")")
    requests=$(awk '/requests in/ {print $1}' "$OUT/$id.wrk")
    errors=$(awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$OUT/$id.wrk")
    errors=${errors:-0}
    non2xx=$(awk '/Non-2xx or 3xx/ {print $NF}' "$OUT/$id.wrk")
    [ "$status" = "$expect" ] || note="status $status, expected $expect"
    [ "$quiet" = 1 ] || note="${note:+$note; }machine busy before the start"
    [ -z "$non2xx" ] || note="${note:+$note; }$non2xx non-2xx/3xx answers"
    # Server CPU per request; the machine's (both cores, everything) per request and busy
    # share; and what neither the server nor wrk used, in % of one core over the measured
    # seconds (the kernel's share of loopback traffic, plus anything else running: a scenario
    # with much of it was disturbed).
    local cpu machine busy other
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", (b - a) * 1e6 / hz / n }')
    read -r machine busy other < <(awk -v a="$m0" -v b="$m1" -v s0="$t0" -v s1="$t1" -v w="$(tail -1 "$OUT/$id.time")" \
      -v hz="$CLK_TCK" -v n="$requests" -v cores="$(nproc)" 'BEGIN {
      split(a, x, " "); split(b, y, " "); split(w, t, " ")
      wall = (y[2] - x[2]) / hz / cores
      busy_s = (y[1] - x[1]) / hz
      printf "%.2f %.1f %.1f\n", busy_s * 1e6 / n, 100 * (y[1] - x[1]) / (y[2] - x[2]),
        100 * (busy_s - (s1 - s0) / hz - t[1] - t[2]) / wall
    }')
    local disturbed=0
    if awk -v o="$other" 'BEGIN { exit !(o > 40) }'; then
      disturbed=1
      note="${note:+$note; }disturbed: ${other}% of a core used by neither server nor wrk"
    fi
    printf '%-24s %8.0f req/s  p50 %7.3f ms  p99 %8.3f ms  %5.1f MB  server %6.2f us/req  machine %6.2f us/req %5.1f%% busy, other %5.1f%%  %s %s\n' \
      "$id" "$rps" "$p50" "$p99" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$cpu" "$machine" "$busy" "$other" "$status" "$note"
    # Keep the least disturbed attempt.
    if [ -z "$best" ] || awk -v o="$other" -v b="$best_other" 'BEGIN { exit !(o < b) }'; then
      best="$id,$group,$impl,$hash,$rps,$p50,$p99,$rss,$cpu,$machine,$busy,$other,$status,$requests,$errors,$note"
      best_other=$other
    fi
    if [ "$disturbed" = 1 ] && [ "$attempt" -le "$RETRIES" ]; then
      echo "  (disturbed: measuring $id again)"
      continue
    fi
    break
  done
  echo "$best" >> "$CSV"
}

started=$(date +%s)
echo
echo "scenarios: wrk -t$THREADS -c$CONNECTIONS, ${WARMUP}s warm-up + ${DURATION}s measured each"
K=/bytes/1024
M=/bytes/65536
# Bare hyper is measured three times per size (here, before the 304s, at the end): each
# ratio is taken against the median of the three, and their spread is reported.
scenario bare_1k               1k_200  "bare hyper" "-"        bare            $K
scenario bare_64k              64k_200 "bare hyper" "-"        bare            $M
scenario sha256_1k             1k_200  ours     SHA-256         layer           $K
scenario blake3_1k             1k_200  ours     BLAKE3          blake3          $K
scenario xxh3_1k               1k_200  ours     XXH3-128        layer_xxh3      $K
scenario salvo_1k              1k_200  salvo    XXH3-128        salvo           $K
scenario fastify_sha1_1k       1k_200  Fastify  "sha1 (default)" fastify:default $K
scenario fastify_sha256_1k     1k_200  Fastify  sha256          fastify:sha256  $K

scenario sha256_64k            64k_200 ours     SHA-256         layer           $M
scenario blake3_64k            64k_200 ours     BLAKE3          blake3          $M
scenario xxh3_64k              64k_200 ours     XXH3-128        layer_xxh3      $M
scenario salvo_64k             64k_200 salvo    XXH3-128        salvo           $M
scenario fastify_sha1_64k      64k_200 Fastify  "sha1 (default)" fastify:default $M
scenario fastify_sha256_64k    64k_200 Fastify  sha256          fastify:sha256  $M

scenario bare_1k_2             base    "bare hyper" "-"        bare            $K
scenario bare_64k_2            base    "bare hyper" "-"        bare            $M
scenario sha256_304_1k         1k_304  ours     SHA-256         layer           $K inm
scenario blake3_304_1k         1k_304  ours     BLAKE3          blake3          $K inm
scenario xxh3_304_1k           1k_304  ours     XXH3-128        layer_xxh3      $K inm
scenario fast_304_1k           1k_304  ours     "lookup fast path" fast         $K inm
scenario salvo_304_1k          1k_304  salvo    XXH3-128        salvo           $K inm
scenario fastify_sha1_304_1k   1k_304  Fastify  "sha1 (default)" fastify:default $K inm
scenario fastify_sha256_304_1k 1k_304  Fastify  sha256          fastify:sha256  $K inm

scenario sha256_304_64k        64k_304 ours     SHA-256         layer           $M inm
scenario blake3_304_64k        64k_304 ours     BLAKE3          blake3          $M inm
scenario xxh3_304_64k          64k_304 ours     XXH3-128        layer_xxh3      $M inm
scenario fast_304_64k          64k_304 ours     "lookup fast path" fast         $M inm
scenario salvo_304_64k         64k_304 salvo    XXH3-128        salvo           $M inm
scenario fastify_sha1_304_64k  64k_304 Fastify  "sha1 (default)" fastify:default $M inm
scenario fastify_sha256_304_64k 64k_304 Fastify sha256          fastify:sha256  $M inm

scenario bare_1k_3             base    "bare hyper" "-"        bare            $K
scenario bare_64k_3            base    "bare hyper" "-"        bare            $M
echo "scenarios took $(( $(date +%s) - started )) s"

memory="not run (MEMORY=0)"
if [ "$MEMORY" != 0 ]; then
  echo
  echo "memory: 16 clients each streaming 64 MiB through the layer (max_buffer 1 MiB)"
  start_server "$OUT/server.out" "$BIN" --mode layer --addr 127.0.0.1:0 || { echo "bench_server did not start"; exit 1; }
  sleep 0.2
  idle=$(rss_kib "$SERVER_PID")
  : > "$OUT/sizes"
  pids=()
  for _ in $(seq 16); do
    curl -s -m 120 -o /dev/null -w '%{size_download}\n' "http://$SERVER_ADDR/stream/67108864" >> "$OUT/sizes" &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  peak=$(peak_rss_kib "$SERVER_PID")
  stop_server
  budget=$(( 16 * 1024 + 32 * 1024 ))
  memory=$(awk -v idle="$idle" -v peak="$peak" -v budget="$budget" -v sizes="$(awk '{n++; s+=$1} END {printf "%d %.0f", n, s/1048576}' "$OUT/sizes")" 'BEGIN {
    split(sizes, s, " ")
    printf "%d streams, %s MiB downloaded; idle RSS %.1f MB, peak %.1f MB, growth %.1f MB (budget 16 x max_buffer + 32 MiB = %.0f MB): %s",
      s[1], s[2], idle / 1024, peak / 1024, (peak - idle) / 1024, budget / 1024, (peak - idle <= budget ? "within" : "OVER")
  }')
  echo "$memory"
fi

{
  echo "date	$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit	$(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "command	DURATION=$DURATION WARMUP=$WARMUP CONNECTIONS=$CONNECTIONS THREADS=$THREADS benches/load/run.sh"
  echo "cpu	$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores"
  echo "cpu_features	$(grep -o 'sha_ni\|avx2\|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "versions	$(rustc --version | cut -d' ' -f1-2), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)$( [ -n "$FASTIFY" ] && echo ", node $(node --version)")"
  peers="salvo $(awk -F'"' '/^salvo =/ {print $2}' benches/peer/Cargo.toml | tr -d '=') CachingHeaders"
  [ -n "$FASTIFY" ] && peers="$peers; fastify $(cd benches/fastify && node -p "require('fastify/package.json').version + ' + @fastify/etag ' + require('@fastify/etag/package.json').version")"
  echo "peers	$peers"
  while read -r name size ns; do echo "floor_${name}_${size}	$ns"; done < "$OUT/floor"
  for s in "${SKIPPED[@]}"; do echo "skipped	$s"; done
  echo "memory	$memory"
} > "$OUT/meta.tsv"

mkdir -p "$RESULTS"
cp "$CSV" "$RESULTS/results.csv"
cp "$OUT/meta.tsv" "$RESULTS/results.meta.tsv"
echo
if command -v python3 >/dev/null 2>&1; then
  python3 "$LOAD/chart.py" --csv "$RESULTS/results.csv" --meta "$RESULTS/results.meta.tsv" \
    --md "$RESULTS/results.md" --svg "$RESULTS/results.svg"
  echo
  echo "wrote $RESULTS/results.csv, results.meta.tsv, results.md, results.svg"
else
  echo "python3 is missing: no table or chart; the raw figures are in $RESULTS/results.csv"
  column -s, -t "$RESULTS/results.csv"
fi
