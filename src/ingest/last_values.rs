//! The last-value cache ([`LastValues`]): the newest point of every series,
//! kept in memory as batches are applied, so "latest value of every
//! series" needs no scan.
//!
//! Every applied batch is folded in (`WriteBuffer::apply`), whatever state
//! the cache is in, so the cache never misses a point applied after it was
//! created. What it lacks at startup is the data already stored: the query
//! layer builds that once ([`LastValues::begin_build`] ... then
//! [`LastValues::finish_build`] with the per-series last values of a
//! snapshot taken after `begin_build`). Folding is a maximum, so a batch
//! both in that snapshot and folded in directly counts once. Until the
//! build is done the cache answers nothing and queries scan.
//!
//! The newest point is the greatest `(time, offset)`: at equal times the
//! later write wins (last write wins, as the read path deduplicates).
//! Points from the build's snapshot count as written just before the
//! snapshot's offset.
//!
//! Bounded: past `limit` series the cache empties itself and stops
//! answering until the server restarts (queries scan). Anything that
//! removes stored points (retention today, `DELETE` if it comes) must call
//! [`LastValues::invalidate`] before and after its commit: the cache then
//! answers nothing until it is built again over the new data.
//!
//! A leaf: depends on `model` only.

use std::collections::{BTreeSet, HashMap};

use arrow::array::RecordBatch;
use parking_lot::Mutex;

use crate::model::IdHashBuilder;

/// The default `--last-value-cache-series`.
pub const DEFAULT_LAST_VALUE_SERIES: usize = 1_000_000;

/// A series' newest point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastPoint {
    pub time: i64,
    pub value: f64,
    /// The log offset of the record that wrote it.
    pub offset: u64,
}

impl LastPoint {
    fn newer_than(&self, other: &LastPoint) -> bool {
        (self.time, self.offset) > (other.time, other.offset)
    }
}

/// Where the cache stands; only `Complete` answers queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// `limit` is 0.
    Off,
    /// The stored data is not folded in yet (startup, after invalidation).
    Unbuilt,
    /// A build is running.
    Building,
    Complete,
    /// More series than the limit: empty, answers nothing until restart.
    OverLimit,
}

impl CacheState {
    pub fn name(self) -> &'static str {
        match self {
            CacheState::Off => "off",
            CacheState::Unbuilt => "unbuilt",
            CacheState::Building => "building",
            CacheState::Complete => "complete",
            CacheState::OverLimit => "over_limit",
        }
    }
}

/// The cache's state for `/v1/status` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LastValueStatus {
    pub state: &'static str,
    pub series: usize,
    pub limit: usize,
    /// The map's heap memory (its allocated slots, not only those in use).
    pub bytes: usize,
}

/// Proof that a build started at a generation; see [`LastValues::finish_build`].
#[derive(Debug)]
pub struct BuildTicket {
    generation: u64,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    state: CacheState,
    /// Bumped by every invalidation: a build begun before one is void.
    generation: u64,
    entries: HashMap<u64, LastPoint, IdHashBuilder>,
}

#[derive(Debug)]
pub struct LastValues {
    inner: Mutex<Inner>,
}

impl LastValues {
    /// A cache of at most `limit` series (0: off).
    pub fn new(limit: usize) -> Self {
        let state = if limit == 0 {
            CacheState::Off
        } else {
            CacheState::Unbuilt
        };
        Self {
            inner: Mutex::new(Inner {
                limit,
                state,
                generation: 0,
                entries: HashMap::default(),
            }),
        }
    }

    pub fn state(&self) -> CacheState {
        self.inner.lock().state
    }

    pub fn status(&self) -> LastValueStatus {
        let g = self.inner.lock();
        LastValueStatus {
            state: g.state.name(),
            series: g.entries.len(),
            limit: g.limit,
            bytes: g.heap_bytes(),
        }
    }

    /// Folds in an applied batch of points (`series_id, time, value`).
    pub fn observe(&self, offset: u64, points: &RecordBatch) {
        let mut g = self.inner.lock();
        if matches!(g.state, CacheState::Off | CacheState::OverLimit) || points.num_rows() == 0 {
            return;
        }
        let (ids, times, values) = crate::model::point_columns(points);
        for ((&id, &time), &value) in ids.iter().zip(times).zip(values) {
            g.fold(
                id,
                LastPoint {
                    time,
                    value,
                    offset,
                },
            );
        }
        g.check_limit();
    }

    /// Starts the build of the stored data, if one is due: `None` when the
    /// cache is complete, already building, off or over its limit. Take
    /// the snapshot to build from after this call.
    pub fn begin_build(&self) -> Option<BuildTicket> {
        let mut g = self.inner.lock();
        if g.state != CacheState::Unbuilt {
            return None;
        }
        g.state = CacheState::Building;
        Some(BuildTicket {
            generation: g.generation,
        })
    }

    /// Folds in the newest `(series, time, value)` of every series in a
    /// snapshot that covers the log below `applied` and marks the cache
    /// complete. Returns whether it did: a build the cache was invalidated
    /// during is dropped (the cache is then unbuilt again).
    pub fn finish_build(
        &self,
        ticket: BuildTicket,
        applied: u64,
        rows: impl IntoIterator<Item = (u64, i64, f64)>,
    ) -> bool {
        let mut g = self.inner.lock();
        if g.generation != ticket.generation || g.state != CacheState::Building {
            return false;
        }
        // The snapshot's points were written before `applied`: a point
        // folded in from a later record wins a tie in time, an earlier one
        // loses to the scan's answer (the scan decides among its own rows).
        let offset = applied.saturating_sub(1);
        for (id, time, value) in rows {
            let p = LastPoint {
                time,
                value,
                offset,
            };
            match g.entries.get_mut(&id) {
                Some(have) if have.offset >= applied && !p.newer_than(have) => {}
                Some(have) if have.offset < applied && p.time < have.time => {}
                Some(have) => *have = p,
                None => {
                    g.entries.insert(id, p);
                }
            }
        }
        g.state = CacheState::Complete;
        g.check_limit();
        g.state == CacheState::Complete
    }

    /// Gives up a build that failed: the next use tries again.
    pub fn abandon_build(&self, ticket: BuildTicket) {
        let mut g = self.inner.lock();
        if g.generation == ticket.generation && g.state == CacheState::Building {
            g.state = CacheState::Unbuilt;
        }
    }

    /// Stored points went away (retention; a future `DELETE`): forget
    /// everything and answer nothing until built again. Call it before
    /// the commit that removes them (so no query answers from the cache
    /// meanwhile) and after it (so no build over the old data completes).
    pub fn invalidate(&self) {
        let mut g = self.inner.lock();
        g.generation += 1;
        if matches!(g.state, CacheState::Off | CacheState::OverLimit) {
            return;
        }
        g.entries = HashMap::default();
        g.state = CacheState::Unbuilt;
    }

    /// The newest point of every series in `series` (all when `None`)
    /// at or after `min_time`, or `None` unless the cache is complete.
    pub fn answer(
        &self,
        series: Option<&BTreeSet<u64>>,
        min_time: i64,
    ) -> Option<Vec<(u64, LastPoint)>> {
        let g = self.inner.lock();
        if g.state != CacheState::Complete {
            return None;
        }
        let keep = |(id, p): (&u64, &LastPoint)| {
            (p.time >= min_time && series.is_none_or(|s| s.contains(id))).then_some((*id, *p))
        };
        Some(match series {
            // A few series: look them up rather than walk the map.
            Some(s) if s.len() < g.entries.len() => s
                .iter()
                .filter_map(|id| g.entries.get_key_value(id))
                .filter_map(keep)
                .collect(),
            _ => g.entries.iter().filter_map(keep).collect(),
        })
    }
}

impl Inner {
    /// A hashbrown map allocates one slot and one control byte per unit of
    /// capacity.
    fn heap_bytes(&self) -> usize {
        self.entries.capacity() * (std::mem::size_of::<(u64, LastPoint)>() + 1)
    }

    fn fold(&mut self, id: u64, p: LastPoint) {
        match self.entries.get_mut(&id) {
            // `>=`: within one record the later row wins a tie.
            Some(have) if !have.newer_than(&p) => *have = p,
            Some(_) => {}
            None => {
                self.entries.insert(id, p);
            }
        }
    }

    fn check_limit(&mut self) {
        if self.entries.len() > self.limit {
            tracing::warn!(
                limit = self.limit,
                "last-value cache is past --last-value-cache-series: it stops answering until restart (queries scan)"
            );
            self.entries = HashMap::default();
            self.state = CacheState::OverLimit;
        }
    }
}

#[cfg(test)]
mod tests;
