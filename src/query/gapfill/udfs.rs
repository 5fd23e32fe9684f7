//! The three SQL functions of gap filling. `time_bucket_gapfill` buckets
//! like `time_bucket`; `locf` and `interpolate` are markers. The rule
//! (`rule`) replaces all three before anything runs, so their `invoke`
//! only runs when a query uses them where gap filling cannot apply, and
//! then refuses with a message saying where they belong.

use arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::super::functions::argument_error;

pub const TIME_BUCKET_GAPFILL: &str = "time_bucket_gapfill";
pub const LOCF: &str = "locf";
pub const INTERPOLATE: &str = "interpolate";

/// `time_bucket_gapfill(width, time [, start, finish])`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeBucketGapfill {
    signature: Signature,
}

/// `locf(aggregate [, prev])` and `interpolate(aggregate)`: they return
/// their first argument's type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FillMarker {
    name: &'static str,
    signature: Signature,
    max_args: usize,
}

pub fn time_bucket_gapfill() -> ScalarUDF {
    ScalarUDF::new_from_impl(TimeBucketGapfill {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

pub fn locf() -> ScalarUDF {
    ScalarUDF::new_from_impl(FillMarker {
        name: LOCF,
        signature: Signature::variadic_any(Volatility::Immutable),
        max_args: 2,
    })
}

pub fn interpolate() -> ScalarUDF {
    ScalarUDF::new_from_impl(FillMarker {
        name: INTERPOLATE,
        signature: Signature::any(1, Volatility::Immutable),
        max_args: 1,
    })
}

fn is_timestamp_like(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(_, _) | DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    )
}

impl ScalarUDFImpl for TimeBucketGapfill {
    fn name(&self) -> &str {
        TIME_BUCKET_GAPFILL
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !(2..=4).contains(&args.len()) {
            return plan_err!(
                "time_bucket_gapfill takes 2 to 4 arguments: time_bucket_gapfill(width, time [, start, finish]), got {}",
                args.len()
            );
        }
        if let Some(bad) = args[1..].iter().find(|t| !is_timestamp_like(t)) {
            return plan_err!(
                "time_bucket_gapfill: time, start and finish must be timestamps, got {bad}"
            );
        }
        Ok(crate::model::time_type())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        argument_error(
            "time_bucket_gapfill must be a GROUP BY key of an aggregate query (GROUP BY time_bucket_gapfill(...))",
        )
    }
}

impl ScalarUDFImpl for FillMarker {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.is_empty() || args.len() > self.max_args {
            return match self.max_args {
                1 => plan_err!("{} takes one argument, an aggregate: {}(avg(value))", self.name, self.name),
                _ => plan_err!("{} takes an aggregate and an optional value before the first observation: {}(avg(value) [, prev])", self.name, self.name),
            };
        }
        Ok(args[0].clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        argument_error(format!(
            "{}(...) applies only to an aggregate in the SELECT list of a query grouped by time_bucket_gapfill",
            self.name
        ))
    }
}
