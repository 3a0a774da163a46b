#!/bin/bash
# Runs every cargo-fuzz target (fuzz/) for SECONDS each and prints how many inputs each
# ran. `make fuzz` (long) and `make test` (short) call it; see README.md, "Fuzzing".
#
#   scripts/fuzz.sh SECONDS [TARGET...]     (default: every target in fuzz/Cargo.toml)
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET), the inputs of crashes
# found and fixed (fuzz/regressions/TARGET, replayed first: a regression fails the run)
# and what earlier runs found (fuzz/corpus/TARGET, not committed). FUZZ_JOBS targets run
# at once (default: the number of CPUs). Exit status 1 if any target crashed; its input
# is then in fuzz/artifacts/TARGET/. FUZZ_RUNS=N stops a target after N inputs if that
# comes before SECONDS (e.g. FUZZ_RUNS=10000000 for the 10 M bar).
set -eu
cd "$(dirname "$0")/../fuzz"
seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
all=$(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' Cargo.toml | grep -v '^provisioner-fuzz$')
targets=${*:-$all}
jobs=${FUZZ_JOBS:-$(nproc)}
cargo=${CARGO:-cargo}
# -O: the release profile of fuzz/Cargo.toml (overflow checks and debug assertions on).
# No sanitizer: the parsers are safe Rust, and without ASan each runs several times faster.
flags="-O -s none"

# shellcheck disable=SC2086 # flags is a list of words
if [ $# -eq 0 ]; then
    $cargo +nightly fuzz build $flags # all at once: shared dependencies built once
else
    for t in $targets; do $cargo +nightly fuzz build $flags "$t"; done
fi

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
run() {
    t=$1
    mkdir -p "corpus/$t" "seeds/$t" "regressions/$t"
    # shellcheck disable=SC2086
    if $cargo +nightly fuzz run $flags "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- \
        -max_total_time="$seconds" -runs="${FUZZ_RUNS:--1}" -print_final_stats=1 -timeout=10 >"$log/$t" 2>&1; then
        echo ok >"$log/$t.rc"
    else
        echo CRASH >"$log/$t.rc"
    fi
}
running=0
for t in $targets; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

failed=0
printf '%-12s %14s %8s %s\n' target executions seconds result
for t in $targets; do
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log/$t" | tail -n1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log/$t" | tail -n1)
    rc=$(cat "$log/$t.rc")
    printf '%-12s %14s %8s %s\n' "$t" "${runs:-?}" "${secs:-?}" "$rc"
    if [ "$rc" != ok ]; then
        failed=1
        echo "--- $t:" >&2
        grep -E 'panicked|ERROR: libFuzzer|Test unit written|SUMMARY' "$log/$t" >&2 || tail -n 30 "$log/$t" >&2
    fi
done
exit "$failed"
