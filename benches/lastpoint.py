#!/usr/bin/env python3
"""TSBS lastpoint (q4: the newest value of every series) for a given number
of series, with the last-value cache on and off, through ADBC.

For each series count: a fresh server, `--series` series (hosts of ten
metrics each, as TSBS cpu-only has), `--points` points each ten seconds
apart, flushed to chunks (the cache is built from them on first use),
then q4 timed `--runs` times. Reports the client's wall time (execute and
fetch, as the peers' harness measures) and the server's time per query:
the mean of `streamdb_query_seconds{protocol="flight"}` over the runs
(DoGet: execution and streaming, not the planning GetFlightInfo did).

    python benches/lastpoint.py --bin target/release/streamdb \\
        [--series 1000 1000000] [--points 2] [--runs 30]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import adbc_driver_flightsql.dbapi as fsql
import pyarrow as pa
import pyarrow.flight as fl

Q4 = """SELECT tags['hostname'] AS h, metric, last_value(value ORDER BY time) AS v
        FROM metrics GROUP BY h, metric"""
T0 = 1_705_276_800_000_000


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, path):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30).read()


def server_seconds(port):
    text = http(port, "/metrics").decode()
    get = lambda name: float(re.search(name + r'\{protocol="flight"\} (\S+)', text).group(1)) \
        if re.search(name + r'\{protocol="flight"\}', text) else 0.0
    return get("streamdb_query_seconds_sum"), get("streamdb_query_seconds_count")


def load(port, series, points):
    client = fl.connect(f"grpc://127.0.0.1:{port}")
    step = 200_000
    for start in range(0, series, step):
        ids = range(start, min(series, start + step))
        rows = [(i, p) for p in range(points) for i in ids]
        table = pa.table({
            "time": pa.array([T0 + p * 10_000_000 for _, p in rows], pa.timestamp("us", tz="UTC")),
            "metric": [f"m{i % 10}" for i, _ in rows],
            "hostname": [f"host_{i // 10}" for i, _ in rows],
            "value": [float(i + p) for i, p in rows],
        })
        w, _ = client.do_put(fl.FlightDescriptor.for_path("metrics"), table.schema)
        for b in table.to_batches(max_chunksize=50_000):
            w.write_batch(b)
        w.close()
    client.close()


def measure(binary, series, points, runs, cache):
    tmp = tempfile.mkdtemp(prefix="lastpoint-")
    port = free_port()
    args = [binary, "start", "--data-dir", tmp, "--port", str(port), "--flush-interval", "1s",
            "--compaction-interval", "0", "--max-series", str(max(series, 10_000_000))]
    if not cache:
        args += ["--last-value-cache-series", "0"]
    log = open(tmp + ".log", "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                http(port, "/health")
                break
            except Exception:
                time.sleep(0.1)
        load(port, series, points)
        while __import__("json").loads(http(port, "/v1/status"))["buffer"]["rows"]:
            time.sleep(0.5)
        with fsql.connect(f"grpc://127.0.0.1:{port}", autocommit=True) as conn:
            with conn.cursor() as cur:  # warm: builds the cache
                cur.execute(Q4)
                first = cur.fetch_arrow_table()
            assert first.num_rows == series, (first.num_rows, series)
            s0, n0 = server_seconds(port)
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute(Q4)
                    cur.fetch_arrow_table()
                times.append((time.perf_counter() - t) * 1000)
            s1, n1 = server_seconds(port)
        return statistics.median(times), (s1 - s0) / max(n1 - n0, 1) * 1000
    finally:
        p.terminate()
        p.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
        os.unlink(tmp + ".log")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--series", type=int, nargs="+", default=[1000, 1_000_000])
    ap.add_argument("--points", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    print("| series | cache | client median (ms) | server mean (ms) |")
    print("|---|---|---|---|")
    for n in a.series:
        for cache in (True, False):
            client, server = measure(a.bin, n, a.points, a.runs if n <= 100_000 else max(a.runs // 6, 3), cache)
            print(f"| {n:,} | {'on' if cache else 'off'} | {client:.2f} | {server:.2f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
