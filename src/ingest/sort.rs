//! Sort kernels for points: the order chunks are written in, (hour,
//! series_id, time). Shared by the flusher and the compactor; a leaf that
//! depends on `model` and `storage` only.

use std::collections::HashMap;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};

use crate::model::{point_schema, IdHashBuilder};
use crate::storage::StorageError;

const HOUR_US: i64 = crate::storage::PARTITION_MICROS;

/// Concatenates point batches sorted by (hour, series_id, time): within
/// one hour partition, by (series_id, time) as chunks are.
pub(crate) fn sorted_points(batches: &[RecordBatch]) -> Result<RecordBatch, StorageError> {
    let all = concat_batches(&point_schema(), batches)?;
    let ids = all.column(0).as_primitive::<UInt64Type>().values();
    let times = all
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    Ok(take_record_batch(
        &all,
        &UInt32Array::from(sort_order(ids, times)),
    )?)
}

/// Concatenates point batches and splits them into hour partitions, each
/// sorted by (series_id, time).
pub(crate) fn partition_by_hour(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, StorageError> {
    let sorted = sorted_points(batches)?;
    let times = sorted
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < sorted.num_rows() {
        let hour = times[start].div_euclid(HOUR_US);
        let len = times[start..].partition_point(|t| t.div_euclid(HOUR_US) == hour);
        parts.push(sorted.slice(start, len));
        start += len;
    }
    Ok(parts)
}

/// Row order by (hour, series_id, time). A buffer holds few hours and few
/// series compared with its rows, so rows are counting-sorted into
/// (hour, series) groups in O(n); only a group whose rows arrived out of
/// time order (late points) is sorted by time.
fn sort_order(ids: &[u64], times: &[i64]) -> Vec<u32> {
    let n = ids.len();
    if n == 0 {
        return Vec::new();
    }
    let first_hour = times
        .iter()
        .map(|t| t.div_euclid(HOUR_US))
        .min()
        .expect("non-empty");
    let hours = times
        .iter()
        .map(|t| t.div_euclid(HOUR_US))
        .max()
        .expect("non-empty")
        - first_hour
        + 1;
    // Dense series index, numbered in series_id order.
    let mut dense: HashMap<u64, u32, IdHashBuilder> = HashMap::default();
    for id in ids {
        let next = dense.len() as u32;
        dense.entry(*id).or_insert(next);
    }
    let mut distinct: Vec<u64> = dense.keys().copied().collect();
    distinct.sort_unstable();
    for (rank, id) in distinct.iter().enumerate() {
        dense.insert(*id, rank as u32);
    }
    let series = distinct.len();
    let groups = hours as usize * series;
    if hours > 1 << 16 || groups > n.max(1 << 20) {
        // Data spread over a very wide time range: fall back to a sort.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| {
            (
                times[i as usize].div_euclid(HOUR_US),
                ids[i as usize],
                times[i as usize],
            )
        });
        return order;
    }
    let group_of = |i: usize| {
        (times[i].div_euclid(HOUR_US) - first_hour) as usize * series + dense[&ids[i]] as usize
    };
    let keys: Vec<u32> = (0..n).map(|i| group_of(i) as u32).collect();
    let mut starts = vec![0u32; groups + 1];
    for k in &keys {
        starts[*k as usize + 1] += 1;
    }
    for g in 0..groups {
        starts[g + 1] += starts[g];
    }
    let mut fill = starts.clone();
    let mut order = vec![0u32; n];
    for (i, k) in keys.iter().enumerate() {
        order[fill[*k as usize] as usize] = i as u32;
        fill[*k as usize] += 1;
    }
    for g in 0..groups {
        let group = &mut order[starts[g] as usize..starts[g + 1] as usize];
        if !group
            .windows(2)
            .all(|w| times[w[0] as usize] <= times[w[1] as usize])
        {
            group.sort_by_key(|&i| times[i as usize]);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, TimestampMicrosecondArray, UInt64Array};

    use super::*;

    #[test]
    fn partitions_are_hour_aligned_and_sorted() {
        let b = RecordBatch::try_new(
            point_schema(),
            vec![
                Arc::new(UInt64Array::from(vec![2, 1, 2, 1, 9])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![HOUR_US + 5, HOUR_US + 9, 3, 7, -1])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![0.0, 1.0, 2.0, 3.0, 4.0])),
            ],
        )
        .unwrap();
        let parts = partition_by_hour(&[b.slice(0, 2), b.slice(2, 3)]).unwrap();
        let flat: Vec<Vec<(u64, i64)>> = parts
            .iter()
            .map(|p| {
                let ids = p.column(0).as_primitive::<UInt64Type>();
                let ts = p.column(1).as_primitive::<TimestampMicrosecondType>();
                (0..p.num_rows())
                    .map(|i| (ids.value(i), ts.value(i)))
                    .collect()
            })
            .collect();
        assert_eq!(
            flat,
            vec![
                vec![(9, -1)],
                vec![(1, 7), (2, 3)],
                vec![(1, HOUR_US + 9), (2, HOUR_US + 5)]
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn sort_order_matches_a_plain_sort(rows in proptest::collection::vec((0u64..20, -3 * HOUR_US..3 * HOUR_US), 0..400)) {
            let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
            let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let key = |i: u32| (times[i as usize].div_euclid(HOUR_US), ids[i as usize], times[i as usize]);
            let got: Vec<_> = sort_order(&ids, &times).into_iter().map(key).collect();
            let mut want: Vec<_> = (0..rows.len() as u32).map(key).collect();
            want.sort_unstable();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
