"""TLS end to end with a test CA made here: the server serves gRPC and
HTTPS on one port; the CLI (`--ca-file`), ADBC (`tls_root_certs`), pyarrow
and an HTTP/1.1 client trust the CA and work, and clients that do not trust
it are refused."""

from __future__ import annotations

import ssl
import subprocess
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from streamdb_helpers import do_put, streamdb_bin

T0 = 1_705_276_800_000_000


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=StreamDB test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return d


@pytest.fixture
def tls_server(streamdb_factory, pki):
    return streamdb_factory(extra_args=["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")],
                            ca_file=pki / "ca.pem")


def test_https_http1_client(tls_server, pki):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with urllib.request.urlopen(tls_server.http + "/v1/query?sql=SELECT%201%20AS%20one", context=ctx) as r:
        assert r.status == 200 and b'"one":1' in r.read()
    with pytest.raises(urllib.error.URLError) as err:  # untrusted without the CA
        urllib.request.urlopen(tls_server.http + "/health", timeout=5)
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)


def test_pyarrow_and_adbc(tls_server):
    batch = pa.record_batch([pa.array([T0], pa.timestamp("us", tz="UTC")), pa.array(["cpu"]), pa.array([0.5])],
                            names=["time", "metric", "value"])
    do_put(tls_server, batch)  # pyarrow with tls_root_certs
    assert tls_server.count() == 1  # ADBC with tls_root_certs
    plain = fl.connect(tls_server.grpc)  # system roots only: refused
    with pytest.raises(fl.FlightUnavailableError):
        plain.do_action(fl.Action("status", b""), options=fl.FlightCallOptions(timeout=5)).__next__()


def test_cli_with_ca_file(tls_server, pki):
    bin_ = str(streamdb_bin())
    out = subprocess.run([bin_, "query", "--server", tls_server.http, "--ca-file", str(pki / "ca.pem"),
                          "SELECT 40 + 2 AS answer"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "42" in out.stdout, out.stderr
    out = subprocess.run([bin_, "status", "--server", tls_server.http], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "cannot connect" in out.stderr
