//! [`QueryError`]: why a query was refused or failed, sorted into what the
//! user did wrong and what went wrong on the server.
//!
//! A leaf: every file of `query` may use it, and it uses none of them.

use std::time::Duration;

use datafusion::common::DataFusionError;

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
    /// Sorts a DataFusion error into what the user did wrong or not.
    pub fn from_datafusion(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => QueryError::Invalid(e.to_string()),
            DataFusionError::ResourcesExhausted(m) => QueryError::ResourcesExhausted(m.clone()),
            DataFusionError::Execution(m) if m.starts_with("time_bucket") => {
                QueryError::Invalid(e.to_string())
            }
            _ => QueryError::Execution(e.to_string()),
        }
    }
}
