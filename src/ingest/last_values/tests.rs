use super::*;
use crate::model::points_of as points;

fn cache() -> LastValues {
    LastValues::new(100)
}

fn built(c: &LastValues) {
    let t = c.begin_build().expect("a build is due");
    assert!(c.finish_build(t, 0, []));
}

fn get(c: &LastValues, id: u64) -> Option<(i64, f64)> {
    c.answer(None, i64::MIN)
        .expect("complete")
        .into_iter()
        .find(|(i, _)| *i == id)
        .map(|(_, p)| (p.time, p.value))
}

#[test]
fn keeps_the_newest_time_whatever_the_arrival_order() {
    let c = cache();
    built(&c);
    c.observe(0, &points(&[(1, 10, 1.0), (1, 30, 3.0), (2, 5, 9.0)]));
    // Late points, older than what is cached, change nothing.
    c.observe(1, &points(&[(1, 20, 2.0), (2, 4, 8.0)]));
    assert_eq!(get(&c, 1), Some((30, 3.0)));
    assert_eq!(get(&c, 2), Some((5, 9.0)));
}

#[test]
fn at_equal_times_the_later_write_wins() {
    let c = cache();
    built(&c);
    c.observe(4, &points(&[(1, 10, 1.0)]));
    c.observe(5, &points(&[(1, 10, 2.0)]));
    assert_eq!(get(&c, 1), Some((10, 2.0)));
    // Within one record, the later row.
    c.observe(6, &points(&[(1, 10, 3.0), (1, 10, 4.0)]));
    assert_eq!(get(&c, 1), Some((10, 4.0)));
}

#[test]
fn answers_nothing_until_built() {
    let c = cache();
    c.observe(0, &points(&[(1, 10, 1.0)]));
    assert_eq!(c.state(), CacheState::Unbuilt);
    assert!(c.answer(None, i64::MIN).is_none());
    let t = c.begin_build().unwrap();
    assert!(c.begin_build().is_none(), "one build at a time");
    assert!(c.answer(None, i64::MIN).is_none());
    assert!(c.finish_build(t, 1, [(1, 10, 1.0), (2, 7, 5.0)]));
    assert_eq!(get(&c, 1), Some((10, 1.0)));
    assert_eq!(get(&c, 2), Some((7, 5.0)));
}

#[test]
fn the_build_loses_ties_to_later_records_and_wins_them_against_earlier_ones() {
    let c = cache();
    // Offsets 0..5 are in the snapshot (applied = 5); offset 7 came after.
    c.observe(3, &points(&[(1, 10, 1.0)]));
    c.observe(7, &points(&[(2, 10, 7.0)]));
    let t = c.begin_build().unwrap();
    assert!(c.finish_build(t, 5, [(1, 10, 2.0), (2, 10, 3.0), (2, 9, 0.0)]));
    assert_eq!(
        get(&c, 1),
        Some((10, 2.0)),
        "the scan decides within its snapshot"
    );
    assert_eq!(
        get(&c, 2),
        Some((10, 7.0)),
        "a record after the snapshot wins"
    );
    // And a point applied after the build at an equal time wins too.
    c.observe(8, &points(&[(1, 10, 5.0)]));
    assert_eq!(get(&c, 1), Some((10, 5.0)));
}

#[test]
fn an_invalidation_voids_the_running_build() {
    let c = cache();
    let t = c.begin_build().unwrap();
    c.invalidate();
    assert!(!c.finish_build(t, 0, [(1, 1, 1.0)]));
    assert_eq!(c.state(), CacheState::Unbuilt);
    built(&c);
    assert_eq!(c.answer(None, i64::MIN).unwrap(), vec![]);
    c.observe(0, &points(&[(1, 1, 1.0)]));
    c.invalidate();
    assert!(c.answer(None, i64::MIN).is_none());
    assert_eq!(c.status().series, 0, "invalidation frees the entries");
}

#[test]
fn past_the_limit_it_empties_and_stops_answering() {
    let c = LastValues::new(2);
    built(&c);
    c.observe(0, &points(&[(1, 1, 1.0), (2, 1, 1.0)]));
    assert!(c.answer(None, i64::MIN).is_some());
    c.observe(1, &points(&[(3, 1, 1.0)]));
    assert_eq!(c.state(), CacheState::OverLimit);
    assert!(c.answer(None, i64::MIN).is_none());
    assert_eq!(c.status().series, 0);
    // It stays off: neither new points, invalidation nor a build revive it.
    c.observe(2, &points(&[(1, 2, 1.0)]));
    c.invalidate();
    assert!(c.begin_build().is_none());
    assert_eq!(c.status().series, 0);
}

#[test]
fn a_build_past_the_limit_does_not_complete() {
    let c = LastValues::new(1);
    let t = c.begin_build().unwrap();
    assert!(!c.finish_build(t, 0, [(1, 1, 1.0), (2, 1, 1.0)]));
    assert_eq!(c.state(), CacheState::OverLimit);
}

#[test]
fn zero_turns_it_off() {
    let c = LastValues::new(0);
    c.observe(0, &points(&[(1, 1, 1.0)]));
    assert!(c.begin_build().is_none());
    assert!(c.answer(None, i64::MIN).is_none());
    assert_eq!(c.status().state, "off");
}

#[test]
fn answers_filter_by_series_and_lower_time_bound() {
    let c = cache();
    built(&c);
    c.observe(0, &points(&[(1, 10, 1.0), (2, 20, 2.0), (3, 30, 3.0)]));
    let mut got: Vec<u64> = c
        .answer(Some(&BTreeSet::from([1, 2, 9])), 15)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    got.sort();
    assert_eq!(got, vec![2]);
}

/// The figure docs/OPERATIONS.md quotes: bytes per cached series.
#[test]
fn memory_per_series_is_at_most_70_bytes() {
    let c = LastValues::new(2_000_000);
    built(&c);
    let n = 1_000_000u64;
    let ids: Vec<(u64, i64, f64)> = (0..n).map(|i| (i, 1, 1.0)).collect();
    for chunk in ids.chunks(10_000) {
        c.observe(0, &points(chunk));
    }
    let s = c.status();
    assert_eq!(s.series, n as usize);
    let per = s.bytes as f64 / n as f64;
    println!("last-value cache: {per:.1} bytes per series at {n} series");
    // 32-byte slots plus a control byte, at a load between 1/2 and 7/8.
    assert!((33.0..=70.0).contains(&per), "{per} bytes per series");
}
