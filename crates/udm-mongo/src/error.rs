//! Classifying driver errors at the boundary: what is retryable, what is a conflict.

use mongodb::error::{Error as MongoError, ErrorKind as MongoKind, TRANSIENT_TRANSACTION_ERROR, WriteFailure};
use udm_core::{Error, ErrorKind};

/// MongoDB's duplicate-key error code.
pub(crate) const DUPLICATE_KEY: i32 = 11000;
/// MongoDB's write-conflict error code (concurrent transactions touched the same document).
pub(crate) const WRITE_CONFLICT: i32 = 112;

/// The server code of a command or write error, if any.
pub(crate) fn code(e: &MongoError) -> Option<i32> {
    match e.kind.as_ref() {
        MongoKind::Command(c) => Some(c.code),
        MongoKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

/// Whether the whole transaction should be retried: the driver says it is transient, or it
/// lost a race on a document another transaction wrote (write conflict, duplicate key).
pub(crate) fn retry_transaction(e: &MongoError) -> bool {
    e.contains_label(TRANSIENT_TRANSACTION_ERROR) || matches!(code(e), Some(WRITE_CONFLICT | DUPLICATE_KEY))
}

/// Maps a driver error to the UDM error, deciding retryability here.
pub(crate) fn classify(context: &str, e: MongoError) -> Error {
    let message = format!("mongodb {context}: {e}");
    let transient = e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
        || e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT);
    let kind = match e.kind.as_ref() {
        _ if transient => ErrorKind::Unavailable,
        MongoKind::Io(_)
        | MongoKind::ServerSelection { .. }
        | MongoKind::ConnectionPoolCleared { .. }
        | MongoKind::Shutdown
        | MongoKind::DnsResolve { .. } => ErrorKind::Unavailable,
        MongoKind::Authentication { .. } | MongoKind::InvalidArgument { .. } | MongoKind::InvalidTlsConfig { .. } => {
            ErrorKind::Config
        }
        _ if code(&e) == Some(DUPLICATE_KEY) => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, message).retryable(kind == ErrorKind::Unavailable).with_source(e)
}

/// A stored document that does not decode: corruption or a format this version cannot read.
pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("mongodb: stored {what} does not decode: {e}"))
}

/// A number out of the range MongoDB stores (i64).
pub(crate) fn to_i64(n: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::internal(format!("{what} {n} exceeds what MongoDB stores")))
}
