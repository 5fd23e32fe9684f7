"""`--auth-token`: ADBC (bearer header, or username/password through the
Flight handshake), pyarrow, the CLI and curl-style HTTP work with the token
and are refused without it, with nothing read or written; `/health` stays
open."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from streamdb_helpers import streamdb_bin

TOKEN = "s3cret-token"
T0 = 1_705_276_800_000_000


@pytest.fixture
def secured(streamdb_factory, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# accepted tokens\n{TOKEN}\n")
    return streamdb_factory(extra_args=["--auth-token-file", str(token_file), "--auth-token", "second-token"])


def http(srv, path, token=None, data=None, method=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(srv.http + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def batch():
    return pa.record_batch([pa.array([T0], pa.timestamp("us", tz="UTC")), pa.array(["cpu"]), pa.array([0.5])],
                           names=["time", "metric", "value"])


def count(srv) -> int:
    with flightsql.connect(srv.grpc, db_kwargs={
            adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {TOKEN}"}) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM metrics")
            return cur.fetchone()[0]


def test_http_needs_the_token_but_health_is_open(secured):
    assert http(secured, "/health") == (200, b"ok")
    point = b'{"time":1705276800000000,"metric":"cpu","value":1}'
    status, body = http(secured, "/v1/stream/metrics", data=point, method="POST")
    assert status == 401 and b"authentication required" in body
    # A browser can read the refusal: it carries the CORS and security headers.
    try:
        urllib.request.urlopen(urllib.request.Request(secured.http + "/v1/stream/metrics"), timeout=10)
        raise AssertionError("an unauthenticated read must be refused")
    except urllib.error.HTTPError as e:
        assert e.code == 401
        assert e.headers["x-content-type-options"] == "nosniff"
        assert e.headers["access-control-allow-origin"] == "*"
    status, _ = http(secured, "/v1/stream/metrics", token="wrong", data=point, method="POST")
    assert status == 401
    assert http(secured, "/v1/query?sql=SELECT%201")[0] == 401
    assert count(secured) == 0  # nothing was written
    assert http(secured, "/v1/stream/metrics", token=TOKEN, data=point, method="POST")[0] == 204
    assert http(secured, "/v1/stream/metrics", token="second-token", data=point, method="POST")[0] == 204
    status, body = http(secured, "/v1/query?sql=SELECT%20count(*)%20AS%20n%20FROM%20metrics", token=TOKEN)
    assert status == 200 and b'"n":2' in body
    # Authenticated data is never for shared caches (a CDN would hand it to
    # anyone asking for the URL): private, for catch-up and long-poll alike.
    for query in ["offset=-1", "offset=-1&live=long-poll"]:
        req = urllib.request.Request(f"{secured.http}/v1/stream/metrics?{query}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
            assert r.headers["cache-control"].startswith("private, max-age=60"), r.headers["cache-control"]


def test_pyarrow_with_and_without_the_token(secured):
    client = fl.connect(secured.grpc)
    with pytest.raises(fl.FlightUnauthenticatedError):
        w, r = client.do_put(fl.FlightDescriptor.for_path("metrics"), batch().schema)
        w.write_batch(batch())
        w.close()
    # The handshake turns Basic credentials (any user) into a bearer token.
    header = client.authenticate_basic_token(b"anyone", TOKEN.encode())
    assert header == (b"authorization", f"Bearer {TOKEN}".encode())
    with pytest.raises(fl.FlightUnauthenticatedError):
        client.authenticate_basic_token(b"anyone", b"nope")
    opts = fl.FlightCallOptions(headers=[header])
    w, r = client.do_put(fl.FlightDescriptor.for_path("metrics"), batch().schema, options=opts)
    w.write_batch(batch())
    w.done_writing()
    assert r.read() is not None
    w.close()
    assert count(secured) == 1


def test_adbc_bearer_header_and_username_password(secured):
    assert count(secured) == 0  # bearer header (used by count)
    with flightsql.connect(secured.grpc, db_kwargs={"username": "me", "password": TOKEN}) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS one")
            assert cur.fetchone() == (1,)
    with pytest.raises(Exception) as err:
        with flightsql.connect(secured.grpc) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "nauthenticated" in str(err.value) or "UNAUTHENTICATED" in str(err.value)


def test_cli_token_flag_and_env(secured):
    bin_ = str(streamdb_bin())
    out = subprocess.run([bin_, "status", "--server", secured.http], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "unauthenticated" in out.stderr
    out = subprocess.run([bin_, "status", "--server", secured.http, "--token", TOKEN],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([bin_, "query", "--server", secured.http, "SELECT 41 + 1 AS answer"],
                         capture_output=True, text=True, timeout=30, env={"STREAMDB_TOKEN": TOKEN})
    assert out.returncode == 0 and "42" in out.stdout, out.stderr
