//! The rollup table's columns: the series columns (`series_id, metric,
//! tags`), then one internal column per partial aggregate. What the
//! `metrics` table needs to plan a rollup scan, apart from the rule that
//! asks for one.
//!
//! A leaf: may depend on `partial` and `model` only.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::partial::PARTIAL_COLUMNS;
use crate::model::{tags_type, time_type};

/// The rollup table's columns: the series columns, then the partials.
/// Internal names, never visible to SQL (the rule runs after planning).
pub fn rollup_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("series_id", DataType::UInt64, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("tags", tags_type(), false),
    ];
    for name in &PARTIAL_COLUMNS[1..] {
        let ty = match *name {
            "bucket" | "first_time" | "last_time" => time_type(),
            "count" => DataType::Int64,
            _ => DataType::Float64,
        };
        fields.push(Field::new(internal(name), ty, false));
    }
    Arc::new(Schema::new(fields))
}

pub(super) fn internal(name: &str) -> String {
    format!("__rollup_{name}")
}

/// Index of a column of [`rollup_schema`].
pub(super) fn index_of(name: &str) -> usize {
    match name {
        "series_id" => 0,
        "metric" => 1,
        "tags" => 2,
        partial => {
            2 + PARTIAL_COLUMNS
                .iter()
                .position(|c| *c == partial)
                .expect("a partial column")
        }
    }
}
