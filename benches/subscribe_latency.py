"""Continuous-query latency: how long after a write is acknowledged does its
update reach a subscriber?

    python benches/subscribe_latency.py [--bin target/release/streamdb]
        [--probes 200] [--load-rows-per-s 0] [--subscribers 1] [--aggregate-load]

Starts a server on a fresh data dir, opens `--subscribers` pyarrow DoExchange
subscriptions to a GROUP BY query (default emit interval, 100 ms), then
writes probe points one at a time with DoPut, each in a group of its own,
and records when each subscriber receives that group's update. Optional
background load: a writer sending `--load-rows-per-s` rows of another
metric in 10k-row batches; with `--aggregate-load` the subscriptions
aggregate every load row too (no `WHERE metric = 'probe'`), otherwise the
scan skips the load's series. Prints latency percentiles measured from the
DoPut acknowledgement and from the start of the DoPut, and the load
writer's achieved rate and DoPut latency (the cost subscribers put on
ingest at that rate).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

import pyarrow as pa
import pyarrow.flight as fl

QUERY = ("SUBSCRIBE TO SELECT time_bucket('5s', time) AS bucket, tags['host'] AS host, avg(value) AS v "
         "FROM metrics WHERE metric = 'probe' GROUP BY 1, 2")
QUERY_ALL = ("SUBSCRIBE TO SELECT time_bucket('5s', time) AS bucket, tags['host'] AS host, avg(value) AS v "
             "FROM metrics GROUP BY 1, 2")
SCHEMA = pa.schema([("time", pa.timestamp("us", tz="UTC")), ("metric", pa.string()),
                    ("host", pa.string()), ("value", pa.float64())])
T0 = 1_705_276_800_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def put(client, batch):
    w, r = client.do_put(fl.FlightDescriptor.for_path("metrics"), batch.schema)
    w.write_batch(batch)
    w.done_writing()
    r.read()
    w.close()


def percentiles(xs):
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return {"median": statistics.median(xs), "p90": pick(0.90), "p99": pick(0.99), "max": xs[-1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/streamdb")
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--load-rows-per-s", type=int, default=0)
    ap.add_argument("--subscribers", type=int, default=1)
    ap.add_argument("--aggregate-load", action="store_true",
                    help="subscribe to every metric, so subscribers aggregate the load as well")
    ap.add_argument("--max-ingest-seconds", type=float, default=0,
                    help="instead of probes: DoPut 50k-row batches as fast as possible for this long "
                         "with the subscribers attached, and report rows/s")
    a = ap.parse_args()

    port = free_port()
    data = tempfile.mkdtemp(prefix="sdb-sub-")
    server = subprocess.Popen([a.bin, "start", "--data-dir", data, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        url = f"grpc://127.0.0.1:{port}"
        arrivals = [dict() for _ in range(a.subscribers)]
        readers = []
        for i in range(a.subscribers):
            c = fl.connect(url)
            writer, reader = c.do_exchange(fl.FlightDescriptor.for_command(QUERY_ALL if a.aggregate_load else QUERY))
            reader.read_chunk()  # snapshot

            def read(reader=reader, seen=arrivals[i]):
                try:
                    while True:
                        chunk = reader.read_chunk()
                        now = time.perf_counter()
                        if chunk.data is not None:
                            for host in chunk.data.column("host").to_pylist():
                                seen.setdefault(host, now)
                except Exception:
                    return

            t = threading.Thread(target=read, daemon=True)
            t.start()
            readers.append((writer, t))

        stop = threading.Event()
        load_puts = []  # (started, seconds) of each load DoPut
        if a.load_rows_per_s:
            def load():
                c = fl.connect(url)
                n, i = 10_000, 0
                while not stop.is_set():
                    started = time.perf_counter()
                    times = pa.array([T0 + i * n + k for k in range(n)], pa.timestamp("us", tz="UTC"))
                    put(c, pa.record_batch([times, pa.array(["load"] * n), pa.array([f"h{k % 100}" for k in range(n)]),
                                            pa.array([float(k) for k in range(n)])], schema=SCHEMA))
                    load_puts.append((started, time.perf_counter() - started))
                    i += 1
                    time.sleep(max(0.0, n / a.load_rows_per_s - (time.perf_counter() - started)))
            threading.Thread(target=load, daemon=True).start()
            time.sleep(1.0)

        client = fl.connect(url)
        if a.max_ingest_seconds:
            n, rows, i = 50_000, 0, 0
            started = time.perf_counter()
            while time.perf_counter() - started < a.max_ingest_seconds:
                times = pa.array([T0 + i * n + k for k in range(n)], pa.timestamp("us", tz="UTC"))
                put(client, pa.record_batch([times, pa.array(["probe"] * n), pa.array([f"h{k % 100}" for k in range(n)]),
                                             pa.array([float(k % 1000) for k in range(n)])], schema=SCHEMA))
                rows += n
                i += 1
            rate = rows / (time.perf_counter() - started)
            print(json.dumps({"subscribers": a.subscribers, "ingest_rows_per_s": round(rate)}))
            return
        sent, acked = {}, {}
        for i in range(a.probes):
            host = f"probe-{i}"
            batch = pa.record_batch([pa.array([T0 + i], pa.timestamp("us", tz="UTC")), pa.array(["probe"]),
                                     pa.array([host]), pa.array([1.0])], schema=SCHEMA)
            sent[host] = time.perf_counter()
            put(client, batch)
            acked[host] = time.perf_counter()
            time.sleep(0.02)
        time.sleep(1.5)
        stop.set()
        load = {}
        if load_puts:
            span = load_puts[-1][0] + load_puts[-1][1] - load_puts[0][0]
            load = {"load_rows_per_s_achieved": round(len(load_puts) * 10_000 / span),
                    "load_put_ms": {k: round(v * 1000, 1) for k, v in
                                    percentiles([d for _, d in load_puts]).items()}}
        from_ack, from_send, missing = [], [], 0
        for seen in arrivals:
            for host in sent:
                if host not in seen:
                    missing += 1
                    continue
                from_ack.append((seen[host] - acked[host]) * 1000)
                from_send.append((seen[host] - sent[host]) * 1000)
        result = {
            "probes": a.probes, "subscribers": a.subscribers, "load_rows_per_s": a.load_rows_per_s,
            "aggregate_load": a.aggregate_load, **load,
            "missing": missing,
            "ms_after_ack": {k: round(v, 1) for k, v in percentiles(from_ack).items()} if from_ack else None,
            "ms_after_send": {k: round(v, 1) for k, v in percentiles(from_send).items()} if from_send else None,
        }
        print(json.dumps(result))
        for w, _ in readers:
            try:
                w.close()
            except Exception:
                pass
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
