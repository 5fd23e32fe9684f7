"""Crash safety: kill -9 during concurrent ingest, three rounds on one data dir.

Each round starts the server with `--flush-interval 1s` (so chunks are flushed
while writes continue), runs 4 writer threads that each send batches of 2000
rows, one DoPut stream per batch, and SIGKILLs the server while they are still
writing. A batch counts as acknowledged only once its PutResult (rows, offset)
was received. Every batch carries tags `writer` and `batch` with an id unique
across rounds. After each restart, SQL must show:
- every acknowledged batch (of any round so far) with exactly 2000 rows;
- every other attempted batch with 2000 rows or none (no partial batch);
- no batch that was never sent, no duplicate rows;
- status rows == SQL total; sampled batches with exact times and values.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.flight as fl

ROUNDS = 3
WRITERS = 4
ROWS = 2000
MIN_INGEST_S, MAX_INGEST_S, ENOUGH_ACKS = 1.2, 3.0, 200
T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z, Unix micros
SCHEMA = pa.schema([("time", pa.timestamp("us", tz="UTC")), ("metric", pa.string()),
                    ("writer", pa.string()), ("batch", pa.string()), ("value", pa.float64())])


def batch_id(rnd: int, w: int, i: int) -> str:
    return f"r{rnd}-w{w}-b{i}"


def expected_rows(rnd: int, w: int, i: int) -> tuple[list[int], list[float]]:
    first = ((rnd * WRITERS + w) * 1_000_000 + i) * ROWS
    times = [T0 + first + k for k in range(ROWS)]
    values = [(first + k) / 8 for k in range(ROWS)]  # exact in float64
    return times, values


def make_batch(rnd: int, w: int, i: int) -> pa.RecordBatch:
    times, values = expected_rows(rnd, w, i)
    return pa.record_batch([pa.array(times, pa.timestamp("us", tz="UTC")),
                            pa.array(["crash"] * ROWS), pa.array([f"w{w}"] * ROWS),
                            pa.array([batch_id(rnd, w, i)] * ROWS), pa.array(values)],
                           schema=SCHEMA)


@dataclass
class Ledger:
    attempted: set = field(default_factory=set)
    acked: set = field(default_factory=set)
    unexpected: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def close_quietly(writer) -> None:
    try:
        if writer is not None:
            writer.close()
    except Exception:  # noqa: BLE001 - the server is gone; nothing to report
        pass


def writer_loop(uri: str, rnd: int, w: int, killed: threading.Event, ledger: Ledger) -> None:
    client = fl.connect(uri)
    opts = fl.FlightCallOptions(timeout=15)
    i = 0
    while not killed.is_set():
        bid, batch = batch_id(rnd, w, i), make_batch(rnd, w, i)
        with ledger.lock:
            ledger.attempted.add(bid)
        writer = None
        try:
            writer, reader = client.do_put(fl.FlightDescriptor.for_path("metrics"), SCHEMA,
                                           options=opts)
            writer.write_batch(batch)
            writer.done_writing()
            buf = reader.read()
            if buf is None:
                raise RuntimeError(f"{bid}: stream ended without a PutResult")
            meta = json.loads(buf.to_pybytes())
            with ledger.lock:
                if meta.get("rows") == ROWS:
                    ledger.acked.add(bid)  # the server's PutResult for this batch arrived
                else:
                    ledger.unexpected.append(f"{bid}: PutResult {meta}")
            writer.close()
        except Exception as e:  # noqa: BLE001 - expected once the server is killed
            if not killed.is_set():
                with ledger.lock:
                    ledger.unexpected.append(f"{bid}: {type(e).__name__}: {e}")
            close_quietly(writer)
            break
        i += 1
    client.close()


def ingest_then_kill(srv, rnd: int, ledger: Ledger) -> int:
    """Run the writers, SIGKILL the server mid-ingest; return this round's ack count."""
    killed = threading.Event()
    acked_before = len(ledger.acked)
    threads = [threading.Thread(target=writer_loop, args=(srv.grpc, rnd, w, killed, ledger),
                                daemon=True) for w in range(WRITERS)]
    for t in threads:
        t.start()
    start = time.monotonic()
    while True:
        time.sleep(0.05)
        elapsed = time.monotonic() - start
        with ledger.lock:
            acks = len(ledger.acked) - acked_before
        if elapsed >= MAX_INGEST_S or (elapsed >= MIN_INGEST_S and acks >= ENOUGH_ACKS):
            break
    killed.set()
    srv.kill9()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "writer thread hung after the server was killed"
    return len(ledger.acked) - acked_before


def verify(srv, ledger: Ledger) -> None:
    table = srv.sql("SELECT tags['batch'] AS b, count(*) AS n FROM metrics GROUP BY 1")
    counts = dict(zip(table.column("b").to_pylist(), table.column("n").to_pylist()))
    never_sent = set(counts) - ledger.attempted
    assert not never_sent, f"batches never sent are present: {sorted(never_sent)[:10]}"
    print(f"after restart: {len(ledger.attempted)} batches attempted, {len(ledger.acked)} "
          f"acknowledged, {len(counts)} present")
    lost = sorted(b for b in ledger.acked if counts.get(b, 0) != ROWS)
    assert not lost, f"acknowledged batches lost or partial: {[(b, counts.get(b, 0)) for b in lost[:10]]}"
    partial = sorted((b, n) for b, n in counts.items() if n != ROWS)
    assert not partial, f"partial or duplicated batches: {partial[:10]}"
    total = sum(counts.values())
    assert total == ROWS * len(counts)
    assert srv.count() == total
    assert srv.status()["rows"] == total

    for bid in sorted(ledger.acked)[:: max(1, len(ledger.acked) // 6)]:
        rnd, w, i = (int(part[1:]) for part in bid.split("-"))
        got = srv.sql("SELECT time, value, metric, tags['writer'] AS w FROM metrics "
                      f"WHERE tags['batch'] = '{bid}' ORDER BY time")
        times, values = expected_rows(rnd, w, i)
        assert got.column("time").cast(pa.int64()).to_pylist() == times, bid
        assert got.column("value").to_pylist() == values, bid
        assert set(got.column("metric").to_pylist()) == {"crash"}
        assert set(got.column("w").to_pylist()) == {f"w{w}"}


def test_kill9_during_concurrent_ingest(streamdb_factory):
    ledger = Ledger()
    # Small, frequent flushes: each round kills some mid-flush, and a flush
    # finishes well inside a round even in a debug build on a busy machine.
    srv = streamdb_factory(extra_args=["--flush-interval", "1s", "--flush-bytes", "2MiB"])
    for rnd in range(ROUNDS):
        acked = ingest_then_kill(srv, rnd, ledger)
        assert not ledger.unexpected, ledger.unexpected[:10]
        assert acked > 0, f"round {rnd}: no batch was acknowledged"
        srv.start()
        verify(srv, ledger)
    assert srv.status()["storage"]["chunks"] > 0, "no chunk was ever flushed during the test"
