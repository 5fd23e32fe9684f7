use std::collections::BTreeMap;

use arrow::array::{Int32Array, Int64Array, MapBuilder, StringBuilder, TimestampNanosecondArray};
use arrow::datatypes::{Field, Schema};

use super::*;

fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        cols.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

fn strs(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn ts(v: &[i64]) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v.to_vec()).with_timezone("UTC"))
}

fn key(metric: &str, tags: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(
        metric,
        tags.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// (series key, time, value) triples of a normalised batch.
fn rows(p: &PointBatch, catalog: &SeriesCatalog) -> Vec<(SeriesKey, i64, f64)> {
    for (id, k) in &p.new_series {
        catalog.insert(*id, k.clone());
    }
    let ids = p
        .points
        .column(0)
        .as_primitive::<arrow::datatypes::UInt64Type>();
    let t = p
        .points
        .column(1)
        .as_primitive::<TimestampMicrosecondType>();
    let v = p.points.column(2).as_primitive::<Float64Type>();
    (0..p.rows())
        .map(|i| {
            (
                (*catalog.get(SeriesId(ids.value(i))).unwrap()).clone(),
                t.value(i),
                v.value(i),
            )
        })
        .collect()
}

#[test]
fn long_with_tag_columns() {
    let b = batch(vec![
        ("time", ts(&[10, 20, 30])),
        ("metric", strs(&[Some("cpu"), Some("cpu"), Some("mem")])),
        ("host", strs(&[Some("a"), Some("b"), None])),
        ("value", Arc::new(Int32Array::from(vec![1, 2, 3]))),
    ]);
    let c = SeriesCatalog::default();
    let p = normalize(&b, &c).unwrap();
    assert_eq!(p.new_series.len(), 3);
    assert_eq!(
        rows(&p, &c),
        vec![
            (key("cpu", &[("host", "a")]), 10, 1.0),
            (key("cpu", &[("host", "b")]), 20, 2.0),
            (key("mem", &[]), 30, 3.0)
        ]
    );
    // Known series are not defined again.
    assert!(normalize(&b, &c).unwrap().new_series.is_empty());
}

#[test]
fn long_with_tags_map_and_nanosecond_time() {
    let mut mb = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    mb.keys().append_value("region");
    mb.values().append_value("eu");
    mb.keys().append_value("host");
    mb.values().append_value("a");
    mb.append(true).unwrap();
    mb.append(true).unwrap(); // no tags at all
    let b = batch(vec![
        (
            "time",
            Arc::new(TimestampNanosecondArray::from(vec![1_500, 2_999])),
        ),
        ("metric", strs(&[Some("cpu"), Some("cpu")])),
        ("tags", Arc::new(mb.finish())),
        ("value", Arc::new(Float64Array::from(vec![0.5, 1.5]))),
    ]);
    let c = SeriesCatalog::default();
    let p = normalize(&b, &c).unwrap();
    assert_eq!(
        rows(&p, &c),
        vec![
            (key("cpu", &[("host", "a"), ("region", "eu")]), 1, 0.5),
            (key("cpu", &[]), 2, 1.5)
        ]
    );
}

#[test]
fn wide_batch_gives_one_point_per_non_null_cell() {
    let b = batch(vec![
        ("time", Arc::new(Int64Array::from(vec![100, 200]))),
        ("host", strs(&[Some("a"), Some("a")])),
        ("cpu", Arc::new(Float64Array::from(vec![Some(0.5), None]))),
        ("mem", Arc::new(Int64Array::from(vec![7, 8]))),
    ]);
    let c = SeriesCatalog::default();
    let p = normalize(&b, &c).unwrap();
    let a = [("host", "a")];
    assert_eq!(
        rows(&p, &c),
        vec![
            (key("cpu", &a), 100, 0.5),
            (key("mem", &a), 100, 7.0),
            (key("mem", &a), 200, 8.0)
        ]
    );
}

#[test]
fn same_series_gets_same_id_whatever_the_shape() {
    let c = SeriesCatalog::default();
    let long = batch(vec![
        ("time", ts(&[1])),
        ("metric", strs(&[Some("cpu")])),
        ("host", strs(&[Some("a")])),
        ("value", Arc::new(Float64Array::from(vec![1.0]))),
    ]);
    let wide = batch(vec![
        ("time", ts(&[1])),
        ("host", strs(&[Some("a")])),
        ("cpu", Arc::new(Float64Array::from(vec![1.0]))),
    ]);
    let a = normalize(&long, &c).unwrap();
    let b = normalize(&wide, &c).unwrap();
    assert_eq!(a.points.column(0), b.points.column(0));
    assert_eq!(a.new_series[0].0, key("cpu", &[("host", "a")]).id());
}

fn err(cols: Vec<(&str, ArrayRef)>) -> String {
    normalize(&batch(cols), &SeriesCatalog::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn every_malformed_batch_names_column_and_row() {
    let v = || -> ArrayRef { Arc::new(Float64Array::from(vec![1.0, 2.0])) };
    let m = || strs(&[Some("cpu"), Some("cpu")]);
    assert_eq!(
        err(vec![("metric", m()), ("value", v())]),
        "column `time` at row 0: missing: every batch needs a timestamp column named `time`"
    );
    assert_eq!(
        err(vec![
            (
                "time",
                Arc::new(TimestampMicrosecondArray::from(vec![Some(1), None]))
            ),
            ("metric", m()),
            ("value", v())
        ]),
        "column `time` at row 1: null time"
    );
    assert_eq!(
        err(vec![
            ("time", ts(&[1, 2])),
            ("metric", strs(&[Some("cpu"), None])),
            ("value", v())
        ]),
        "column `metric` at row 1: null metric"
    );
    assert_eq!(
        err(vec![
            ("time", ts(&[1, 2])),
            ("metric", strs(&[Some(""), Some("x")])),
            ("value", v())
        ]),
        "column `metric` at row 0: empty metric name"
    );
    assert_eq!(
        err(vec![
            ("time", ts(&[1, 2])),
            ("metric", m()),
            ("value", strs(&[Some("1"), Some("2")]))
        ]),
        "column `value` at row 0: has type Utf8; expected a number"
    );
    assert_eq!(
        err(vec![
            ("time", ts(&[1, 2])),
            ("metric", m()),
            ("value", Arc::new(Float64Array::from(vec![Some(1.0), None])))
        ]),
        "column `value` at row 1: null value"
    );
    assert_eq!(
        err(vec![("time", ts(&[1, 2])), ("metric", m())]),
        "column `value` at row 0: missing: a batch with a `metric` column needs a `value` column"
    );
    assert_eq!(err(vec![("time", ts(&[1, 2])), ("host", m())]), "column `value` at row 0: missing: no `metric`/`value` columns and no numeric columns to read as metrics");
    assert_eq!(
        err(vec![("time", strs(&[Some("x"), Some("y")])), ("metric", m()), ("value", v())]),
        "column `time` at row 0: has type Utf8; expected a timestamp (any unit) or Int64 microseconds"
    );
    assert!(err(vec![
        ("time", ts(&[1, 2])),
        ("metric", m()),
        ("value", v()),
        ("n", v())
    ])
    .starts_with("column `n` at row 0: has type Float64; extra columns of a long batch"));
}

#[test]
fn row_ids_equal_the_documented_hash_with_repeating_and_changing_tags() {
    // Rows 1-2 repeat row 0's tags (the cached path), row 3 drops one,
    // row 4 returns to the first set.
    let b = batch(vec![
        ("time", ts(&[1, 2, 3, 4, 5])),
        (
            "metric",
            strs(&[Some("a"), Some("b"), Some("a"), Some("a"), Some("b")]),
        ),
        (
            "region",
            strs(&[Some("eu"), Some("eu"), Some("eu"), None, Some("eu")]),
        ),
        (
            "host",
            strs(&[Some("h1"), Some("h1"), Some("h1"), Some("h1"), Some("h1")]),
        ),
        ("value", Arc::new(Float64Array::from(vec![1.0; 5]))),
    ]);
    let p = normalize(&b, &SeriesCatalog::default()).unwrap();
    let got: Vec<u64> = p
        .points
        .column(0)
        .as_primitive::<arrow::datatypes::UInt64Type>()
        .values()
        .to_vec();
    let both = [("host", "h1"), ("region", "eu")];
    let want: Vec<u64> = [
        key("a", &both),
        key("b", &both),
        key("a", &both),
        key("a", &[("host", "h1")]),
        key("b", &both),
    ]
    .iter()
    .map(|k| k.id().0)
    .collect();
    assert_eq!(got, want);
}
