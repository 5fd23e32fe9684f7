"""Malformed DoPut batches are rejected whole with INVALID_ARGUMENT.

Each case: a valid batch is ingested first; then the bad one must fail with
gRPC INVALID_ARGUMENT (pyarrow maps it to `pyarrow.ArrowInvalid`, message
"Flight returned invalid argument error, with message: ...") whose server
message names the column and the first bad row (`row N`, 0-based). After it,
status (rows, series, stream next offset) and the SQL count are unchanged, no
row of the bad batch is visible (including its valid leading rows), and the
server still accepts and serves a valid batch.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from streamdb_helpers import do_put, server_message

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z, Unix micros
N = 6
BAD_METRIC = "m_bad"


def good_batch(start_s: int = 0, metric: str = "m_good") -> pa.RecordBatch:
    return pa.record_batch({
        "time": pa.array([T0 + (start_s + i) * 1_000_000 for i in range(N)],
                         pa.timestamp("us", tz="UTC")),
        "metric": [metric] * N,
        "host": ["h1"] * N,
        "value": [float(i) for i in range(N)],
    })


def with_column(name: str, arr) -> pa.RecordBatch:
    b = good_batch(500, BAD_METRIC)
    return b.set_column(b.schema.get_field_index(name), name, arr)


def times_with_null(i):
    times = [T0 + (500 + k) * 1_000_000 for k in range(N)]
    times[i] = None
    return pa.array(times, pa.timestamp("us", tz="UTC"))


def metrics_with(i, bad):
    m = [BAD_METRIC] * N
    m[i] = bad
    return pa.array(m, pa.string())


def values_with_null(i):
    v = [float(k) for k in range(N)]
    v[i] = None
    return pa.array(v, pa.float64())


# case id -> (bad batch builder, column the message must name, first bad row)
CASES = {
    "missing_time": (lambda: good_batch(500, BAD_METRIC).drop_columns(["time"]), "time", 0),
    "null_time": (lambda: with_column("time", times_with_null(2)), "time", 2),
    "null_metric": (lambda: with_column("metric", metrics_with(1, None)), "metric", 1),
    "empty_metric": (lambda: with_column("metric", metrics_with(4, "")), "metric", 4),
    "string_value": (lambda: with_column("value", pa.array(["1.5"] * N)), "value", 0),
    "null_value_late_row": (lambda: with_column("value", values_with_null(3)), "value", 3),
}


def snapshot(srv):
    st = srv.status()
    return (st["rows"], st["series"], st["stream"]["next_offset"], srv.count())


def assert_rejected_invalid_argument(exc_info) -> str:
    text = str(exc_info.value)
    assert re.search(r"invalid[ _]argument", text, re.I), f"not INVALID_ARGUMENT: {text}"
    return server_message(exc_info.value)


def assert_unchanged_and_still_serving(srv, before) -> None:
    assert snapshot(srv) == before
    bad = srv.sql(f"SELECT count(*) AS n FROM metrics WHERE metric = '{BAD_METRIC}'")
    assert bad.column("n")[0].as_py() == 0
    results = do_put(srv, good_batch(1000))
    assert [r["rows"] for r in results] == [N]
    assert srv.count() == before[3] + N


@pytest.mark.parametrize("case", list(CASES))
def test_bad_batch_rejected_whole(streamdb_server, case):
    build, column, row = CASES[case]
    do_put(streamdb_server, good_batch())
    before = snapshot(streamdb_server)
    assert before[0] == before[3] == N

    with pytest.raises(pa.ArrowInvalid) as exc_info:
        do_put(streamdb_server, build())
    msg = assert_rejected_invalid_argument(exc_info)
    assert re.search(rf"\b{column}\b", msg), f"message does not name column {column!r}: {msg}"
    assert re.search(rf"\brow {row}\b", msg), f"message does not name row {row}: {msg}"

    assert_unchanged_and_still_serving(streamdb_server, before)


def test_unknown_descriptor_path(streamdb_server):
    do_put(streamdb_server, good_batch())
    before = snapshot(streamdb_server)
    with pytest.raises(pa.ArrowInvalid) as exc_info:
        do_put(streamdb_server, good_batch(500, BAD_METRIC), path="nope")
    msg = assert_rejected_invalid_argument(exc_info)
    assert "nope" in msg, msg
    assert_unchanged_and_still_serving(streamdb_server, before)


def test_many_bad_batches_then_good(streamdb_server):
    """Every case in a row on one server: still exactly the good rows afterwards."""
    do_put(streamdb_server, good_batch())
    before = snapshot(streamdb_server)
    for build, _, _ in CASES.values():
        with pytest.raises(pa.ArrowInvalid):
            do_put(streamdb_server, build())
    assert_unchanged_and_still_serving(streamdb_server, before)
