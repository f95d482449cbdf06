#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions (default 10 million) and prints a summary.
# cargo-fuzz on the stable toolchain: RUSTC_BOOTSTRAP lets it pass its -Z flags, and
# `-s none` skips the sanitizer that only nightly provides.
#   cargo install cargo-fuzz && fuzz/run.sh
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
export RUSTC_BOOTSTRAP=1
for target in entity_tag tag_list http_date decision; do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  if cargo fuzz run -O -s none "$target" "corpus/$target" -- -runs="$RUNS" -max_total_time=1800 > "$log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/artifacts/$target)"
  fi
  runs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)
  echo "$target: $result, ${runs:-no summary}"
  rm -f "$log"
done
