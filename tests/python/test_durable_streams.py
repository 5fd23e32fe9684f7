"""The `metrics` stream over the Durable Streams protocol, with real clients.

- curl's JSON point POST is durable (survives kill -9) and SQL-visible;
- an SSE reader sees points written by pyarrow DoPut as they arrive;
- HTTP and DoPut writes share one offset sequence;
- an invalid point rejects the whole body and changes nothing;
- `--source`: a second StreamDB follows the first's metrics stream and, with
  kill -9 during ingest, ends with every point exactly once;
- the official JavaScript client's IdempotentProducer writes each point once
  over a network that loses answers, and across a kill -9.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
import urllib.error
import urllib.request

import pyarrow as pa

from streamdb_helpers import do_put, rows_of

JS_CLIENT_VERSION = "0.2.7"

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z in Unix micros
SCHEMA = pa.schema([("time", pa.timestamp("us", tz="UTC")), ("metric", pa.string()),
                    ("host", pa.string()), ("value", pa.float64())])


def post(srv, body: bytes, content_type: str = "application/json", path: str = "metrics"):
    req = urllib.request.Request(f"{srv.http}/v1/stream/{path}", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get(srv, query: str, path: str = "metrics"):
    with urllib.request.urlopen(f"{srv.http}/v1/stream/{path}?{query}", timeout=10) as r:
        return r.status, r.headers, r.read()


def batch(n: int, start: int, host: str) -> pa.RecordBatch:
    return pa.record_batch([pa.array([T0 + start + i for i in range(n)], pa.timestamp("us", tz="UTC")),
                            pa.array(["cpu_usage"] * n), pa.array([host] * n),
                            pa.array([float(start + i) / 4 for i in range(n)])], schema=SCHEMA)


def test_curl_point_is_durable_and_queryable(streamdb_server):
    srv = streamdb_server
    point = {"time": "2024-01-15T00:00:00Z", "metric": "cpu_usage", "tags": {"host": "web-1"}, "value": 0.5}
    status, headers, _ = post(srv, json.dumps(point).encode())
    assert status == 204, headers
    assert headers["Stream-Next-Offset"] == "0000000000000001_0000000000000000"
    srv.restart(graceful=False)  # kill -9: acknowledged means durable
    t = srv.sql("SELECT time, metric, tags['host'] AS host, value FROM metrics")
    assert t.num_rows == 1
    row = t.to_pylist()[0]
    assert (row["metric"], row["host"], row["value"]) == ("cpu_usage", "web-1", 0.5)
    assert row["time"].isoformat() == "2024-01-15T00:00:00+00:00"


def test_sse_shows_doput_points_as_they_arrive(streamdb_server):
    srv = streamdb_server
    resp = urllib.request.urlopen(f"{srv.http}/v1/stream/metrics?offset=now&live=sse", timeout=10)
    assert resp.headers["Content-Type"] == "text/event-stream"

    def next_event() -> tuple[str, str]:
        kind, data = "", []
        while True:
            line = resp.readline().decode().rstrip("\n")
            if line == "" and kind:
                return kind, "\n".join(data)
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:])

    kind, control = next_event()  # the tail, before anything is written
    assert kind == "control" and json.loads(control)["upToDate"] is True
    do_put(srv, batch(3, 0, "web-7"))
    kind, data = next_event()
    assert kind == "data"
    points = json.loads(data)
    assert [(p["metric"], p["tags"], p["value"]) for p in points] == [
        ("cpu_usage", {"host": "web-7"}, v) for v in (0.0, 0.25, 0.5)]
    assert points[0]["time"] == "2024-01-15T00:00:00Z"
    kind, control = next_event()
    assert kind == "control" and json.loads(control)["streamNextOffset"] == "0000000000000001_0000000000000000"
    resp.close()


def test_http_and_doput_share_one_offset_sequence(streamdb_server):
    srv = streamdb_server
    put_offset = do_put(srv, batch(2, 0, "a"))[0]["offset"]
    status, headers, _ = post(srv, b'[{"time":1705276800000005,"metric":"m","value":1}]')
    assert status == 204
    tail = headers["Stream-Next-Offset"]
    assert tail > put_offset
    _, headers, body = get(srv, f"offset={put_offset}")
    messages = json.loads(body)
    assert [m["metric"] for m in messages] == ["cpu_usage", "cpu_usage", "m"]
    assert headers["Stream-Next-Offset"] == tail and headers["Stream-Up-To-Date"] == "true"
    # The next DoPut lands exactly at that tail.
    assert do_put(srv, batch(1, 9, "b"))[0]["offset"] == tail


def test_invalid_point_rejects_the_whole_body(streamdb_server):
    srv = streamdb_server
    post(srv, b'{"time":1705276800000000,"metric":"ok","value":1}')
    before = (srv.count(), get(srv, "offset=now")[1]["Stream-Next-Offset"])
    bad_bodies = [
        (b'[{"time":1,"metric":"a","value":1},{"time":"later","metric":"a","value":2}]', 400, "point 1"),
        (b'{"time":1,"metric":"a","value":1,"extra":true}', 400, "unknown field"),
        (b'{"time":1,"metric":"a"', 400, "invalid JSON"),
        (b'[]', 400, "no points"),
        (b'', 400, "empty body"),
    ]
    for body, want_status, want_text in bad_bodies:
        status, _, text = post(srv, body)
        assert status == want_status and want_text in text.decode(), (body, status, text)
    status, _, text = post(srv, b"1,2,3", content_type="text/csv")
    assert status == 409 and "content type" in text.decode()
    after = (srv.count(), get(srv, "offset=now")[1]["Stream-Next-Offset"])
    assert after == before


def test_source_consumer_is_exactly_once_across_kill9(streamdb_factory):
    # The remote flushes often in small segments, so the follower reads
    # records the remote has already flushed (kept by --stream-retention).
    remote = streamdb_factory(extra_args=["--flush-interval", "1s", "--segment-bytes", "64KiB"])
    follower = streamdb_factory(extra_args=["--source", f"{remote.http}/v1/stream/metrics",
                                            "--flush-interval", "1s"])
    batches, size = 60, 500
    done = threading.Event()

    def write():
        for i in range(batches):
            do_put(remote, batch(size, i * size, f"h{i % 5}"))
            time.sleep(0.06)  # ~4 s of writing: both kills land mid-stream
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    for _ in range(2):  # kill the follower mid-stream, twice, after a flush
        time.sleep(1.5)
        follower.kill9()
        follower.start()
    writer.join(60)
    assert done.is_set()
    deadline = time.monotonic() + 30
    while follower.count() < batches * size and time.monotonic() < deadline:
        time.sleep(0.2)
    query = "SELECT time, metric, tags, value FROM metrics"
    assert remote.count() == batches * size
    assert rows_of(follower.sql(query)) == rows_of(remote.sql(query))
    # Once more after a clean restart: the position is durable, nothing replays.
    follower.restart()
    time.sleep(1.0)
    assert follower.count() == batches * size
    source = follower.status()["source"]
    assert source["state"] == "following", source
    assert source["offset"] == remote.status()["stream"]["next_offset"], source
    scrape = urllib.request.urlopen(f"{follower.http}/metrics", timeout=10).read().decode()
    assert "\nstreamdb_source_following 1\n" in scrape


def js_client_dir() -> Path:
    """@durable-streams/client installed once per machine, with the test
    script beside it (ESM imports resolve from the script's directory)."""
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamdb-ds-client" / JS_CLIENT_VERSION
    if not (d / "node_modules" / "@durable-streams" / "client" / "package.json").exists():
        d.mkdir(parents=True, exist_ok=True)
        (d / "package.json").write_text('{"private": true, "type": "module"}')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                        f"@durable-streams/client@{JS_CLIENT_VERSION}"], cwd=d, check=True, timeout=300)
    shutil.copy(Path(__file__).parent.parent / "js" / "metrics_producer.mjs", d)
    return d


def test_js_idempotent_producer_writes_each_point_once(streamdb_server):
    srv, n = streamdb_server, 3000
    d = js_client_dir()

    def produce(metric: str, in_flight: int) -> dict:
        out = subprocess.run(["node", "metrics_producer.mjs", srv.http, metric, str(n), str(in_flight)], cwd=d,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        stats = json.loads(out.stdout)
        stats["statuses"] = {int(k): v for k, v in stats["statuses"].items()}
        assert set(stats["statuses"]) <= {200, 204, 409}, stats
        return stats

    def count(metric: str) -> list:
        return srv.sql(f"SELECT count(*) AS n, sum(value) AS s, count(DISTINCT time) AS times "
                       f"FROM metrics WHERE metric = '{metric}'").to_pylist()

    # One batch in flight: every resent request is a duplicate of a batch
    # just written (about 50 points a batch: many POSTs).
    serial = produce("serial", 1)
    batches = serial["posts"] - serial["resent"]
    assert batches >= 30 and serial["statuses"] == {200: batches, 204: serial["resent"]}, serial
    # Five in flight: out-of-order arrivals are 409 gaps the client waits
    # out; some lost answers are duplicates.
    pipelined = produce("pipelined", 5)
    assert pipelined["statuses"].get(204, 0) >= 1, pipelined
    for metric in ["serial", "pipelined"]:
        assert count(metric) == [{"n": n, "s": n * (n - 1) / 2, "times": n}], metric
    # The stream view holds each point once too: nothing was appended twice.
    _, _, body = get(srv, "offset=-1")
    assert len([m for m in json.loads(body) if m["metric"] in ("serial", "pipelined")]) == 2 * n
    assert srv.status()["stream"]["producers"] == 2  # js-serial, js-pipelined

    # After a kill -9 the producer table comes back from the log: each
    # session sent again (same batches, same sequence numbers) is answered
    # with duplicates (and gaps) and writes nothing.
    srv.restart(graceful=False)
    for metric, in_flight in [("serial", 1), ("pipelined", 5)]:
        again = produce(metric, in_flight)
        assert 200 not in again["statuses"], again
        assert count(metric)[0]["n"] == n
