"""TLS end to end with a test CA made here (with `cryptography`): the server serves gRPC and
HTTPS on one port; the CLI (`--ca-file`), ADBC (`tls_root_certs`), pyarrow
and an HTTP/1.1 client trust the CA and work, and clients that do not trust
it are refused."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import urllib.error
import urllib.request

import pyarrow as pa
import pyarrow.flight as fl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamdb_helpers import do_put, streamdb_bin

T0 = 1_705_276_800_000_000


def _write_key(path, key):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throw-away CA and a server certificate for localhost / 127.0.0.1."""
    d = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "StreamDB test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(d / "server.key", key)
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


def test_banner_names_the_tls_schemes_and_the_log_file_has_no_colours(tls_server):
    log = tls_server.log_path.read_text()
    port = tls_server.port
    assert f"Flight SQL: grpc+tls://127.0.0.1:{port}, HTTP: https://127.0.0.1:{port}" in log, log
    assert "\x1b[" not in log, "ANSI escape codes in a log written to a file"


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
