//! [`NewSeries`]: the series that batches in flight bring, between being
//! normalised and being applied to the catalog. Writers normalise at once
//! (the series gate is shared), so a batch checks its new series here
//! against the catalog *and* the other batches in flight: that keeps
//! `--max-series` exact and catches two concurrent batches bringing two
//! keys with one id (the catalog would keep the first and file the second's
//! points under it).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::error::EngineError;
use crate::model::{SeriesId, SeriesKey};
use crate::storage::SeriesCatalog;

pub(crate) struct NewSeries {
    catalog: Arc<SeriesCatalog>,
    max_series: usize,
    /// Id → (key, batches in flight bringing it).
    pending: Mutex<HashMap<u64, (SeriesKey, usize)>>,
}

/// The series one batch brings, held as pending until dropped (after the
/// batch is applied, or when its write fails).
pub(crate) struct Pending<'a> {
    owner: &'a NewSeries,
    ids: Vec<u64>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut pending = self.owner.pending.lock();
        for id in &self.ids {
            if let Some(entry) = pending.get_mut(id) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    pending.remove(id);
                }
            }
        }
    }
}

impl NewSeries {
    pub fn new(catalog: Arc<SeriesCatalog>, max_series: usize) -> Self {
        Self {
            catalog,
            max_series,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a batch's new series or refuses the batch whole: over
    /// `--max-series`, or an id another key holds in flight or (applied
    /// since the batch was normalised) in the catalog.
    pub fn admit(&self, series: &[(SeriesId, SeriesKey)]) -> Result<Pending<'_>, EngineError> {
        let mut pending = self.pending.lock();
        let known = self.catalog.lookup(series.iter().map(|(id, _)| *id));
        let mut brought = Vec::new();
        for ((id, key), held) in series.iter().zip(known) {
            let other = match (&held, pending.get(&id.0)) {
                (Some(k), _) => Some(&**k),
                (None, Some((k, _))) => Some(k),
                (None, None) => None,
            };
            match other {
                Some(k) if k != key => {
                    return Err(EngineError::SeriesIdCollision {
                        id: *id,
                        key: key.to_string(),
                        held: k.to_string(),
                    })
                }
                Some(_) if held.is_some() => {}
                _ => brought.push((id.0, key)),
            }
        }
        let fresh = brought
            .iter()
            .filter(|(id, _)| !pending.contains_key(id))
            .count();
        if fresh > 0 {
            // Pending series applied meanwhile are in the catalog already.
            let in_flight = pending
                .keys()
                .filter(|id| !self.catalog.contains(SeriesId(**id)))
                .count();
            let total = self.catalog.len() + in_flight;
            if total + fresh > self.max_series {
                crate::telemetry::metrics().limited("series");
                return Err(EngineError::TooManySeries {
                    series: total,
                    new: fresh,
                    limit: self.max_series,
                });
            }
        }
        for (id, key) in &brought {
            pending.entry(*id).or_insert_with(|| ((*key).clone(), 0)).1 += 1;
        }
        Ok(Pending {
            owner: self,
            ids: brought.into_iter().map(|(id, _)| id).collect(),
        })
    }
}

#[cfg(test)]
mod tests;
