"""Pytest fixtures that run the real `streamdb` binary.

- `streamdb_server`: a started server on a free 127.0.0.1 port with a fresh
  data dir; stopped (SIGTERM, then SIGKILL) at teardown.
- `streamdb_factory`: `make(data_dir=None, extra_args=(), env=None)` starts another
  server; tests restart one on the same data dir with `srv.restart()`
  (SIGTERM) or `srv.kill9()` + `srv.start()`.

Server stdout/stderr go to `streamdb.log` in the test's tmp dir; when a test
fails, the tail of that log is attached to the pytest report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamdb_helpers import Server

_SERVERS_KEY = pytest.StashKey[list]()


@pytest.fixture
def streamdb_factory(request, tmp_path):
    """`make(data_dir=None, extra_args=())` starts a server; all are stopped at teardown."""
    servers: list[Server] = []
    request.node.stash[_SERVERS_KEY] = servers
    log_path = tmp_path / "streamdb.log"

    def make(data_dir: Path | None = None, extra_args=(), ca_file: Path | None = None,
             env: dict | None = None) -> Server:
        data_dir = data_dir or tmp_path / f"data{len(servers)}"
        data_dir.mkdir(parents=True, exist_ok=True)
        srv = Server(data_dir, log_path, list(extra_args), ca_file=ca_file, env=env)
        servers.append(srv)
        return srv.start()

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def streamdb_server(streamdb_factory) -> Server:
    return streamdb_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    servers = item.stash.get(_SERVERS_KEY, [])
    if report.failed and servers:
        report.sections.append(("streamdb server log", servers[0].log_tail()))
