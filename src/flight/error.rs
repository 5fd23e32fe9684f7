//! The one place where engine and query errors become gRPC statuses.

use tonic::Status;

use crate::ingest::EngineError;
use crate::query::QueryError;

pub fn engine_status(e: EngineError) -> Status {
    match e {
        EngineError::InvalidBatch(b) => Status::invalid_argument(format!("invalid batch: {b}")),
        e @ (EngineError::Backpressure { .. } | EngineError::BatchTooLarge { .. }) => {
            Status::resource_exhausted(e.to_string())
        }
        e @ EngineError::ShuttingDown => Status::unavailable(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

pub fn query_status(e: QueryError) -> Status {
    match e {
        QueryError::Invalid(m) => Status::invalid_argument(m),
        e @ (QueryError::ResourcesExhausted(_) | QueryError::Busy(_) | QueryError::Limit(_)) => {
            Status::resource_exhausted(e.to_string())
        }
        e @ QueryError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        e @ QueryError::Execution(_) => Status::internal(e.to_string()),
    }
}
