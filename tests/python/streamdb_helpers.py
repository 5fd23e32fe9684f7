"""Helpers shared by the Python interop tests: the `Server` process wrapper
(start on a free 127.0.0.1 port, wait for /health, SIGTERM/SIGKILL, restart on
the same data dir), status over HTTP, SQL over ADBC Flight SQL, DoPut over
pyarrow.flight, and result normalisation for whole-table comparisons.

The binary is `$STREAMDB_BIN` (default `target/debug/streamdb` at the repo
root); relative paths are taken from the repo root.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as fl
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
RPC_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 60

_LIVE: set["Server"] = set()


def streamdb_bin() -> Path:
    path = Path(os.environ.get("STREAMDB_BIN", "target/debug/streamdb"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `streamdb start` process bound to a data dir; restartable."""

    def __init__(self, data_dir: Path, log_path: Path, extra_args: list[str], ca_file: Path | None = None,
                 env: dict | None = None):
        # With `ca_file`, the server runs TLS (its certificate names localhost).
        self.ca_file = ca_file
        # Added to the environment (the object-store settings, for example).
        self.env = dict(env or {})
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        if self.ca_file:
            return f"https://localhost:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc(self) -> str:
        if self.ca_file:
            return f"grpc+tls://localhost:{self.port}"
        return f"grpc://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Server":
        """Start on a fresh port (so a killed predecessor's socket cannot clash)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        binary = streamdb_bin()
        if not binary.exists():
            pytest.fail(f"streamdb binary not found at {binary} (build it or set STREAMDB_BIN)")
        self.port = free_port()
        cmd = [str(binary), "start", "--data-dir", str(self.data_dir),
               "--port", str(self.port), "--host", "127.0.0.1", *self.extra_args]
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env={**os.environ, **self.env})
        _LIVE.add(self)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"streamdb exited with {self.proc.returncode} before ready\n"
                            + self.log_tail())
            try:
                with urllib.request.urlopen(self.http + "/health", timeout=2, context=self.ssl_context()) as r:
                    if r.status == 200 and r.read().decode().strip() == "ok":
                        return
            except OSError as e:  # connection refused while starting
                last_err = e
            time.sleep(0.1)
        pytest.fail(f"streamdb not ready after {READY_TIMEOUT_S}s ({last_err})\n" + self.log_tail())

    def ssl_context(self):
        if not self.ca_file:
            return None
        import ssl
        return ssl.create_default_context(cafile=str(self.ca_file))

    def stop(self) -> int:
        """SIGTERM, wait; SIGKILL if it does not exit. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -999  # did not stop gracefully
        finally:
            _LIVE.discard(self)

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        _LIVE.discard(self)

    def restart(self, graceful: bool = True) -> "Server":
        if graceful:
            rc = self.stop()
            assert rc == 0, f"graceful stop exited {rc}\n" + self.log_tail()
        else:
            self.kill9()
        return self.start()

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return f"--- last {n} lines of {self.log_path} ---\n" + "\n".join(lines[-n:])

    # ---- clients -------------------------------------------------------

    def status(self) -> dict:
        with urllib.request.urlopen(self.http + "/v1/status", timeout=10, context=self.ssl_context()) as r:
            assert r.status == 200
            return json.loads(r.read())

    def flight(self) -> fl.FlightClient:
        if self.ca_file:
            return fl.connect(self.grpc, tls_root_certs=Path(self.ca_file).read_bytes())
        return fl.connect(self.grpc)

    def adbc(self):
        import adbc_driver_flightsql
        from adbc_driver_flightsql import dbapi
        opts = adbc_driver_flightsql.DatabaseOptions
        timeouts = {o.value: str(RPC_TIMEOUT_S) for o in
                    (opts.TIMEOUT_FETCH, opts.TIMEOUT_QUERY, opts.TIMEOUT_UPDATE)}
        if self.ca_file:
            timeouts[opts.TLS_ROOT_CERTS.value] = Path(self.ca_file).read_text()
        return dbapi.connect(self.grpc, db_kwargs=timeouts, autocommit=True)

    def sql(self, query: str) -> pa.Table:
        with self.adbc() as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetch_arrow_table()

    def count(self) -> int:
        return self.sql("SELECT count(*) AS n FROM metrics").column("n")[0].as_py()


@atexit.register
def _kill_leftovers() -> None:
    for srv in list(_LIVE):
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()


# ---- pyarrow.flight DoPut helper -------------------------------------------

def do_put(server: Server, data, path: str = "metrics") -> list[dict]:
    """DoPut `data` (RecordBatch, Table or list of batches) in one stream.

    Returns the decoded PutResult metadata, one dict per batch written.
    Raises whatever pyarrow raises for a rejected stream.
    """
    if isinstance(data, pa.Table):
        batches = data.to_batches()
    elif isinstance(data, pa.RecordBatch):
        batches = [data]
    else:
        batches = list(data)
    client = server.flight()
    try:
        opts = fl.FlightCallOptions(timeout=RPC_TIMEOUT_S)
        writer, reader = client.do_put(fl.FlightDescriptor.for_path(path),
                                       batches[0].schema, options=opts)
        for b in batches:
            writer.write_batch(b)
        writer.done_writing()
        results = []
        while True:
            buf = reader.read()
            if buf is None:
                break
            results.append(json.loads(buf.to_pybytes()))
        writer.close()
        return results
    finally:
        client.close()


def server_message(exc: BaseException) -> str:
    """The server's own message out of a pyarrow Flight error string."""
    text = str(exc)
    m = re.search(r"with message: (.*?)(?:\. gRPC client debug context|$)", text, re.S)
    return m.group(1) if m else text


def rows_of(table: pa.Table) -> list[tuple]:
    """(time_us, metric, sorted tag items, value) tuples, sorted; for whole-table compares."""
    t = table.select(["time", "metric", "tags", "value"])
    times = t.column("time").cast(pa.int64()).to_pylist()
    out = []
    for ts, metric, tags, value in zip(times, t.column("metric").to_pylist(),
                                       t.column("tags").to_pylist(),
                                       t.column("value").to_pylist()):
        out.append((ts, metric, tuple(sorted(dict(tags or []).items())), value))
    return sorted(out)


# ---- waiting -------------------------------------------------------------------

def wait_for(cond, what: str, timeout: float = 15.0):
    """Polls `cond` until it returns something truthy (returned); fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")



# ---- plain HTTP ------------------------------------------------------------------

def http_call(server: Server, method: str, path: str, body: bytes | None = None,
              headers: dict | None = None) -> tuple[int, bytes]:
    """One HTTP request to the server; returns (status, body) for errors too."""
    req = urllib.request.Request(server.http + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=server.ssl_context()) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---- /metrics ------------------------------------------------------------------

def scrape(server: Server) -> dict:
    """`/metrics` parsed by the official Prometheus client's parser.

    Returns {(sample name, frozenset of label items): value}, so a test reads
    e.g. `m[("streamdb_queries_total", frozenset({("protocol", "http")}))]`.
    A malformed exposition fails the parse.
    """
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(server.http + "/metrics", timeout=10,
                                context=server.ssl_context()) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    """One sample's value; 0 when the series has not appeared yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)
