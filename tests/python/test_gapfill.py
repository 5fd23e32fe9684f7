"""Gap filling through the real server (ADBC): `time_bucket_gapfill`,
`locf` and `interpolate` against pandas `reindex` + `ffill` /
`interpolate(method="index")` computed from the same rows.

Covers: random hosts with random missing minutes; the range from WHERE
and from the arguments (unaligned, with a wider WHERE whose extra points
must be left out); the width as an interval; ORDER BY DESC; a host whose
only points are outside the range; `locf` with a prev value; an error
naming the missing range; EXPLAIN showing the GapFill node.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import adbc_driver_manager
import pandas as pd
import pyarrow as pa
import pytest

from streamdb_helpers import do_put

T0 = 1_705_276_800_000_000  # 2024-01-15T00:00:00Z, Unix micros
SEC = 1_000_000
MIN = 60 * SEC
TS = pa.timestamp("us", tz="UTC")


def iso(us: int) -> str:
    d = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def random_points(seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for host in ["a", "b", "c"]:
        for m in range(30):
            if rng.random() < 0.4:
                for _ in range(rng.randint(1, 3)):
                    rows.append((T0 + m * MIN + rng.randrange(MIN), host, rng.randint(-40, 40) / 4))
    # A host seen only long after every range the tests ask for.
    rows.append((T0 + 5 * 3600 * SEC, "late", 1.0))
    return pd.DataFrame(rows, columns=["time", "host", "value"])


def write(server, df: pd.DataFrame) -> None:
    do_put(server, pa.table({
        "time": pa.array(df["time"].tolist(), TS),
        "metric": ["cpu"] * len(df),
        "host": df["host"].tolist(),
        "value": df["value"].tolist(),
    }))


def expected(df: pd.DataFrame, width: int, start: int, finish: int, where: tuple[int, int],
             prev: float | None) -> list[dict]:
    """Every bucket of [start, finish) per host seen in it, filled by pandas."""
    first = start // width * width
    buckets = list(range(first, finish, width))
    d = df[(df.time >= where[0]) & (df.time < where[1])].copy()
    d["bucket"] = d.time // width * width
    d = d[(d.bucket >= first) & (d.bucket < finish)]
    out = []
    for host, g in sorted(d.groupby("host"), key=lambda kv: kv[0]):
        agg = g.groupby("bucket")["value"].agg(["mean", "count"]).reindex(buckets)
        locf = agg["mean"].ffill()
        if prev is not None:
            locf = locf.fillna(prev)
        interp = agg["mean"].interpolate(method="index", limit_area="inside")
        for b in buckets:
            n = agg["count"][b]
            out.append({"t": b, "host": host, "v": agg["mean"][b],
                        "n": None if math.isnan(n) else int(n),
                        "l": locf[b], "i": interp[b]})
    return out


def query(conn, sql: str) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute(sql)
        t = cur.fetch_arrow_table()
    t = t.set_column(0, "t", t.column("t").cast(pa.int64()))
    return t.to_pylist()


def same(got: list[dict], want: list[dict], sql: str) -> None:
    assert len(got) == len(want), sql
    for g, w in zip(got, want):
        for k in ("t", "host", "n"):
            assert g[k] == w[k], (sql, k, g, w)
        for k in ("v", "l", "i"):
            if w[k] is None or (isinstance(w[k], float) and math.isnan(w[k])):
                assert g[k] is None, (sql, k, g, w)
            else:
                assert g[k] == pytest.approx(w[k], rel=1e-9, abs=1e-9), (sql, k, g, w)


@pytest.fixture
def conn(streamdb_server):
    c = streamdb_server.adbc()
    yield c
    c.close()


@pytest.mark.parametrize("seed", range(4))
def test_gapfill_matches_pandas(streamdb_server, conn, seed):
    df = random_points(seed)
    write(streamdb_server, df)
    rng = random.Random(1000 + seed)
    for _ in range(4):
        width = rng.choice([MIN, 2 * MIN, 90 * SEC])
        start = T0 + rng.randrange(-3 * MIN, 15 * MIN) + rng.randrange(SEC)
        finish = start + rng.randrange(1, 25) * MIN + rng.randrange(SEC)
        prev = rng.choice([None, 0.0, -2.5])
        width_sql = rng.choice([f"'{width // SEC}s'", f"INTERVAL '{width // SEC} seconds'"])
        if rng.random() < 0.5:
            where = (start - 5 * MIN, finish + 5 * MIN)
            gapfill = f"time_bucket_gapfill({width_sql}, time, '{iso(start)}', '{iso(finish)}')"
        else:
            where = (start, finish)
            gapfill = f"time_bucket_gapfill({width_sql}, time)"
        locf = "locf(avg(value))" if prev is None else f"locf(avg(value), {prev})"
        sql = (f"SELECT {gapfill} AS t, tags['host'] AS host, avg(value) AS v, count(*) AS n, "
               f"{locf} AS l, interpolate(avg(value)) AS i FROM metrics "
               f"WHERE metric = 'cpu' AND time >= '{iso(where[0])}' AND time < '{iso(where[1])}' "
               f"GROUP BY 1, 2 ORDER BY 2, 1")
        same(query(conn, sql), expected(df, width, start, finish, where, prev), sql)


def test_order_by_desc_and_single_observation(streamdb_server, conn):
    write(streamdb_server, pd.DataFrame([(T0 + 2 * MIN + 3 * SEC, "a", 5.0)],
                                        columns=["time", "host", "value"]))
    sql = ("SELECT time_bucket_gapfill('1m', time) AS t, tags['host'] AS host, avg(value) AS v, "
           "count(*) AS n, locf(avg(value)) AS l, interpolate(avg(value)) AS i FROM metrics "
           "WHERE time >= '2024-01-15T00:00:00Z' AND time < '2024-01-15T00:05:00Z' "
           "GROUP BY 1, 2 ORDER BY 1 DESC")
    got = query(conn, sql)
    assert [r["t"] for r in got] == [T0 + k * MIN for k in range(4, -1, -1)]
    assert [r["l"] for r in got] == [5.0, 5.0, 5.0, None, None]
    assert [r["i"] for r in got] == [None, None, 5.0, None, None]
    assert [r["n"] for r in got] == [None, None, 1, None, None]


def test_missing_range_is_refused_naming_it(conn):
    with pytest.raises(adbc_driver_manager.Error, match="needs a start and a finish"):
        query(conn, "SELECT time_bucket_gapfill('1m', time) AS t, avg(value) FROM metrics GROUP BY 1")


def test_explain_shows_gapfill(conn):
    with conn.cursor() as cur:
        cur.execute("EXPLAIN SELECT time_bucket_gapfill('1m', time) AS t, locf(avg(value)) FROM metrics "
                    "WHERE time >= now() - '1h' AND time < now() GROUP BY 1")
        plan = "\n".join(cur.fetch_arrow_table().column("plan").to_pylist())
    assert "GapFill:" in plan and "GapFillExec:" in plan, plan
