"""The README's demo, end to end through the real binary, in three "terminals":

    streamdb start --data-dir ./data --port P
    streamdb ingest --generate-sample --rate 1000/s --duration 6s     (README: 60s)
    streamdb subscribe "SELECT time_bucket('5s', time), AVG(value) FROM metrics GROUP BY 1"
    streamdb query "SELECT time_bucket('10s', time), AVG(value) FROM metrics WHERE time > now() - '1m' GROUP BY 1"

What a user sees is checked against what the data says:

- `ingest` ends with a one-line summary of ~rate x duration points, and the
  server holds exactly the points it acknowledged (none lost, none twice);
- `subscribe`, started while ingest runs, prints the snapshot as a table,
  then updates while ingest is still writing; replaying its printed updates
  (a changed group's row replaces the old one) ends, once it reaches the
  stream's tail, with the SELECT's answer over ADBC; Ctrl-C ends it with
  exit code 0 and nothing alarming on stderr;
- `query` prints an aligned table with a header and at least one bucket,
  whose averages equal both the same SQL over ADBC and averages computed in
  Python from the raw `time, value` rows.
"""

from __future__ import annotations

import datetime as dt
import math
import queue
import re
import signal
import subprocess
import threading
import time
from collections import defaultdict

import pyarrow as pa
import pytest

from streamdb_helpers import REPO_ROOT, streamdb_bin, wait_for

# Exactly as in the README.
INGEST_ARGS = ("--generate-sample", "--rate", "1000/s")
SUBSCRIBE_SQL = "SELECT time_bucket('5s', time), AVG(value) FROM metrics GROUP BY 1"
QUERY_SQL = "SELECT time_bucket('10s', time), AVG(value) FROM metrics WHERE time > now() - '1m' GROUP BY 1"
RATE = 1000
DURATION_S = 6  # the README says 60s; the flow is the same, the test is shorter

SUMMARY = re.compile(r"ingested ([\d,]+) points in ([\d,]+) batch\(es\) in ([\d.]+)s "
                     r"\(([\d,]+)/s\), last offset (\d{16}_\d{16})$")
BLOCK_HEAD = re.compile(r"-- (snapshot|update) at offset (\d{16}_\d{16}) \(data up to (\S+)\): (\d+) row\(s\)$")
US = 1_000_000


def num(text: str) -> int:
    return int(text.replace(",", ""))


def ts_us(text: str) -> int:
    """RFC 3339 text (as the CLI prints a timestamp) to Unix microseconds."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert t.tzinfo is not None, text
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)


def parse_table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """An arrow pretty-printed table (borders, header, rows) -> (header, rows).

    Fails unless it is well formed: every line the same width, `+---+`
    borders above and below the header and below the rows, `| a | b |` cells
    with the same column boundaries on every line."""
    assert len(lines) >= 4, lines
    widths = {len(line) for line in lines}
    assert len(widths) == 1, "table lines differ in width:\n" + "\n".join(lines)
    border = lines[0]
    assert re.fullmatch(r"\+(-+\+)+", border), border
    assert lines[2] == border and lines[-1] == border, "\n".join(lines)
    bars = [i for i, c in enumerate(border) if c == "+"]
    cells = []
    for line in [lines[1], *lines[3:-1]]:
        assert [i for i, c in enumerate(line) if c == "|"] == bars, "misaligned:\n" + "\n".join(lines)
        cells.append([line[a + 1:b].strip() for a, b in zip(bars, bars[1:])])
    header, rows = cells[0], cells[1:]
    assert all(header), f"empty column name in {header}"
    return header, rows


class LineReader:
    """Reads a process's stdout on a thread, so the test can wait with a timeout."""

    def __init__(self, stream):
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output for {timeout}s; so far:\n" + "\n".join(self.seen[-40:]))
        if line is None:
            pytest.fail("the process closed its stdout; so far:\n" + "\n".join(self.seen[-40:]))
        self.seen.append(line)
        return line

    def block(self, timeout: float = 15.0) -> dict:
        """One `-- kind at offset ... : N row(s)` line and its table."""
        head = self.next(timeout)
        m = BLOCK_HEAD.match(head)
        assert m, f"expected a `-- snapshot|update at offset` line, got {head!r}"
        kind, offset, max_time, n = m.group(1), m.group(2), m.group(3), int(m.group(4))
        table = [self.next(timeout) for _ in range(n + 4)]  # border, header, border, rows, border
        header, rows = parse_table(table)
        assert len(rows) == n, f"header says {n} row(s), table has {len(rows)}:\n" + "\n".join(table)
        return {"kind": kind, "offset": offset, "max_time": ts_us(max_time), "header": header,
                "rows": rows, "at": time.monotonic()}


def bucket_avgs(header: list[str], rows: list[list[str]]) -> dict[int, float]:
    """{bucket start in us: average} from the CLI's `time_bucket | avg` table."""
    assert len(header) == 2 and "time_bucket" in header[0].lower() and "avg" in header[1].lower(), header
    out = {}
    for bucket, avg in rows:
        assert bucket not in ("", "NULL") and avg not in ("", "NULL"), rows
        key = ts_us(bucket)
        assert key not in out, f"bucket {bucket} twice in one table: {rows}"
        out[key] = float(avg)
    return out


def sql_bucket_avgs(srv, sql: str) -> dict[int, float]:
    """The same two-column result over ADBC, positionally (bucket, avg)."""
    t = srv.sql(sql)
    assert t.num_columns == 2, t.schema
    col = t.column(0)
    assert pa.types.is_timestamp(col.type), col.type
    buckets = col.cast(pa.timestamp("us", col.type.tz)).cast(pa.int64()).to_pylist()
    return dict(zip(buckets, t.column(1).to_pylist()))


def raw_bucket_avgs(srv, width_us: int, expect_rows: int) -> dict[int, float]:
    """AVG(value) per `width_us` bucket, computed here from `SELECT time, value`.

    Every point is from the last few seconds (the sample generator stamps
    them "now"), so a `time > now() - '1m'` filter would keep them all."""
    raw = srv.sql("SELECT time, value FROM metrics")
    times = raw.column("time").cast(pa.timestamp("us", "UTC")).cast(pa.int64()).to_pylist()
    values = raw.column("value").to_pylist()
    assert len(times) == expect_rows
    assert min(times) > time.time_ns() // 1000 - 50 * US, "sample points should be stamped now"
    groups = defaultdict(list)
    for t, v in zip(times, values):
        groups[t // width_us * width_us].append(v)
    return {b: math.fsum(vs) / len(vs) for b, vs in groups.items()}


def assert_same_avgs(got: dict[int, float], want: dict[int, float], what: str):
    assert set(got) == set(want), f"{what}: buckets {sorted(got)} != {sorted(want)}"
    for k in want:
        assert math.isclose(got[k], want[k], rel_tol=1e-9), f"{what}: bucket {k}: {got[k]} != {want[k]}"


class Subscriber:
    """`streamdb subscribe SQL` running, its stdout read by a `LineReader`."""

    def __init__(self, server: tuple, err_path):
        self.err = open(err_path, "w+")
        self.proc = subprocess.Popen([str(streamdb_bin()), "subscribe", *server, SUBSCRIBE_SQL],
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.out = LineReader(self.proc.stdout)

    def interrupt(self) -> None:
        """Ctrl-C: must end it with exit code 0 and nothing alarming on stderr."""
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(10)
        self.err.seek(0)
        err = self.err.read()
        assert rc == 0, f"subscribe exited {rc} on SIGINT:\n{err}"
        assert "panicked" not in err and "Traceback" not in err and "ERROR" not in err, err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def test_readme_demo_flow(streamdb_factory, tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    for text in (" ".join(("streamdb ingest", *INGEST_ARGS)), f'streamdb subscribe "{SUBSCRIBE_SQL}"',
                 f'streamdb query "{QUERY_SQL}"'):
        assert text in readme, f"the README's demo no longer has: {text}"

    # 1. the server
    srv = streamdb_factory(data_dir=tmp_path / "data")
    assert srv.count() == 0
    binary = str(streamdb_bin())
    server = ("--server", srv.http)

    # 2. the sample fleet, in the background
    ingest = subprocess.Popen([binary, "ingest", *server, *INGEST_ARGS, "--duration", f"{DURATION_S}s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    subs: list[Subscriber] = []
    try:
        # Subscribe once the first points are in, so the snapshot has rows.
        wait_for(lambda: ingest.poll() is not None or srv.count() > 0, "the first sample points", timeout=20)
        assert ingest.poll() is None, "ingest ended before the test could subscribe: " + str(ingest.communicate())

        # 3b. watch: the snapshot, then updates while ingest writes. One
        # subscriber follows to the end; another is interrupted mid-stream.
        sub = Subscriber(server, tmp_path / "subscribe.stderr")
        subs.append(sub)
        brief = Subscriber(server, tmp_path / "subscribe-interrupted.stderr")
        subs.append(brief)
        snap = sub.out.block()
        assert snap["kind"] == "snapshot", snap
        assert len(snap["rows"]) >= 1, snap
        view = bucket_avgs(snap["header"], snap["rows"])
        # Sample points are stamped "now": buckets are recent 5 s boundaries.
        now_us = time.time_ns() // 1000
        for b in view:
            assert b % (5 * US) == 0 and now_us - 60 * US < b <= now_us, (b, now_us)

        first_update = sub.out.block()
        ingest_was_running = ingest.poll() is None
        assert first_update["kind"] == "update", first_update
        assert ingest_was_running, "no update arrived while ingest was running"
        assert first_update["offset"] > snap["offset"], (snap, first_update)
        assert first_update["max_time"] > snap["max_time"], (snap, first_update)
        assert first_update["header"] == snap["header"]
        view.update(bucket_avgs(first_update["header"], first_update["rows"]))

        # Ctrl-C while updates are still arriving.
        assert [brief.out.block()["kind"], brief.out.block()["kind"]] == ["snapshot", "update"]
        assert ingest.poll() is None, "ingest ended before the interrupted subscriber saw an update"
        brief.interrupt()

        # Ingest finishes: its summary, then the server's count.
        stdout, stderr = ingest.communicate(timeout=DURATION_S * 5)
        assert ingest.returncode == 0, stderr
        assert "panicked" not in stderr and "ERROR" not in stderr, stderr
        lines = stdout.strip().splitlines()
        assert len(lines) == 1, f"expected a one-line summary, got:\n{stdout}"
        m = SUMMARY.match(lines[0])
        assert m, lines[0]
        points, batches, secs, rate, last_offset = (num(m.group(1)), num(m.group(2)), float(m.group(3)),
                                                    num(m.group(4)), m.group(5))
        expected = RATE * DURATION_S
        assert abs(points - expected) <= 0.05 * expected, lines[0]
        assert DURATION_S * 0.9 <= secs <= DURATION_S * 3, lines[0]
        assert abs(rate - points / secs) <= 0.02 * rate + 1, lines[0]  # the summary's own arithmetic
        # An acknowledged write is never lost or duplicated: the server holds
        # exactly what the summary reports, one stream record per batch.
        assert srv.count() == points, lines[0]
        tail = srv.status()["stream"]["next_offset"]
        assert int(last_offset.split("_")[0]) + 1 == int(tail.split("_")[0]) == batches, (lines[0], tail)

        # The subscription catches up with the tail; replaying what it
        # printed gives the SELECT's answer at that point.
        while True:
            u = sub.out.block()
            assert u["kind"] == "update", u
            assert u["header"] == snap["header"]
            view.update(bucket_avgs(u["header"], u["rows"]))
            assert u["offset"] <= tail, (u, tail)
            if u["offset"] == tail:
                break
        assert_same_avgs(view, sql_bucket_avgs(srv, SUBSCRIBE_SQL), "subscribe replay vs ADBC")
        assert_same_avgs(view, raw_bucket_avgs(srv, 5 * US, points), "subscribe replay vs Python over raw rows")

        # Ctrl-C while idle.
        sub.interrupt()
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait()
        for s_ in subs:
            s_.close()

    # 3a. ask: the query prints an aligned table of 10 s buckets.
    q = subprocess.run([binary, "query", *server, QUERY_SQL], capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr
    table = q.stdout.rstrip("\n").splitlines()
    header, rows = parse_table(table)
    assert len(rows) >= 1, q.stdout
    cli = bucket_avgs(header, rows)

    # The same SQL over ADBC.
    assert_same_avgs(cli, sql_bucket_avgs(srv, QUERY_SQL), "CLI query vs ADBC")

    # And from the raw rows, bucketed in Python.
    assert_same_avgs(cli, raw_bucket_avgs(srv, 10 * US, points), "CLI query vs Python over raw rows")
