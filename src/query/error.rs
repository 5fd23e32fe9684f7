//! [`QueryError`]: why a query was refused or failed, sorted into what the
//! user did wrong and what went wrong on the server.
//!
//! Every file of `query` may use it; it uses only `functions`'
//! [`ArgumentError`](super::functions::ArgumentError), a leaf.

use std::time::Duration;

use datafusion::common::DataFusionError;

use super::functions::ArgumentError;
use crate::error::{ErrorKind, HasKind};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("query failed: {0}")]
    Execution(String),
    #[error("query exceeded its memory limit: {0}")]
    ResourcesExhausted(String),
    #[error("query timed out after {0:?}")]
    Timeout(Duration),
    #[error("too many queries running (limit {0}, --max-concurrent-queries); retry shortly")]
    Busy(usize),
    /// A limit other than memory ended the work (a subscriber too slow,
    /// too many subscriptions); the message names it.
    #[error("{0}")]
    Limit(String),
}

impl QueryError {
    /// Sorts a DataFusion error into what the user did wrong or not, by
    /// the type of its root cause (never by its text).
    pub fn from_datafusion(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => QueryError::Invalid(e.to_string()),
            DataFusionError::ResourcesExhausted(m) => QueryError::ResourcesExhausted(m.clone()),
            // Our functions' argument errors, raised while executing; the
            // message is the function's own ("time_bucket: ...").
            DataFusionError::External(inner) if inner.is::<ArgumentError>() => {
                QueryError::Invalid(inner.to_string())
            }
            _ => QueryError::Execution(e.to_string()),
        }
    }
}

impl HasKind for QueryError {
    fn kind(&self) -> ErrorKind {
        match self {
            QueryError::Invalid(_) => ErrorKind::InvalidInput,
            QueryError::Execution(_) => ErrorKind::Internal,
            QueryError::ResourcesExhausted(_) | QueryError::Busy(_) | QueryError::Limit(_) => {
                ErrorKind::Busy
            }
            QueryError::Timeout(_) => ErrorKind::Timeout,
        }
    }
}
