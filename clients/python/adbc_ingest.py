"""Bulk ingest with ADBC (`adbc_ingest`), e.g. from a pandas or polars frame.

    python clients/python/adbc_ingest.py [grpc://127.0.0.1:8080]

`metrics` always exists and only grows: modes `append`, `create` and
`create_append` all append (`replace` is refused).
"""

from __future__ import annotations

import sys

import adbc_driver_flightsql.dbapi as flightsql
import pandas as pd
import pyarrow as pa

url = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:8080"
frame = pd.DataFrame({
    "time": pd.date_range("2024-01-15T00:00:00Z", periods=100, freq="s"),
    "metric": "mem_used",
    "host": [f"db-{i % 4}" for i in range(100)],
    "value": [float(i) for i in range(100)],
})
table = pa.Table.from_pandas(frame, preserve_index=False)
table = table.set_column(0, "time", table.column("time").cast(pa.timestamp("us", "UTC")))

with flightsql.connect(url) as conn:
    with conn.cursor() as cur:
        rows = cur.adbc_ingest("metrics", table, mode="append")
        print("ingested rows:", rows)
    conn.commit()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM metrics WHERE metric = 'mem_used'")
        print(cur.fetch_arrow_table())
