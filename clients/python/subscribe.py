"""A continuous query from Python with nothing but pyarrow.

    python clients/python/subscribe.py [grpc://127.0.0.1:8080] [seconds]

Subscribes to average CPU per 5-second bucket and host, keeps the result up
to date by applying each update (a group's new row replaces its old one),
and prints the table whenever it changes. Runs for `seconds` (default 30),
then prints the final table; `apply_updates` is what a program would reuse.
"""

from __future__ import annotations

import json
import sys
import time

import pyarrow as pa
import pyarrow.flight as fl

QUERY = ("SELECT time_bucket('5s', time) AS bucket, tags['host'] AS host, avg(value) AS avg_value "
         "FROM metrics GROUP BY 1, 2")
KEY = ("bucket", "host")  # the GROUP BY columns: how updates are matched to rows


def apply_updates(reader: fl.FlightStreamReader, view: dict, key=KEY, until=None):
    """Reads messages into `view` ({key tuple: row dict}).

    Stops when a message's watermark offset reaches `until` (if given) or
    the stream ends. A large snapshot comes in parts: all but the last say
    `"more": true`, and the view equals the SELECT at `offset` only after
    the last. Yields each message's metadata after applying it.
    """
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return
        meta = json.loads(chunk.app_metadata.to_pybytes()) if chunk.app_metadata else {}
        if chunk.data is not None:
            for row in chunk.data.to_pylist():
                view[tuple(row[k] for k in key)] = row
        yield meta
        if until is not None and meta.get("offset", "") >= until and not meta.get("more"):
            return


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:8080"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    client = fl.connect(url)
    descriptor = fl.FlightDescriptor.for_command(f"SUBSCRIBE TO {QUERY}")
    writer, reader = client.do_exchange(descriptor)
    view: dict = {}
    deadline = time.monotonic() + seconds
    for meta in apply_updates(reader, view):
        if meta.get("kind") in ("snapshot", "update"):
            print(f"{meta['kind']} at offset {meta['offset']}: {len(view)} groups")
            print(pa.Table.from_pylist(sorted(view.values(), key=lambda r: (r["bucket"], r["host"] or ""))))
        if time.monotonic() > deadline:
            break
    writer.close()  # ends the subscription on the server


if __name__ == "__main__":
    main()
