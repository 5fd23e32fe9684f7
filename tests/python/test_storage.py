"""Production storage against a real S3-compatible server.

`moto_server` (moto's standalone S3 server) runs on 127.0.0.1 for the module;
StreamDB reaches it through a small TCP relay the tests can take down and
bring back, which is what an outage of the S3 endpoint looks like to the
server (connections refused) without losing the bucket's contents. Covered:
- chunks, manifest and catalog live in the bucket, a second server with an
  empty data dir on the same prefix answers with every flushed row;
- one writer per prefix: a second server is refused with a clear error;
- the store going away: writes keep being acknowledged into the local stream
  log, and nothing is lost or doubled when it comes back;
- kill -9 while compaction runs: every acknowledged batch exactly once,
  orphans collected;
- retention drops expired data and its series.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid

import boto3
import pyarrow as pa
import pytest

from streamdb_helpers import do_put, free_port, streamdb_bin, wait_for

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z
HOUR = 3_600_000_000
SCHEMA = pa.schema([("time", pa.timestamp("us", tz="UTC")), ("metric", pa.string()),
                    ("host", pa.string()), ("batch", pa.string()), ("value", pa.float64())])


class Relay:
    """A TCP relay to the S3 server that can be stopped (refusing and
    cutting connections) and started again on the same port."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._sock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def stop(self) -> None:
        if self._sock:
            self._sock.close()
            self._sock = None
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                client, _ = s.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server; yields (boto3 client, relay)."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=log)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False
        wait_for(up, "moto_server to listen", timeout=60)
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        relay = Relay(port)
        relay.start()
        yield client, relay
        relay.stop()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def bucket(s3) -> tuple[str, dict]:
    """A fresh bucket, and the environment a server needs to use it."""
    client, relay = s3
    name = f"sdb-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    env = {"AWS_ENDPOINT": f"http://127.0.0.1:{relay.port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    return name, env


def keys(s3, name: str, prefix: str = "") -> list[str]:
    pages = s3[0].get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def make_batch(tag: str, rows: int, start: int, step: int = 10_000_000, hosts: int = 4) -> pa.RecordBatch:
    """`rows` points from `start`, spread over `hosts` hosts, values exact in float64."""
    seed = sum(tag.encode())
    return pa.record_batch([
        pa.array([start + i * step for i in range(rows)], pa.timestamp("us", tz="UTC")),
        pa.array(["cpu_usage" if i % 2 else "mem_used" for i in range(rows)]),
        pa.array([f"host-{i % hosts}" for i in range(rows)]),
        pa.array([tag] * rows),
        pa.array([(seed * 1000 + i) / 4 for i in range(rows)]),
    ], schema=SCHEMA)


SUMMARY = ("SELECT tags['batch'] AS batch, tags['host'] AS host, metric, count(*) AS n, sum(value) AS s, "
           "min(time) AS t0, max(time) AS t1 FROM metrics GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")


def start_args(name: str, prefix: str, flush: str = "200ms", compact: str = "300ms", *extra: str) -> list[str]:
    return ["--object-store", f"s3://{name}/{prefix}", "--flush-interval", flush,
            "--compaction-interval", compact, *extra]


def test_a_new_node_on_the_bucket_sees_every_flushed_row_and_a_second_writer_is_refused(
        s3, streamdb_factory, tmp_path):
    name, env = bucket(s3)
    a = streamdb_factory(extra_args=start_args(name, "prod/db1"), env=env)
    # 6 hours of points in 12 batches, each flushed on its own.
    for k in range(12):
        do_put(a, make_batch(f"b{k}", 3000, T0 + k * HOUR // 2))
        time.sleep(0.25)
    wait_for(lambda: a.status()["buffer"]["rows"] == 0, "everything flushed")
    st = wait_for(lambda: (s := a.status())["storage"]["compaction_backlog"] == 0
                  and s["storage"]["compacted_chunks"] > 0 and s, "compaction to catch up", timeout=30)
    assert st["storage"]["location"] == f"s3://{name}/prod/db1"
    assert st["storage"]["writer"]["lease_held"] is True
    expected = a.sql(SUMMARY)
    assert sum(expected.column("n").to_pylist()) == 36_000

    stored = keys(s3, name)
    assert all(k.startswith("prod/db1/") for k in stored), stored[:5]
    assert any(k.startswith("prod/db1/manifest/") for k in stored)
    assert any(k.startswith("prod/db1/catalog/series_") for k in stored)
    assert any(k.endswith(".parquet") for k in stored), "compacted chunks are Parquet"
    assert "prod/db1/writer.json" in stored
    assert not (a.data_dir / "chunks").exists(), "no chunk files on local disk"

    # A second server on the same prefix is refused while the first runs.
    other = tmp_path / "other"
    second = subprocess.run([str(streamdb_bin()), "start", "--data-dir", str(other), "--port",
                             str(free_port()), "--object-store", f"s3://{name}/prod/db1"],
                            env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=60)
    assert second.returncode != 0
    assert "another StreamDB" in second.stderr and "writing to this object-store prefix" in second.stderr, \
        second.stderr
    # A different prefix in the same bucket is a different database.
    c = streamdb_factory(extra_args=start_args(name, "prod/db2"), env=env)
    assert c.count() == 0
    c.stop()

    # Stopped cleanly, the first server hands the prefix over at once: a new
    # node with an empty data dir answers with every row.
    assert a.stop() == 0
    b = streamdb_factory(data_dir=tmp_path / "empty", extra_args=start_args(name, "prod/db1"), env=env)
    assert b.sql(SUMMARY).equals(expected)
    assert b.status()["storage"]["writer"]["epoch"] == 2
    # And it carries on writing where the first left off.
    do_put(b, make_batch("after", 100, T0 + 20 * HOUR))
    assert b.restart().count() == 36_100
    # The first node's data dir still holds its stream log; once the
    # prefix is free it can come back as the writer and see the new rows.
    assert b.stop() == 0
    assert a.start().count() == 36_100


def test_writes_are_acknowledged_while_the_store_is_down_and_nothing_is_lost(s3, streamdb_factory):
    name, env = bucket(s3)
    relay = s3[1]
    srv = streamdb_factory(extra_args=start_args(name, "p"), env=env)
    do_put(srv, make_batch("before", 2000, T0))
    wait_for(lambda: srv.status()["buffer"]["rows"] == 0, "first flush")
    relay.stop()
    try:
        for k in range(10):
            results = do_put(srv, make_batch(f"down{k}", 1000, T0 + HOUR + k * 10_000_000_000))
            assert results[0]["rows"] == 1000
        st = srv.status()
        assert st["buffer"]["rows"] == 10_000, "acknowledged, held in the stream log and buffer"
        assert srv.count() == 12_000, "and queryable"
        time.sleep(1.0)
        assert srv.status()["buffer"]["rows"] == 10_000, "not flushed while the store is down"
    finally:
        relay.start()
    wait_for(lambda: srv.status()["buffer"]["rows"] == 0, "the flush to succeed once the store is back",
             timeout=90)
    expected = srv.sql(SUMMARY)
    assert sum(expected.column("n").to_pylist()) == 12_000
    srv.kill9()
    srv.start()
    assert srv.sql(SUMMARY).equals(expected)


def batch_sum(tag: str, rows: int) -> float:
    seed = sum(tag.encode())
    return sum((seed * 1000 + i) / 4 for i in range(rows))


def expected_sum(last_round: int) -> float:
    return sum(batch_sum(f"r{r}-{k}", 1500) for r in range(last_round + 1) for k in range(8))


def test_kill9_during_compaction_loses_and_duplicates_nothing(s3, streamdb_factory):
    name, env = bucket(s3)
    args = start_args(name, "crash", "50ms", "100ms", "--gc-grace", "1s", "--query-timeout", "1s")
    srv = streamdb_factory(extra_args=args, env=env)
    rng = random.Random(7)
    sent = 0
    compacting_seen = 0
    for rnd in range(5):
        # Late and out-of-order batches over 8 hours keep old partitions
        # busy; each is acknowledged before the kill.
        for k in range(8):
            do_put(srv, make_batch(f"r{rnd}-{k}", 1500, T0 + rng.randrange(8) * HOUR + k * 7_000_000))
            sent += 1
        # Queries while compaction swaps chunks see every row exactly once.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            n, total = srv.sql("SELECT count(*) AS n, sum(value) AS s FROM metrics").to_pylist()[0].values()
            assert (n, total) == (sent * 1500, expected_sum(rnd)), "a query during compaction"
            st = srv.status()["storage"]["maintenance"]
            if st["compacting"]:
                compacting_seen += 1
                break
        time.sleep(rng.random() * 0.05)
        srv.kill9()
        srv.start()
    assert compacting_seen >= 2, "the kills should land while compaction runs"
    st = wait_for(lambda: (s := srv.status())["storage"]["compaction_backlog"] == 0
                  and s["buffer"]["rows"] == 0 and s, "compaction to finish", timeout=60)
    table = srv.sql("SELECT tags['batch'] AS batch, count(*) AS n, sum(value) AS s, "
                    "count(DISTINCT time) AS times FROM metrics GROUP BY 1 ORDER BY 1")
    got = {r["batch"]: (r["n"], r["s"], r["times"]) for r in table.to_pylist()}
    want = {f"r{rnd}-{k}": (1500, batch_sum(f"r{rnd}-{k}", 1500), 1500)
            for rnd in range(5) for k in range(8)}
    assert got == want
    assert st["rows"] == sent * 1500
    # Files left by the kills are collected: in the end the bucket holds
    # exactly what the manifest references.
    def settled():
        s = srv.status()["storage"]
        chunks = [k for k in keys(s3, name, "crash/chunks/")]
        return len(chunks) == s["chunks"] + s["maintenance"]["garbage_pending"] and s["maintenance"][
            "garbage_pending"] == 0
    wait_for(settled, "orphans and garbage to be deleted", timeout=60)


def test_retention_drops_expired_chunks_and_series(streamdb_factory):
    now = int(time.time() * 1_000_000)
    srv = streamdb_factory(extra_args=["--retention", "2h", "--compaction-interval", "200ms",
                                       "--flush-interval", "100ms"])
    old = make_batch("old", 400, T0, hosts=8)  # host-0..7, 2024
    recent = make_batch("recent", 400, now - 600_000_000, step=1_000_000, hosts=2)  # host-0..1
    do_put(srv, [old])
    do_put(srv, [recent])
    st = wait_for(lambda: (s := srv.status())["rows"] == 400 and s, "expired rows to go", timeout=30)
    # Series are (metric, host, batch): 8 old ones, 2 recent ones.
    st = wait_for(lambda: (s := srv.status())["series"] == 2 and s, "expired series to go", timeout=30)
    assert st["storage"]["retention_seconds"] == 7200
    assert st["storage"]["maintenance"]["expired_chunks"] >= 1
    assert st["storage"]["maintenance"]["series_removed"] == 8
    assert st["time_range"]["min"] > "2024-12"
    hosts = srv.sql("SELECT DISTINCT tags['host'] AS h FROM metrics ORDER BY 1").column("h").to_pylist()
    assert hosts == ["host-0", "host-1"]
    assert srv.sql("SELECT count(*) AS n FROM metrics WHERE tags['batch'] = 'old'").column("n")[0].as_py() == 0
    out = subprocess.run([str(streamdb_bin()), "status", "--server", srv.http], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "keep 2h" in out.stdout and "oldest data kept" in out.stdout, out.stdout
    # After a restart the catalog is still the cleaned one.
    assert srv.restart().status()["series"] == 2
