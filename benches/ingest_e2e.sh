#!/usr/bin/env bash
# End-to-end ingest and query benchmark on the TSBS-shaped data set
# (8.64M points): a release `streamdb start`, pyarrow DoPut with 100k-row
# batches over 4 connections (acknowledged = durable), peak server RSS,
# bytes on disk, then q1..q5 through ADBC with answers checked against
# DuckDB. It runs ../shared/bench/peer_streamdb.py, the same harness that
# measures the peer databases, so the numbers compare.
#
#   bash benches/ingest_e2e.sh            # full-precision data set
#   VARIANT=int bash benches/ingest_e2e.sh  # integer-valued (--decimals 0)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BENCH=${BENCH_DIR:-$ROOT/../shared/bench}
DATA_DIR=${DATA_DIR:-/tmp/bench-data}
VARIANT=${VARIANT:-full}
PY=${PYTHON:-$ROOT/.venv/bin/python}
mkdir -p "$DATA_DIR"
"$PY" -m pip install -q numpy pyarrow duckdb adbc-driver-flightsql adbc-driver-manager
extra=""; [ "$VARIANT" = int ] && extra="--decimals 0"
data="$DATA_DIR/cpu_${VARIANT}.parquet"
[ -f "$data" ] || "$PY" "$BENCH/gen_tsbs.py" $extra --out "$data"
cargo build --release --bin streamdb
cd "$BENCH"
DATA_DIR="$DATA_DIR" BENCH_VARIANT="$VARIANT" "$PY" peer_streamdb.py --data "$data" --bin "$ROOT/target/release/streamdb"
