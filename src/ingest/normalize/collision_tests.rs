//! Series ids are a 64-bit hash: two keys can share one. These tests force
//! that with a 4-bit hash and check that a collision is refused, never
//! silently merged into the series that holds the id.

use std::collections::HashMap;

use arrow::array::UInt64Array;
use arrow::datatypes::{Field, Schema};
use proptest::prelude::*;

use super::*;

/// 16 ids: a batch of a few series collides often.
fn weak_hash(canonical: &[u8]) -> SeriesId {
    SeriesId(series_hash(canonical).0 & 0xf)
}

fn long_batch(rows: &[(String, String)]) -> RecordBatch {
    let n = rows.len();
    let schema = Schema::new(vec![
        Field::new("time", DataType::Int64, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("host", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(0..n as i64)),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
        ],
    )
    .unwrap()
}

fn key_of(row: &(String, String)) -> SeriesKey {
    SeriesKey::new(row.0.clone(), [("host".to_string(), row.1.clone())].into())
}

proptest! {
    /// Batches of random series against a growing catalog: a batch is
    /// accepted only if no two of its keys, and none of its keys and the
    /// catalog's, share an id; once accepted, every point's id names the
    /// key it was written with.
    #[test]
    fn colliding_series_ids_are_refused_not_merged(
        batches in prop::collection::vec(
            prop::collection::vec(("[ab]", "h[0-9]{1,2}"), 1..12), 1..8)
    ) {
        let catalog = SeriesCatalog::default();
        for rows in &batches {
            let b = long_batch(rows);
            let mut ids: HashMap<SeriesId, SeriesKey> = catalog
                .entries()
                .into_iter()
                .map(|(id, k)| (id, (*k).clone()))
                .collect();
            let mut collides = false;
            for r in rows {
                let k = key_of(r);
                let id = weak_hash(&k.canonical());
                collides |= ids.get(&id).is_some_and(|o| *o != k);
                ids.entry(id).or_insert(k);
            }
            match normalize_with(&b, &catalog, weak_hash) {
                Ok(p) => {
                    prop_assert!(!collides, "accepted a batch with colliding ids: {rows:?}");
                    for (id, k) in p.new_series {
                        catalog.insert(id, k);
                    }
                    let got = p.points.column(0).as_any().downcast_ref::<UInt64Array>().unwrap();
                    for (i, r) in rows.iter().enumerate() {
                        let stored = catalog.get(SeriesId(got.value(i))).unwrap();
                        prop_assert_eq!(&*stored, &key_of(r));
                    }
                }
                Err(e) => {
                    prop_assert!(collides, "refused a batch without collisions: {e}");
                    prop_assert!(e.problem.contains("collision"), "{e}");
                }
            }
        }
    }
}

/// The catalog holds the id under another key (as after a collision with
/// the real hash): the batch is refused and the message names both keys.
#[test]
fn a_series_id_held_by_another_key_is_refused() {
    let catalog = SeriesCatalog::default();
    let mine = key_of(&("cpu".into(), "a".into()));
    let other = key_of(&("mem".into(), "z".into()));
    catalog.insert(mine.id(), other.clone());
    let err = normalize(&long_batch(&[("cpu".into(), "a".into())]), &catalog).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&mine.to_string()) && text.contains(&other.to_string()),
        "{text}"
    );
    assert_eq!(catalog.get(mine.id()).as_deref(), Some(&other));
}
