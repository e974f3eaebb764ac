//! The one public error type of UDM.
//!
//! Every fallible operation in every UDM crate returns [`Error`]. Callers branch on
//! [`Error::kind`] (each [`ErrorKind`] documents what to do about it) and on
//! [`Error::is_retryable`]; adapters decide retryability at their boundary (MongoDB error
//! labels, S3 status codes) and say so when they build the error.

use std::fmt;

/// What went wrong, at the level a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input was rejected (bad id, bad document, unknown operator, bad config…).
    /// Nothing was changed. Fix the input; retrying the same call fails the same way.
    Validation,
    /// The configuration is invalid; [`Error::problems`] lists every problem with its path.
    Config,
    /// The object, version, blob or queue entry does not exist (or is deleted and the call
    /// did not ask for deleted ones).
    NotFound,
    /// A create-only write found the key already there. Nothing was overwritten.
    AlreadyExists,
    /// An expected-OV (optimistic lock) check failed; [`Error::current_ov`] tells the OV the
    /// object is at now. Re-read, re-apply, and retry with the new OV.
    VersionConflict,
    /// The write conflicts with committed state in another way (same request id with a
    /// different payload, update of a deleted object, a concurrent writer won). Re-read first.
    Conflict,
    /// The object was found on another backend pair than the router chose for it.
    /// Run the rebalance tool; reads of it fail until then rather than serve stale data.
    RouteMismatch,
    /// A backend could not be reached or timed out. Usually retryable: see
    /// [`Error::is_retryable`].
    Unavailable,
    /// Stored bytes do not match their recorded checksum. Never served as data; recover the
    /// object from another copy.
    ChecksumMismatch,
    /// The operation is not supported by this adapter or not enabled in config (e.g. hard
    /// delete disabled, presigning on an in-memory store).
    Unsupported,
    /// A confirmation the operation requires was not given (e.g. hard delete).
    NotConfirmed,
    /// An invariant was broken inside UDM or a backend returned something impossible.
    /// Report it: this is a bug or corruption, not a caller mistake.
    Internal,
    /// The write did not commit now, but it is durable in the fallback queue and the queue's
    /// worker will apply it (or dead-letter it with the reason); [`Error::queued_request`]
    /// names its request id, whose final state the collection's `request_state` reports.
    /// Do not retry it: it is already on its way.
    Queued,
    /// The version (or the version current at the asked instant or CV) was removed by
    /// retention. Its data is gone on purpose; no other version's data is served instead.
    Pruned,
}

impl ErrorKind {
    /// A short, stable, lower-case name (used in messages, logs and JSON output).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Validation => "validation",
            ErrorKind::Config => "config",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::VersionConflict => "version conflict",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RouteMismatch => "route mismatch",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ChecksumMismatch => "checksum mismatch",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NotConfirmed => "not confirmed",
            ErrorKind::Internal => "internal",
            ErrorKind::Queued => "queued",
            ErrorKind::Pruned => "pruned",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found while validating input or configuration, with the path of the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending field (`backends[1].s3.region`, `data.a.b`), or empty
    /// when the problem is about the whole value.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Shared, so cloning an error (a batching layer hands one failure to many waiters) keeps its cause.
type Source = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The UDM error: a [`kind`](Error::kind), a message, and optional structured detail.
///
/// `Clone`: a clone shares the underlying cause.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    /// For version conflicts: the current OV as a number (`version.rs` owns the typed view,
    /// so this module does not depend on it).
    pub(crate) current_ov: Option<u64>,
    /// For [`ErrorKind::Queued`]: the queued write's request id.
    queued_request: Option<String>,
    problems: Vec<Problem>,
    source: Option<Source>,
}

/// Shorthand for `Result<T, udm_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message. Only [`ErrorKind::Unavailable`] is retryable by
    /// default; use [`Error::retryable`] to override at an adapter boundary.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: kind == ErrorKind::Unavailable,
            current_ov: None,
            queued_request: None,
            problems: Vec::new(),
            source: None,
        }
    }

    /// A write that is durable in the fallback queue under `request_id` (not retryable: it
    /// is already on its way). `why` says what failed now.
    pub fn queued(request_id: impl Into<String>, why: &str) -> Self {
        let request_id = request_id.into();
        let message = format!(
            "queued as request {request_id}: it will be applied by the fallback queue's worker ({why}); \
             ask the collection's request_state for its outcome"
        );
        Self { queued_request: Some(request_id), ..Self::new(ErrorKind::Queued, message) }
    }

    /// For [`ErrorKind::Queued`]: the request id the write was queued under.
    pub fn queued_request(&self) -> Option<&str> {
        self.queued_request.as_deref()
    }

    /// A validation error with one problem at `path`.
    pub fn validation(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(ErrorKind::Validation, vec![Problem::new(path, message)])
    }

    /// A validation or config error carrying every problem found.
    pub fn invalid(kind: ErrorKind, problems: Vec<Problem>) -> Self {
        let message = match problems.as_slice() {
            [one] => one.to_string(),
            many => format!(
                "{} problems: {}",
                many.len(),
                many.iter().map(Problem::to_string).collect::<Vec<_>>().join("; ")
            ),
        };
        Self { problems, ..Self::new(kind, message) }
    }

    /// A not-found error.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, what)
    }

    /// A backend that could not be reached (retryable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// A broken internal invariant.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Sets whether retrying the same call may succeed.
    #[must_use]
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(std::sync::Arc::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same call may succeed if retried later (transient backend failure).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// For validation and config errors: every problem found, with field paths.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if self.retryable {
            d.field("retryable", &true);
        }
        if let Some(ov) = self.current_ov {
            d.field("current_ov", &ov);
        }
        if let Some(r) = &self.queued_request {
            d.field("queued_request", r);
        }
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_write_names_its_request_and_is_not_retried() {
        let e = Error::queued("req-7", "backend down");
        assert_eq!((e.kind(), e.queued_request(), e.is_retryable()), (ErrorKind::Queued, Some("req-7"), false));
        assert!(e.to_string().starts_with("queued: queued as request req-7"), "{e}");
        assert_eq!(Error::unavailable("x").queued_request(), None);
    }

    #[test]
    fn only_unavailable_is_retryable_by_default() {
        assert!(Error::unavailable("down").is_retryable());
        assert!(!Error::not_found("x").is_retryable());
        assert!(Error::internal("x").retryable(true).is_retryable());
    }

    #[test]
    fn clones_share_the_cause() {
        let e = Error::unavailable("down").with_source(std::io::Error::other("reset"));
        let c = e.clone();
        assert_eq!((c.kind(), c.to_string(), c.is_retryable()), (e.kind(), e.to_string(), true));
        assert_eq!(std::error::Error::source(&c).map(ToString::to_string).as_deref(), Some("reset"));
    }

    #[test]
    fn invalid_lists_every_problem() {
        let e = Error::invalid(ErrorKind::Config, vec![Problem::new("a", "bad"), Problem::new("b.c", "worse")]);
        assert_eq!(e.problems().len(), 2);
        assert_eq!(e.to_string(), "config: 2 problems: a: bad; b.c: worse");
    }
}
