#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) under libFuzzer with
# AddressSanitizer for a bounded time, starting from a seed corpus.
#
#   bash scripts/fuzz.sh [seconds per target, default 60] [target ...]
#
# Exits non-zero on the first crash; libFuzzer leaves the input that
# crashed under fuzz/artifacts/<target>/. cargo fuzz passes nightly -Z
# flags: on the stable toolchain RUSTC_BOOTSTRAP=1 lets it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_TARGET="${1:-60}"
shift || true
# Only for cargo fuzz: set for the plain `cargo test` below it would change
# every crate's fingerprint and rebuild the whole debug tree.
fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

STREAMDB_FUZZ_CORPUS="$PWD/fuzz/corpus" \
    cargo test --lib fuzzing::tests::write_seed_corpus -- --ignored --exact --quiet

cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(fuzz list)
fi
mkdir -p logs
for t in "${targets[@]}"; do
    echo "==> fuzz $t for ${SECONDS_PER_TARGET}s (log: fuzz/logs/$t.log)"
    status=0
    fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"logs/$t.log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY|Done)" "logs/$t.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "logs/$t.log" >&2
        echo "fuzz target $t failed (exit $status): the input is under fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzz.sh: every target ran ${SECONDS_PER_TARGET}s without a crash"
