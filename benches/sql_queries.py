#!/usr/bin/env python3
"""q1..q5 against a StreamDB server that is already running and loaded,
through the ADBC Flight SQL driver, answers checked against the DuckDB
reference of the shared harness (a wrong answer exits non-zero).

For profiling and before/after comparisons on one data dir: start the
server yourself (`streamdb start --data-dir DIR --port PORT`), attach
`perf` to it if you like, and run this. `ingest_e2e.sh` and
`storage_e2e.py` measure from a fresh data dir instead.

Usage: python benches/sql_queries.py --port 18080
           [--data /tmp/bench-data/cpu_full.parquet] [--runs 12] [q1 q3 ...]
       python benches/sql_queries.py --port 18080 --sql "SELECT 1"
           (times one statement, no answer check: the fixed cost per query)
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))

import adbc_driver_flightsql.dbapi as fsql  # noqa: E402
import common as C  # noqa: E402
import peer_streamdb as P  # noqa: E402


def timed(conn, sql, runs):
    """Milliseconds of each of `runs` executions, and the last result."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
        times.append((time.perf_counter() - t0) * 1000)
    return times, table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data", default="/tmp/bench-data/cpu_full.parquet")
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--sql", help="time this statement instead of q1..q5")
    ap.add_argument("only", nargs="*", help="query names (default: all)")
    a = ap.parse_args()
    if a.sql:
        with fsql.connect(f"grpc://127.0.0.1:{a.port}", autocommit=True) as conn:
            times, table = timed(conn, a.sql, a.runs)
        print(f"first {times[0]:.1f} ms, median {statistics.median(times[1:]):.2f} ms, "
              f"min {min(times):.2f} ms, {table.num_rows} rows")
        return

    info = C.dataset_info(a.data)
    spec = C.QuerySpec(info)
    reference = C.reference_answers(info, spec)
    wrong = 0
    with fsql.connect(f"grpc://127.0.0.1:{a.port}", autocommit=True) as conn:
        for name, sql in P.build_queries(spec).items():
            if (a.only and name not in a.only) or (not a.only and name not in ("q1", "q2", "q3", "q4", "q5")):
                continue
            times, table = timed(conn, sql, a.runs)
            ok, msg = C.compare(P.normalise(name, table, spec), reference[name])
            wrong += not ok
            # The first run pays for anything cold (cache, plan); the
            # median is over the rest.
            print(f"{name}: first {times[0]:.1f} ms, median {statistics.median(times[1:]):.2f} ms, "
                  f"min {min(times):.2f} ms, {table.num_rows} rows  [{msg}]")
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
