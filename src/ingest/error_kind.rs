//! What each of the ingest layer's errors means to a client: the
//! [`HasKind`] impls of [`EngineError`], [`ViewError`], [`BatchError`] and
//! [`JsonPointError`], in one table-like file beside the enums.

use super::json::JsonPointError;
use super::{BatchError, EngineError, ViewError};
use crate::error::{ErrorKind, HasKind};

impl HasKind for EngineError {
    fn kind(&self) -> ErrorKind {
        match self {
            EngineError::InvalidBatch(e) => e.kind(),
            EngineError::InvalidJson(e) => e.kind(),
            EngineError::Backpressure { .. } => ErrorKind::Busy,
            EngineError::BatchTooLarge { .. } => ErrorKind::TooLarge,
            // Retention may free room: retrying later can succeed.
            // Compaction applies deletes and retires them.
            EngineError::TooManySeries { .. }
            | EngineError::TooManyProducers { .. }
            | EngineError::TooManyDeletes { .. } => ErrorKind::Busy,
            // As the same collision found by normalising: the batch is wrong
            // for this catalog whenever it is sent.
            EngineError::SeriesIdCollision { .. } => ErrorKind::InvalidInput,
            EngineError::ShuttingDown => ErrorKind::Unavailable,
            EngineError::Log(e) => e.kind(),
            EngineError::Storage(e) => e.kind(),
            EngineError::BadRecord { .. } | EngineError::FallbackIncomplete { .. } => {
                ErrorKind::Corrupt
            }
            // Another process holds the directory, or another node wrote
            // the prefix: a state to resolve by hand, not a fault here.
            EngineError::DataDirInUse { .. } | EngineError::StaleLog { .. } => ErrorKind::Conflict,
            EngineError::CommittedElsewhere { .. } => ErrorKind::Fenced,
            EngineError::DataDir { .. } | EngineError::Task { .. } => ErrorKind::Internal,
        }
    }
}

impl HasKind for ViewError {
    fn kind(&self) -> ErrorKind {
        match self {
            ViewError::Log(e) => e.kind(),
            ViewError::NotMinted { .. } => ErrorKind::InvalidInput,
            ViewError::Damaged { .. } => ErrorKind::Corrupt,
        }
    }
}

impl HasKind for BatchError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl HasKind for JsonPointError {
    fn kind(&self) -> ErrorKind {
        match self {
            JsonPointError::Syntax(_)
            | JsonPointError::Point { .. }
            | JsonPointError::Empty
            | JsonPointError::Batch(_) => ErrorKind::InvalidInput,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::StorageError;
    use crate::stream::LogError;

    /// The statuses writes got before kinds existed stay the same; the
    /// wrapped log and storage errors now say what they are.
    #[test]
    fn engine_errors_have_the_kinds_writers_see() {
        let cases = [
            (
                EngineError::Backpressure {
                    bytes: 2,
                    limit: 1,
                    waited: Duration::from_secs(10),
                },
                ErrorKind::Busy,
            ),
            (
                EngineError::BatchTooLarge { rows: 2, limit: 1 },
                ErrorKind::TooLarge,
            ),
            (EngineError::ShuttingDown, ErrorKind::Unavailable),
            (
                EngineError::InvalidJson(crate::ingest::json::JsonPointError::Empty),
                ErrorKind::InvalidInput,
            ),
            (
                EngineError::CommittedElsewhere {
                    version: 7,
                    by: "node b, epoch 3 attempt 1".into(),
                },
                ErrorKind::Fenced,
            ),
            (EngineError::Log(LogError::Closed), ErrorKind::Unavailable),
            (
                EngineError::Log(LogError::Failed("disk full".into())),
                ErrorKind::Internal,
            ),
            (
                EngineError::Storage(StorageError::Fenced("node b took over".into())),
                ErrorKind::Fenced,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}
