"""Write points with pyarrow (Flight DoPut), read them back with ADBC.

    python clients/python/write_and_query.py [grpc://127.0.0.1:8080]

DoPut to the path ["metrics"] takes any of the accepted shapes; here a
"long" table with one string column per tag. Every PutResult says how many
rows became durable and at which stream offset.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as fl

url = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:8080"
start = dt.datetime(2024, 1, 15, tzinfo=dt.timezone.utc)
table = pa.table({
    "time": pa.array([start + dt.timedelta(seconds=i) for i in range(6)], pa.timestamp("us", "UTC")),
    "metric": ["cpu_usage"] * 6,
    "host": ["web-1", "web-2", "web-3"] * 2,
    "region": ["eu"] * 6,
    "value": [0.5, 0.7, 0.2, 0.6, 0.8, 0.1],
})

client = fl.connect(url)
writer, results = client.do_put(fl.FlightDescriptor.for_path("metrics"), table.schema)
writer.write_table(table)
writer.done_writing()
while (ack := results.read()) is not None:
    print("durable:", json.loads(ack.to_pybytes()))
writer.close()

with flightsql.connect(url) as conn, conn.cursor() as cur:
    cur.execute("SELECT tags['host'] AS host, avg(value) AS avg_cpu FROM metrics "
                "WHERE metric = ? GROUP BY 1 ORDER BY 1", parameters=("cpu_usage",))
    print(cur.fetch_arrow_table())
