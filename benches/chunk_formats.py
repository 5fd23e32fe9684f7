"""Bytes per point of compacted chunks in candidate file formats.

A compacted chunk holds one hour partition of points, `(series_id u64,
time timestamp[us], value f64)`, sorted by (series_id, time). This script
builds exactly those partitions from a `gen_tsbs.py` data set (series ids
are 64-bit hashes of the series key, as StreamDB's are), writes every
partition in each candidate format, and reports total bytes per point and
the time pyarrow takes to read all partitions back.

    python benches/chunk_formats.py /tmp/bench-data/cpu_full.parquet /tmp/bench-data/cpu_int.parquet

Groundwork for the storage issue's format decision; pyarrow's writers use
the same Arrow IPC and Parquet encodings as the Rust crates.
"""

from __future__ import annotations

import hashlib
import io
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

HOUR_US = 3_600_000_000
TAGS = ["hostname", "region", "datacenter", "rack", "os", "arch", "team",
        "service", "service_version", "service_environment"]


def series_ids(t: pa.Table) -> np.ndarray:
    keys = pc.binary_join_element_wise(t["metric"], *[t[c] for c in TAGS], "\x00")
    uniq, inverse = np.unique(keys.to_numpy(zero_copy_only=False), return_inverse=True)
    ids = np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
                    for k in uniq], dtype=np.uint64)
    return ids[inverse]


def partitions(path: str) -> list[pa.Table]:
    t = pq.read_table(path)
    points = pa.table({
        "series_id": pa.array(series_ids(t), pa.uint64()),
        "time": t["time"],
        "value": t["value"],
    })
    hour = pc.divide(points["time"].cast(pa.int64()), HOUR_US)
    points = points.append_column("hour", hour)
    out = []
    for h in np.unique(hour.to_numpy()):
        part = points.filter(pc.equal(points["hour"], h)).drop_columns(["hour"])
        out.append(part.sort_by([("series_id", "ascending"), ("time", "ascending")]))
    return out


def arrow_ipc(codec):
    def write(t: pa.Table) -> bytes:
        sink = io.BytesIO()
        opts = ipc.IpcWriteOptions(compression=codec)
        with ipc.new_file(sink, t.schema, options=opts) as w:
            w.write_table(t, max_chunksize=64 * 1024)
        return sink.getvalue()

    def read(b: bytes) -> pa.Table:
        return ipc.open_file(pa.py_buffer(b)).read_all()
    return write, read


def parquet(**kwargs):
    def write(t: pa.Table) -> bytes:
        sink = io.BytesIO()
        pq.write_table(t, sink, row_group_size=1 << 20, **kwargs)
        return sink.getvalue()

    def read(b: bytes) -> pa.Table:
        return pq.read_table(pa.BufferReader(b))
    return write, read


FORMATS = {
    "Arrow IPC, LZ4 (today's chunks)": arrow_ipc("lz4"),
    "Arrow IPC, ZSTD": arrow_ipc("zstd"),
    "Parquet ZSTD, default encodings": parquet(compression="zstd"),
    "Parquet ZSTD, dict ids, delta time, byte-stream-split value": parquet(
        compression="zstd", use_dictionary=["series_id"],
        column_encoding={"time": "DELTA_BINARY_PACKED", "value": "BYTE_STREAM_SPLIT"}),
    "Parquet ZSTD, dict ids, delta time, plain value": parquet(
        compression="zstd", use_dictionary=["series_id"],
        column_encoding={"time": "DELTA_BINARY_PACKED", "value": "PLAIN"}),
    "Parquet ZSTD(9), dict ids, delta time, byte-stream-split value": parquet(
        compression="zstd", compression_level=9, use_dictionary=["series_id"],
        column_encoding={"time": "DELTA_BINARY_PACKED", "value": "BYTE_STREAM_SPLIT"}),
}


def main(paths: list[str]) -> None:
    for path in paths:
        parts = partitions(path)
        points = sum(p.num_rows for p in parts)
        print(f"\n{path}: {points:,} points in {len(parts)} hour partitions")
        print(f"| format | bytes/point | read all (s, pyarrow) |")
        print(f"|---|---:|---:|")
        for name, (write, read) in FORMATS.items():
            files = [write(p) for p in parts]
            size = sum(len(f) for f in files)
            start = time.perf_counter()
            rows = sum(read(f).num_rows for f in files)
            took = time.perf_counter() - start
            assert rows == points
            print(f"| {name} | {size / points:.2f} | {took:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
