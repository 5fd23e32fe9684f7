"""Query timings on one pinned data state, for A/B runs of two builds.

Ingests the TSBS set into a fresh data dir with `--flush-interval 1s
--compaction-interval 0`, waits until `/v1/status` shows an empty write
buffer (every row in an Arrow chunk, nothing compacted), then runs
`benches/sql_queries.py`. With `--show-state` it instead starts the server
with its defaults, waits for 10 s of quiet disk the way the peers' harness
does, and prints the state the queries would have read (rows still
buffered, manifest version, chunks): on a fresh dir that state depends on
when the flush timer fires, which is why A/B runs pin it.

    python benches/pinned_state.py --bin target/release/streamdb \
        --data /tmp/bench-data/cpu_full.parquet [--show-state] [q1 q2 ...]

Needs the peers' harness (`../shared/bench`, or SHARED_BENCH) on the path.
"""
import argparse, concurrent.futures as cf, json, os, shutil, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("SHARED_BENCH", os.path.join(ROOT, "..", "shared", "bench")))
import common as C  # noqa: E402
import peer_streamdb as P  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def status(port):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--show-state", action="store_true")
    ap.add_argument("only", nargs="*", help="query names for sql_queries.py (default q1..q5)")
    a = ap.parse_args()
    batches = pq.read_table(a.data).to_batches(max_chunksize=10_000)
    groups = [batches[i::4] for i in range(4)]
    tmp, port = C.scratch_dir("pinned-"), C.free_port()
    args = [a.bin, "start", "--data-dir", tmp, "--port", str(port)]
    if not a.show_state:
        args += ["--flush-interval", "1s", "--compaction-interval", "0"]
    p = C.start_server(args, tmp + ".log")
    try:
        C.wait_http(f"http://127.0.0.1:{port}/health", proc=p)
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(4) as ex:
            n = sum(ex.map(lambda g: P.put_batches(port, g), groups))
        print(f"ingest {n / (time.perf_counter() - t0):,.0f} points/s", flush=True)
        if a.show_state:
            C.wait_disk_stable(tmp, quiet_s=10.0, timeout=300)
            st = status(port)
            print("buffered rows", st["buffer"]["rows"], "manifest", st["storage"]["manifest_version"],
                  "chunks", st["storage"]["chunks"], "compacted", st["storage"]["compacted_chunks"])
            return
        while status(port)["buffer"]["rows"] != 0:
            time.sleep(0.5)
        C.wait_disk_stable(tmp, quiet_s=3.0, timeout=300)
        st = status(port)
        print("chunks", st["storage"]["chunks"], "compacted", st["storage"]["compacted_chunks"], flush=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "benches", "sql_queries.py"),
                        "--port", str(port), "--runs", "15", *a.only], check=True)
    finally:
        C.stop_server(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
