"""Ingest through the ADBC Flight SQL driver (`cursor.adbc_ingest`).

Covers: modes "create", "append" and "create_append" into `metrics`, each
returning the row count and making exactly those rows visible to SQL; the
modes accumulating into one table; a batch above tonic's default 4 MiB
message limit; and a wrong table name being an error that writes nothing.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from adbc_driver_manager import dbapi

from streamdb_helpers import rows_of

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z, Unix micros
ALL_ROWS = "SELECT time, metric, tags, value FROM metrics"


def sample(start_s: int, n: int = 8, metric: str = "adbc"):
    times = [T0 + (start_s + i) * 1_000_000 for i in range(n)]
    hosts = [f"h{i % 3}" for i in range(n)]
    values = [start_s + i / 4 for i in range(n)]
    table = pa.table({"time": pa.array(times, pa.timestamp("us", tz="UTC")),
                      "metric": [metric] * n, "host": hosts, "value": values})
    expected = [(t, metric, (("host", h),), v) for t, h, v in zip(times, hosts, values)]
    return table, expected


def ingest(srv, table, mode: str, name: str = "metrics") -> int:
    with srv.adbc() as conn, conn.cursor() as cur:
        return cur.adbc_ingest(name, table, mode=mode)


@pytest.mark.parametrize("mode", ["create", "append", "create_append"])
def test_ingest_mode_returns_count_and_rows_are_queryable(streamdb_server, mode):
    table, expected = sample(0)
    assert ingest(streamdb_server, table, mode) == table.num_rows
    assert rows_of(streamdb_server.sql(ALL_ROWS)) == sorted(expected)
    assert streamdb_server.status()["rows"] == len(expected)


def test_modes_accumulate(streamdb_server):
    expected = []
    for i, mode in enumerate(["create", "append", "create_append", "append"]):
        table, exp = sample(100 * i, n=5 + i)
        assert ingest(streamdb_server, table, mode) == table.num_rows
        expected += exp
    assert rows_of(streamdb_server.sql(ALL_ROWS)) == sorted(expected)
    st = streamdb_server.status()
    assert (st["rows"], st["series"]) == (len(expected), 3)


def test_batch_over_4mib(streamdb_server):
    n = 300_000  # ~ 300k * (8 + 8 + ~10 + ~14) bytes: well above 4 MiB in one batch
    table = pa.table({
        "time": pa.array([T0 + i for i in range(n)], pa.timestamp("us", tz="UTC")),
        "metric": pa.array(["big_payload_metric"] * n),
        "host": pa.array([f"host-{i % 10:04d}" for i in range(n)]),
        "value": pa.array([float(i) for i in range(n)]),
    }).combine_chunks()
    assert table.nbytes > 4 * 1024 * 1024
    assert ingest(streamdb_server, table, "append") == n
    got = streamdb_server.sql("SELECT count(*) AS n, sum(value) AS s, min(time) AS lo, "
                              "max(time) AS hi FROM metrics")
    row = got.to_pylist()[0]
    assert (row["n"], row["s"]) == (n, float(n * (n - 1) // 2))
    assert got.column("lo").cast(pa.int64())[0].as_py() == T0
    assert got.column("hi").cast(pa.int64())[0].as_py() == T0 + n - 1


@pytest.mark.parametrize("mode", ["append", "create", "create_append"])
def test_wrong_table_name_is_an_error_and_writes_nothing(streamdb_server, mode):
    table, expected = sample(0)
    ingest(streamdb_server, table, "append")
    other, _ = sample(1000)
    with pytest.raises(dbapi.Error) as err:
        ingest(streamdb_server, other, mode, name="not_metrics")
    assert "not_metrics" in str(err.value)
    assert rows_of(streamdb_server.sql(ALL_ROWS)) == sorted(expected)
    assert streamdb_server.status()["rows"] == len(expected)
