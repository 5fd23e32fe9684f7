"""SUBSCRIBE TO SELECT over DoExchange, with pyarrow and the CLI.

- a pyarrow client applying the snapshot and updates (the code of
  clients/python/subscribe.py) ends with exactly the SELECT's answer, with
  late points into old buckets and concurrent writers;
- the example script runs;
- `streamdb subscribe` prints the snapshot and updates and exits 0 on Ctrl-C;
- queries that cannot be maintained get INVALID_ARGUMENT with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from streamdb_helpers import REPO_ROOT, do_put, metric, scrape, streamdb_bin

T0 = 1_705_276_800_000_000
SCHEMA = pa.schema([("time", pa.timestamp("us", tz="UTC")), ("metric", pa.string()),
                    ("host", pa.string()), ("value", pa.float64())])


def load_example():
    path = REPO_ROOT / "clients" / "python" / "subscribe.py"
    spec = importlib.util.spec_from_file_location("subscribe_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_batch(rng: random.Random, n: int) -> pa.RecordBatch:
    # Times spread over 60 s, so later batches keep landing in old buckets.
    times = [T0 + rng.randrange(60_000_000) for _ in range(n)]
    hosts = [rng.choice(["a", "b", "c"]) for _ in range(n)]
    values = [rng.randrange(400) / 4 for _ in range(n)]  # exact sums
    return pa.record_batch([pa.array(times, pa.timestamp("us", tz="UTC")), pa.array(["cpu"] * n),
                            pa.array(hosts), pa.array(values)], schema=SCHEMA)


def tail_offset(srv) -> str:
    return srv.status()["stream"]["next_offset"]


def test_pyarrow_client_applying_updates_matches_the_select(streamdb_server):
    srv = streamdb_server
    example = load_example()
    rng = random.Random(7)
    do_put(srv, random_batch(rng, 200))
    client = fl.connect(srv.grpc)
    writer, reader = client.do_exchange(fl.FlightDescriptor.for_command(f"SUBSCRIBE TO {example.QUERY}"))
    assert reader.schema.names == ["bucket", "host", "avg_value"]
    view: dict = {}
    kinds = [m["kind"] for m in example.apply_updates(reader, view, until=tail_offset(srv))]
    assert kinds[0] == "snapshot"

    def write(seed):
        r = random.Random(seed)
        for _ in range(15):
            do_put(srv, random_batch(r, r.randrange(1, 50)))

    threads = [threading.Thread(target=write, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = [m["kind"] for m in example.apply_updates(reader, view, until=tail_offset(srv))]
    assert "update" in kinds
    writer.close()

    expected = srv.sql(example.QUERY).to_pylist()
    assert {k: v for k, v in view.items()} == {(r["bucket"], r["host"]): r for r in expected}


def test_example_script_runs(streamdb_server):
    do_put(streamdb_server, random_batch(random.Random(1), 20))
    out = subprocess.run([sys.executable, str(REPO_ROOT / "clients/python/subscribe.py"),
                          streamdb_server.grpc, "1.5"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("snapshot at offset"), out.stdout


def test_cli_prints_snapshot_and_updates_and_exits_on_ctrl_c(streamdb_server):
    srv = streamdb_server
    proc = subprocess.Popen([str(streamdb_bin()), "subscribe", "--server", srv.http,
                             "SELECT tags['host'] AS host, count(*) AS n FROM metrics GROUP BY 1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("-- snapshot at offset"), first
        do_put(srv, pa.record_batch([pa.array([T0, T0 + 1], pa.timestamp("us", tz="UTC")),
                                     pa.array(["cpu"] * 2), pa.array(["web-1"] * 2),
                                     pa.array([1.0, 2.0])], schema=SCHEMA))
        lines = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "web-1" in line:
                break
        text = "".join(lines)
        assert "-- update at offset" in text and "| web-1 | 2 |" in text, text
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
    assert rc == 0, proc.stderr.read()


@pytest.mark.parametrize("select, reason", [
    ("SELECT avg(value) FROM metrics GROUP BY metric ORDER BY 1", "ORDER BY"),
    ("SELECT value FROM metrics WHERE time > now() - '1m'", "now()"),
    ("SELECT median(value) FROM metrics", "median"),
    ("SELECT nope FROM metrics", "nope"),
])
def test_unmaintainable_queries_are_refused_with_the_reason(streamdb_server, select, reason):
    client = fl.connect(streamdb_server.grpc)
    writer, reader = client.do_exchange(fl.FlightDescriptor.for_command(f"SUBSCRIBE TO {select}"))
    # INVALID_ARGUMENT is ArrowInvalid in pyarrow.
    with pytest.raises(pa.ArrowInvalid) as err:
        reader.read_chunk()
    assert reason in str(err.value)
    with pytest.raises(pa.ArrowInvalid):
        writer.close()  # the call already ended with that error


def test_server_stops_promptly_with_live_readers(streamdb_server):
    """Open subscriptions, SSE readers and long-polls must not hold a
    graceful shutdown open."""
    import urllib.request
    srv = streamdb_server
    client = fl.connect(srv.grpc)
    writer, reader = client.do_exchange(fl.FlightDescriptor.for_command("SUBSCRIBE TO SELECT count(*) FROM metrics"))
    reader.read_chunk()
    sse = urllib.request.urlopen(f"{srv.http}/v1/stream/metrics?offset=now&live=sse", timeout=30)
    sse.readline()
    started = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - started < 5
    with pytest.raises(StopIteration):  # the subscription ended cleanly
        while True:
            reader.read_chunk()


def test_a_subscriber_that_stops_reading_is_dropped_with_a_clear_error(streamdb_factory):
    srv = streamdb_factory(extra_args=["--subscriber-timeout", "1s"])
    client = fl.connect(srv.grpc)
    writer, reader = client.do_exchange(fl.FlightDescriptor.for_command(
        "SUBSCRIBE TO SELECT time, tags['host'] AS host, value FROM metrics"))
    reader.read_chunk()  # the (empty) snapshot; then this client stops reading
    batch = random_batch(random.Random(7), 50_000)
    # Updates of about 1 MB each: the transport's windows and the
    # 16-message outbox fill, and the next update waits past the timeout.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        do_put(srv, batch)
        time.sleep(0.3)
        if metric(scrape(srv), "streamdb_subscriptions") == 0:
            break
    m = scrape(srv)
    assert metric(m, "streamdb_subscriptions") == 0, "the stalled subscription was not dropped"
    assert metric(m, "streamdb_limit_rejections_total", limit="slow_subscriber") >= 1
    # Reading now drains what was queued, then says why it ended.
    with pytest.raises(pa.ArrowException) as e:
        for _ in range(10_000):
            reader.read_chunk()
    assert "did not take an update" in str(e.value), e.value
    assert "memory" not in str(e.value), e.value
