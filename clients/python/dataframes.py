"""Query StreamDB into polars and pandas through the ADBC Flight SQL driver.

    python clients/python/dataframes.py [grpc://127.0.0.1:8080]

Results arrive as Arrow and convert without copying row by row.
"""

from __future__ import annotations

import sys

import adbc_driver_flightsql.dbapi as flightsql
import polars as pl

url = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:8080"
sql = ("SELECT time_bucket('1m', time) AS minute, tags['host'] AS host, avg(value) AS avg_value "
       "FROM metrics GROUP BY 1, 2 ORDER BY 1, 2")

with flightsql.connect(url) as conn:
    with conn.cursor() as cur:
        cur.execute(sql)
        frame = pl.from_arrow(cur.fetch_arrow_table())
        print("polars:", frame.shape)
        print(frame.head())
    with conn.cursor() as cur:
        cur.execute(sql)
        df = cur.fetch_df()
        print("pandas:", df.shape)
        print(df.head())
    # What ADBC sees of the catalog.
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    tables = [t["table_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]]
    print("tables:", tables)
