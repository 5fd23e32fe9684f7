#!/usr/bin/env python3
"""Bytes per point after compaction, and q1..q5 before and after it.

Runs a release `streamdb start` on a fresh data dir in two configurations on
the same TSBS-shaped data set, written exactly as ../shared/bench/peer_streamdb.py
writes it (pyarrow DoPut, 100k-row batches over 4 connections):

- `flushed`: compaction off and no chunk cache: the chunks as the flusher
  writes them (Arrow IPC, LZ4), every query reading them from storage;
- `compacted`: compaction on (the default), waited for until no backlog and
  no garbage is left; bytes are measured then. Queries are timed twice:
  right after a restart (`cold`: the first run of each query fetches and
  decodes its chunks) and with the cache warm (median of the runs).

Bytes per point: the chunk files the manifest references over the points
(`chunks`), and every file in the data dir, stream log and manifests
included (`data dir`, apparent size and allocated blocks; the peer scripts
report allocated blocks). Query answers are checked against the DuckDB
reference of the shared harness; a wrong answer fails the run.

Usage: python benches/storage_e2e.py --data /tmp/bench-data/cpu_full.parquet
           [--bin target/release/streamdb] [--out results.json]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.environ.get("BENCH_DIR", os.path.join(HERE, "..", "..", "shared", "bench"))
sys.path.insert(0, BENCH)

import common as C  # noqa: E402
import peer_streamdb as P  # noqa: E402


def status(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=30) as r:
        return json.loads(r.read())


def start(binary, data_dir, extra):
    port = C.free_port()
    p = C.start_server([binary, "start", "--data-dir", data_dir, "--port", str(port), *extra],
                       os.path.join(data_dir, "..", f"storage-e2e-{port}.log"))
    C.wait_http(f"http://127.0.0.1:{port}/health", proc=p)
    return p, port


def wait(port, cond, what, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(port)
        if cond(st):
            return st
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}: {json.dumps(status(port)['storage'])}")


def queries(port, spec, ref, runs):
    import adbc_driver_flightsql.dbapi as fsql
    out = {}
    conn = fsql.connect(f"grpc://127.0.0.1:{port}", autocommit=True)
    try:
        for name, sql in P.build_queries(spec).items():
            def run():
                with conn.cursor() as cur:
                    cur.execute(sql)
                    return cur.fetch_arrow_table()
            times, t = C.run_timed(run, n=runs)
            ok, msg = C.compare(P.normalise(name, t), ref[name])
            if not ok:
                raise SystemExit(f"{name}: wrong answer: {msg}")
            out[name] = {"first_ms": round(times[0] * 1000, 1),
                         "median_ms": C.summarize_runs(times)["median_ms"]}
            C.log(f"  {name}: first {out[name]['first_ms']} ms, median {out[name]['median_ms']} ms")
    finally:
        conn.close()
    return out


def measure(binary, info, spec, ref, table, extra, compacted):
    tmp = tempfile.mkdtemp(prefix="streamdb-storage-", dir=os.environ.get("DATA_DIR", "/tmp/bench-data"))
    data_dir = os.path.join(tmp, "data")
    os.makedirs(data_dir)
    res = {}
    p, port = start(binary, data_dir, extra)
    try:
        batches = table.to_batches(max_chunksize=100_000)
        groups = [batches[i::4] for i in range(4)]
        import concurrent.futures as cf
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(4) as ex:
            written = sum(ex.map(lambda g: P.put_batches(port, g), groups))
        assert written == info["points"], written
        res["ingest_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        st = wait(port, lambda s: s["buffer"]["rows"] == 0, "the flush")
        if compacted:
            st = wait(port, lambda s: s["storage"]["compaction_backlog"] == 0
                      and s["storage"]["maintenance"]["garbage_pending"] == 0
                      and s["storage"]["compacted_chunks"] == s["storage"]["chunks"],
                      "compaction and garbage collection")
        res["settle_s"] = round(time.perf_counter() - t0, 1)
        time.sleep(2)  # let the log drop flushed segments
        st = status(port)
        app, alloc, files = C.dir_bytes(data_dir)
        res.update({
            "chunks": st["storage"]["chunks"],
            "chunk_bytes": st["storage"]["bytes"],
            "chunk_bytes_per_point": round(st["storage"]["bytes"] / info["points"], 3),
            "data_dir_bytes": app,
            "data_dir_bytes_per_point": round(app / info["points"], 3),
            "data_dir_allocated_bytes_per_point": round(alloc / info["points"], 3),
            "data_dir_files": files,
        })
        C.log(f"  {res['chunks']} chunks, {res['chunk_bytes_per_point']} B/point in chunks, "
              f"{res['data_dir_bytes_per_point']} B/point in the data dir "
              f"({res['data_dir_allocated_bytes_per_point']} allocated)")
        if compacted:
            C.stop_server(p)
            p, port = start(binary, data_dir, extra)
            C.log("  after a restart (cache empty):")
        res["queries"] = queries(port, spec, ref, runs=5)
        res["cache"] = status(port)["storage"]["cache"]
        C.log(f"  chunk cache: {res['cache']}")
    finally:
        C.stop_server(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "streamdb"))
    ap.add_argument("--out")
    a = ap.parse_args()
    import pyarrow.parquet as pq
    info = C.dataset_info(a.data)
    spec = C.QuerySpec(info)
    ref = C.reference_answers(info, spec)
    table = pq.read_table(info["path"])
    result = {"data": os.path.basename(a.data), "points": info["points"]}
    C.log("flushed chunks only (--compaction-interval 0s --chunk-cache-bytes 0):")
    result["flushed"] = measure(a.bin, info, spec, ref, table,
                                ["--compaction-interval", "0s", "--chunk-cache-bytes", "0"], False)
    C.log("compacted (--compaction-interval 1s; --gc-grace and --query-timeout 20s to see the end of GC):")
    result["compacted"] = measure(a.bin, info, spec, ref, table,
                                  ["--compaction-interval", "1s", "--gc-grace", "20s",
                                   "--query-timeout", "20s"], True)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
