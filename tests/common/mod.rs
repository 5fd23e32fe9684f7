//! What the integration tests share: a server config on a free port and a
//! `cpu_usage` batch with one `host` tag column.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use streamdb::ingest::EngineConfig;
use streamdb::query::QueryConfig;
use streamdb::server::ServerConfig;

/// 2024-01-15T00:00:00Z in Unix micros.
pub const T0: i64 = 1_705_276_800_000_000;

/// Defaults, listening on 127.0.0.1 port 0, data in `dir`.
pub fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        engine: EngineConfig::new(dir),
        query: QueryConfig::default(),
        streams: Default::default(),
        source: None,
        subscribe: Default::default(),
        auth_tokens: Vec::new(),
        read_only_tokens: Vec::new(),
        tls: None,
        tls_handshake: Default::default(),
        max_message_bytes: 256 << 20,
    }
}

/// Row `i` is `(T0 + i * step_us, "cpu_usage", hosts[i], values[i])`.
pub fn cpu_batch(hosts: &[&str], values: &[f64], step_us: i64) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("time", streamdb::model::time_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]);
    let n = hosts.len();
    let times: Vec<i64> = (0..n as i64).map(|i| T0 + i * step_us).collect();
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            Arc::new(StringArray::from(vec!["cpu_usage"; n])),
            Arc::new(StringArray::from(hosts.to_vec())),
            Arc::new(Float64Array::from(values.to_vec())),
        ],
    )
    .unwrap()
}

/// `points.ndjson` in `dir`: `n` points of `cpu{host=h}`, one microsecond
/// apart from T0, value its index (what `streamdb ingest --file` reads).
#[allow(dead_code)] // shared by test crates that do not all ingest files
pub fn ndjson_points(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let text: String = (0..n)
        .map(|i| {
            format!(
                "{{\"time\":{},\"metric\":\"cpu\",\"tags\":{{\"host\":\"h\"}},\"value\":{i}}}\n",
                T0 + i as i64
            )
        })
        .collect();
    let path = dir.join("points.ndjson");
    std::fs::write(&path, text).unwrap();
    path
}
