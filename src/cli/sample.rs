//! `streamdb ingest --generate-sample`: telemetry that looks like a small
//! fleet. Hosts in three regions report CPU, memory, disk and network
//! metrics; values move as bounded random walks (CPU hovers and spikes,
//! memory drifts, network and disk counters only grow), so charts and
//! aggregates over the sample look like the real thing.

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
const ROLES: [&str; 3] = ["web", "api", "db"];

#[derive(Clone, Copy)]
enum Kind {
    /// Percent, mean-reverting with occasional spikes.
    Gauge { min: f64, max: f64, mean: f64 },
    /// Monotonic counter growing by a random amount per sample.
    Counter { per_sample: f64 },
}

const METRICS: [(&str, Kind); 6] = [
    (
        "cpu_usage",
        Kind::Gauge {
            min: 0.0,
            max: 100.0,
            mean: 35.0,
        },
    ),
    (
        "mem_used_percent",
        Kind::Gauge {
            min: 5.0,
            max: 98.0,
            mean: 60.0,
        },
    ),
    (
        "disk_used_percent",
        Kind::Gauge {
            min: 10.0,
            max: 95.0,
            mean: 55.0,
        },
    ),
    (
        "net_rx_bytes",
        Kind::Counter {
            per_sample: 250_000.0,
        },
    ),
    (
        "net_tx_bytes",
        Kind::Counter {
            per_sample: 120_000.0,
        },
    ),
    (
        "disk_write_bytes",
        Kind::Counter {
            per_sample: 80_000.0,
        },
    ),
];

struct Series {
    metric: &'static str,
    kind: Kind,
    host: String,
    region: &'static str,
    value: f64,
}

pub struct Sample {
    series: Vec<Series>,
    next: usize,
    rng: StdRng,
    schema: SchemaRef,
}

impl Sample {
    /// `hosts` machines (spread over regions and roles), every metric each.
    pub fn new(hosts: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut series = Vec::new();
        for h in 0..hosts.max(1) {
            let role = ROLES[h % ROLES.len()];
            let region = REGIONS[(h / ROLES.len()) % REGIONS.len()];
            let host = format!("{role}-{}", h / ROLES.len() + 1);
            for (metric, kind) in METRICS {
                let value = match kind {
                    Kind::Gauge { mean, .. } => mean + rng.random_range(-10.0..10.0),
                    Kind::Counter { per_sample } => per_sample * rng.random_range(1000.0..5000.0),
                };
                series.push(Series {
                    metric,
                    kind,
                    host: host.clone(),
                    region,
                    value,
                });
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", crate::model::time_type(), false),
            Field::new("metric", DataType::Utf8, false),
            Field::new("host", DataType::Utf8, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
        ]));
        Self {
            series,
            next: 0,
            rng,
            schema,
        }
    }

    /// `n` points stamped `now_us`, cycling through the series.
    /// `n` points, the last at `now_us` and each `spacing_us` after the one
    /// before, as a fleet reporting at the ingest rate would send them.
    pub fn batch(&mut self, n: usize, now_us: i64, spacing_us: i64) -> RecordBatch {
        let times: Vec<i64> = (0..n as i64)
            .map(|k| now_us - (n as i64 - 1 - k) * spacing_us)
            .collect();
        let (mut metrics, mut hosts, mut regions, mut values) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for _ in 0..n {
            let i = self.next % self.series.len();
            self.next += 1;
            let step = self.rng.random_range(-1.0..1.0);
            let spike = self.rng.random_bool(0.01);
            let s = &mut self.series[i];
            s.value = match s.kind {
                Kind::Gauge { min, max, mean } => {
                    let pulled = s.value + 0.1 * (mean - s.value) + 3.0 * step;
                    let v = if spike { pulled + 30.0 } else { pulled };
                    v.clamp(min, max)
                }
                Kind::Counter { per_sample } => s.value + per_sample * (1.0 + step * 0.5),
            };
            metrics.push(s.metric);
            hosts.push(s.host.clone());
            regions.push(s.region);
            values.push((s.value * 100.0).round() / 100.0);
        }
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                Arc::new(StringArray::from(metrics)),
                Arc::new(StringArray::from(hosts)),
                Arc::new(StringArray::from(regions)),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .expect("sample schema matches its columns")
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::Float64Type;

    use super::*;

    #[test]
    fn values_stay_in_their_ranges() {
        let mut s = Sample::new(9, 1);
        for _ in 0..50 {
            let b = s.batch(540, 0, 1);
            let metrics = b.column(1).as_string::<i32>();
            let values = b.column(4).as_primitive::<Float64Type>();
            for i in 0..b.num_rows() {
                let v = values.value(i);
                if metrics.value(i).ends_with("_percent") || metrics.value(i) == "cpu_usage" {
                    assert!((0.0..=100.0).contains(&v), "{} = {v}", metrics.value(i));
                } else {
                    assert!(v > 0.0);
                }
            }
        }
        // 9 hosts × 6 metrics, spread over 3 regions.
        let b = s.batch(54, 1_000, 10);
        let times = b
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!((times.value(0), times.value(53)), (1_000 - 530, 1_000));
        let hosts: std::collections::HashSet<_> =
            b.column(2).as_string::<i32>().iter().flatten().collect();
        assert_eq!(hosts.len(), 9);
    }
}
