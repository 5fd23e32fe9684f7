//! The `metrics` stream read back as JSON point messages, a page at a time.
//!
//! A page ends once its messages reach the byte budget, which may be in
//! the middle of a record: one DoPut of up to `--max-batch-rows` points is
//! one record, and rendering it whole would make one response (or one SSE
//! frame) of hundreds of megabytes. The page's next [`Position`] then counts
//! points into the record. The last few large records decoded are kept, so
//! paging through one costs one decode, not one per page.

use std::collections::VecDeque;
use std::sync::Arc;

use super::buffer::Logged;
use super::json::render_points;
use super::normalize::PointBatch;
use super::record;
use crate::storage::SeriesCatalog;
use crate::stream::{Log, LogError, Offset, Position};

/// Records with fewer points are decoded again for each read: they fit in
/// one page anyway.
const CACHE_MIN_POINTS: usize = 16 * 1024;
/// How many large decoded records are kept (each up to 24 bytes a point).
const CACHE_RECORDS: usize = 2;

/// One page of the stream: its messages and where the next page starts.
#[derive(Debug)]
pub struct JsonPage {
    pub messages: Vec<Vec<u8>>,
    pub next: Position,
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("offset {position} was not handed out by this server (record {} has {points} points)", position.record)]
    NotMinted { position: Position, points: usize },
    #[error("stream log record {offset} cannot be decoded: {why}")]
    Damaged { offset: Offset, why: String },
}

/// Recently decoded large records, newest last.
#[derive(Default)]
struct DecodedRecords(parking_lot::Mutex<VecDeque<(Offset, Arc<PointBatch>)>>);

impl DecodedRecords {
    fn get(&self, offset: Offset) -> Option<Arc<PointBatch>> {
        let cache = self.0.lock();
        cache
            .iter()
            .find(|(o, _)| *o == offset)
            .map(|(_, b)| b.clone())
    }

    fn decode(&self, offset: Offset, payload: &[u8]) -> Result<Arc<PointBatch>, ViewError> {
        if let Some(b) = self.get(offset) {
            return Ok(b);
        }
        let record = record::decode_record(payload).map_err(|e| ViewError::Damaged {
            offset,
            why: e.to_string(),
        })?;
        // A delete carries no point messages: the stream shows points as
        // they were written (docs/SQL.md, DELETE).
        let batch = match record {
            record::Record::Points(b) => b,
            record::Record::Delete(_) => PointBatch::empty(),
        };
        let batch = Arc::new(batch);
        if batch.rows() >= CACHE_MIN_POINTS {
            let mut cache = self.0.lock();
            // Another reader may have decoded it meanwhile: keep one copy.
            if let Some((_, cached)) = cache.iter().find(|(o, _)| *o == offset) {
                return Ok(cached.clone());
            }
            cache.push_back((offset, batch.clone()));
            if cache.len() > CACHE_RECORDS {
                cache.pop_front();
            }
        }
        Ok(batch)
    }
}

/// The log read back as JSON point messages.
pub(crate) struct LogView {
    log: Arc<Log<Logged>>,
    catalog: Arc<SeriesCatalog>,
    decoded: DecodedRecords,
}

impl LogView {
    pub fn new(log: Arc<Log<Logged>>, catalog: Arc<SeriesCatalog>) -> Self {
        Self {
            log,
            catalog,
            decoded: DecodedRecords::default(),
        }
    }

    /// Forgets the decoded records (tests: reads from the log again).
    #[cfg(test)]
    pub fn clear_cache(&self) {
        self.decoded.0.lock().clear();
    }

    /// Reads the `metrics` stream from `from` as point messages, about
    /// `max_bytes` of them (at least one, if any is left).
    pub fn read_json(&self, from: Position, max_bytes: usize) -> Result<JsonPage, ViewError> {
        let log = &self.log;
        if from.record < log.first_offset() {
            return Err(LogError::Truncated {
                requested: from.record,
                first: log.first_offset(),
            }
            .into());
        }
        // Continuing inside a record still cached: no need to read it
        // from the log again. The page ends with that record.
        if !from.is_boundary() {
            if let Some(batch) = self.decoded.get(from.record) {
                let mut page = JsonPage {
                    messages: Vec::new(),
                    next: from,
                };
                self.render_into(&mut page, from.record, &batch, from.within, max_bytes)?;
                return Ok(page);
            }
        }
        let records = log.read(from.record, max_bytes)?;
        let mut page = JsonPage {
            messages: Vec::new(),
            next: from,
        };
        if records.is_empty() && !from.is_boundary() {
            return Err(ViewError::NotMinted {
                position: from,
                points: 0,
            });
        }
        let mut budget = max_bytes;
        for (offset, payload) in records {
            if budget == 0 {
                break;
            }
            let skip = if offset == from.record {
                from.within
            } else {
                0
            };
            let batch = self.decoded.decode(offset, &payload)?;
            let used = self.render_into(&mut page, offset, &batch, skip, budget)?;
            budget = budget.saturating_sub(used);
            if !page.next.is_boundary() {
                break;
            }
        }
        Ok(page)
    }

    /// Appends points `skip..` of one record to `page` within `budget`
    /// bytes and moves `page.next`; returns the bytes used.
    fn render_into(
        &self,
        page: &mut JsonPage,
        offset: Offset,
        batch: &PointBatch,
        skip: u64,
        budget: usize,
    ) -> Result<usize, ViewError> {
        let points = batch.rows();
        let start = usize::try_from(skip).unwrap_or(usize::MAX);
        if start > 0 && start >= points {
            return Err(ViewError::NotMinted {
                position: Position {
                    record: offset,
                    within: skip,
                },
                points,
            });
        }
        let messages = render_points(batch, &self.catalog, start, budget);
        let end = start + messages.len();
        let used = messages.iter().map(|m| m.len() + 1).sum();
        page.messages.extend(messages);
        page.next = if end < points {
            Position {
                record: offset,
                within: end as u64,
            }
        } else {
            offset.next().into()
        };
        Ok(used)
    }
}

#[cfg(test)]
mod tests;
