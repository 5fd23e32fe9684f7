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
/// one hour partition, by (series_id, time) as chunks are. `batches` come
/// oldest first; of rows with one (series_id, time) only the last is kept
/// (one value per series and time, the later write wins).
pub(crate) fn sorted_points(batches: &[RecordBatch]) -> Result<RecordBatch, StorageError> {
    let all = concat_batches(&point_schema(), batches)?;
    let ids = all.column(0).as_primitive::<UInt64Type>().values();
    let times = all
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    let order = keep_last_per_key(sort_order(ids, times), ids, times);
    Ok(take_record_batch(&all, &UInt32Array::from(order))?)
}

/// Of a stable (series_id, time) order, drops every row whose key the next
/// row repeats: the last of each run arrived last.
fn keep_last_per_key(order: Vec<u32>, ids: &[u64], times: &[i64]) -> Vec<u32> {
    let key = |i: u32| (ids[i as usize], times[i as usize]);
    if order.windows(2).all(|w| key(w[0]) != key(w[1])) {
        return order;
    }
    let mut kept = Vec::with_capacity(order.len());
    for (n, &i) in order.iter().enumerate() {
        if order.get(n + 1).is_none_or(|&next| key(next) != key(i)) {
            kept.push(i);
        }
    }
    kept
}

/// Point batches given oldest first, merged into one sorted by (hour,
/// series_id, time) with only the newest value of each (series_id, time).
pub fn newest_per_key(batches: &[RecordBatch]) -> Result<RecordBatch, StorageError> {
    sorted_points(batches)
}

/// `run` without the (series_id, time) keys any of `newer` holds, all
/// sorted by (series_id, time): one walk per batch of `newer`, and `run`
/// itself (no copy) when no key repeats, the usual case (two flushes
/// share times but rarely a point). The read side of one value per key.
pub fn without_keys_sorted(
    run: &RecordBatch,
    newer: &[RecordBatch],
) -> Result<RecordBatch, StorageError> {
    let (ids, times, _) = crate::model::point_columns(run);
    let mut keep: Option<Vec<bool>> = None;
    for n in newer {
        let (nids, ntimes, _) = crate::model::point_columns(n);
        let (mut a, mut b) = (0, 0);
        while a < ids.len() && b < nids.len() {
            match (ids[a], times[a]).cmp(&(nids[b], ntimes[b])) {
                std::cmp::Ordering::Less => a += 1,
                std::cmp::Ordering::Greater => b += 1,
                std::cmp::Ordering::Equal => {
                    keep.get_or_insert_with(|| vec![true; ids.len()])[a] = false;
                    a += 1;
                    b += 1;
                }
            }
        }
    }
    Ok(match keep {
        None => run.clone(),
        Some(keep) => {
            arrow::compute::filter_record_batch(run, &arrow::array::BooleanArray::from(keep))?
        }
    })
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
/// time order (late points) is sorted by time. Stable: rows with one key
/// keep their input order.
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
        order.sort_by_key(|&i| {
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
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Sorted runs without their rewritten keys hold what sorting them
        /// all and keeping the last row per key (`sorted_points`) does.
        #[test]
        fn runs_without_rewritten_keys_hold_the_newest_values(
            runs in prop::collection::vec(
                prop::collection::btree_map((0u64..4, 0i64..12), -5.0f64..5.0, 0..12), 0..4)
        ) {
            let batches: Vec<RecordBatch> = runs
                .iter()
                .map(|m| {
                    let rows: Vec<(u64, i64, f64)> = m.iter().map(|(k, v)| (k.0, k.1, *v)).collect();
                    crate::model::points_of(&rows)
                })
                .collect();
            let kept: Vec<RecordBatch> = batches
                .iter()
                .enumerate()
                .map(|(i, b)| without_keys_sorted(b, &batches[i + 1..]).unwrap())
                .collect();
            prop_assert_eq!(sorted_points(&kept).unwrap(), sorted_points(&batches).unwrap());
        }
    }

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

    #[test]
    fn a_key_written_twice_keeps_its_later_value() {
        let older = crate::storage::test_points(vec![1, 2], vec![5, 5], vec![10.0, 20.0]);
        let newer =
            crate::storage::test_points(vec![1, 1, 1], vec![5, 6, 5], vec![11.0, 12.0, 13.0]);
        let got = sorted_points(&[older, newer]).unwrap();
        let ids = got.column(0).as_primitive::<UInt64Type>().values().to_vec();
        let values = got
            .column(2)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .values()
            .to_vec();
        assert_eq!(ids, vec![1, 1, 2]);
        assert_eq!(values, vec![13.0, 12.0, 20.0]);
    }

    proptest::proptest! {
        #[test]
        fn sorted_points_keeps_the_last_value_per_key(batches in proptest::collection::vec(proptest::collection::vec((0u64..4, -2 * HOUR_US..2 * HOUR_US), 0..40), 1..5)) {
            // Few distinct times, so keys repeat often.
            let mut model = std::collections::BTreeMap::new();
            let mut parts = Vec::new();
            let mut n = 0.0;
            for rows in &batches {
                let (ids, times, values): (Vec<u64>, Vec<i64>, Vec<f64>) = rows.iter().map(|&(id, t)| {
                    n += 1.0;
                    (id, t - t.rem_euclid(HOUR_US / 2), n)
                }).fold((vec![], vec![], vec![]), |mut acc, (a, b, c)| { acc.0.push(a); acc.1.push(b); acc.2.push(c); acc });
                for i in 0..ids.len() {
                    model.insert((times[i].div_euclid(HOUR_US), ids[i], times[i]), values[i]);
                }
                parts.push(crate::storage::test_points(ids, times, values));
            }
            let got = sorted_points(&parts).unwrap();
            let ids = got.column(0).as_primitive::<UInt64Type>();
            let ts = got.column(1).as_primitive::<TimestampMicrosecondType>();
            let vs = got.column(2).as_primitive::<arrow::datatypes::Float64Type>();
            let got: Vec<_> = (0..got.num_rows()).map(|i| ((ts.value(i).div_euclid(HOUR_US), ids.value(i), ts.value(i)), vs.value(i))).collect();
            let want: Vec<_> = model.into_iter().collect();
            proptest::prop_assert_eq!(got, want);
        }
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
