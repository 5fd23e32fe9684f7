"""Ingest over Arrow Flight DoPut (pyarrow.flight), checked through status and SQL.

Covers: the three accepted batch shapes (long + `tags` map, long + tag
columns, wide) with their PutResult metadata; exact status row/series counts
and time range; whole-table SQL round trips; time units s/ms/us/ns and int64
micros; numeric value types cast to float64; the `metrics` SQL schema;
`tags['host']`, GROUP BY and time filters; `streamdb status --json`; and that
every row (and every series id) survives a SIGTERM restart and a kill -9.

All test data uses distinct (series, time) pairs, so no dedup rule is assumed.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from streamdb_helpers import do_put, rows_of, streamdb_bin

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z, Unix micros
SEC = 1_000_000
TAGS = pa.map_(pa.string(), pa.string())
ALL_ROWS = "SELECT time, metric, tags, value FROM metrics"


def long_tags_map():
    """6 rows, 4 series, tags as a map column."""
    tags = [{"host": "a", "region": "eu"}, {"host": "b"}] * 3
    metrics = ["cpu", "cpu", "mem", "mem", "cpu", "cpu"]
    times = [T0 + i * SEC for i in range(6)]
    values = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    batch = pa.record_batch({
        "time": pa.array(times, pa.timestamp("us", tz="UTC")),
        "metric": metrics,
        "tags": pa.array([list(t.items()) for t in tags], TAGS),
        "value": values,
    })
    expected = [(t, m, tuple(sorted(g.items())), v)
                for t, m, g, v in zip(times, metrics, tags, values)]
    return batch, expected


def long_tag_columns():
    """5 rows; extra string columns `host` and `region` become tags."""
    times = [T0 + 100 * SEC + i * SEC for i in range(5)]
    hosts = ["a", "b", "a", "c", "b"]
    regions = ["eu", "us", "eu", "us", "us"]
    values = [10.0, 11.0, 12.0, 13.0, 14.0]
    batch = pa.record_batch({
        "time": pa.array(times, pa.timestamp("us", tz="UTC")),
        "metric": ["disk"] * 5,
        "host": hosts,
        "region": regions,
        "value": values,
    })
    expected = [(t, "disk", (("host", h), ("region", r)), v)
                for t, h, r, v in zip(times, hosts, regions, values)]
    return batch, expected


def wide():
    """4 rows x 3 numeric columns = 12 points; column names are the metrics."""
    times = [T0 + 200 * SEC + i * SEC for i in range(4)]
    hosts = ["a", "b", "a", "b"]
    cols = {"usage": [0.25, 0.5, 0.75, 1.0], "procs": [3, 4, 5, 6], "load": [1.5, 2.5, 3.5, 4.5]}
    batch = pa.record_batch({
        "time": pa.array(times, pa.timestamp("us", tz="UTC")),
        "host": hosts,
        "usage": pa.array(cols["usage"], pa.float64()),
        "procs": pa.array(cols["procs"], pa.int64()),
        "load": pa.array(cols["load"], pa.float32()),
    })
    expected = [(t, name, (("host", h),), float(vals[i]))
                for name, vals in cols.items()
                for i, (t, h) in enumerate(zip(times, hosts))]
    return batch, expected


SHAPES = {"long_tags_map": long_tags_map, "long_tag_columns": long_tag_columns, "wide": wide}


def series_count(expected) -> int:
    return len({(m, tags) for _, m, tags, _ in expected})


def assert_offsets(results, after: str = "") -> None:
    offsets = [r["offset"] for r in results]
    for o in offsets:
        assert isinstance(o, str) and re.fullmatch(r"\d{16}_0{16}", o), offsets
    assert offsets == sorted(set(offsets)), f"offsets not strictly increasing: {offsets}"
    assert offsets[0] > after, (offsets, after)


def assert_stored(srv, expected) -> None:
    st = srv.status()
    assert st["rows"] == len(expected), st
    assert st["series"] == series_count(expected), st
    assert st["rows"] == st["buffer"]["rows"] + st["storage"]["rows"], st
    assert rows_of(srv.sql(ALL_ROWS)) == sorted(expected)


def ingest_all_shapes(srv):
    expected, last = [], ""
    for make in SHAPES.values():
        batch, exp = make()
        results = do_put(srv, batch)
        assert [r["rows"] for r in results] == [len(exp)]
        assert_offsets(results, after=last)
        last = results[-1]["offset"]
        expected += exp
    return expected, last


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shape_two_batches_one_stream(streamdb_server, shape):
    batch, expected = SHAPES[shape]()
    per_row = len(expected) // batch.num_rows  # points per input row (3 for wide)
    first, second = batch.slice(0, 2), batch.slice(2)
    results = do_put(streamdb_server, [first, second])
    assert [r["rows"] for r in results] == [2 * per_row, (batch.num_rows - 2) * per_row]
    assert_offsets(results)
    assert_stored(streamdb_server, expected)


def test_all_shapes_together_and_offsets_keep_increasing(streamdb_server):
    expected, _ = ingest_all_shapes(streamdb_server)
    assert_stored(streamdb_server, expected)


@pytest.mark.parametrize("unit,tz,step", [
    ("s", None, 1), ("ms", None, 1_000 + 7), ("ms", "UTC", 3), ("us", None, 13),
    ("ns", None, 17_000), ("ns", "UTC", 1_000), ("int64", None, 5),
])
def test_time_units(streamdb_server, unit, tz, step):
    per_unit = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000, "int64": 1_000_000}
    base = 1_705_276_800 * per_unit[unit]
    raw = [base + i * step for i in range(4)]
    arr = pa.array(raw, pa.int64() if unit == "int64" else pa.timestamp(unit, tz=tz))
    expected_us = [r * 1_000_000 // per_unit[unit] for r in raw]  # exact: ns steps are whole us
    batch = pa.record_batch({"time": arr, "metric": ["t"] * 4, "host": ["h"] * 4,
                             "value": [1.0, 2.0, 3.0, 4.0]})
    assert do_put(streamdb_server, batch)[0]["rows"] == 4
    expected = [(t, "t", (("host", "h"),), float(i + 1)) for i, t in enumerate(expected_us)]
    assert_stored(streamdb_server, expected)


@pytest.mark.parametrize("vtype", [pa.int32(), pa.int64(), pa.uint64(), pa.float32(), pa.int8()],
                         ids=str)
def test_value_types_cast_to_float64(streamdb_server, vtype):
    values = [-3, 0, 7, 100] if not pa.types.is_unsigned_integer(vtype) else [0, 1, 7, 100]
    if pa.types.is_floating(vtype):
        values = [-2.5, 0.0, 0.125, 1e6]  # exactly representable in float32
    times = [T0 + i * SEC for i in range(4)]
    batch = pa.record_batch({"time": pa.array(times, pa.timestamp("us")), "metric": ["v"] * 4,
                             "host": ["h"] * 4, "value": pa.array(values, vtype)})
    do_put(streamdb_server, batch)
    table = streamdb_server.sql(ALL_ROWS)
    assert table.schema.field("value").type == pa.float64()
    assert rows_of(table) == [(t, "v", (("host", "h"),), float(v)) for t, v in zip(times, values)]


def test_sql_schema_and_series_id(streamdb_server):
    expected, _ = ingest_all_shapes(streamdb_server)
    table = streamdb_server.sql("SELECT * FROM metrics")
    schema = table.schema
    assert schema.names == ["time", "metric", "tags", "value", "series_id"]
    assert schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("metric").type == pa.string()
    tags_type = schema.field("tags").type
    assert pa.types.is_map(tags_type)
    assert (tags_type.key_type, tags_type.item_type) == (pa.string(), pa.string())
    assert schema.field("value").type == pa.float64()
    assert schema.field("series_id").type == pa.uint64()
    assert table.num_rows == len(expected)
    ids = series_ids(streamdb_server)  # asserts one id per series
    assert len(ids) == series_count(expected)
    assert len(set(ids.values())) == len(ids), "distinct series share an id"


def test_sql_tag_access_group_by_and_time_filter(streamdb_server):
    times = [T0 - 2 * SEC, T0 - SEC, T0, T0 + SEC, T0 + 2 * SEC, T0 + 3 * SEC]
    hosts = ["a", "b", "a", "b", "a", "a"]
    batch = pa.record_batch({"time": pa.array(times, pa.timestamp("us", tz="UTC")),
                             "metric": ["cpu"] * 6, "host": hosts,
                             "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    do_put(streamdb_server, batch)
    by_host = streamdb_server.sql(
        "SELECT tags['host'] AS host, count(*) AS n, sum(value) AS s FROM metrics "
        "WHERE time >= '2024-01-15T00:00:00Z' GROUP BY 1 ORDER BY 1")
    assert by_host.to_pylist() == [{"host": "a", "n": 3, "s": 14.0},
                                   {"host": "b", "n": 1, "s": 4.0}]
    only_b = streamdb_server.sql("SELECT value FROM metrics WHERE tags['host'] = 'b' ORDER BY time")
    assert only_b.column("value").to_pylist() == [2.0, 4.0]


def test_status_empty_then_after_ingest(streamdb_server):
    st = streamdb_server.status()
    assert set(st) >= {"version", "data_dir", "stream", "buffer", "storage", "series", "rows",
                       "time_range"}
    assert isinstance(st["version"], str) and st["version"]
    assert set(st["stream"]) >= {"first_offset", "next_offset", "segments", "bytes", "producers"}
    assert st["stream"]["producers"] == 0
    assert set(st["buffer"]) >= {"rows", "bytes"}
    assert set(st["storage"]) >= {"manifest_version", "covered_offset", "chunks", "rows", "bytes"}
    assert (st["rows"], st["series"]) == (0, 0)
    assert st["time_range"] == {"min": None, "max": None}

    expected, _ = ingest_all_shapes(streamdb_server)
    st = streamdb_server.status()
    times = [t for t, *_ in expected]
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert datetime.fromisoformat(st["time_range"]["min"]) == epoch + timedelta(microseconds=min(times))
    assert datetime.fromisoformat(st["time_range"]["max"]) == epoch + timedelta(microseconds=max(times))


def test_cli_status_json_matches_http(streamdb_server):
    ingest_all_shapes(streamdb_server)
    # A background flush may change the status between reads: compare only when
    # the HTTP reads before and after the CLI agree (i.e. nothing moved).
    for _ in range(5):
        before = streamdb_server.status()
        out = subprocess.run([str(streamdb_bin()), "status", "--server", streamdb_server.http,
                              "--json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        if streamdb_server.status() == before:
            assert json.loads(out.stdout) == before
            return
    pytest.fail("status kept changing while idle")


def series_ids(srv) -> dict:
    t = srv.sql("SELECT metric, tags, series_id FROM metrics")
    ids = {}
    for m, g, s in zip(t.column("metric").to_pylist(), t.column("tags").to_pylist(),
                       t.column("series_id").to_pylist()):
        assert ids.setdefault((m, tuple(sorted(g))), s) == s, f"two ids for {m} {g}"
    return ids


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_restart_keeps_every_row(streamdb_server, how):
    srv = streamdb_server
    expected, last_offset = ingest_all_shapes(srv)
    ids_before = series_ids(srv)
    if how == "sigterm":
        srv.restart(graceful=True)  # asserts exit code 0
    else:
        srv.kill9()
        srv.start()
    assert_stored(srv, expected)
    assert series_ids(srv) == ids_before
    # the log continues after the old tail: new offsets are larger, old rows still there
    batch, more = long_tag_columns()
    shifted = batch.set_column(0, "time", pa.array(
        [t + 3600 * SEC for t in batch.column("time").cast(pa.int64()).to_pylist()],
        pa.timestamp("us", tz="UTC")))
    assert_offsets(do_put(srv, shifted), after=last_offset)
    expected += [(t + 3600 * SEC, *rest) for t, *rest in more]
    assert_stored(srv, expected)


def test_get_schema_plans_sql_text_without_running_it(streamdb_server):
    client = streamdb_server.flight()
    sql = "SELECT time_bucket('5s', time) AS b, avg(value) AS v FROM metrics GROUP BY 1"
    schema = client.get_schema(fl.FlightDescriptor.for_command(sql)).schema
    assert schema.names == ["b", "v"]
    assert schema.field("v").type == pa.float64()
    assert schema == client.get_flight_info(fl.FlightDescriptor.for_command(sql)).schema
    with pytest.raises(pa.ArrowInvalid, match="nope"):
        client.get_schema(fl.FlightDescriptor.for_command("SELECT nope FROM metrics"))


def test_list_actions_names_only_what_the_server_does(streamdb_server):
    client = fl.connect(streamdb_server.grpc)
    listed = {a.type for a in client.list_actions()}
    assert listed == {"CreatePreparedStatement", "ClosePreparedStatement", "status"}
    status = json.loads(b"".join(r.body.to_pybytes() for r in client.do_action(fl.Action("status", b""))))
    assert status["rows"] == 0
    # What arrow-flight would have listed besides is refused, not half-done.
    with pytest.raises(pa.ArrowException):
        list(client.do_action(fl.Action("BeginTransaction", b"")))


def put_as_producer(srv, batches, producer: str, epoch: int, seq: int) -> list[dict]:
    """One DoPut with producer metadata; `seq` numbers its first batch."""
    headers = [(b"producer-id", producer.encode()),
               (b"producer-epoch", str(epoch).encode()),
               (b"producer-seq", str(seq).encode())]
    client = srv.flight()
    try:
        opts = fl.FlightCallOptions(timeout=30, headers=headers)
        writer, reader = client.do_put(fl.FlightDescriptor.for_path("metrics"),
                                       batches[0].schema, options=opts)
        for b in batches:
            writer.write_batch(b)
        writer.done_writing()
        results = []
        while (buf := reader.read()) is not None:
            results.append(json.loads(buf.to_pybytes()))
        writer.close()
        return results
    finally:
        client.close()


def test_a_producer_retry_after_a_lost_ack_and_a_crash_stores_each_batch_once(streamdb_server):
    """Issue 18 item 13: the acks of a DoPut are lost (the client never read
    them, the server was killed); the client resends the same batches with
    the same producer metadata and nothing is stored twice."""
    srv = streamdb_server
    batches = []
    for b in range(4):
        times = [T0 + (b * 10 + i) * SEC for i in range(10)]
        batches.append(pa.record_batch({
            "time": pa.array(times, pa.timestamp("us", tz="UTC")),
            "metric": ["cpu"] * 10,
            "host": ["a"] * 10,
            "value": [float(b * 10 + i) for i in range(10)],
        }))
    first = put_as_producer(srv, batches[:3], "py-producer", 0, 0)
    assert [r["seq"] for r in first] == [0, 1, 2]
    assert not any(r.get("duplicate") for r in first)
    srv.kill9()
    srv.start()
    # Resent from the first batch the client did not see acknowledged, plus one new.
    again = put_as_producer(srv, batches[1:], "py-producer", 0, 1)
    assert [(r["seq"], r.get("duplicate", False)) for r in again] == [(1, True), (2, True), (3, False)]
    assert all(r["rows"] == 10 for r in again)
    assert srv.count() == 40
    # Half the metadata is refused, naming what is missing; nothing written.
    client = srv.flight()
    try:
        opts = fl.FlightCallOptions(timeout=30, headers=[(b"producer-id", b"p")])
        with pytest.raises((fl.FlightError, pa.ArrowInvalid)) as err:
            writer, reader = client.do_put(fl.FlightDescriptor.for_path("metrics"),
                                           batches[0].schema, options=opts)
            writer.write_batch(batches[0])
            writer.done_writing()
            reader.read()
            writer.close()
        assert "producer-epoch" in str(err.value)
    finally:
        client.close()
    assert srv.count() == 40
