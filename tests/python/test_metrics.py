"""`/metrics`: scraped with the Prometheus client's own parser while data is
written, flushed, queried and subscribed to; each counter must move by what
the test did. Also the slow-query log and JSON logs."""

from __future__ import annotations

import json
import urllib.parse

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from streamdb_helpers import do_put, http_call, metric, scrape, wait_for

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z


def batch(n: int, start: int = 0) -> pa.RecordBatch:
    return pa.record_batch({
        "time": pa.array([T0 + (start + i) * 1_000_000 for i in range(n)], pa.timestamp("us", tz="UTC")),
        "metric": ["cpu_usage"] * n,
        "host": [f"h{i % 3}" for i in range(n)],
        "value": [float(i) for i in range(n)],
    })


def http_get(server, path: str) -> int:
    return http_call(server, "GET", path)[0]


def test_counters_move_with_writes_flushes_and_queries(streamdb_factory):
    srv = streamdb_factory(extra_args=["--flush-interval", "300ms"])
    before = scrape(srv)

    do_put(srv, [batch(100), batch(50, start=100)])
    after_write = scrape(srv)
    assert metric(after_write, "streamdb_ingest_rows_total") - metric(before, "streamdb_ingest_rows_total") == 150
    assert metric(after_write, "streamdb_ingest_batches_total") - metric(before, "streamdb_ingest_batches_total") == 2
    assert metric(after_write, "streamdb_log_bytes_total") > metric(before, "streamdb_log_bytes_total")
    fsyncs = metric(after_write, "streamdb_log_fsync_seconds_count") - metric(before, "streamdb_log_fsync_seconds_count")
    assert fsyncs >= 1, "a durable write must have been fsynced"

    # The flusher moves the rows from the buffer into a chunk.
    def flushed_scrape():
        s = scrape(srv)
        return s if metric(s, "streamdb_flushes_total") >= 1 and metric(s, "streamdb_buffer_rows") == 0 else None

    flushed = wait_for(flushed_scrape, "a flush")
    assert metric(flushed, "streamdb_chunks") >= 1
    assert metric(flushed, "streamdb_stored_rows") == 150
    assert metric(flushed, "streamdb_chunk_bytes") > 0
    assert metric(flushed, "streamdb_series") == 3
    assert metric(flushed, "streamdb_flush_seconds_count") >= 1

    # One query over Flight SQL (ADBC) and one over HTTP.
    assert srv.count() == 150
    assert http_get(srv, "/v1/query?sql=" + urllib.parse.quote("SELECT count(*) FROM metrics")) == 200
    queried = scrape(srv)
    assert metric(queried, "streamdb_queries_total", protocol="flight") - metric(flushed, "streamdb_queries_total", protocol="flight") == 1
    assert metric(queried, "streamdb_queries_total", protocol="http") - metric(flushed, "streamdb_queries_total", protocol="http") == 1
    assert metric(queried, "streamdb_query_seconds_count", protocol="http") >= 1
    assert metric(queried, "streamdb_queries_running") == 0


def test_errors_are_counted_by_protocol_and_kind(streamdb_server):
    srv = streamdb_server
    before = scrape(srv)
    # gRPC: a syntax error (INVALID_ARGUMENT, trailers-only reply).
    client = srv.flight()
    with pytest.raises(pa.ArrowInvalid):
        client.get_flight_info(fl.FlightDescriptor.for_command(b"SELEC 1"))
    # gRPC: an invalid DoPut batch, refused mid-stream (status in trailers).
    bad = pa.record_batch({"time": pa.array([T0], pa.timestamp("us", tz="UTC")), "value": [1.0]})
    with pytest.raises(pa.ArrowInvalid):
        do_put(srv, bad)
    # HTTP: a bad SQL query and an unknown stream.
    assert http_get(srv, "/v1/query?sql=SELEC") == 400
    assert http_get(srv, "/v1/stream/no-such-stream") == 404
    after = scrape(srv)

    def delta(**labels):
        return metric(after, "streamdb_errors_total", **labels) - metric(before, "streamdb_errors_total", **labels)

    assert delta(protocol="grpc", kind="invalid_argument") == 2
    assert delta(protocol="http", kind="invalid_argument") == 1
    assert delta(protocol="http", kind="not_found") == 1


def test_subscriptions_gauge_and_updates(streamdb_server):
    srv = streamdb_server
    client = srv.flight()
    desc = fl.FlightDescriptor.for_command(b"SUBSCRIBE TO SELECT count(*) AS n FROM metrics")
    writer, reader = client.do_exchange(desc)
    reader.read_chunk()  # the snapshot
    wait_for(lambda: metric(scrape(srv), "streamdb_subscriptions") == 1, "the subscription gauge")
    before = metric(scrape(srv), "streamdb_subscription_updates_total")
    do_put(srv, batch(10))
    wait_for(lambda: metric(scrape(srv), "streamdb_subscription_updates_total") > before, "an update counted")
    writer.done_writing()
    writer.close()
    client.close()
    wait_for(lambda: metric(scrape(srv), "streamdb_subscriptions") == 0, "the subscription to end")


def test_slow_query_log_in_json(streamdb_factory, tmp_path):
    srv = streamdb_factory(extra_args=["--slow-query-threshold", "1ms", "--log-format", "json"])
    do_put(srv, batch(1000))
    sql = "SELECT tags['host'] AS host, avg(value) FROM metrics GROUP BY 1 ORDER BY 1"
    srv.sql(sql)
    counted = wait_for(lambda: metric(scrape(srv), "streamdb_slow_queries_total") >= 1, "a slow query counted")
    assert counted
    logs = [json.loads(line) for line in srv.log_path.read_text().splitlines()
            if line.startswith("{")]
    assert logs, "no JSON log lines"
    assert all("level" in entry and "timestamp" in entry for entry in logs)
    slow = [e for e in logs if e.get("target") == "streamdb::slow_query"]
    assert slow, f"no slow-query entry in {logs[-5:]}"
    entry = slow[-1]
    assert entry["level"] == "WARN"
    assert entry["sql"] == sql
    assert entry["protocol"] == "flight"
    assert entry["rows"] == 3
    assert entry["elapsed_ms"] >= 1


def test_metrics_needs_the_token_when_auth_is_on(streamdb_factory):
    srv = streamdb_factory(extra_args=["--auth-token", "s3cret"])
    assert http_get(srv, "/metrics") == 401
    status, body = http_call(srv, "GET", "/metrics", headers={"Authorization": "Bearer s3cret"})
    assert status == 200
    text = body.decode()
    # The refusal above was counted as an error answered.
    assert 'streamdb_errors_total{kind="unauthenticated",protocol="http"} 1' in text
    assert "s3cret" not in text
