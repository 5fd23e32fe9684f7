//! The one place where errors become gRPC statuses: the code from the
//! error's [`ErrorKind`] (through [`ErrorKind::grpc_code`]), the message
//! from its `Display`.

use std::fmt::Display;

use tonic::Status;

use crate::error::{ErrorKind, HasKind};

/// The status a client gets for `e`. Server faults are logged here, once.
pub fn status<E: HasKind + Display>(e: E) -> Status {
    let kind = e.kind();
    if kind.is_fault() {
        tracing::error!(error = %e, "gRPC call failed");
    }
    with_kind(kind, e.to_string())
}

/// A status of `kind` for a failure that has no error type of its own
/// (a transport refusal worded here).
pub fn with_kind(kind: ErrorKind, message: impl Into<String>) -> Status {
    Status::new(kind.grpc_code(), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::EngineError;
    use crate::query::QueryError;
    use crate::storage::StorageError;
    use crate::stream::registry::StreamError;

    /// An error of each layer keeps its message and gets its kind's code.
    #[test]
    fn errors_of_every_layer_become_their_kinds_code() {
        use tonic::Code;
        let cases: Vec<(Status, Code)> = vec![
            (
                status(QueryError::Invalid("no column nope".into())),
                Code::InvalidArgument,
            ),
            (status(QueryError::Busy(64)), Code::ResourceExhausted),
            (
                status(QueryError::Timeout(std::time::Duration::from_secs(1))),
                Code::DeadlineExceeded,
            ),
            (
                status(EngineError::BatchTooLarge { rows: 2, limit: 1 }),
                Code::ResourceExhausted,
            ),
            (status(EngineError::ShuttingDown), Code::Unavailable),
            (
                status(StorageError::Corrupt {
                    path: "chunks/1".into(),
                    why: "bad magic".into(),
                }),
                Code::DataLoss,
            ),
            (status(StreamError::NotFound), Code::NotFound),
        ];
        for (s, code) in cases {
            assert_eq!(s.code(), code, "{s}");
        }
        let s = status(EngineError::BatchTooLarge { rows: 2, limit: 1 });
        assert_eq!(
            s.message(),
            EngineError::BatchTooLarge { rows: 2, limit: 1 }.to_string()
        );
    }
}
