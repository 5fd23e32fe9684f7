//! [`ErrorKind`]: what a failure means to a client, and the one mapping
//! from it to a gRPC code ([`ErrorKind::grpc_code`]) and to an HTTP status
//! ([`ErrorKind::http_status`]).
//!
//! Errors have two levels. Each module keeps its own `thiserror` enum whose
//! messages name the offending values; each enum implements [`HasKind`] to
//! say which of these few kinds every variant is. Transports never look at
//! an error's variants or its text: Flight and HTTP each turn any error
//! into a reply in one function, from its kind and its `Display`.
//!
//! A kind exists only where a client can act differently on it (retry,
//! fix the request, give up). Two kinds may share a code on one protocol
//! when the other tells them apart ([`ErrorKind::TooLarge`] and
//! [`ErrorKind::Busy`] are both `RESOURCE_EXHAUSTED`, but 413 and 429).
//!
//! A foundation module: it uses no other module of the crate, and every
//! module may use it.

use axum::http::StatusCode;
use tonic::Code;

/// What a failure means to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong (bad SQL, a malformed batch or header, an
    /// offset never handed out); sending it again fails again.
    InvalidInput,
    /// The request is over a size limit; smaller ones succeed.
    TooLarge,
    /// A limit on shared resources refused the work (write backpressure,
    /// too many queries or streams, a query's memory, a slow subscriber);
    /// retrying later may succeed.
    Busy,
    /// The work ran out of its time.
    Timeout,
    /// The server cannot serve now (shutting down); retry, possibly on
    /// another server.
    Unavailable,
    /// What the request names does not exist.
    NotFound,
    /// What the request names existed and is no longer kept (a deleted
    /// stream, an offset past retention).
    Gone,
    /// The request contradicts the target's state (a closed stream, a
    /// different configuration, sequence numbers out of order, an object
    /// another writer created first).
    Conflict,
    /// A newer writer has taken over (a stale producer epoch, a lost
    /// object-store lease): this writer must stop, not retry.
    Fenced,
    /// Stored data is damaged. The server's fault, never the request's.
    Corrupt,
    /// Anything else that went wrong on the server.
    Internal,
}

impl ErrorKind {
    /// Every kind, for tests and documentation tables.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::InvalidInput,
        ErrorKind::TooLarge,
        ErrorKind::Busy,
        ErrorKind::Timeout,
        ErrorKind::Unavailable,
        ErrorKind::NotFound,
        ErrorKind::Gone,
        ErrorKind::Conflict,
        ErrorKind::Fenced,
        ErrorKind::Corrupt,
        ErrorKind::Internal,
    ];

    /// The gRPC status code of this kind: the only place one is chosen.
    pub fn grpc_code(self) -> Code {
        match self {
            ErrorKind::InvalidInput => Code::InvalidArgument,
            ErrorKind::TooLarge | ErrorKind::Busy => Code::ResourceExhausted,
            ErrorKind::Timeout => Code::DeadlineExceeded,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::NotFound | ErrorKind::Gone => Code::NotFound,
            ErrorKind::Conflict => Code::FailedPrecondition,
            ErrorKind::Fenced => Code::PermissionDenied,
            ErrorKind::Corrupt => Code::DataLoss,
            ErrorKind::Internal => Code::Internal,
        }
    }

    /// The HTTP status of this kind: the only place one is chosen.
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Busy => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Gone => StatusCode::GONE,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Fenced => StatusCode::FORBIDDEN,
            ErrorKind::Corrupt | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The server's fault (a bug or damaged data) rather than the
    /// request's or the load's: transports log these.
    pub fn is_fault(self) -> bool {
        matches!(self, ErrorKind::Corrupt | ErrorKind::Internal)
    }
}

/// An error that knows its [`ErrorKind`]. Every module's error enum
/// implements it with a `match` that names each variant, so a new variant
/// cannot reach a client without someone choosing its kind.
pub trait HasKind {
    fn kind(&self) -> ErrorKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract clients rely on (docs/CLIENTS.md, tests/python).
    const TABLE: [(ErrorKind, Code, u16); 11] = [
        (ErrorKind::InvalidInput, Code::InvalidArgument, 400),
        (ErrorKind::TooLarge, Code::ResourceExhausted, 413),
        (ErrorKind::Busy, Code::ResourceExhausted, 429),
        (ErrorKind::Timeout, Code::DeadlineExceeded, 504),
        (ErrorKind::Unavailable, Code::Unavailable, 503),
        (ErrorKind::NotFound, Code::NotFound, 404),
        (ErrorKind::Gone, Code::NotFound, 410),
        (ErrorKind::Conflict, Code::FailedPrecondition, 409),
        (ErrorKind::Fenced, Code::PermissionDenied, 403),
        (ErrorKind::Corrupt, Code::DataLoss, 500),
        (ErrorKind::Internal, Code::Internal, 500),
    ];

    #[test]
    fn every_kind_has_its_grpc_code_and_http_status() {
        for (kind, code, status) in TABLE {
            assert_eq!(kind.grpc_code(), code, "{kind:?}");
            assert_eq!(kind.http_status().as_u16(), status, "{kind:?}");
        }
        let listed: Vec<ErrorKind> = TABLE.iter().map(|(k, ..)| *k).collect();
        assert_eq!(listed, ErrorKind::ALL);
    }

    #[test]
    fn all_lists_every_kind_once() {
        // Adding a variant breaks this match until it gets a position in
        // `ALL` (and so a row in `TABLE`).
        let position = |k: ErrorKind| match k {
            ErrorKind::InvalidInput => 0,
            ErrorKind::TooLarge => 1,
            ErrorKind::Busy => 2,
            ErrorKind::Timeout => 3,
            ErrorKind::Unavailable => 4,
            ErrorKind::NotFound => 5,
            ErrorKind::Gone => 6,
            ErrorKind::Conflict => 7,
            ErrorKind::Fenced => 8,
            ErrorKind::Corrupt => 9,
            ErrorKind::Internal => 10,
        };
        for (i, k) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(position(k), i, "{k:?}");
        }
    }

    #[test]
    fn only_server_faults_are_500() {
        for k in ErrorKind::ALL {
            assert_eq!(
                k.is_fault(),
                k.http_status() == StatusCode::INTERNAL_SERVER_ERROR,
                "{k:?}"
            );
        }
    }
}
