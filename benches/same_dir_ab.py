#!/usr/bin/env python3
"""A/B of query timings on one data directory: the TSBS set is ingested
once (with the last build named, `--flush-interval 1s
--compaction-interval 0`, until the buffer is empty), then each build
serves that same directory in turn, three rounds, running
`benches/sql_queries.py` for the queries given. The state the queries
read is identical for every build, unlike two fresh ingests whose flush
timing differs.

    python benches/same_dir_ab.py "q1 q2 q5 q12 q13" base new
        (runs /tmp/streamdb-base and /tmp/streamdb-new; needs ../shared/bench)
"""
import sys, os, json, time, subprocess, concurrent.futures as cf, urllib.request, shutil
sys.path.insert(0, os.environ.get("SHARED_BENCH", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "bench")))
import common as C, peer_streamdb as P
import pyarrow.parquet as pq
Q = sys.argv[1].split()
batches = pq.read_table("/tmp/bench-data/cpu_full.parquet").to_batches(max_chunksize=10_000)
groups = [batches[i::4] for i in range(4)]
tmp, port = C.scratch_dir("same-"), C.free_port()
flags = ["--flush-interval", "1s", "--compaction-interval", "0"]
p = C.start_server([f"/tmp/streamdb-{sys.argv[-1]}", "start", "--data-dir", tmp, "--port", str(port)] + flags, tmp + ".log")
C.wait_http(f"http://127.0.0.1:{port}/health", proc=p)
with cf.ThreadPoolExecutor(4) as ex: list(ex.map(lambda g: P.put_batches(port, g), groups))
st = lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status"))
while st()["buffer"]["rows"]: time.sleep(0.5)
C.stop_server(p)
for rnd in range(3):
    for b in sys.argv[2:]:
        port = C.free_port()
        p = C.start_server([f"/tmp/streamdb-{b}", "start", "--data-dir", tmp, "--port", str(port)] + flags, tmp + ".log")
        C.wait_http(f"http://127.0.0.1:{port}/health", proc=p)
        print(f"=== {b} round {rnd}", flush=True)
        print("ingest 1 points/s", flush=True)
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sql_queries.py"), "--port", str(port), "--runs", "15", *Q])
        C.stop_server(p)
shutil.rmtree(tmp, ignore_errors=True)
