"""Hostile input on every surface of a running server: raw bytes on the
port, malformed HTTP, bad Durable Streams requests, bad SQL, and malformed
Flight calls. Each must get a clear error (the right status and a message
that names the problem) or a closed connection, change nothing (rows, stream
offsets, named streams, the data directory outside its own files), and
leave the server serving."""

from __future__ import annotations

import json
import socket
import urllib.parse

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from streamdb_helpers import do_put, http_call as http, server_message

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z


def good_batch(n: int = 20) -> pa.RecordBatch:
    return pa.record_batch({
        "time": pa.array([T0 + i * 1_000_000 for i in range(n)], pa.timestamp("us", tz="UTC")),
        "metric": ["cpu_usage"] * n,
        "host": ["web-1"] * n,
        "value": [float(i) for i in range(n)],
    })


def state(srv) -> tuple:
    """What no refused input may change."""
    st = srv.status()
    return (srv.count(), st["rows"], st["series"], st["stream"]["next_offset"],
            http(srv, "HEAD", "/v1/stream/victim")[0])


@pytest.fixture
def loaded(streamdb_server):
    srv = streamdb_server
    do_put(srv, good_batch())
    status, _ = http(srv, "PUT", "/v1/stream/victim", b"seed", {"Content-Type": "text/plain"})
    assert status == 201
    return srv


def assert_serving(srv, before: tuple):
    assert state(srv) == before, "a refused input changed the server's data"
    assert http(srv, "GET", "/health") == (200, b"ok")
    do_put(srv, pa.record_batch({
        "time": pa.array([T0 + 10**9], pa.timestamp("us", tz="UTC")),
        "metric": ["after_hostile"], "host": ["x"], "value": [1.0]}))
    assert srv.count() == before[0] + 1


def raw_exchange(srv, payload: bytes) -> bytes:
    """Sends raw bytes on the server's port; returns what came back before close."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the server already closed on us: fine
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


RAW = {
    "binary garbage": bytes(range(256)) * 8,
    "http2 preface then garbage": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\xff\x09\xff" * 200,
    "truncated request line": b"GET /v1/status HT",
    "bad method token": b"G(E)T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
    "smuggling (CL and TE)": (b"POST /v1/stream/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                              b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
                              b"0\r\n\r\n{\"time\":1,\"metric\":\"m\",\"value\":1}"),
    "bad chunked body": (b"POST /v1/stream/metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    "content-length lies": (b"POST /v1/stream/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 999\r\n"
                            b"Content-Type: application/json\r\n\r\n{\"time\":1"),
}


def test_raw_bytes_on_the_port(loaded):
    before = state(loaded)
    for name, payload in RAW.items():
        reply = raw_exchange(loaded, payload)
        if reply.startswith(b"HTTP/1.1 "):
            code = int(reply[9:12])
            assert 400 <= code < 500, f"{name}: answered {reply[:200]!r}"
    assert_serving(loaded, before)


def test_bad_durable_streams_requests(loaded):
    before = state(loaded)
    json_ct = {"Content-Type": "application/json"}
    cases = [
        # (method, path, body, headers, expected status, needle in the body)
        ("GET", "/v1/stream/victim?offset=abc", None, {}, 400, "offset"),
        ("GET", "/v1/stream/victim?offset=-2", None, {}, 400, "offset"),
        ("GET", "/v1/stream/victim?offset=9999999999999999_0000000000000000", None, {}, 400, "offset"),
        ("GET", "/v1/stream/victim?live=forever&offset=-1", None, {}, 400, "live"),
        ("POST", "/v1/stream/victim", b"x", {"Content-Type": "application/json"}, 409, "content type"),
        ("POST", "/v1/stream/metrics", b"{not json", json_ct, 400, "JSON"),
        ("POST", "/v1/stream/metrics", b"[" * 100_000 + b"]" * 100_000, json_ct, 400, ""),
        ("POST", "/v1/stream/metrics", b'{"time": "yesterday", "metric": "m", "value": 1}', json_ct, 400, "time"),
        ("POST", "/v1/stream/metrics", b'{"time": 1, "metric": "", "value": 1}', json_ct, 400, "metric"),
        ("POST", "/v1/stream/metrics", b'{"time": 1, "metric": "m", "value": "high"}', json_ct, 400, "value"),
        ("POST", "/v1/stream/metrics", b'{"time": 1e300, "metric": "m", "value": 1}', json_ct, 400, "time"),
        ("POST", "/v1/stream/metrics", b'{"time": 1, "metric": "m", "value": 1, "tags": {"a": [1]}}', json_ct, 400, "tag"),
        ("POST", "/v1/stream/metrics", b"\xff\xfe\x00\x01", json_ct, 400, ""),
        ("POST", "/v1/stream/metrics", b"", json_ct, 400, ""),
        ("PUT", "/v1/stream/victim", b"", {"Content-Type": "application/json"}, 409, ""),
        ("PUT", "/v1/stream/new?x=1", b"", {"Content-Type": "text/plain", "Stream-TTL": "-5"}, 400, "TTL"),
        ("PUT", "/v1/stream/new", b"", {"Content-Type": "text/plain", "Stream-Expires-At": "soon"}, 400, "Expires"),
        ("POST", "/v1/stream/victim", b"x", {"Content-Type": "text/plain", "Producer-Id": "p",
                                               "Producer-Epoch": "nope", "Producer-Seq": "0"}, 400, "Producer"),
        ("PATCH", "/v1/stream/victim", b"x", {"Content-Type": "text/plain"}, 405, ""),
        ("GET", "/v1/stream/no-such-stream", None, {}, 404, ""),
    ]
    for method, path, body, headers, want, needle in cases:
        status, reply = http(loaded, method, path, body, headers)
        assert status == want, f"{method} {path} {body!r:.60}: {status} {reply[:300]!r}"
        if needle:
            assert needle.lower() in reply.decode(errors="replace").lower(), f"{method} {path}: {reply[:300]!r}"
    # Names that try to leave the data directory are just names (or refused).
    for name in ["..%2F..%2F..%2Fetc%2Fpasswd", "%00nul", "a%2F..%2F..%2Fb"]:
        status, _ = http(loaded, "GET", f"/v1/stream/{name}")
        assert status in (400, 404), name
    assert_serving(loaded, before)


BAD_SQL = [
    ("SELEC 1", "SELEC"),
    ("SELECT nope FROM metrics", "nope"),
    ("SELECT * FROM passwd", "passwd"),
    ("COPY (SELECT 1) TO '/tmp/streamdb-hostile.csv'", "read-only"),
    ("CREATE EXTERNAL TABLE p (l VARCHAR) STORED AS CSV LOCATION '/etc/passwd'", "read-only"),
    ("INSERT INTO metrics (value) VALUES (1)", "read-only"),
    ("SET datafusion.execution.batch_size = 1", "read-only"),
    ("SELECT " + "(" * 5000 + "1" + ")" * 5000, "recursion"),
    ("SELECT time_bucket('5 parsecs', time) FROM metrics", "width"),
    ("SELECT 1; DROP TABLE metrics", "one SQL statement"),
    ("SELECT $1", "parameter"),
]


def test_bad_sql_over_http_and_flight(loaded):
    before = state(loaded)
    client = loaded.flight()
    for sql, needle in BAD_SQL:
        status, body = http(loaded, "GET", "/v1/query?sql=" + urllib.parse.quote(sql))
        assert status == 400, f"{sql[:60]}: {status} {body[:300]!r}"
        assert needle.lower() in json.loads(body)["error"].lower(), f"{sql[:60]}: {body[:300]!r}"
        with pytest.raises(pa.ArrowInvalid) as e:
            info = client.get_flight_info(fl.FlightDescriptor.for_command(sql))
            client.do_get(info.endpoints[0].ticket).read_all()
        assert needle.lower() in server_message(e.value).lower(), f"{sql[:60]}: {e.value}"
    # Operator chains parse into trees as deep as they are long: past the
    # bound they are refused before parsing (a stack overflow would abort
    # the server); up to it they run, over HTTP and Flight.
    long_sum = "SELECT " + "+".join(["1"] * 20_000) + " AS n"
    status, body = http(loaded, "POST", "/v1/query", long_sum.encode())
    assert status == 400 and b"too complex" in body, body[:300]
    or_chain = ("SELECT count(*) AS n FROM metrics WHERE "
                + " OR ".join(f"value = {i}" for i in range(990)))
    status, body = http(loaded, "POST", "/v1/query", or_chain.encode())
    assert status == 200 and json.loads(body) == [{"n": before[0]}], body[:300]
    info = client.get_flight_info(fl.FlightDescriptor.for_command(or_chain))
    assert client.do_get(info.endpoints[0].ticket).read_all().column("n")[0].as_py() == before[0]
    import os
    assert not os.path.exists("/tmp/streamdb-hostile.csv")
    assert_serving(loaded, before)


def test_malformed_flight_calls(loaded):
    before = state(loaded)
    client = loaded.flight()
    calls = {
        "garbage command": lambda: client.get_flight_info(fl.FlightDescriptor.for_command(b"\xff\x00\x13garbage")),
        "garbage schema command": lambda: client.get_schema(fl.FlightDescriptor.for_command(b"\xff\x00")),
        "garbage ticket": lambda: client.do_get(fl.Ticket(b"\x08\xff\xff\xff")).read_all(),
        "SQL text as a ticket": lambda: client.do_get(fl.Ticket(b"SELECT * FROM metrics")).read_all(),
        "unknown action": lambda: list(client.do_action(fl.Action("drop_everything", b""))),
        "path descriptor info": lambda: client.get_flight_info(fl.FlightDescriptor.for_path("metrics", "x")),
        "garbage exchange": lambda: client.do_exchange(fl.FlightDescriptor.for_command(b"\xff\xfe"))[1].read_chunk(),
        "bad subscribe": lambda: client.do_exchange(
            fl.FlightDescriptor.for_command(b"SUBSCRIBE TO SELEC 1"))[1].read_chunk(),
    }
    for name, call in calls.items():
        with pytest.raises((pa.ArrowException, fl.FlightError)) as e:
            call()
        message = server_message(e.value)
        assert message and "DecodeError" not in message and "panicked" not in message, f"{name}: {e.value}"
    # DoPut to an unknown path and with a batch the server cannot use.
    for path, b in [("other", good_batch()),
                    ("metrics", pa.record_batch({"value": [1.0]})),
                    ("metrics", pa.record_batch({"time": ["yesterday"], "metric": ["m"], "value": [1.0]}))]:
        with pytest.raises(pa.ArrowInvalid) as e:
            do_put(loaded, b, path=path)
        assert server_message(e.value), e.value
    # A plain SQL command (what a pyarrow user writes) runs.
    info = client.get_flight_info(fl.FlightDescriptor.for_command("SELECT count(*) AS n FROM metrics"))
    assert client.do_get(info.endpoints[0].ticket).read_all().column("n")[0].as_py() == before[0]
    assert_serving(loaded, before)
