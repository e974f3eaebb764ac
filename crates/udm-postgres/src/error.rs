//! Classifying `tokio-postgres` errors at the boundary, by SQLSTATE: what is retryable, what
//! is a conflict, what is the caller's configuration.
//!
//! | SQLSTATE | meaning | UDM error |
//! |---|---|---|
//! | `40001`, `40P01` | serialization failure, deadlock: lost a race with another transaction | retried inside the call ([`retry_transaction`]); when the budget is spent, retryable `Unavailable` (as MongoDB's `WriteConflict`) |
//! | `23505` | unique violation | `Conflict` |
//! | class `08`, `57P01`–`57P03`, `53300`, `57014` | connection trouble, shutdown, too many connections, cancelled | retryable `Unavailable` |
//! | `28000`, `28P01`, `3D000`, `42501` | authentication, unknown database, privileges | `Config` |
//! | class `22` | data the server rejects (e.g. a NUL in a counter name, an overflow) | `Validation` |
//! | no SQLSTATE: connect, IO, closed connection | the server is unreachable | retryable `Unavailable` |
//! | anything else | | `Internal` |

use tokio_postgres::error::SqlState;
use udm_core::{Error, ErrorKind};

/// The driver's error type.
pub(crate) type PgError = tokio_postgres::Error;

/// Whether the whole transaction should run again: it lost a race (serialization failure or
/// deadlock) and was rolled back, so running it again is safe.
pub(crate) fn retry_transaction(e: &PgError) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// Keeps the cause among the errors of one pipeline (see `pipeline!`): the first error that
/// is not `25P02` ("current transaction is aborted"), else the first.
pub(crate) fn keep_cause(cause: &mut Option<PgError>, e: PgError) {
    let aborted = |e: &PgError| e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION);
    if cause.as_ref().is_none_or(|c| aborted(c) && !aborted(&e)) {
        *cause = Some(e);
    }
}

/// The UDM error kind of a driver error (see the module docs).
pub(crate) fn kind_of(e: &PgError) -> ErrorKind {
    let Some(code) = e.code() else {
        let text = e.to_string();
        if text.starts_with("invalid configuration") {
            return ErrorKind::Config;
        }
        let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io || text.starts_with("error connecting") || text.contains("timeout") {
            return ErrorKind::Unavailable;
        }
        return ErrorKind::Internal;
    };
    let c = code.code();
    if retry_transaction(e) || c.starts_with("08") || ["57P01", "57P02", "57P03", "53300", "57014"].contains(&c) {
        ErrorKind::Unavailable
    } else if *code == SqlState::UNIQUE_VIOLATION {
        ErrorKind::Conflict
    } else if ["28000", "28P01", "3D000", "42501"].contains(&c) {
        ErrorKind::Config
    } else if c.starts_with("22") {
        ErrorKind::Validation
    } else {
        ErrorKind::Internal
    }
}

/// Maps a driver error to the UDM error, deciding retryability here.
pub(crate) fn classify(context: &str, e: PgError) -> Error {
    let kind = kind_of(&e);
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    };
    let message = if retry_transaction(&e) {
        format!("postgres {context}: conflict with a concurrent transaction: {detail}")
    } else {
        format!("postgres {context}: {detail}")
    };
    Error::new(kind, message).retryable(kind == ErrorKind::Unavailable).with_source(e)
}

/// A stored row that does not decode: corruption or a format this version cannot read.
pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("postgres: stored {what} does not decode: {e}"))
}

/// A number as PostgreSQL's `bigint`.
pub(crate) fn to_i64(n: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::validation(what, format!("{n} exceeds what PostgreSQL stores (bigint)")))
}

/// A stored `bigint` as an unsigned number.
pub(crate) fn to_u64(n: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_| corrupt(what, format!("negative value {n}")))
}
