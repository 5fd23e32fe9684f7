#!/usr/bin/env bash
# Runs the fault harness (src/ingest/fault_harness/, docs/FAULTS.md) over
# many seeds and prints its summary: seeds run, faults by kind (runs,
# fired, failed), and each failure with its seed.
#
#   scripts/fault-harness.sh [SEEDS] [START]    (defaults: 1000 0)
#   PROFILE=release scripts/fault-harness.sh 5000
#
# Rerun one seed: FAULT_SEED=1234 lcargo test --lib fault_harness::tests::one_seed -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-${FAULT_SEEDS:-1000}}"
START="${2:-${FAULT_START:-0}}"
CARGO="${CARGO:-$(command -v lcargo || echo cargo)}"
PROFILE_FLAG=()
if [ "${PROFILE:-debug}" = release ]; then PROFILE_FLAG=(--release); fi
FAULT_SEEDS="$SEEDS" FAULT_START="$START" "$CARGO" test "${PROFILE_FLAG[@]}" --lib \
  fault_harness::tests::many_seeds -- --ignored --nocapture 2>&1 \
  | sed -n '/^seeds run:/,/^thread\|^test result/p' | grep -v '^thread\|^test result'
