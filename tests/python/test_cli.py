"""The `streamdb` command as a new user meets it: ingest (sample data at a
rate, files of every supported format, stdin), help, completions, and one
clear line with a non-zero exit for a wrong flag or an unreachable server."""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
import subprocess
import time
from collections import Counter

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
    rate, secs = 500, 5
    launched = time.time()
    out = cli("ingest", "--server", srv.http, "--generate-sample", "--rate", f"{rate}/s", "--duration", f"{secs}s")
    ended = time.time()
    assert out.returncode == 0, out.stderr
    m = re.match(r"ingested 2,500 points in \d+ batch\(es\) in ([\d.]+)s \(([\d,]+)/s\)", out.stdout)
    assert m, out.stdout
    # 2,500 points on a 500/s schedule take about 5 s (more only if the
    # server falls behind, never less; the first batch goes at 0 s, the last
    # at 4.9 s).
    assert secs - 0.3 <= float(m.group(1)) <= secs * 2, out.stdout
    t = srv.sql("SELECT count(*) AS n, count(DISTINCT tags['host']) AS hosts, count(DISTINCT metric) AS metrics, "
                "min(tags['region']) AS region FROM metrics")
    row = t.to_pylist()[0]
    assert (row["n"], row["hosts"], row["metrics"]) == (rate * secs, 10, 6)

    # Steady, not just on average. The generator sends a batch every 100 ms
    # and stamps it from the wall clock at send time (src/cli/ingest.rs
    # `generate`): the batch's last point at the send time, the others 1/rate
    # apart before it (older builds: every point at the send time). So a
    # point's time is its send time or at most one tick (100 ms) earlier,
    # and the points' times show when they were sent:
    # - none before the command started (less one tick) or after it ended:
    #   nothing was sent up front with back-dated stamps;
    # - every whole second inside the run holds about `rate` points, spread
    #   through it rather than sent in one burst (points in most of its ten
    #   100 ms slices). Normally a second holds 450..550 points (one tick
    #   moves 50 across the second's edge) in all ten slices. A write stalled
    #   on a loaded machine empties the slices it spans and, if it spans a
    #   second's edge, moves points into the next second (the schedule then
    #   catches up); so the typical (median) second is held to +-20%, and
    #   each second only to 25%..175%, which still fails a second sent at
    #   double rate or not at all.
    us = 1_000_000
    times = srv.sql("SELECT time FROM metrics").column("time").cast(pa.timestamp("us", "UTC")) \
        .cast(pa.int64()).to_pylist()
    first, last = min(times), max(times)
    assert (launched - 0.25) * us <= first and last <= (ended + 0.05) * us, \
        f"points stamped {first / us - launched:+.3f}s .. {last / us - ended:+.3f}s around the run"
    assert secs - 0.3 <= (last - first) / us <= secs * 2, (first, last)
    per_second = Counter(t // us for t in times)
    whole = range(-(-first // us), last // us)  # seconds s with [s, s+1) inside [first, last]
    assert len(whole) >= secs - 2, (first, last)
    counts = [per_second[s] for s in whole]
    slices = [len({t // (us // 10) for t in times if t // us == s}) for s in whole]
    detail = f"points per whole second {counts}, 100 ms slices with points {slices}"
    assert 0.8 * rate <= statistics.median(counts) <= 1.2 * rate, detail
    assert all(0.25 * rate <= n <= 1.75 * rate for n in counts), detail
    assert statistics.median(slices) >= 5, detail
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
    # The Arrow file ten minutes later: the same (series, time) again
    # would replace the Parquet file's points, not add to them.
    later = table.set_column(0, "time", pa.array(
        [start + dt.timedelta(minutes=10, seconds=i) for i in range(50)], pa.timestamp("us", "UTC")))
    with ipc.new_file(str(tmp_path / "b.arrow"), later.schema) as w:
        w.write_table(later)
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
    (("status", "--server", "http://127.0.0.1:1"), "cannot connect"),
    (("subscribe", "--server", "http://127.0.0.1:1", "SELECT 1"), "cannot connect"),
    (("query",), "required arguments were not provided: <SQL>"),
    (("query", "--format", "xml", "SELECT 1"), "[possible values: table, csv, json, arrow]"),
    (("ingest", "--file", "x.csv", "--generate-sample"), "cannot be used with"),
    (("ingest", "--generate-sample", "--count", "5", "--duration", "1s"), "cannot be used with"),
])
def test_errors_are_one_clear_line(args, needle):
    out = cli(*args, timeout=30)
    assert out.returncode != 0
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert needle in lines[0], out.stderr


def test_query_formats_csv_json_and_arrow(streamdb_server):
    srv = streamdb_server
    ndjson = "".join(
        f'{{"time":"2024-01-15T00:00:0{i}Z","metric":"cpu","tags":{{"host":"web-{i}"}},"value":{i}.5}}\n'
        for i in range(3))
    assert cli("ingest", "--server", srv.http, stdin=ndjson).returncode == 0
    sql = "SELECT tags, value FROM metrics ORDER BY value"
    out = cli("query", "--server", srv.http, "--format", "csv", sql)
    assert out.returncode == 0, out.stderr
    # CSV has no nested values: tags print as their text.
    assert out.stdout.splitlines() == ["tags,value", "{host: web-0},0.5", "{host: web-1},1.5",
                                       "{host: web-2},2.5"], out.stdout
    empty = cli("query", "--server", srv.http, "--format", "csv", "SELECT value FROM metrics WHERE value > 99")
    assert empty.returncode == 0 and empty.stdout.splitlines() == ["value"], empty.stdout
    out = cli("query", "--server", srv.http, "--format", "json", "SELECT avg(value) FROM metrics")
    assert [json.loads(line) for line in out.stdout.splitlines()] == [{"avg": 1.5}], out.stdout
    raw = subprocess.run([str(streamdb_bin()), "query", "--server", srv.http, "--format", "arrow",
                          "SELECT value FROM metrics ORDER BY value"], capture_output=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    table = pa.ipc.open_stream(raw.stdout).read_all()
    assert table.column("value").to_pylist() == [0.5, 1.5, 2.5]


@pytest.mark.parametrize("command", ["start", "ingest", "query", "subscribe", "status", "completions"])
def test_every_command_has_help_with_examples(command):
    out = cli(command, "--help")
    assert out.returncode == 0 and "Example" in out.stdout, out.stdout


@pytest.mark.parametrize("shell, marker", [("bash", "_streamdb()"), ("zsh", "#compdef streamdb"),
                                           ("fish", "complete -c streamdb")])
def test_completions(shell, marker):
    out = cli("completions", shell)
    assert out.returncode == 0 and marker in out.stdout
