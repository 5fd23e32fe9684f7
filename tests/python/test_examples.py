"""The Python examples in clients/python run as documented against a live
server and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamdb_helpers import REPO_ROOT

EXAMPLES = REPO_ROOT / "clients" / "python"


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{script} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_examples_run_in_order_against_one_server(streamdb_server):
    url = streamdb_server.grpc
    out = run("write_and_query.py", url)
    assert "'rows': 6}" in out and out.startswith("durable: ")
    assert "web-1" in out and "avg_cpu" in out
    out = run("adbc_ingest.py", url)
    assert "ingested rows: 100" in out and "n: [[100]]" in out
    out = run("dataframes.py", url)
    assert "polars: (" in out and "pandas: (" in out and "tables: ['metrics']" in out
    out = run("subscribe.py", url, "1.5")
    assert out.startswith("snapshot at offset")
    assert streamdb_server.count() == 106


def rust_example(name: str):
    """An example binary of clients/rust (cargo test --workspace builds them)."""
    import os
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    path = target / "debug" / "examples" / name
    if not path.exists():
        pytest.fail(f"{path} not built: run cargo test --workspace (or cargo build --examples) first")
    return path


def test_rust_client_examples_run(streamdb_server):
    out = subprocess.run([str(rust_example("write_and_query")), streamdb_server.http],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "wrote 3 rows" in out.stdout and "| web-1 | 0.7" in out.stdout, out.stdout
    out = subprocess.run([str(rust_example("subscribe")), streamdb_server.http, "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "snapshot at" in out.stdout and "web-2" in out.stdout, out.stdout
