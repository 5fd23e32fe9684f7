//! Entry points for the fuzz targets in `fuzz/` (built with the `fuzzing`
//! feature) and for the bounded random-input tests below: every decoder of
//! bytes a client or a disk hands the server.
//!
//! Each function must never panic, whatever its input, and checks the
//! round trips that must hold when a decode succeeds. It sits above every
//! layer and nothing imports it.

use std::str::FromStr;

use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures::StreamExt;

use crate::ingest::{normalize, record as ingest_record};
use crate::server::streams::params;
use crate::storage::SeriesCatalog;
use crate::stream::registry::{json as registry_json, record as registry_record};
use crate::stream::{segment, Offset};

/// Segment framing: `data` is what follows a valid segment header on disk
/// (after a crash it can be anything). Every record `scan` accepts is read
/// back and decoded as both kinds of record payload.
pub fn stream_segment(data: &[u8]) {
    // One file per call: the tests run these on several threads at once.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("streamdb-fuzz-{}-{call}.seg", std::process::id()));
    // A fixed salt, so the seeds' frames (and the fuzzer's) can be valid.
    let format = segment::Format {
        version: segment::VERSION,
        salt: 7,
    };
    let mut bytes = segment::encode_header(7, format);
    bytes.extend_from_slice(data);
    std::fs::write(&path, &bytes).expect("writing the fuzz segment");
    let scanned = segment::scan(&path).expect("a valid header always scans");
    assert!(scanned.valid_len <= bytes.len() as u64);
    let file = std::fs::File::open(&path).expect("opening the fuzz segment");
    for f in scanned.frames() {
        let record =
            segment::read_record(&file, f.pos, format).expect("a scanned frame reads back");
        if let Some(payload) = record {
            record_payload(&payload);
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// A log record's payload, as the metrics stream and named streams decode
/// it on replay.
pub fn record_payload(data: &[u8]) {
    match ingest_record::decode_record(data) {
        Ok(ingest_record::Record::Points(points)) => {
            let again = ingest_record::decode(&ingest_record::encode(&points))
                .expect("an encoded record decodes");
            assert_eq!(again.rows(), points.rows());
            assert_eq!(again.new_series, points.new_series);
        }
        Ok(ingest_record::Record::Delete(p)) => {
            let again = ingest_record::decode_record(&ingest_record::encode_delete(&p))
                .expect("an encoded delete decodes");
            assert_eq!(again, ingest_record::Record::Delete(p));
        }
        Err(_) => {}
    }
    if let Ok(entry) = registry_record::decode(data) {
        let again = registry_record::decode(&registry_record::encode(&entry))
            .expect("an encoded entry decodes");
        assert_eq!(
            registry_record::encode(&again),
            registry_record::encode(&entry)
        );
    }
}

/// JSON point bodies (`POST /v1/stream/metrics`), as JSON and as NDJSON,
/// and JSON-mode message splitting of named streams.
pub fn json_points(data: &[u8]) {
    let catalog = SeriesCatalog::default();
    for ndjson in [false, true] {
        if let Ok(points) = crate::ingest::json::parse(data, ndjson, &catalog) {
            let logged = ingest_record::decode(&ingest_record::encode(&points))
                .expect("parsed points encode as a record");
            assert_eq!(logged.rows(), points.rows());
        }
    }
    if let Ok(messages) = registry_json::split(data, true) {
        let rendered = registry_json::render(messages.iter().map(Vec::as_slice));
        let again = registry_json::split(&rendered, true).expect("rendered JSON splits");
        assert_eq!(again, messages);
    }
}

/// Offsets, read query strings and the Durable Streams request headers.
pub fn offsets_and_params(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(o) = Offset::from_str(&text) {
        assert_eq!(Offset::from_str(&o.to_string()).ok(), Some(o));
    }
    let pairs: Vec<(String, String)> = text
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    let _ = params::read_params(&pairs);
    let mut headers = HeaderMap::new();
    let names = [
        "stream-ttl",
        "stream-expires-at",
        "producer-id",
        "producer-epoch",
        "producer-seq",
        "stream-closed",
    ];
    for (name, value) in names.iter().zip(data.split(|b| *b == b'\n')) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    let _ = params::expiry(&headers);
    let _ = params::producer(&headers);
    let _ = params::closed_flag(&headers);
}

/// FlightData messages, as DoPut delivers them, decoded into batches and
/// through write validation. `data` frames the messages as
/// `[u32 LE header length][header][u32 LE body length][body]`, repeated
/// (see [`frame_flight_data`]); lengths past the end are cut short.
pub fn flight_data(data: &[u8]) {
    // Exactly the server's decode (checked, panics contained).
    let messages = unframe(data).into_iter().map(Ok::<_, FlightError>);
    let decoder = crate::flight::ipc::decode(futures::stream::iter(messages));
    let batches: Vec<_> = futures::executor::block_on(decoder.take(16).collect());
    let catalog = SeriesCatalog::default();
    for batch in batches.into_iter().flatten() {
        if let Ok(points) = normalize(&batch, &catalog) {
            assert_eq!(points.rows(), batch.num_rows());
        }
    }
}

/// A prepared-statement handle as a client sends it back (SQL plus an IPC
/// stream of bound parameters).
pub fn prepared_handle(data: &[u8]) {
    if let Ok(p) = crate::flight::Prepared::decode(data) {
        let again = crate::flight::Prepared::decode(&p.encode().expect("a decoded handle encodes"))
            .expect("an encoded handle decodes");
        assert_eq!(again.sql, p.sql);
    }
}

/// The framing [`flight_data`] reads: for building seed inputs.
pub fn frame_flight_data(messages: &[FlightData]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        for part in [&m.data_header, &m.data_body] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

fn unframe(mut data: &[u8]) -> Vec<FlightData> {
    let take = |data: &mut &[u8]| -> Option<Bytes> {
        let (len, rest) = data.split_first_chunk::<4>()?;
        let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
        let (part, rest) = rest.split_at(len);
        *data = rest;
        Some(Bytes::copy_from_slice(part))
    };
    let mut out = Vec::new();
    while let Some(header) = take(&mut data) {
        let body = take(&mut data).unwrap_or_default();
        out.push(FlightData {
            data_header: header,
            data_body: body,
            ..FlightData::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    //! The fuzz entry points over random and seed inputs: a bounded run in
    //! every `cargo test` (the coverage-guided run is `scripts/fuzz.sh`).

    use proptest::prelude::*;

    use super::*;

    fn seeds() -> Vec<Vec<u8>> {
        let point =
            br#"{"time":"2024-01-15T00:00:00Z","metric":"cpu","tags":{"host":"a"},"value":1.5}"#;
        let mut framed = Vec::new();
        let format = segment::Format {
            version: segment::VERSION,
            salt: 7,
        };
        segment::encode_record(&mut framed, format, 7, b"not a record");
        vec![
            point.to_vec(),
            [&point[..], b"\n", &point[..]].concat(),
            format!("[{}]", String::from_utf8_lossy(point)).into_bytes(),
            b"0000000000000001_0000000000000000".to_vec(),
            b"offset=-1&live=sse&cursor=x".to_vec(),
            b"60\n\np1\n0\n3\ntrue".to_vec(),
            framed,
            valid_flight_data(),
            valid_handle(),
        ]
    }

    fn valid_handle() -> Vec<u8> {
        use std::sync::Arc;

        use arrow::array::Int64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        use arrow::record_batch::RecordBatch;

        let schema = Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)]));
        let params =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![7]))]).unwrap();
        crate::flight::Prepared {
            sql: "SELECT $1".into(),
            params: Some(params),
        }
        .encode()
        .unwrap()
    }

    /// Inputs the fuzzers once crashed on (fuzz/regressions/<target>/)
    /// stay fixed.
    #[test]
    fn past_fuzz_crashes_stay_fixed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        type Entry = fn(&[u8]);
        let targets: [(&str, Entry); 3] = [
            ("flight_data", flight_data),
            ("prepared_handle", prepared_handle),
            ("record_payload", record_payload),
        ];
        let mut ran = 0;
        for (target, run) in targets {
            let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
                continue;
            };
            for entry in entries {
                run(&std::fs::read(entry.unwrap().path()).unwrap());
                ran += 1;
            }
        }
        assert!(
            ran >= 1,
            "no regression inputs found under {}",
            dir.display()
        );
    }

    /// A real DoPut stream (schema, then a batch with a tag column).
    pub(super) fn valid_flight_data() -> Vec<u8> {
        let batch = crate::query::tests::batch(&[(1, "cpu", "a", 0.5), (2, "cpu", "b", 1.5)]);
        let encoded = arrow_flight::encode::FlightDataEncoderBuilder::new()
            .build(futures::stream::iter([Ok(batch)]));
        let messages: Vec<FlightData> =
            futures::executor::block_on(encoded.map(Result::unwrap).collect());
        frame_flight_data(&messages)
    }

    #[test]
    fn the_valid_seed_decodes_into_points() {
        let messages = unframe(&valid_flight_data());
        let stream = futures::stream::iter(messages.into_iter().map(Ok::<_, FlightError>));
        let batches: Vec<_> =
            futures::executor::block_on(crate::flight::ipc::decode(stream).collect());
        let batch = batches.into_iter().next().unwrap().unwrap();
        let points = normalize(&batch, &SeriesCatalog::default()).unwrap();
        assert_eq!(points.rows(), 2);
    }

    /// Writes the seeds as the fuzzers' starting corpus (scripts/fuzz.sh).
    #[test]
    #[ignore = "writes files; run by scripts/fuzz.sh"]
    fn write_seed_corpus() {
        let dir = std::path::PathBuf::from(
            std::env::var("STREAMDB_FUZZ_CORPUS").expect("STREAMDB_FUZZ_CORPUS"),
        );
        for target in [
            "stream_segment",
            "record_payload",
            "json_points",
            "offsets_and_params",
            "flight_data",
            "prepared_handle",
        ] {
            std::fs::create_dir_all(dir.join(target)).unwrap();
            for (i, seed) in seeds().iter().enumerate() {
                std::fs::write(dir.join(target).join(format!("seed_{i}")), seed).unwrap();
            }
        }
    }

    #[test]
    fn seeds_never_panic() {
        for s in seeds() {
            stream_segment(&s);
            record_payload(&s);
            json_points(&s);
            offsets_and_params(&s);
            flight_data(&s);
            prepared_handle(&s);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            stream_segment(&data);
            record_payload(&data);
            json_points(&data);
            offsets_and_params(&data);
            flight_data(&data);
            prepared_handle(&data);
        }
    }
}
