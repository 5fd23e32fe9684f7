"""The `streamdb` command as a new user meets it: ingest (sample data at a
rate, files of every supported format, stdin), help, completions, and one
clear line with a non-zero exit for a wrong flag or an unreachable server."""

from __future__ import annotations

import datetime as dt
import re
import subprocess

import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from streamdb_helpers import streamdb_bin


def cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(streamdb_bin()), *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def test_generate_sample_holds_the_rate(streamdb_server):
    srv = streamdb_server
    out = cli("ingest", "--server", srv.http, "--generate-sample", "--rate", "500/s", "--duration", "3s")
    assert out.returncode == 0, out.stderr
    m = re.match(r"ingested 1,500 points in \d+ batch\(es\) in ([\d.]+)s \(([\d,]+)/s\)", out.stdout)
    assert m, out.stdout
    # Steady: 1,500 points on a 500/s schedule take about 3 s (more only if
    # the server falls behind, never less).
    assert 2.7 <= float(m.group(1)) <= 6.0, out.stdout
    t = srv.sql("SELECT count(*) AS n, count(DISTINCT tags['host']) AS hosts, count(DISTINCT metric) AS metrics, "
                "min(tags['region']) AS region FROM metrics")
    row = t.to_pylist()[0]
    assert (row["n"], row["hosts"], row["metrics"]) == (1500, 10, 6)
    # Sample data is "now": the seed demo's query finds it.
    t = srv.sql("SELECT time_bucket('10s', time), AVG(value) FROM metrics WHERE time > now() - '1m' GROUP BY 1")
    assert t.num_rows >= 1


def test_files_of_every_format_and_stdin(streamdb_server, tmp_path):
    srv = streamdb_server
    start = dt.datetime(2024, 1, 15, tzinfo=dt.timezone.utc)
    table = pa.table({
        "time": pa.array([start + dt.timedelta(seconds=i) for i in range(50)], pa.timestamp("us", "UTC")),
        "metric": ["m"] * 50, "host": [f"h{i % 5}" for i in range(50)], "value": [float(i) for i in range(50)]})
    pq.write_table(table, tmp_path / "a.parquet")
    with ipc.new_file(str(tmp_path / "b.arrow"), table.schema) as w:
        w.write_table(table)
    (tmp_path / "c.csv").write_text("time,metric,host,value\n" + "".join(
        f"2024-01-15T00:01:{i:02d}Z,m,h{i % 5},{i}\n" for i in range(50)))
    ndjson = "".join('{"time":"2024-01-15T00:02:%02dZ","metric":"m","tags":{"host":"h%d"},"value":%d}\n'
                     % (i, i % 5, i) for i in range(50))
    (tmp_path / "d.ndjson").write_text(ndjson)
    out = cli("ingest", "--server", srv.http, "--file", str(tmp_path / "a.parquet"), "--file",
              str(tmp_path / "b.arrow"), "--file", str(tmp_path / "c.csv"), "--file", str(tmp_path / "d.ndjson"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ingested 200 points"), out.stdout
    out = cli("ingest", "--server", srv.http, stdin=ndjson.replace("00:02:", "00:03:"))
    assert out.returncode == 0 and out.stdout.startswith("ingested 50 points"), out
    assert srv.count() == 250
    # A bad line stops the ingest with the reason, exit non-zero.
    out = cli("ingest", "--server", srv.http, stdin='{"time":1,"metric":"m","value":1,"oops":2}\n')
    assert out.returncode != 0 and "oops" in out.stderr, out


@pytest.mark.parametrize("args, needle", [
    (("ingest", "--server", "http://127.0.0.1:1", "--generate-sample", "--count", "5"), "cannot connect"),
    (("query", "--server", "http://127.0.0.1:1", "SELECT 1"), "cannot connect"),
    (("ingest", "--rate", "fast", "--generate-sample"), "invalid value 'fast'"),
    (("query", "--bogus", "SELECT 1"), "unexpected argument '--bogus'"),
])
def test_errors_are_one_clear_line(args, needle):
    out = cli(*args, timeout=30)
    assert out.returncode != 0
    assert needle in out.stderr.splitlines()[0], out.stderr


@pytest.mark.parametrize("command", ["start", "ingest", "query", "subscribe", "status", "completions"])
def test_every_command_has_help_with_examples(command):
    out = cli(command, "--help")
    assert out.returncode == 0 and "Example" in out.stdout, out.stdout


@pytest.mark.parametrize("shell, marker", [("bash", "_streamdb()"), ("zsh", "#compdef streamdb"),
                                           ("fish", "complete -c streamdb")])
def test_completions(shell, marker):
    out = cli("completions", shell)
    assert out.returncode == 0 and marker in out.stdout
