"""Limits: each one, when exceeded, answers a clear error (gRPC
RESOURCE_EXHAUSTED, HTTP 413 or 429) naming the limit, changes nothing, and
the server keeps serving."""

from __future__ import annotations

import json
import threading
import urllib.parse

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from streamdb_helpers import do_put, http_call as http, metric, scrape, server_message, wait_for

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z


def batch(n: int, start: int = 0, pad: int = 0) -> pa.RecordBatch:
    return pa.record_batch({
        "time": pa.array([T0 + (start + i) * 1_000_000 for i in range(n)], pa.timestamp("us", tz="UTC")),
        "metric": ["cpu_usage"] * n,
        "host": ["h" + "x" * pad] * n,
        "value": [float(i) for i in range(n)],
    })


def points_ndjson(n: int) -> bytes:
    return "\n".join(json.dumps({"time": T0 + i, "metric": "m", "tags": {"host": "a"}, "value": i})
                     for i in range(n)).encode()


def test_rows_per_batch(streamdb_factory):
    srv = streamdb_factory(extra_args=["--max-batch-rows", "100"])
    do_put(srv, batch(100))
    with pytest.raises(pa.ArrowException) as e:
        do_put(srv, batch(101, start=1000))
    assert "resource exhausted" in str(e.value).lower()
    assert "101 rows" in server_message(e.value) and "--max-batch-rows" in server_message(e.value)

    status, body = http(srv, "POST", "/v1/stream/metrics", points_ndjson(101),
                        {"Content-Type": "application/x-ndjson"})
    assert status == 413, body
    assert b"--max-batch-rows" in body
    assert srv.count() == 100
    assert metric(scrape(srv), "streamdb_limit_rejections_total", limit="batch_rows") == 2
    status, _ = http(srv, "POST", "/v1/stream/metrics", points_ndjson(100),
                     {"Content-Type": "application/x-ndjson"})
    assert status == 204
    assert srv.count() == 200


def test_message_size(streamdb_factory):
    srv = streamdb_factory(extra_args=["--max-message-bytes", "1MiB"])
    do_put(srv, batch(1000))
    with pytest.raises(pa.ArrowException) as e:
        do_put(srv, batch(1000, start=5000, pad=4000))  # ~4 MB of tag strings
    assert "resource exhausted" in str(e.value).lower() or "message length too large" in str(e.value)
    assert srv.count() == 1000
    do_put(srv, batch(10, start=9000))
    assert srv.count() == 1010


def test_sql_text_size(streamdb_server):
    # A generated IN list of ~2 MB: refused as JSON naming the limit, and the
    # same API keeps answering.
    sql = "SELECT count(*) AS n FROM metrics WHERE value IN (" + ",".join(["1"] * 1_000_000) + ")"
    status, body = http(streamdb_server, "POST", "/v1/query?format=json", sql.encode(), {"Content-Type": "text/plain"})
    assert status == 413, body
    assert "larger than 1048576 bytes" in json.loads(body)["error"]
    status, body = http(streamdb_server, "POST", "/v1/query?format=json", b"SELECT 1 AS one", {"Content-Type": "text/plain"})
    assert (status, json.loads(body)) == (200, [{"one": 1}])
    # Repeated parameters are the API's error shape too, not axum's text.
    status, body = http(streamdb_server, "GET", "/v1/query?sql=SELECT%201&format=json&format=csv")
    assert status == 400 and "format" in json.loads(body)["error"], body


def test_concurrent_queries(streamdb_factory):
    srv = streamdb_factory(extra_args=["--max-concurrent-queries", "1", "--query-timeout", "3s"])
    do_put(srv, batch(10))
    # A query that runs until its timeout holds the only slot.
    hog_sql = "SELECT count(*) FROM generate_series(1, 100000000000)"
    hog = {}

    def run_hog():
        hog["status"], hog["body"] = http(srv, "GET", "/v1/query?sql=" + urllib.parse.quote(hog_sql))

    t = threading.Thread(target=run_hog)
    t.start()
    try:
        wait_for(lambda: metric(scrape(srv), "streamdb_queries_running") == 1, "the long query to start")

        status, body = http(srv, "GET", "/v1/query?sql=" + urllib.parse.quote("SELECT 1"))
        assert status == 429, body
        assert b"--max-concurrent-queries" in body
        client = srv.flight()
        info = client.get_flight_info(fl.FlightDescriptor.for_command(b"SELECT count(*) FROM metrics"))
        with pytest.raises(pa.ArrowException) as e:
            client.do_get(info.endpoints[0].ticket).read_all()
        assert "resource exhausted" in str(e.value).lower()
        assert "too many queries running" in server_message(e.value)
        client.close()
    finally:
        t.join(30)
    assert hog["status"] == 504, hog  # the hog met its own timeout
    # The slot is free again.
    assert srv.count() == 10
    assert metric(scrape(srv), "streamdb_limit_rejections_total", limit="concurrent_queries") == 2


def test_open_streams(streamdb_factory):
    srv = streamdb_factory(extra_args=["--max-streams", "3"])
    for i in range(3):
        status, _ = http(srv, "PUT", f"/v1/stream/s{i}", headers={"Content-Type": "text/plain"})
        assert status == 201
    status, body = http(srv, "PUT", "/v1/stream/s3", headers={"Content-Type": "text/plain"})
    assert status == 429, body
    assert b"--max-streams" in body
    assert http(srv, "HEAD", "/v1/stream/s3")[0] == 404
    # The metrics stream is built in and never counts against the limit.
    status, _ = http(srv, "POST", "/v1/stream/metrics", points_ndjson(1), {"Content-Type": "application/x-ndjson"})
    assert status == 204
    assert http(srv, "DELETE", "/v1/stream/s0")[0] == 204
    status, _ = http(srv, "PUT", "/v1/stream/s3", headers={"Content-Type": "text/plain"})
    assert status == 201
