"""Reading the `metrics` stream over HTTP after one large DoPut: how many
pages, how large each one is, how fast the points come back, and what the
server's memory does meanwhile.

    python benches/stream_read.py [--bin target/release/streamdb] [--rows 1000000]

Starts a server on a fresh data dir, writes `--rows` points as ONE DoPut
batch (one log record), then reads `/v1/stream/metrics` from `offset=-1`
page by page with `Stream-Next-Offset` until `Stream-Up-To-Date`, checking
that every point comes back once and in order. Prints pages, the largest
page, the read rate (overall, and counting only the time spent waiting on
HTTP responses, not the client's JSON parsing), and the server's peak RSS
(VmHWM) before and after the read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pyarrow as pa
import pyarrow.flight as fl

T0 = 1_705_276_800_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/streamdb")
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="streamdb-stream-read-")
    port = free_port()
    # Default limits: one DoPut may carry up to 4Mi rows and 256 MiB.
    srv = subprocess.Popen([args.bin, "start", "--data-dir", data, "--port", str(port), "--host", "127.0.0.1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        n = args.rows
        batch = pa.record_batch({
            "time": pa.array([T0 + i for i in range(n)], pa.timestamp("us", tz="UTC")),
            "metric": pa.array(["cpu_usage"] * n),
            "host": pa.array([f"host_{i % 100}" for i in range(n)]),
            "value": pa.array([float(i) for i in range(n)]),
        })
        client = fl.connect(f"grpc://127.0.0.1:{port}")
        w, r = client.do_put(fl.FlightDescriptor.for_path("metrics"), batch.schema)
        w.write_batch(batch)
        w.done_writing()
        r.read()
        w.close()
        rss_before = peak_rss_mib(srv.pid)

        offset, pages, largest, expected, http_secs = "-1", 0, 0, 0, 0.0
        start = time.perf_counter()
        while True:
            t = time.perf_counter()
            with urllib.request.urlopen(f"{base}/v1/stream/metrics?offset={offset}", timeout=60) as resp:
                body = resp.read()
                offset = resp.headers["Stream-Next-Offset"]
                done = resp.headers.get("Stream-Up-To-Date") == "true"
            http_secs += time.perf_counter() - t
            points = json.loads(body)
            for p in points:
                assert p["value"] == float(expected), (p, expected)
                expected += 1
            pages += 1
            largest = max(largest, len(body))
            if done:
                break
        secs = time.perf_counter() - start
        assert expected == n, f"read {expected} of {n} points"
        print(f"{n:,} points in one DoPut read back in {pages:,} pages "
              f"(largest {largest / 1024:.0f} KiB) in {secs:.2f} s: {n / secs:,.0f} points/s; "
              f"{http_secs:.2f} s of it waiting on HTTP ({n / http_secs:,.0f} points/s), the rest parsing JSON")
        print(f"server peak RSS: {rss_before:.0f} MiB after the write, {peak_rss_mib(srv.pid):.0f} MiB after the read")
    finally:
        srv.terminate()
        srv.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
