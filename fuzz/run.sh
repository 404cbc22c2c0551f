#!/usr/bin/env bash
# make fuzz: each target for FUZZ_SECONDS (default 30) with libFuzzer, on the stable toolchain
# (RUSTC_BOOTSTRAP for -Z flags; no sanitizer runtime needed: Rust code is memory-safe, and a
# panic or abort is what we look for). Prints executions and crashes per target; crashing inputs
# are left in fuzz/artifacts/TARGET/ and must become regression tests.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${FUZZ_SECONDS:-30}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none -O >/dev/null 2>&1 || cargo fuzz build -s none -O
status=0
printf '%-16s %14s %8s\n' target executions crashes
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    out=$(cargo fuzz run -s none -O "$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=1024 2>&1) || status=1
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' <<<"$out" | tail -1)
    crashes=$(ls "artifacts/$t" 2>/dev/null | grep -c . || true)
    printf '%-16s %14s %8s\n' "$t" "${execs:-?}" "$crashes"
done
exit $status
