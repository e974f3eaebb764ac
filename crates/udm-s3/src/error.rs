//! Classifying S3 and object-store errors at the boundary: 404 → not found, 409/412 → already
//! exists, missed deadlines, 5xx and throttling → retryable unavailable.

use std::time::Duration;

use udm_core::{Error, ErrorKind};

/// A call that missed one of its deadlines (retryable `Unavailable`), e.g.
/// `s3 put k: no response within 30s (call deadline)`.
pub(crate) fn missed_deadline(context: &str, key: &str, within: Duration, deadline: &str) -> Error {
    Error::unavailable(format!("s3 {context} {key}: no response within {within:?} ({deadline} deadline)"))
        .retryable(true)
}

/// Maps an HTTP status from S3 to a kind.
#[cfg(feature = "aws-sdk")]
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

/// Whether `e` or one of its causes satisfies `pred`.
pub(crate) fn any_cause(
    e: &(dyn std::error::Error + 'static),
    mut pred: impl FnMut(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if pred(c) {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Maps an `object_store` error to the UDM error. `deadlines` names the per-attempt deadlines
/// for the message when the client timed out.
#[cfg(feature = "object-store")]
pub(crate) fn from_object_store(context: &str, key: &str, e: object_store::Error, deadlines: &str) -> Error {
    use object_store::Error as E;
    use object_store::client::{HttpError, HttpErrorKind};
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
    let timed_out =
        any_cause(&e, |c| c.downcast_ref::<HttpError>().is_some_and(|h| h.kind() == HttpErrorKind::Timeout));
    let message = if timed_out {
        format!("s3 {context} {key}: no response within the {deadlines} deadline: {e}")
    } else {
        format!("s3 {context} {key}: {e}")
    };
    Error::new(kind, message).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_deadlines_are_retryable_and_named() {
        let e = missed_deadline("put", "k", Duration::from_secs(30), "call");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert_eq!(e.message(), "s3 put k: no response within 30s (call deadline)");
    }
}
