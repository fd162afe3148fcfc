#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 240), one at a time, niced, and
# prints one line per target: executions, exec/s, wall seconds, crash files.
# Usage: fuzz/run_all.sh [SECONDS] [TARGET...]   (from anywhere; needs `cargo install cargo-fuzz`)
# Environment: RUNS=N also stops a target after N executions (libFuzzer's -runs), whichever
# comes first; NICE=N sets the niceness (default 15; 19 lets other work on the machine go first).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-240}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list | grep -vx seeds)
fi
mkdir -p logs
if [ ! -d corpus ]; then
    cargo +nightly fuzz build
    ./target/x86_64-unknown-linux-gnu/release/seeds
fi
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    start=$(date +%s)
    nice -n "${NICE:-15}" cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" ${RUNS:+-runs="$RUNS"} -rss_limit_mb=2048 -timeout=25 -print_final_stats=1 ${EXTRA:-} \
        >"logs/$t.log" 2>&1 || true
    wall=$(( $(date +%s) - start ))
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
    crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
    echo "$t runs=$runs exec/s=$rate wall=${wall}s artifacts=$crashes"
done
