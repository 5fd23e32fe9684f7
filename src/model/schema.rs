//! Arrow schemas: the `metrics` table as SQL sees it, and the normalised
//! point batches that flow through the log, the write buffer and chunks.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub const POINT_SERIES_ID: &str = "series_id";
pub const POINT_TIME: &str = "time";
pub const POINT_VALUE: &str = "value";

/// The timestamp type of `time` everywhere: microseconds, UTC.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `(series_id, time, value)`, none nullable: the engine's own point batches.
pub fn point_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(POINT_SERIES_ID, DataType::UInt64, false),
        Field::new(POINT_TIME, time_type(), false),
        Field::new(POINT_VALUE, DataType::Float64, false),
    ]))
}

/// The `series_id`, `time` and `value` columns of a point batch (one of
/// [`point_schema`]), as slices.
pub fn point_columns(points: &arrow::array::RecordBatch) -> (&[u64], &[i64], &[f64]) {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType, UInt64Type};
    (
        points.column(0).as_primitive::<UInt64Type>().values(),
        points
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values(),
        points.column(2).as_primitive::<Float64Type>().values(),
    )
}

/// A point batch of `(series_id, time, value)` rows (tests, and the
/// last-value cache's answers).
pub fn points_of(rows: &[(u64, i64, f64)]) -> arrow::array::RecordBatch {
    use arrow::array::{Float64Array, TimestampMicrosecondArray, UInt64Array};
    arrow::array::RecordBatch::try_new(
        point_schema(),
        vec![
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("points match the point schema")
}

/// The `tags` column type: a map of string keys to string values, with the
/// field names DataFusion and pyarrow use (`entries`, `keys`, `values`).
pub fn tags_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

/// The `metrics` table: `time, metric, tags, value, series_id`.
pub fn sql_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time", time_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("tags", tags_type(), false),
        Field::new("value", DataType::Float64, false),
        Field::new("series_id", DataType::UInt64, false),
    ]))
}
