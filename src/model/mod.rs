//! The data model every other layer speaks: points, series and their stable
//! ids, the Arrow schemas of the `metrics` table and of normalised point
//! batches, the identity of exactly-once writers, and what a `DELETE`
//! removes.
//!
//! Depends on nothing else in the crate.

mod delete;
mod producer;
mod schema;
mod series;
mod time;
pub mod wire;

#[cfg(test)]
pub use delete::host_before;
pub use delete::{in_ranges, DeletePredicate, StringTest, TimeOp, TimeRanges};
pub use producer::{
    ProducerTuple, Producers, Verdict, Writers, MAX_PRODUCER_ID_BYTES, MAX_PRODUCER_NUMBER,
};
pub use schema::{point_columns, points_of};
pub use schema::{
    point_schema, sql_schema, tags_type, time_type, POINT_SERIES_ID, POINT_TIME, POINT_VALUE,
};
pub use series::{series_hash, IdHashBuilder, SeriesHasher, SeriesId, SeriesKey};
pub use time::{format_micros, parse_iso_micros};

/// One measurement: `value` of series `series_id` at `time` (Unix micros).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataPoint {
    pub time: i64,
    pub series_id: SeriesId,
    pub value: f64,
}
