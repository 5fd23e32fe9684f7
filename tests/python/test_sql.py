"""SQL through the real server: ADBC DBAPI, polars, the CLI and HTTP /v1/query.

Covers: execute with and without bound `$n` parameters; `adbc_get_objects`,
`adbc_get_table_schema` and `adbc_get_info`; `polars.read_database`; a
differential test against DuckDB (same rows, in process) over aggregates,
tag filters, time buckets, window functions, joins and last values, with the
data split over flushed chunks and the write buffer; the seed's SQL examples
run unchanged (ADBC and `streamdb query`); errors for bad SQL naming the
problem, with the server still answering afterwards; and HTTP json / csv /
arrow answers equal to the ADBC answer.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
import subprocess
import time as _time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone

import adbc_driver_manager
import pyarrow as pa
import pytest

from streamdb_helpers import REPO_ROOT, Server, do_put, streamdb_bin

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z, Unix micros
SEC = 1_000_000
TS = pa.timestamp("us", tz="UTC")
UTC = timezone.utc


def dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def micros(d: datetime) -> int:
    return (d - dt(0)) // timedelta(microseconds=1)


def small_table() -> pa.Table:
    """8 rows, 4 series; one row lacks the host tag; times carry microseconds."""
    times = [T0 + i * SEC + i * 1001 for i in range(8)]
    return pa.table({
        "time": pa.array(times, TS),
        "metric": ["cpu", "cpu", "mem", "cpu", "mem", "cpu", "cpu", "mem"],
        "host": ["a", "b", "a", "a", "b", None, "b", "a"],
        "value": [0.5, 1.25, 3.0, 4.5, -2.0, 6.75, 7.0, 8.125],
    })


def run(conn, sql: str, params=None) -> pa.Table:
    with conn.cursor() as cur:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)
        return cur.fetch_arrow_table()


@pytest.fixture
def loaded(streamdb_server):
    do_put(streamdb_server, small_table())
    return streamdb_server


@pytest.fixture
def conn(loaded):
    c = loaded.adbc()
    yield c
    c.close()


# ---- 1. ADBC DBAPI ----------------------------------------------------------

def test_execute_without_params(conn):
    got = run(conn, "SELECT time, metric, tags['host'] AS host, value FROM metrics "
                    "WHERE metric = 'cpu' ORDER BY time")
    assert got.column_names == ["time", "metric", "host", "value"]
    assert got.schema.types == [TS, pa.string(), pa.string(), pa.float64()]
    assert got.to_pylist() == [r for r in small_table().to_pylist() if r["metric"] == "cpu"]


def test_execute_with_dollar_params(conn):
    sql = ("SELECT time, value FROM metrics WHERE metric = $1 AND tags['host'] = $2 "
           "AND value >= $3 AND time < $4 ORDER BY time")
    rows = small_table().to_pylist()

    def expect(m, h, v, t):
        return [{"time": r["time"], "value": r["value"]} for r in rows
                if r["metric"] == m and r["host"] == h and r["value"] >= v and r["time"] < t]

    with conn.cursor() as cur:  # one statement re-executed with new parameters
        for params in [("cpu", "a", 1.0, dt(T0 + 10 * SEC)),
                       ("cpu", "b", 0.0, dt(T0 + 6 * SEC)),
                       ("mem", "a", -100.0, dt(T0 + 10 * SEC)),
                       ("mem", "zzz", 0.0, dt(T0 + 10 * SEC))]:
            cur.execute(sql, params)
            got = cur.fetch_arrow_table()
            assert got.to_pylist() == expect(*params), params
    assert expect("cpu", "a", 1.0, dt(T0 + 10 * SEC))  # the cases are not all empty
    got = run(conn, "SELECT $1 + 1 AS x, $2 AS s", (41, "hi"))
    assert got.to_pylist() == [{"x": 42, "s": "hi"}]


def test_execute_with_question_mark_params(conn):
    # What DBAPI users write: `?` placeholders, numbered in order.
    got = run(conn, "SELECT value FROM metrics WHERE metric = ? AND tags['host'] = ? AND value > ? ORDER BY time",
              ("cpu", "a", 1.0))
    want = [{"value": r["value"]} for r in small_table().to_pylist()
            if r["metric"] == "cpu" and r["host"] == "a" and r["value"] > 1.0]
    assert want and got.to_pylist() == want


def test_unbound_parameter_is_a_client_error(conn):
    with pytest.raises(adbc_driver_manager.ProgrammingError, match=r"\$1"):
        run(conn, "SELECT value FROM metrics WHERE value > $1")


def _tables(objects, catalog="streamdb", schema="public"):
    cats = {c["catalog_name"]: c for c in objects}
    schemas = {s["db_schema_name"]: s for s in cats[catalog]["catalog_db_schemas"]}
    return {t["table_name"]: t for t in schemas[schema]["db_schema_tables"]}


def test_get_objects(conn):
    objs = conn.adbc_get_objects().read_all().to_pylist()
    assert [c["catalog_name"] for c in objs] == ["streamdb"]
    assert [s["db_schema_name"] for s in objs[0]["catalog_db_schemas"]] == ["public"]
    tables = _tables(objs)
    assert list(tables) == ["metrics"]
    assert tables["metrics"]["table_type"] == "TABLE"
    cols = [(c["column_name"], c["ordinal_position"]) for c in tables["metrics"]["table_columns"]]
    assert cols == [("time", 1), ("metric", 2), ("tags", 3), ("value", 4), ("series_id", 5)]
    # filters
    objs = conn.adbc_get_objects(depth="all", catalog_filter="streamdb", db_schema_filter="public",
                                 table_name_filter="metrics", column_name_filter="va%")
    cols = _tables(objs.read_all().to_pylist())["metrics"]["table_columns"]
    assert [(c["column_name"], c["ordinal_position"]) for c in cols] == [("value", 4)]
    assert conn.adbc_get_objects(depth="all", catalog_filter="nope").read_all().to_pylist() == []
    objs = conn.adbc_get_objects(depth="tables", table_name_filter="nope").read_all().to_pylist()
    assert _tables(objs) == {}
    assert conn.adbc_get_table_types() == ["TABLE"]


METRICS_SCHEMA = pa.schema([
    pa.field("time", TS, nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("tags", pa.map_(pa.field("key", pa.string(), nullable=False),
                             pa.field("value", pa.string(), nullable=True)), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
    pa.field("series_id", pa.uint64(), nullable=False),
])


def test_get_table_schema(conn):
    got = conn.adbc_get_table_schema("metrics")
    assert got.names == METRICS_SCHEMA.names
    assert got.types == METRICS_SCHEMA.types
    # observed nullability: every column NOT NULL; map keys not null, values nullable
    assert got.equals(METRICS_SCHEMA), got
    assert conn.adbc_get_table_schema("metrics", catalog_filter="streamdb",
                                      db_schema_filter="public").equals(METRICS_SCHEMA)
    # the announced schema is the one the data comes in
    assert run(conn, "SELECT * FROM metrics").schema.equals(METRICS_SCHEMA)
    with pytest.raises(adbc_driver_manager.Error, match="(?i)not.?found"):
        conn.adbc_get_table_schema("nope")


def test_get_info(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "StreamDB"
    version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO_ROOT / "Cargo.toml").read_text(), re.M)
    assert info["vendor_version"] == version.group(1)


def test_catalog_from_metadata_is_queryable(conn):
    assert run(conn, "SELECT count(*) AS n FROM streamdb.public.metrics").to_pylist() == [{"n": 8}]
    got = run(conn, "SELECT DISTINCT table_catalog FROM information_schema.tables")
    assert got.to_pylist() == [{"table_catalog": "streamdb"}]


# ---- 2. polars --------------------------------------------------------------

def test_polars_read_database(conn):
    import polars as pl
    from polars.testing import assert_frame_equal
    got = pl.read_database("SELECT time, metric, tags['host'] AS host, value FROM metrics "
                           "ORDER BY time", conn)
    t = small_table()
    expected = pl.DataFrame({
        "time": t.column("time").to_pylist(),
        "metric": t.column("metric").to_pylist(),
        "host": t.column("host").to_pylist(),
        "value": t.column("value").to_pylist(),
    }, schema={"time": pl.Datetime("us", "UTC"), "metric": pl.String, "host": pl.String,
               "value": pl.Float64})
    assert_frame_equal(got, expected)
    agg = pl.read_database("SELECT metric, count(*) AS n, sum(value) AS s FROM metrics "
                           "GROUP BY metric ORDER BY metric", conn)
    assert agg.rows() == [("cpu", 5, 0.5 + 1.25 + 4.5 + 6.75 + 7.0), ("mem", 3, 3.0 - 2.0 + 8.125)]


# ---- 3. differential test against DuckDB -------------------------------------

HOSTS, METRICS, STEPS = 5, ("cpu", "mem", "disk"), 500


def diff_dataset() -> pa.Table:
    """5 hosts x 3 metrics x 500 times, shuffled. Unique times everywhere.

    Tags: host (missing on h4's mem series), region eu/us (missing on h3),
    dc only on disk series.
    """
    rng = random.Random(20240115)
    rows = []
    for h in range(HOSTS):
        for mi, m in enumerate(METRICS):
            host = None if (h == 4 and m == "mem") else f"h{h}"
            region = None if h == 3 else ("eu", "us")[h % 2]
            dc = f"dc{h % 2}" if m == "disk" else None
            for i in range(STEPS):
                t = T0 + i * 7 * SEC + (h * 3 + mi) * 10_000 + rng.randrange(10_000)
                rows.append((t, m, host, region, dc, round(rng.uniform(0, 100), 3)))
    rng.shuffle(rows)
    cols = list(zip(*rows))
    return pa.table({
        "time": pa.array(cols[0], TS), "metric": pa.array(cols[1], pa.string()),
        "host": pa.array(cols[2], pa.string()), "region": pa.array(cols[3], pa.string()),
        "dc": pa.array(cols[4], pa.string()), "value": pa.array(cols[5], pa.float64()),
    })


@pytest.fixture(scope="module")
def diff(tmp_path_factory):
    """(adbc connection, duckdb connection) over the same rows.

    StreamDB gets them in three parts: two flushed to chunks by graceful
    restarts, the last left in the write buffer (--flush-interval 1h).
    """
    import duckdb
    data = diff_dataset()
    tmp = tmp_path_factory.mktemp("diff")
    srv = Server(tmp / "data", tmp / "streamdb.log", ["--flush-interval", "1h"])
    (tmp / "data").mkdir()
    srv.start()
    try:
        n = data.num_rows
        parts = [data.slice(0, n // 3), data.slice(n // 3, n // 3), data.slice(2 * (n // 3))]
        for i, part in enumerate(parts):
            do_put(srv, part.to_batches(max_chunksize=500))
            if i < 2:
                srv.restart()
        st = srv.status()
        assert st["rows"] == n and st["series"] == 15, st
        assert st["buffer"]["rows"] == parts[2].num_rows, st
        assert st["storage"]["rows"] == n - parts[2].num_rows and st["storage"]["chunks"] >= 2, st
        duck = duckdb.connect()
        duck.execute("SET TimeZone = 'UTC'")
        duck.register("metrics", data)
        conn = srv.adbc()
        yield conn, duck
        conn.close()
        duck.close()
    finally:
        srv.stop()


def normalise(table: pa.Table) -> list[tuple]:
    cols = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        cols.append(col.to_pylist())
    rows = list(zip(*cols)) if cols else []
    return sorted(rows, key=lambda r: tuple((v is None, v) for v in r))


def assert_rows_close(got: list[tuple], exp: list[tuple], rel: float = 1e-9) -> None:
    assert len(got) == len(exp), f"{len(got)} rows, expected {len(exp)}"

    def same(a, b):
        if isinstance(a, float) or isinstance(b, float):
            return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                    and math.isclose(a, b, rel_tol=rel, abs_tol=1e-12))
        return a == b
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, exp))
           if len(g) != len(e) or not all(same(x, y) for x, y in zip(g, e))]
    assert not bad, f"{len(bad)} rows differ, first: " + "; ".join(
        f"#{i} got {g} expected {e}" for i, g, e in bad[:3])


AGG = "count(*), sum(value), avg(value), min(value), max(value)"
HOST, REGION, DC = "tags['host']", "tags['region']", "tags['dc']"

# (id, StreamDB SQL, DuckDB SQL)
DIFF_QUERIES = [
    ("by_metric",
     f"SELECT metric, {AGG}, stddev_samp(value), min(time), max(time) FROM metrics GROUP BY metric",
     f"SELECT metric, {AGG}, stddev_samp(value), min(time), max(time) FROM metrics "
     "GROUP BY metric"),
    ("by_host",
     f"SELECT {HOST}, {AGG} FROM metrics GROUP BY 1",
     f"SELECT host, {AGG} FROM metrics GROUP BY 1"),
    ("by_all_tags",
     f"SELECT metric, {HOST}, {REGION}, {DC}, count(*), sum(value) FROM metrics "
     "GROUP BY 1, 2, 3, 4",
     "SELECT metric, host, region, dc, count(*), sum(value) FROM metrics GROUP BY 1, 2, 3, 4"),
    ("bucket_1m_by_metric",
     "SELECT time_bucket('1m', time), metric, count(*), sum(value), min(value), max(value) "
     "FROM metrics GROUP BY 1, 2",
     "SELECT time_bucket(INTERVAL '1 minute', time), metric, count(*), sum(value), min(value), "
     "max(value) FROM metrics GROUP BY 1, 2"),
    ("bucket_7m_epoch_aligned",
     "SELECT time_bucket('7m', time), count(*), avg(value) FROM metrics GROUP BY 1",
     "SELECT time_bucket(INTERVAL '7 minutes', time, TIMESTAMPTZ '1970-01-01 00:00:00+00'), "
     "count(*), avg(value) FROM metrics GROUP BY 1"),
    ("filter_tag_metric_iso_range",
     f"SELECT {HOST}, metric, count(*), sum(value), min(time), max(time) FROM metrics "
     f"WHERE {REGION} = 'eu' AND metric IN ('cpu', 'disk') AND time >= '2024-01-15T00:10:00Z' "
     "AND time < '2024-01-15T00:20:30.5Z' GROUP BY 1, 2",
     "SELECT host, metric, count(*), sum(value), min(time), max(time) FROM metrics "
     "WHERE region = 'eu' AND metric IN ('cpu', 'disk') AND time >= '2024-01-15T00:10:00Z' "
     "AND time < '2024-01-15T00:20:30.5Z' GROUP BY 1, 2"),
    ("filter_host_in_between_rows",
     f"SELECT time, metric, {HOST}, {DC}, value FROM metrics WHERE {HOST} IN ('h1', 'h3') "
     "AND time BETWEEN '2024-01-15T00:30:00Z' AND '2024-01-15T00:33:00Z'",
     "SELECT time, metric, host, dc, value FROM metrics WHERE host IN ('h1', 'h3') "
     "AND time BETWEEN '2024-01-15T00:30:00Z' AND '2024-01-15T00:33:00Z'"),
    ("filter_missing_tags",
     f"SELECT metric, {HOST}, count(*), max(value) FROM metrics "
     f"WHERE {REGION} IS NULL OR {HOST} IS NULL GROUP BY 1, 2",
     "SELECT metric, host, count(*), max(value) FROM metrics "
     "WHERE region IS NULL OR host IS NULL GROUP BY 1, 2"),
    ("window_lag_row_number",
     f"SELECT {HOST}, time, metric, value, "
     f"row_number() OVER (PARTITION BY {HOST} ORDER BY time), "
     f"value - lag(value) OVER (PARTITION BY {HOST} ORDER BY time) FROM metrics",
     "SELECT host, time, metric, value, row_number() OVER (PARTITION BY host ORDER BY time), "
     "value - lag(value) OVER (PARTITION BY host ORDER BY time) FROM metrics"),
    ("window_moving_avg",
     f"SELECT time, avg(value) OVER (PARTITION BY metric, {HOST} ORDER BY time "
     "ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) FROM metrics WHERE metric = 'mem'",
     "SELECT time, avg(value) OVER (PARTITION BY metric, host ORDER BY time "
     "ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) FROM metrics WHERE metric = 'mem'"),
    ("join_above_metric_avg",
     "SELECT m.time, m.metric, m.value FROM metrics m JOIN "
     "(SELECT metric, avg(value) AS a FROM metrics GROUP BY metric) s "
     "ON m.metric = s.metric WHERE m.value > s.a",
     "SELECT m.time, m.metric, m.value FROM metrics m JOIN "
     "(SELECT metric, avg(value) AS a FROM metrics GROUP BY metric) s "
     "ON m.metric = s.metric WHERE m.value > s.a"),
    ("scalar_subquery",
     f"SELECT {HOST}, count(*) FROM metrics WHERE value > (SELECT avg(value) FROM metrics) "
     "GROUP BY 1",
     "SELECT host, count(*) FROM metrics WHERE value > (SELECT avg(value) FROM metrics) "
     "GROUP BY 1"),
    ("last_value_per_series",
     f"SELECT metric, {HOST}, {REGION}, {DC}, count(*), last_value(value ORDER BY time), "
     "first_value(value ORDER BY time), max(time) FROM metrics "
     f"GROUP BY series_id, metric, {HOST}, {REGION}, {DC}",
     "SELECT metric, host, region, dc, count(*), arg_max(value, time), arg_min(value, time), "
     "max(time) FROM metrics GROUP BY metric, host, region, dc"),
]


@pytest.mark.parametrize("sdb_sql,duck_sql", [q[1:] for q in DIFF_QUERIES],
                         ids=[q[0] for q in DIFF_QUERIES])
def test_differential_vs_duckdb(diff, sdb_sql, duck_sql):
    conn, duck = diff
    expected = normalise(duck.sql(duck_sql).to_arrow_table())
    assert expected, "the DuckDB answer is empty: the query tests nothing"
    assert_rows_close(normalise(run(conn, sdb_sql)), expected)


def test_differential_series_ids(diff):
    conn, duck = diff
    got = run(conn, "SELECT count(DISTINCT series_id) AS n, count(*) AS c FROM metrics").to_pylist()
    exp = duck.sql("SELECT count(DISTINCT (metric, host, region, dc)), count(*) "
                   "FROM metrics").fetchall()
    assert [(r["n"], r["c"]) for r in got] == exp == [(15, HOSTS * len(METRICS) * STEPS)]


# ---- 4. the seed's SQL examples, unchanged ----------------------------------

SEED_RECENT = ("SELECT time_bucket('10s', time), AVG(value) FROM metrics "
               "WHERE time > now() - '1m' GROUP BY 1")
SEED_AGG = "SELECT time_bucket('5s', time), AVG(value) FROM metrics GROUP BY 1"
SEED_RANGE = ("SELECT time, value FROM metrics WHERE tags['host'] = 'a' "
              "AND time BETWEEN '2024-01-15T00:00:00Z' AND '2024-01-15T00:00:05Z'")
SEED_POINT = ("SELECT value FROM metrics WHERE metric = 'mem' AND tags['host'] = 'a' "
              "AND time = '2024-01-15T00:00:07.007007Z'")


def cli_json(srv, sql: str) -> list[dict]:
    cmd = [str(streamdb_bin()), "query", "--server", srv.http, "--format", "json", sql]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def bucket_avgs(points, width_us):
    groups: dict[int, list[float]] = {}
    for t, v in points:
        groups.setdefault(t // width_us * width_us, []).append(v)
    return sorted((b, sum(vs) / len(vs)) for b, vs in groups.items())


def test_seed_recent_buckets(streamdb_server):
    now = int(_time.time() * SEC)
    recent = [(now - i * 4 * SEC - 1234, float(i)) for i in range(12)]  # 0..44 s ago
    old = [(now - 5 * 60 * SEC, 1000.0), (now - 70 * SEC, 2000.0), (now - 3600 * SEC, 3000.0)]
    pts = recent + old
    do_put(streamdb_server, pa.table({"time": pa.array([t for t, _ in pts], TS),
                                      "metric": ["cpu"] * len(pts), "host": ["a"] * len(pts),
                                      "value": [v for _, v in pts]}))
    with streamdb_server.adbc() as conn:
        got = run(conn, SEED_RECENT)
    assert got.num_columns == 2
    assert got.schema.types == [TS, pa.float64()]
    expected = bucket_avgs(recent, 10 * SEC)
    assert_rows_close(normalise(got), expected)
    cli = cli_json(streamdb_server, SEED_RECENT)
    bucket, avg = got.column_names
    assert_rows_close(sorted((micros(datetime.fromisoformat(r[bucket])), r[avg]) for r in cli),
                      expected)


def test_seed_aggregation_and_point_queries(conn, loaded):
    pts = [(r["time"], r["value"]) for r in small_table().to_pylist()]
    us = [(micros(t), v) for t, v in pts]
    got = run(conn, SEED_AGG)
    assert got.schema.types == [TS, pa.float64()]
    assert_rows_close(normalise(got), bucket_avgs(us, 5 * SEC))
    assert len(cli_json(loaded, SEED_AGG)) == got.num_rows

    got = run(conn, SEED_RANGE)
    assert got.column_names == ["time", "value"]
    rows = small_table().to_pylist()
    assert sorted(got.to_pylist(), key=lambda r: r["time"]) == [
        {"time": r["time"], "value": r["value"]} for r in rows
        if r["host"] == "a" and r["time"] <= dt(T0 + 5 * SEC)]

    assert rows[7]["time"] == dt(T0 + 7 * SEC + 7007)
    assert run(conn, SEED_POINT).to_pylist() == [{"value": 8.125}]
    assert cli_json(loaded, SEED_POINT) == [{"value": 8.125}]


# ---- 5. errors ----------------------------------------------------------------

BAD_SQL = [
    ("syntax", "SELEC 1", "SELEC"),
    ("unknown_column", "SELECT nosuchcol FROM metrics", "nosuchcol"),
    ("unknown_table", "SELECT * FROM nosuchtable", "nosuchtable"),
    ("bad_bucket_width", "SELECT time_bucket('5 parsecs', time), count(*) FROM metrics GROUP BY 1",
     "5 parsecs"),
    ("zero_bucket_width", "SELECT time_bucket('0s', time) FROM metrics", "positive"),
    ("two_statements", "SELECT 1; SELECT 2", "one SQL statement"),
]


@pytest.mark.parametrize("sql,needle", [b[1:] for b in BAD_SQL], ids=[b[0] for b in BAD_SQL])
def test_bad_sql_raises_and_server_still_answers(conn, loaded, sql, needle):
    with pytest.raises(adbc_driver_manager.ProgrammingError) as err:
        run(conn, sql)
    assert needle in str(err.value)
    assert "INVALID_ARGUMENT" in str(err.value)
    assert run(conn, "SELECT 1 AS one").to_pylist() == [{"one": 1}]
    with loaded.adbc() as fresh:
        assert run(fresh, "SELECT count(*) AS n FROM metrics").to_pylist() == [{"n": 8}]


# ---- 6. HTTP /v1/query --------------------------------------------------------

def http_get(srv, sql: str | None, fmt: str | None = None):
    q = {k: v for k, v in (("sql", sql), ("format", fmt)) if v is not None}
    url = srv.http + "/v1/query?" + urllib.parse.urlencode(q)
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


HTTP_SQL = ("SELECT time, metric, tags['host'] AS host, value, series_id FROM metrics "
            "WHERE value > 1 ORDER BY time")


def test_http_json_csv_arrow_equal_adbc(conn, loaded):
    ref = run(conn, HTTP_SQL)
    assert ref.num_rows == 6
    ref_rows = ref.to_pylist()

    status, ctype, body = http_get(loaded, HTTP_SQL, "json")
    assert (status, ctype) == (200, "application/json")
    got = json.loads(body)
    for r in got:
        r["time"] = datetime.fromisoformat(r["time"])
    # null cells are left out of the JSON objects (arrow-json's default)
    assert got == [{k: v for k, v in r.items() if v is not None} for r in ref_rows]
    assert any(r["host"] is None for r in ref_rows)

    status, ctype, body = http_get(loaded, HTTP_SQL, "csv")
    assert (status, ctype) == (200, "text/csv")
    lines = list(csv.reader(io.StringIO(body.decode())))
    assert lines[0] == ref.column_names
    parsed = [{"time": datetime.fromisoformat(t), "metric": m, "host": h or None,
               "value": float(v), "series_id": int(s)} for t, m, h, v, s in lines[1:]]
    assert parsed == ref_rows

    status, ctype, body = http_get(loaded, HTTP_SQL, "arrow")
    assert (status, ctype) == (200, "application/vnd.apache.arrow.stream")
    assert pa.ipc.open_stream(body).read_all().equals(ref)

    # POST with the SQL as the body gives the same answer
    req = urllib.request.Request(loaded.http + "/v1/query?format=json", data=HTTP_SQL.encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.loads(r.read()) == json.loads(http_get(loaded, HTTP_SQL, "json")[2])


BAD_HTTP = [
    pytest.param("SELEC 1", "json", "SELEC", id="syntax"),
    pytest.param("SELECT nosuchcol FROM metrics", "csv", "nosuchcol", id="unknown_column"),
    pytest.param("SELECT * FROM nosuchtable", "json", "nosuchtable", id="unknown_table"),
    pytest.param("SELECT time_bucket('5 parsecs', time) FROM metrics", "csv", "5 parsecs",
                 id="bad_bucket_width"),
    pytest.param("SELECT 1", "xml", "xml", id="unknown_format"),
    pytest.param(None, "json", "missing SQL", id="missing_sql"),
    pytest.param("SELECT value FROM metrics WHERE value > $1", "json", "$1", id="unbound_param"),
    pytest.param("SELECT tags FROM metrics", "csv", "csv", id="map_as_csv"),
]


@pytest.mark.parametrize("sql,fmt,needle", BAD_HTTP)
def test_http_bad_query_is_400_with_json_error(loaded, sql, fmt, needle):
    status, ctype, body = http_get(loaded, sql, fmt)
    assert (status, ctype) == (400, "application/json"), body
    err = json.loads(body)
    assert list(err) == ["error"] and needle in err["error"], err
    ok = http_get(loaded, "SELECT 1 AS one", "json")
    assert ok == (200, "application/json", b'[{"one":1}]')


def test_http_csv_empty_result_has_header(loaded):
    status, _, body = http_get(loaded, "SELECT time, value FROM metrics WHERE value > 1000", "csv")
    assert (status, body.decode()) == (200, "time,value\n")
