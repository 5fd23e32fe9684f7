//! Time-series SQL functions: `time_bucket(width, time)`.
//!
//! `time_bucket` follows TimescaleDB: buckets are aligned to the Unix epoch
//! (`floor(time / width) * width`), so the same width always gives the
//! same boundaries. The width is a duration string (`'5m'`, `'10 seconds'`)
//! or an `INTERVAL` of fixed length (no months or years).

use std::sync::Arc;

use arrow::array::{AsArray, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, IntervalMonthDayNano, TimestampMicrosecondType};
use datafusion::common::{plan_err, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::duration::parse_duration_micros;

/// A function argument the query got wrong, found only when the function
/// runs (a width string that is no duration). Raised as
/// `DataFusionError::External`, so that [`super::QueryError::from_datafusion`]
/// recognises it by type as the user's mistake.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ArgumentError(String);

fn bad<T>(message: impl Into<String>) -> Result<T> {
    argument_error(message)
}

/// Fails with an [`ArgumentError`]: the user's mistake, found while running.
pub(super) fn argument_error<T>(message: impl Into<String>) -> Result<T> {
    Err(DataFusionError::External(Box::new(ArgumentError(
        message.into(),
    ))))
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeBucket {
    signature: Signature,
}

pub fn time_bucket() -> ScalarUDF {
    ScalarUDF::new_from_impl(TimeBucket {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

fn out_type() -> DataType {
    crate::model::time_type()
}

/// The bucket width in microseconds from the first argument's value.
pub(super) fn width_micros(v: &ScalarValue) -> Result<i64> {
    let us = match v {
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
            match parse_duration_micros(s) {
                Some(us) => us,
                None => return bad(format!("time_bucket: invalid width {s:?}; expected a duration such as '5m', '10s', '1h' or '1 day'")),
            }
        }
        ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano { months, days, nanoseconds })) => {
            if *months != 0 {
                return bad("time_bucket: widths in months or years are not supported; use days");
            }
            *days as i64 * 86_400_000_000 + nanoseconds / 1_000
        }
        ScalarValue::IntervalDayTime(Some(d)) => d.days as i64 * 86_400_000_000 + d.milliseconds as i64 * 1_000,
        ScalarValue::DurationMicrosecond(Some(us)) => *us,
        other => return bad(format!("time_bucket: the width must be a constant duration string or interval, got {other}")),
    };
    if us <= 0 {
        return bad(format!(
            "time_bucket: the width must be positive, got {us} microseconds"
        ));
    }
    Ok(us)
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [w, t] if is_width_type(w) && matches!(t, DataType::Timestamp(_, _) | DataType::Utf8 | DataType::Utf8View) => Ok(out_type()),
            [w, t] => plan_err!("time_bucket(width, time): expected a duration string or interval and a timestamp, got ({w}, {t})"),
            _ => plan_err!("time_bucket takes two arguments: time_bucket('5m', time)"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [width, time] = args.args.as_slice() else {
            return bad("time_bucket takes two arguments");
        };
        let ColumnarValue::Scalar(width) = width else {
            return bad("time_bucket: the width must be a constant, not a column");
        };
        let w = width_micros(width)?;
        let bucket = |t: i64| t.div_euclid(w) * w;
        match time {
            ColumnarValue::Array(a) => {
                let a = cast(a, &out_type())?;
                let times = a.as_primitive::<TimestampMicrosecondType>();
                let out: TimestampMicrosecondArray = times.unary(bucket);
                Ok(ColumnarValue::Array(Arc::new(out.with_timezone("UTC"))))
            }
            ColumnarValue::Scalar(s) => {
                let s = s.cast_to(&out_type())?;
                let ScalarValue::TimestampMicrosecond(v, _) = s else {
                    unreachable!("cast to microseconds")
                };
                Ok(ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(
                    v.map(bucket),
                    Some("UTC".into()),
                )))
            }
        }
    }
}

fn is_width_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::Utf8View
            | DataType::LargeUtf8
            | DataType::Interval(_)
            | DataType::Duration(_)
    )
}
