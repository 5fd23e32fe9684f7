//! Points as JSON: the `metrics` stream's message format over HTTP.
//!
//! A point message is `{"time": ..., "metric": "...", "tags": {...},
//! "value": 1.5}` where `time` is an RFC 3339 string or Unix microseconds
//! and `tags` may be omitted. A body is one message, a JSON array of them,
//! or NDJSON (one per line). Parsed points become an Arrow batch in the
//! "long with a tags map" shape and go through [`normalize`], so HTTP
//! writes get exactly the validation DoPut writes get.
//!
//! Reading turns log records back into messages, DoPut batches included,
//! with series names from the record itself or the catalog (paged by
//! `view`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, MapBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Schema, TimestampMicrosecondType, UInt64Type,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::normalize::{normalize, PointBatch};
use crate::model::{format_micros, parse_iso_micros, time_type, SeriesId, SeriesKey};
use crate::storage::SeriesCatalog;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JsonPointError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("point {index}: {message}")]
    Point { index: usize, message: String },
    #[error("no points: the body holds no point messages")]
    Empty,
    #[error("{0}")]
    Batch(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointMessage {
    time: serde_json::Value,
    metric: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    value: f64,
}

/// Parses a JSON (`ndjson == false`) or NDJSON body into a validated batch.
pub fn parse(
    body: &[u8],
    ndjson: bool,
    catalog: &SeriesCatalog,
) -> Result<PointBatch, JsonPointError> {
    let text =
        std::str::from_utf8(body).map_err(|e| JsonPointError::Syntax(format!("not UTF-8: {e}")))?;
    let raw: Vec<&RawValue> = if ndjson {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| JsonPointError::Syntax(format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<_, _>>()?
    } else {
        let whole: &RawValue =
            serde_json::from_str(text).map_err(|e| JsonPointError::Syntax(e.to_string()))?;
        if whole.get().starts_with('[') {
            serde_json::from_str(whole.get()).map_err(|e| JsonPointError::Syntax(e.to_string()))?
        } else {
            vec![whole]
        }
    };
    if raw.is_empty() {
        return Err(JsonPointError::Empty);
    }
    let mut times = Vec::with_capacity(raw.len());
    let mut metrics = Vec::with_capacity(raw.len());
    let mut values = Vec::with_capacity(raw.len());
    let mut tags = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for (index, r) in raw.iter().enumerate() {
        let bad = |message: String| JsonPointError::Point { index, message };
        let p: PointMessage = serde_json::from_str(r.get()).map_err(|e| {
            bad(format!(
                "{e} (expected {{\"time\", \"metric\", \"tags\", \"value\"}})"
            ))
        })?;
        times.push(parse_time(&p.time).map_err(bad)?);
        metrics.push(p.metric);
        values.push(p.value);
        for (k, v) in &p.tags {
            tags.keys().append_value(k);
            tags.values().append_value(v);
        }
        tags.append(true)
            .expect("keys and values appended in pairs");
    }
    let tags = tags.finish();
    let schema = Arc::new(Schema::new(vec![
        Field::new("time", time_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("tags", tags.data_type().clone(), false),
        Field::new("value", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
        Arc::new(StringArray::from(metrics)),
        Arc::new(tags),
        Arc::new(Float64Array::from(values)),
    ];
    let batch =
        RecordBatch::try_new(schema, columns).map_err(|e| JsonPointError::Batch(e.to_string()))?;
    normalize(&batch, catalog).map_err(|e| JsonPointError::Batch(e.to_string()))
}

fn parse_time(v: &serde_json::Value) -> Result<i64, String> {
    match v {
        serde_json::Value::String(s) => parse_iso_micros(s).ok_or_else(|| {
            format!("`time` {s:?} is not an RFC 3339 timestamp (e.g. 2024-01-15T00:00:00Z)")
        }),
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("`time` {n} is not an integer number of Unix microseconds")),
        other => Err(format!(
            "`time` must be an RFC 3339 string or Unix microseconds, not {other}"
        )),
    }
}

/// A point message as it is written out (fields in the documented order).
#[derive(serde::Serialize)]
struct PointOut<'a> {
    time: String,
    metric: &'a str,
    tags: &'a BTreeMap<String, String>,
    value: f64,
}

/// Renders points `from..` of a decoded record until the messages reach
/// `max_bytes` (always at least one point, if any is left).
pub(super) fn render_points(
    batch: &PointBatch,
    catalog: &SeriesCatalog,
    from: usize,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    let local: std::collections::HashMap<SeriesId, &SeriesKey> =
        batch.new_series.iter().map(|(id, k)| (*id, k)).collect();
    let p = &batch.points;
    let ids = p.column(0).as_primitive::<UInt64Type>().values();
    let times = p
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    let values = p.column(2).as_primitive::<Float64Type>().values();
    let mut out = Vec::new();
    let mut bytes = 0;
    for i in from..ids.len() {
        if bytes >= max_bytes && !out.is_empty() {
            break;
        }
        let id = SeriesId(ids[i]);
        let from_catalog;
        let key = match local.get(&id) {
            Some(k) => *k,
            None => match catalog.get(id) {
                Some(k) => {
                    from_catalog = k;
                    &*from_catalog
                }
                // A series retention removed while the log still holds
                // its points (a backfill older than `--retention`): say
                // which series rather than drop the point.
                None => {
                    let msg = serde_json::json!({"time": format_micros(times[i]), "series_id": id.to_string(), "value": values[i]});
                    let msg = msg.to_string().into_bytes();
                    bytes += msg.len() + 1;
                    out.push(msg);
                    continue;
                }
            },
        };
        let msg = PointOut {
            time: format_micros(times[i]),
            metric: &key.metric,
            tags: &key.tags,
            value: values[i],
        };
        let msg = serde_json::to_vec(&msg).expect("points serialize");
        // Plus the comma that joins messages in a response.
        bytes += msg.len() + 1;
        out.push(msg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_documented_form() {
        let catalog = SeriesCatalog::default();
        let one =
            br#"{"time":"2024-01-15T00:00:00Z","metric":"cpu","tags":{"host":"a"},"value":0.5}"#;
        assert_eq!(parse(one, false, &catalog).unwrap().rows(), 1);
        let many = br#"[{"time":1705276800000000,"metric":"cpu","value":1},
                        {"time":"2024-01-15T00:00:01+01:00","metric":"mem","tags":{},"value":2.5}]"#;
        assert_eq!(parse(many, false, &catalog).unwrap().rows(), 2);
        let nd = b"{\"time\":1,\"metric\":\"a\",\"value\":1}\n\n{\"time\":2,\"metric\":\"a\",\"value\":2}\n";
        assert_eq!(parse(nd, true, &catalog).unwrap().rows(), 2);
    }

    #[test]
    fn names_the_bad_point() {
        let catalog = SeriesCatalog::default();
        let cases: [(&[u8], &str); 6] = [
            (
                br#"[{"time":1,"metric":"a","value":1},{"time":"soon","metric":"a","value":1}]"#,
                "point 1: `time`",
            ),
            (br#"{"time":1,"metric":"a"}"#, "missing field `value`"),
            (br#"{"time":1,"metric":"a","value":"high"}"#, "point 0"),
            (
                br#"{"time":1,"metric":"a","value":1,"valeu":2}"#,
                "unknown field `valeu`",
            ),
            (
                br#"{"time":1,"metric":"a","tags":{"h":1},"value":1}"#,
                "point 0",
            ),
            (b"[]", "no points"),
        ];
        for (body, want) in cases {
            let err = parse(body, false, &catalog).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        assert!(matches!(
            parse(b"{", false, &catalog),
            Err(JsonPointError::Syntax(_))
        ));
    }

    #[test]
    fn renders_what_was_parsed() {
        let catalog = SeriesCatalog::default();
        let body =
            br#"{"time":"2024-01-15T00:00:00.25Z","metric":"cpu","tags":{"host":"a"},"value":0.5}"#;
        let batch = parse(body, false, &catalog).unwrap();
        let msgs = render_points(&batch, &catalog, 0, usize::MAX);
        let v: serde_json::Value = serde_json::from_slice(&msgs[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"time":"2024-01-15T00:00:00.250Z","metric":"cpu","tags":{"host":"a"},"value":0.5})
        );
    }
}
