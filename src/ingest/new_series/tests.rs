use super::*;

fn key(metric: &str) -> SeriesKey {
    SeriesKey::new(metric, Default::default())
}

/// Two batches in flight at once (the gate is shared) bring one id under
/// two keys: the second is refused while the first is pending, and
/// checked against the catalog once the first is applied.
#[test]
fn concurrent_batches_bringing_one_id_under_two_keys_are_refused() {
    let catalog = Arc::new(SeriesCatalog::default());
    let series = NewSeries::new(catalog.clone(), 100);
    let id = SeriesId(7);
    let first = series.admit(&[(id, key("a"))]).unwrap();
    let err = series.admit(&[(id, key("b"))]).err().unwrap();
    assert!(
        matches!(err, EngineError::SeriesIdCollision { .. }),
        "{err}"
    );
    // The same key twice in flight is one series, not a collision.
    let again = series.admit(&[(id, key("a"))]).unwrap();
    catalog.insert(id, key("a"));
    drop((first, again));
    assert!(series.admit(&[(id, key("b"))]).is_err());
    assert!(series.admit(&[(id, key("a"))]).is_ok());
}

/// Series in flight count against `--max-series` until applied, and a
/// refused batch reserves nothing.
#[test]
fn series_in_flight_count_against_the_limit() {
    let catalog = Arc::new(SeriesCatalog::default());
    let series = NewSeries::new(catalog.clone(), 10);
    let batch = |from: u64, n: u64| -> Vec<(SeriesId, SeriesKey)> {
        (from..from + n)
            .map(|i| (SeriesId(i), key(&format!("m{i}"))))
            .collect()
    };
    let a = series.admit(&batch(0, 6)).unwrap();
    let err = series.admit(&batch(6, 5)).err().unwrap();
    assert!(err.to_string().contains("--max-series"), "{err}");
    let b = series.admit(&batch(6, 4)).unwrap();
    assert!(series.admit(&batch(10, 1)).is_err());
    for (id, k) in batch(0, 6) {
        catalog.insert(id, k);
    }
    drop((a, b));
    // Applied and pending are not counted twice, nor are known series.
    assert!(series.admit(&batch(0, 10)).is_ok());
    assert!(series.admit(&batch(6, 4)).is_ok());
    assert!(series.admit(&batch(0, 11)).is_err());
}
