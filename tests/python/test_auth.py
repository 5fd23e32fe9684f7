"""`--auth-token`: ADBC (bearer header, or username/password through the
Flight handshake), pyarrow, the CLI and curl-style HTTP work with the token
and are refused without it, with nothing read or written; `/health` stays
open."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from streamdb_helpers import streamdb_bin, wait_for

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
    later = point.replace(b"1705276800000000", b"1705276800000001")  # the same point would replace it
    assert http(secured, "/v1/stream/metrics", token="second-token", data=later, method="POST")[0] == 204
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


# ---- issue 18 ------------------------------------------------------------------

GRPC_PATHS = ["/arrow.flight.protocol.FlightService/ListActions",
              "/arrow.flight.protocol.FlightService/GetFlightInfo"]


def curl_grpc(srv, method: str, path: str, frame: Path, token: str | None = None,
              content_type: str = "application/grpc") -> tuple[int, str]:
    """The issue's reproduction: curl over h2c with an empty gRPC frame.
    Returns the HTTP status and the response headers."""
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "-X", method, "-H", f"content-type: {content_type}",
           "--data-binary", f"@{frame}", "-D", "-", "-o", "/dev/null", "--max-time", "10",
           f"{srv.http}{path}"]
    if token:
        cmd[1:1] = ["-H", f"authorization: Bearer {token}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    status = int(out.stdout.split()[1])
    return status, out.stdout.lower()


def test_grpc_without_token_through_non_post_method(secured, tmp_path):
    """Issue 18.1: OPTIONS (let through for CORS) reached the Flight
    service, which dispatches on the path alone."""
    frame = tmp_path / "frame"
    frame.write_bytes(b"\0" * 5)
    for path in GRPC_PATHS:
        for method in ["OPTIONS", "GET", "PUT", "DELETE", "PATCH"]:
            for token in [None, TOKEN]:
                status, headers = curl_grpc(secured, method, path, frame, token)
                assert status == 405 and "allow: post" in headers, (method, path, token, headers)
        status, headers = curl_grpc(secured, "POST", path, frame)
        assert status == 200 and "grpc-status: 16" in headers, headers
        status, headers = curl_grpc(secured, "POST", path, frame, content_type="application/grpc-web")
        assert status == 415, headers


def test_grpcurl_reflection_needs_the_token(secured):
    from test_grpcurl import grpcurl_path
    out = subprocess.run([grpcurl_path(), "-plaintext", secured.address, "list"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Unauthenticated" in out.stderr, out
    out = subprocess.run([grpcurl_path(), "-plaintext", "-H", f"authorization: Bearer {TOKEN}",
                          secured.address, "list"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "arrow.flight.protocol.FlightService" in out.stdout, out
    # Health stays open for load balancers: only grpcurl's reflection
    # lookup of the Health service carries the token, the call itself not.
    out = subprocess.run([grpcurl_path(), "-plaintext", "-reflect-header", f"authorization: Bearer {TOKEN}",
                          secured.address, "grpc.health.v1.Health/Check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SERVING" in out.stdout, out


# 40 distinct characters: user names are its prefixes, passwords its suffixes.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_.~"


def test_adbc_basic_credentials_without_base64_padding(streamdb_factory, tmp_path):
    """Issue 18.2: the Go Flight client behind ADBC sends Basic credentials
    without base64 padding; a strict decoder refused 2 of every 3 lengths."""
    passwords = [ALPHABET[40 - n:] for n in range(1, 41)]
    token_file = tmp_path / "tokens"
    token_file.write_text("\n".join(passwords) + "\n")
    srv = streamdb_factory(extra_args=["--auth-token-file", str(token_file)])
    # Every user length with passwords of each length mod 3, and every
    # password length with users of each: each length 1..40 and every
    # padding case, in 240 connections (the 1600-case product runs in the
    # Rust unit test `basic_credentials_without_base64_padding`).
    cases = {(u, p) for u in range(1, 41) for p in (38, 39, 40)}
    cases |= {(u, p) for u in (1, 2, 3) for p in range(1, 41)}
    failures = []
    for user_len, password_len in sorted(cases):
        user, password = ALPHABET[:user_len], passwords[password_len - 1]
        try:
            with flightsql.connect(srv.grpc, db_kwargs={"username": user, "password": password}) as conn:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1 AS one")
                    assert cur.fetchone() == (1,)
        except Exception as e:  # noqa: BLE001 - collect every failing length
            failures.append(f"user {len(user)} password {len(password)}: {str(e)[:160]}")
    assert not failures, f"{len(failures)} of {len(cases)} failed:\n" + "\n".join(failures[:10])
    # A wrong password is still refused, with a message that says so.
    with pytest.raises(Exception) as err:
        with flightsql.connect(srv.grpc, db_kwargs={"username": "me", "password": "wrong"}) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
    assert "nauthenticated" in str(err.value) or "UNAUTHENTICATED" in str(err.value)


def put_points(srv, n: int, token: str | None = None, first: int = 0) -> None:
    """Points `first..first + n` (micros after T0), values their index."""
    times = pa.array([T0 + i for i in range(first, first + n)], pa.timestamp("us", tz="UTC"))
    data = pa.record_batch([times, pa.array(["cpu"] * n), pa.array([float(i) for i in range(n)])],
                           names=["time", "metric", "value"])
    client = fl.connect(srv.grpc)
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    w, r = client.do_put(fl.FlightDescriptor.for_path("metrics"), data.schema,
                         options=fl.FlightCallOptions(headers=headers, timeout=30))
    w.write_batch(data)
    w.done_writing()
    r.read()
    w.close()
    client.close()


def secrets_written(srv, secrets: list[str]) -> list[str]:
    """Where any of `secrets` appears: the server log (minus the test
    harness's own echo of the command line), every file under the data
    dir, and `/v1/status`."""
    found = []
    log = [line for line in srv.log_path.read_text(errors="replace").splitlines()
           if not line.startswith("===== ")]
    places = [("log", "\n".join(log).encode())]
    places += [(str(f), f.read_bytes()) for f in srv.data_dir.rglob("*") if f.is_file()]
    if srv.proc is not None and srv.proc.poll() is None:
        places.append(("status", json.dumps(srv.status()).encode()))
    for where, content in places:
        found += [f"{secret!r} in {where}" for secret in secrets if secret.encode() in content]
    return found


def test_source_follows_a_server_that_has_auth_token(streamdb_factory):
    """Issue 18.3: a `--source` follower could not send a token, so it
    could not follow a server started with `--auth-token`."""
    remote = streamdb_factory(extra_args=["--auth-token", TOKEN])
    put_points(remote, 50, TOKEN)
    source = f"{remote.http}/v1/stream/metrics"
    follower = streamdb_factory(extra_args=["--source", source, "--flush-interval", "1s"],
                                env={"STREAMDB_SOURCE_TOKEN": TOKEN})
    wait_for(lambda: follower.count() == 50, "the follower to ingest 50 points", timeout=30)
    status = follower.status()["source"]
    assert status["state"] == "following" and status["url"] == source, status
    put_points(remote, 10, TOKEN, first=50)
    wait_for(lambda: follower.count() == 60, "the follower to ingest 10 more", timeout=30)
    follower.restart()  # flushes: the checkpoint reaches the manifest
    assert follower.count() == 60
    assert not secrets_written(follower, [TOKEN])


def test_source_url_userinfo_is_never_logged_or_persisted(streamdb_factory):
    """Issue 18.3: `--source http://user:password@host/...` was logged, shown
    by `status` and persisted (log records, manifest) with its password."""
    remote = streamdb_factory()
    put_points(remote, 20)
    password = "pa55-in-the-url"
    bare = f"{remote.http}/v1/stream/metrics"
    with_userinfo = bare.replace("http://", f"http://reader:{password}@")
    follower = streamdb_factory(extra_args=["--source", with_userinfo, "--flush-interval", "1s"])
    wait_for(lambda: follower.count() == 20, "the follower to ingest 20 points", timeout=30)
    status = follower.status()["source"]
    assert status["state"] == "following" and status["url"] == bare, status
    follower.restart()
    # The position survives the restart under the redacted name: nothing replays.
    time.sleep(1.0)
    assert follower.count() == 20
    assert follower.status()["source"]["offset"] == remote.status()["stream"]["next_offset"]
    assert "following source stream" in follower.log_path.read_text()
    assert not secrets_written(follower, [password])


def test_source_token_refused_or_misused_is_a_clear_error(streamdb_factory):
    remote = streamdb_factory(extra_args=["--auth-token", TOKEN])
    source = f"{remote.http}/v1/stream/metrics"
    wrong = "not-the-token-42"
    follower = streamdb_factory(extra_args=["--source", source], env={"STREAMDB_SOURCE_TOKEN": wrong})
    status = wait_for(lambda: (s := follower.status()["source"])["state"] == "stopped" and s,
                      "the follower to stop on 401")
    assert "401" in status["error"] and "token" in status["error"], status
    assert not secrets_written(follower, [wrong])
    tokenless = streamdb_factory(extra_args=["--source", source])
    status = wait_for(lambda: (s := tokenless.status()["source"])["state"] == "stopped" and s,
                      "the tokenless follower to stop on 401")
    assert "--source-token" in status["error"], status
    # Credentials two ways at once, or an empty token, are refused at start.
    bin_ = str(streamdb_bin())
    for args, env, needle in [
        (["--source", source.replace("http://", "http://u:p@"), "--source-token", "t"], {}, "one way"),
        (["--source", source], {"STREAMDB_SOURCE_TOKEN": "   "}, "empty"),
        (["--source-token", "t"], {}, "--source"),
    ]:
        out = subprocess.run([bin_, "start", "--port", "0", "--data-dir", str(remote.data_dir.parent / "x"), *args],
                             capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **env})
        assert out.returncode != 0 and needle in out.stderr, (args, out.stderr)
        assert ":p@" not in out.stderr


READER = "reader-only-token"


def test_a_read_only_token_queries_through_adbc_but_cannot_ingest(streamdb_factory):
    """`--read-only-token`: ADBC (bearer header and username/password), the
    CLI and pyarrow query with it; ADBC ingest, pyarrow DoPut and
    `streamdb ingest` are refused naming the flag, and nothing lands."""
    srv = streamdb_factory(extra_args=["--auth-token", TOKEN],
                           env={"STREAMDB_READ_ONLY_TOKEN": READER})
    put_points(srv, 3, token=TOKEN)
    for kwargs in ({adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {READER}"},
                   {"username": "someone", "password": READER}):
        with flightsql.connect(srv.grpc, db_kwargs=kwargs) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM metrics")
            assert cur.fetchone() == (3,)
            with pytest.raises(Exception) as err:
                cur.adbc_ingest("metrics", pa.Table.from_batches([batch()]), mode="append")
            assert "--read-only-token" in str(err.value), err.value
    with pytest.raises(fl.FlightError) as err:
        put_points(srv, 1, token=READER)
    assert "--read-only-token" in str(err.value)
    out = subprocess.run([streamdb_bin(), "query", "--server", srv.grpc, "--token", READER,
                          "SELECT count(*) AS n FROM metrics"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "3" in out.stdout, out.stderr
    ingest = subprocess.run([streamdb_bin(), "ingest", "--server", srv.grpc, "--token", READER,
                             "--generate-sample", "--count", "10"], capture_output=True, text=True, timeout=60)
    assert ingest.returncode == 1 and "--read-only-token" in ingest.stderr, ingest.stderr
    assert count(srv) == 3


def test_a_token_cannot_be_both_read_write_and_read_only(tmp_path):
    out = subprocess.run([streamdb_bin(), "start", "--data-dir", str(tmp_path / "d"), "--port", "0",
                          "--auth-token", "same", "--read-only-token", "same"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "--auth-token and as --read-only-token" in out.stderr, out.stderr
