//! Classifying object-store and S3 errors at the boundary.

use udm_core::{Error, ErrorKind};

/// Maps an `object_store` error to the UDM error.
pub(crate) fn from_object_store(context: &str, key: &str, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => ErrorKind::AlreadyExists,
        E::InvalidPath { .. } => ErrorKind::Validation,
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorKind::Unsupported,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } | E::UnknownConfigurationKey { .. } => ErrorKind::Config,
        // Network failures, timeouts, 5xx and throttling surface as Generic after the client's
        // own retries: treat them as transient.
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, format!("{context} {key}: {e}")).with_source(e)
}

/// Maps an HTTP status from S3 to a kind (`None` = success or unknown).
pub(crate) fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        404 => ErrorKind::NotFound,
        409 | 412 => ErrorKind::AlreadyExists,
        400 => ErrorKind::Validation,
        401 | 403 => ErrorKind::Config,
        429 | 500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}
