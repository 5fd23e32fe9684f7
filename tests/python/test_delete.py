"""DELETE through the real server, as users send it: ADBC's
`cursor.execute` (a query command) and `execute_update` (an update
command, with bound parameters too), pyarrow Flight SQL's update
command, HTTP `POST /v1/query` and `streamdb query`.

Covers: the count returned (`fetchone()` and `rowcount`), rows gone at
once and after kill -9 + restart, a point written after the delete
surviving, predicates over time (with `now()` and duration strings),
metric and tags (=, !=, IN, NOT IN, OR, IS NULL), a DELETE without WHERE
refused unless `WHERE true`, what cannot be deleted by (value, functions)
refused with the reason and nothing changed, GET refused, read-only tokens
refused on every path, and the series gone from the catalog once
compaction applied the delete.
"""

from __future__ import annotations

import json
import subprocess
import time

import adbc_driver_flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as fl
import pytest
from adbc_driver_flightsql import dbapi as flightsql

from streamdb_helpers import do_put, http_call, streamdb_bin, wait_for

TS = pa.timestamp("us", tz="UTC")
HOUR = 3_600_000_000


def now_us() -> int:
    return int(time.time() * 1_000_000)


def write(srv, rows):
    """rows: (time_us, metric, host or None, value)."""
    do_put(srv, pa.table({
        "time": pa.array([r[0] for r in rows], TS),
        "metric": [r[1] for r in rows],
        "host": pa.array([r[2] for r in rows], pa.string()),
        "value": [float(r[3]) for r in rows],
    }))


def keys(srv, where="true"):
    t = srv.sql(f"SELECT metric, tags['host'] AS host, time, value FROM metrics WHERE {where} "
                "ORDER BY metric, host, time")
    times = t.column(2).cast(pa.int64()).to_pylist()
    return list(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), times, t.column(3).to_pylist()))


def base_rows(t0):
    rows = []
    for h, host in enumerate(["web-1", "web-2", None]):
        for i in range(4):
            rows.append((t0 + i * HOUR, "cpu", host, h * 10 + i))
        rows.append((t0, "mem", host, 100 + h))
    return rows


def test_adbc_execute_deletes_returns_the_count_and_it_stays_deleted_after_kill9(streamdb_server):
    """The issue's user story: through ADBC, `DELETE ... WHERE tags['host'] =
    'web-1' AND time < now() - '1h'` returns the count, the rows are gone
    at once and after kill -9 and restart; a point written after the
    delete into the deleted range survives."""
    srv = streamdb_server
    t0 = now_us() - 5 * HOUR
    write(srv, base_rows(t0))
    with srv.adbc() as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM metrics WHERE tags['host'] = 'web-1' AND time < now() - '1h'")
        # web-1's cpu at t0..t0+3h and its mem at t0: all older than 1 h.
        assert cur.fetchone() == (5,)
        assert cur.rowcount == 5
        assert [d[0] for d in cur.description] == ["rows_deleted"]
    assert [k for k in keys(srv) if k[1] == "web-1"] == []
    assert srv.count() == 15 - 5
    write(srv, [(t0 + 1, "cpu", "web-1", 7)])  # after the delete: stays
    srv.kill9()
    srv.start()
    assert [k[1:] for k in keys(srv) if k[1] == "web-1"] == [("web-1", t0 + 1, 7.0)]
    assert srv.count() == 11


def test_every_predicate_shape_deletes_what_a_select_with_it_reads(streamdb_server):
    """For each WHERE clause, the rows a SELECT with it read before are the
    rows the DELETE removes, the count says so, and nothing else changes."""
    srv = streamdb_server
    t0 = 1_705_276_800_000_000
    iso = "2024-01-15T01:00:00Z"
    cases = [
        "metric = 'mem'",
        "metric IN ('mem', 'disk') AND tags['host'] != 'web-2'",
        "tags['host'] IN ('web-1', 'web-2') AND time >= '2024-01-15T02:00:00Z'",
        "tags['host'] NOT IN ('web-1')",
        "tags['host'] IS NULL",
        "tags['host'] IS NOT NULL AND time BETWEEN '2024-01-15T01:00:00Z' AND '2024-01-15T02:00:00Z'",
        f"(metric = 'cpu' AND time < '{iso}') OR tags['host'] = 'web-2'",
        "NOT (metric = 'cpu') OR time = '2024-01-15T03:00:00Z'",
        "time > '2024-01-15T00:00:00.0000005Z' AND time < '2024-01-15T01:00:00.0000005Z'",
        "false",
        "true",
    ]
    for where in cases:
        with srv.adbc() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM metrics WHERE true")
        write(srv, base_rows(t0))
        before = keys(srv)
        matched = keys(srv, where)
        with srv.adbc() as conn, conn.cursor() as cur:
            cur.execute(f"DELETE FROM metrics WHERE {where}")
            assert cur.fetchone() == (len(matched),), where
        after = keys(srv)
        assert after == [k for k in before if k not in matched], where


def test_update_commands_prepared_statements_and_parameters(streamdb_server):
    """`execute_update` (CommandStatementUpdate), a prepared DELETE with a
    bound parameter executed as an update and as a query, and pyarrow's
    Flight SQL client: each returns the count."""
    srv = streamdb_server
    t0 = 1_705_276_800_000_000
    write(srv, base_rows(t0))
    with srv.adbc() as conn:
        with conn.cursor() as cur:
            cur.adbc_statement.set_sql_query("DELETE FROM metrics WHERE metric = 'mem'")
            assert cur.adbc_statement.execute_update() == 3
        with conn.cursor() as cur:
            cur.execute("DELETE FROM metrics WHERE tags['host'] = ?", ("web-1",))
            assert cur.fetchone() == (4,)
        with conn.cursor() as cur:
            cur.adbc_statement.set_sql_query("DELETE FROM metrics WHERE tags['host'] = ? AND time < ?")
            cur.adbc_statement.prepare()
            cur.adbc_statement.bind(pa.record_batch({
                "h": ["web-2"], "t": pa.array([t0 + 2 * HOUR], TS)}))
            assert cur.adbc_statement.execute_update() == 2
    assert srv.count() == 15 - 3 - 4 - 2
    # A parameter left unbound is the client's error, and deletes nothing.
    with srv.adbc() as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.adbc_statement.set_sql_query("DELETE FROM metrics WHERE tags['host'] = ?")
            cur.adbc_statement.execute_update()
        assert "parameters without values" in str(err.value)
    assert srv.count() == 6


def test_http_and_cli_delete(streamdb_server):
    """POST /v1/query answers `rows_deleted` in the format asked for; GET
    is refused with 405 naming POST; `streamdb query` prints the count."""
    srv = streamdb_server
    t0 = 1_705_276_800_000_000
    write(srv, base_rows(t0))
    status, body = http_call(srv, "POST", "/v1/query", b"DELETE FROM metrics WHERE metric = 'mem'")
    assert status == 200, body
    assert json.loads(body) == [{"rows_deleted": 3}]
    status, body = http_call(srv, "POST", "/v1/query?format=csv",
                             b"DELETE FROM metrics WHERE tags['host'] = 'web-1'")
    assert (status, body.decode().split()) == (200, ["rows_deleted", "4"])
    status, body = http_call(srv, "GET", "/v1/query?sql=DELETE%20FROM%20metrics%20WHERE%20true")
    assert status == 405 and b"POST" in body, body
    out = subprocess.run([str(streamdb_bin()), "query", "--server", srv.grpc,
                          "DELETE FROM metrics WHERE tags['host'] = 'web-2'"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "rows_deleted" in out.stdout and "4" in out.stdout, (out.stdout, out.stderr)
    assert srv.count() == 4


def test_bad_deletes_are_refused_with_the_reason_and_change_nothing(streamdb_server):
    srv = streamdb_server
    t0 = 1_705_276_800_000_000
    write(srv, base_rows(t0))
    for sql, needle in [
        ("DELETE FROM metrics", "WHERE true"),
        ("DELETE FROM metrics WHERE value > 3", "cannot delete by"),
        ("DELETE FROM metrics WHERE upper(metric) = 'CPU'", "cannot delete by"),
        ("DELETE FROM metrics WHERE tags['host'] LIKE 'web%'", "cannot delete by"),
        ("DELETE FROM other WHERE true", "other"),
        ("DELETE FROM metrics WHERE true RETURNING *", "RETURNING"),
        ("DELETE FROM metrics WHERE nosuch = 1", "nosuch"),
        ("DELETE FROM metrics WHERE true; DELETE FROM metrics WHERE true", "exactly one"),
    ]:
        with srv.adbc() as conn, conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error) as err:
                cur.execute(sql)
            assert needle in str(err.value), (sql, err.value)
            assert err.value.status_code == adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT, (sql, err.value)
        status, body = http_call(srv, "POST", "/v1/query", sql.encode())
        assert status == 400 and needle in body.decode(), (sql, status, body)
    assert srv.count() == 15
    # An update that is not a DELETE is refused as such.
    with srv.adbc() as conn, conn.cursor() as cur:
        cur.adbc_statement.set_sql_query("INSERT INTO metrics VALUES (1)")
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.adbc_statement.execute_update()
        assert "only DELETE changes data" in str(err.value)
    assert srv.count() == 15


def test_read_only_tokens_cannot_delete_on_any_path(streamdb_factory):
    srv = streamdb_factory(extra_args=["--auth-token", "writer", "--read-only-token", "reader"])
    t0 = 1_705_276_800_000_000
    rows = base_rows(t0)
    client = fl.connect(srv.grpc)
    opts = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer writer")])
    table = pa.table({
        "time": pa.array([r[0] for r in rows], TS), "metric": [r[1] for r in rows],
        "host": pa.array([r[2] for r in rows], pa.string()), "value": [float(r[3]) for r in rows]})
    w, _ = client.do_put(fl.FlightDescriptor.for_path("metrics"), table.schema, options=opts)
    w.write_table(table)
    w.close()
    auth = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
    with flightsql.connect(srv.grpc, db_kwargs={auth: "Bearer reader"}) as conn:
        with conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error) as err:
                cur.execute("DELETE FROM metrics WHERE true")
            assert "--read-only-token" in str(err.value)
        with conn.cursor() as cur:
            cur.adbc_statement.set_sql_query("DELETE FROM metrics WHERE true")
            with pytest.raises(adbc_driver_manager.Error) as err:
                cur.adbc_statement.execute_update()
            assert "--read-only-token" in str(err.value)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM metrics")
            assert cur.fetchone() == (15,)
    status, body = http_call(srv, "POST", "/v1/query", b"DELETE FROM metrics WHERE true",
                             headers={"Authorization": "Bearer reader"})
    assert status == 403 and b"--read-only-token" in body, body
    out = subprocess.run([str(streamdb_bin()), "query", "--server", srv.grpc, "--token", "reader",
                          "DELETE FROM metrics WHERE true"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--read-only-token" in out.stderr, out.stderr
    # The writer's token deletes.
    with flightsql.connect(srv.grpc, db_kwargs={auth: "Bearer writer"}) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM metrics WHERE true")
        assert cur.fetchone() == (15,)


def test_compaction_applies_the_delete_and_the_series_leaves_the_catalog(streamdb_factory):
    srv = streamdb_factory(extra_args=["--flush-interval", "100ms", "--compaction-interval", "200ms"])
    t0 = 1_705_276_800_000_000
    write(srv, base_rows(t0))
    wait_for(lambda: srv.status()["buffer"]["rows"] == 0, "the flush")
    series_before = srv.status()["series"]
    with srv.adbc() as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM metrics WHERE tags['host'] = 'web-1'")
        assert cur.fetchone() == (5,)
    wait_for(lambda: srv.status()["series"] == series_before - 2,
             "the deleted series to leave the catalog")
    wait_for(lambda: srv.status()["storage"]["deletes"] == 0, "the delete to be retired")
    assert srv.count() == 10
    assert srv.sql("SELECT count(*) AS n FROM metrics WHERE tags['host'] = 'web-1'").column("n")[0].as_py() == 0


def test_a_long_or_chain_survives_restart_and_deep_nesting_is_refused(streamdb_server):
    """A DELETE of 100 OR'd (host, time range) terms is logged and carried
    into the manifest as one flat OR, so a restart (log replay, manifest
    load) reads it back; a condition nested deeper than the limit is
    refused before anything is logged."""
    srv = streamdb_server
    t0 = 1_705_276_800_000_000
    write(srv, base_rows(t0))
    terms = " OR ".join(f"(tags['host'] = 'web-1' AND time BETWEEN '2024-01-15T0{i % 4}:00:00Z' "
                        f"AND '2024-01-15T0{i % 4}:00:00.{i:06d}Z')" for i in range(100))
    with srv.adbc() as conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM metrics WHERE {terms}")
        assert cur.fetchone() == (5,)
    srv.kill9()
    srv.start()
    assert srv.count() == 10
    srv.restart()
    assert srv.count() == 10
    deep = "tags['host'] = 'web-2'"
    for i in range(13):
        deep = f"metric = 'm{i}' OR (tags['host'] = 'h{i}' AND ({deep}))"
    status, body = http_call(srv, "POST", "/v1/query", f"DELETE FROM metrics WHERE {deep}".encode())
    # The SQL parser's own recursion limit stops it first; the predicate's
    # depth limit stands behind it.
    assert status == 400 and (b"levels deep" in body or b"RecursionLimit" in body), (status, body)
    assert srv.count() == 10
