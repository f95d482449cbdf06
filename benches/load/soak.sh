#!/usr/bin/env bash
# The soak: SOAK_SECONDS (default 180) of mixed traffic against `bench_server --mode soak`
# (examples/bench_server.rs): wrk with benches/load/soak.lua sends, per 10 requests, 4 plain
# GETs (200), 3 revalidating GETs (304), 2 PUTs with a stale If-Match (412) and 1 with the
# current one (200), over 64 items (every 16th 64 KiB, the rest 1 KiB). The server's version
# lookup fails every 100th call; the layer answers that write 503 without calling the
# handler. Conditional writes are serialized per item.
#
#   benches/load/soak.sh                  # 180 s
#   SOAK_SECONDS=60 benches/load/soak.sh
#
# Samples the server's RSS every 5 s and checks, exiting non-zero when one fails:
#   - RSS flat: the last and the largest sample within RSS_BOUND_KIB (default 1024, 1 MiB)
#     of the first sample under load (taken 5 s in, once the allocator has warmed up);
#   - the only statuses are GET 200/304 and PUT 200/412/503, and every 503 is an injected
#     lookup failure (the server counts both; 503s are ~1% of lookups);
#   - wrk saw no socket error (connect, read, write, timeout) and the same non-2xx/3xx count
#     as the server (give or take the requests in flight when wrk stopped).
# Writes the report to benches/load/soak.md too. Everything stays on 127.0.0.1; every loop is
# bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
SOAK_SECONDS=${SOAK_SECONDS:-180}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
RSS_BOUND_KIB=${RSS_BOUND_KIB:-1024}
SAMPLE_EVERY=5
ITEMS=64
LOAD=benches/load
# shellcheck source=lib.sh
. "$LOAD/lib.sh"
need_wrk
need_curl

OUT=$(mktemp -d)
SERVER_PID=""
SAMPLER=""
trap '[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; stop_server; rm -rf "$OUT"' EXIT

cargo build --release --example bench_server --features blake3 -q
BIN=target/release/examples/bench_server
start_server "$OUT/server.out" "$BIN" --mode soak --addr 127.0.0.1:0 || { echo "bench_server did not start"; cat "$OUT/server.out"; exit 1; }
BASE="http://$SERVER_ADDR"

# The tags a client holds: fetched once, current for the whole soak (items never change).
for id in $(seq 0 $((ITEMS - 1))); do
  tag=$(etag_of "$BASE/items/$id")
  [ -n "$tag" ] || { echo "no ETag for /items/$id"; exit 1; }
  echo "$id $tag"
done > "$OUT/tags"
curl -s -m 5 "$BASE/stats" > "$OUT/stats.before"
idle=$(rss_kib "$SERVER_PID")

echo "soak: ${SOAK_SECONDS}s of mixed GET/PUT, wrk -t$THREADS -c$CONNECTIONS, RSS sampled every ${SAMPLE_EVERY}s"
start=$(date +%s)
(
  deadline=$((start + SOAK_SECONDS + 2 * SAMPLE_EVERY))
  while [ "$(date +%s)" -lt "$deadline" ] && kill -0 "$SERVER_PID" 2>/dev/null; do
    sleep "$SAMPLE_EVERY"
    rss=$(rss_kib "$SERVER_PID" 2>/dev/null) || break
    echo "$(( $(date +%s) - start )) $rss"
  done
) > "$OUT/rss" &
SAMPLER=$!
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SOAK_SECONDS}s" --timeout 5s --latency \
  -s "$LOAD/soak.lua" "$BASE" -- "$OUT/tags" > "$OUT/wrk"
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
SAMPLER=""
echo "$(( $(date +%s) - start )) $(rss_kib "$SERVER_PID")" >> "$OUT/rss"
peak=$(peak_rss_kib "$SERVER_PID")
curl -s -m 5 "$BASE/stats" > "$OUT/stats"
stop_server

# Counts during the soak: the final counters less those from fetching the tags.
awk 'function key(   k, i) { k = $1; for (i = 2; i < NF; i++) k = k " " $i; return k }
     NR == FNR { before[key()] = $NF; next }
     { k = key(); print k, $NF - (k in before ? before[k] : 0) }' \
  "$OUT/stats.before" "$OUT/stats" > "$OUT/counts"
count() { awk -v k="$1" '{ key = $1; for (i = 2; i < NF; i++) key = key " " $i; if (key == k) { print $NF; found = 1 } } END { if (!found) print 0 }' "$OUT/counts"; }

lookups=$(count lookups)
failures=$(count lookup_failures)
get200=$(count "GET 200"); get304=$(count "GET 304")
put200=$(count "PUT 200"); put412=$(count "PUT 412"); put503=$(count "PUT 503")
served=$(awk '$1 == "GET" || $1 == "PUT" || $1 == "OTHER" {s += $NF} END {print s + 0}' "$OUT/counts")
unexpected=$(awk '($1 == "GET" || $1 == "PUT" || $1 == "OTHER") && !($1" "$2 ~ /^(GET 200|GET 304|PUT 200|PUT 412|PUT 503)$/) {printf "%s %s: %s; ", $1, $2, $NF}' "$OUT/counts")
puts=$((put200 + put412 + put503))

wrk_requests=$(awk '/requests in/ {print $1}' "$OUT/wrk")
wrk_rps=$(awk '/^Requests\/sec/ {print $2}' "$OUT/wrk")
wrk_errors=$(awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$OUT/wrk")
wrk_errors=${wrk_errors:-0}
wrk_non2xx=$(awk '/Non-2xx or 3xx/ {print $NF}' "$OUT/wrk")
wrk_non2xx=${wrk_non2xx:-0}
p50=$(wrk_ms "$(awk '$1=="50%" {print $2}' "$OUT/wrk")")
p90=$(wrk_ms "$(awk '$1=="90%" {print $2}' "$OUT/wrk")")
p99=$(wrk_ms "$(awk '$1=="99%" {print $2}' "$OUT/wrk")")
lat_max=$(wrk_ms "$(awk '$1=="Latency" {print $4}' "$OUT/wrk")")

# RSS: the first sample under load is the baseline.
read -r first last max slope samples < <(awk '
  { t[NR] = $1; r[NR] = $2; if ($2 > m) m = $2 }
  END {
    n = NR; st = sx = sy = sxy = sxx = 0
    for (i = 1; i <= n; i++) { sx += t[i]; sy += r[i]; sxy += t[i] * r[i]; sxx += t[i] * t[i] }
    d = n * sxx - sx * sx
    slope = d > 0 ? (n * sxy - sx * sy) / d * 60 : 0
    printf "%d %d %d %.1f %d\n", r[1], r[n], m, slope, n
  }' "$OUT/rss")

pass=1
# verdict VAR CONDITION...: VAR=PASS when the command CONDITION succeeds, else FAIL (and the
# soak fails).
verdict() {
  local var=$1
  shift
  if "$@"; then printf -v "$var" PASS; else printf -v "$var" FAIL; pass=0; fi
}
diff_non2xx=$(( wrk_non2xx - put412 - put503 )); diff_non2xx=${diff_non2xx#-}
diff_total=$(( served - wrk_requests )); diff_total=${diff_total#-}
verdict flat test $((last - first)) -le "$RSS_BOUND_KIB" -a $((max - first)) -le "$RSS_BOUND_KIB"
verdict only_expected test -z "$unexpected"
verdict failures_are_503 test "$put503" -eq "$failures" -a "$failures" -eq $((lookups / 100))
verdict mix_seen test "$get200" -gt 0 -a "$get304" -gt 0 -a "$put200" -gt 0 -a "$put412" -gt 0 -a "$put503" -gt 0
verdict no_socket_errors test "$wrk_errors" -eq 0
verdict wrk_agrees test "$diff_non2xx" -le "$CONNECTIONS" -a "$diff_total" -le "$CONNECTIONS"

mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f%%", b ? 100 * a / b : 0}'; }
report=$(cat <<EOF
# Soak: ${SOAK_SECONDS} s of mixed 200/304/412 traffic, lookup failing 1 call in 100

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git describe --always --dirty 2>/dev/null || echo unknown)
- command: \`SOAK_SECONDS=$SOAK_SECONDS CONNECTIONS=$CONNECTIONS benches/load/soak.sh\` (wrk -t$THREADS -c$CONNECTIONS, benches/load/soak.lua, \`bench_server --mode soak\`)
- machine: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores; CPU features: $(grep -o 'sha_ni\|avx2\|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')

| | |
|---|---|
| requests (wrk) | $wrk_requests, $(printf '%.0f' "$wrk_rps") req/s |
| latency p50 / p90 / p99 / max | $p50 / $p90 / $p99 / $lat_max ms |
| GET 200 | $get200 ($(pct "$get200" "$served")) |
| GET 304 | $get304 ($(pct "$get304" "$served")) |
| PUT 200 | $put200 ($(pct "$put200" "$served")) |
| PUT 412 | $put412 ($(pct "$put412" "$served")) |
| PUT 503 | $put503 ($(pct "$put503" "$puts") of PUTs; $(pct "$put503" "$lookups") of $lookups lookups, $failures injected failures) |
| other statuses | ${unexpected:-none} |
| wrk socket errors | $wrk_errors |
| wrk non-2xx/3xx / server 412+503 | $wrk_non2xx / $((put412 + put503)) |
| RSS idle before the soak | $(mb "$idle") MB |
| RSS first sample (${SAMPLE_EVERY} s in) / last / max / peak (VmHWM) | $(mb "$first") / $(mb "$last") / $(mb "$max") / $(mb "$peak") MB over $samples samples |
| RSS growth last − first, max − first | $(( (last - first) )) KiB, $(( (max - first) )) KiB (bound: $RSS_BOUND_KIB KiB); trend $slope KiB/min |

- RSS flat (last and max within $RSS_BOUND_KIB KiB of the first sample under load): $flat
- only the expected statuses (GET 200/304, PUT 200/412/503): $only_expected
- every 503 is an injected lookup failure, one in 100 lookups: $failures_are_503
- every kind of answer seen (200, 304, PUT 200, 412, 503): $mix_seen
- no socket errors: $no_socket_errors
- wrk and the server agree (within the $CONNECTIONS requests in flight): $wrk_agrees

A PUT with the current tag costs two lookups (checked once, then again under the
serialize_writes lock) and a stale one a single lookup, so 1 failed lookup in 100 is about
1.33% of PUTs with this mix.

RSS samples (seconds KiB): $(tr '\n' ';' < "$OUT/rss" | sed 's/;$//; s/;/; /g')
EOF
)
echo "$report" | tee "$LOAD/soak.md"
echo
if [ "$pass" = 1 ]; then echo "soak: PASS (wrote $LOAD/soak.md)"; else echo "soak: FAIL (wrote $LOAD/soak.md)"; exit 1; fi
