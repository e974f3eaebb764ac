//! [`S3Settings`]: where an S3 (or S3-compatible) service is, and the deadlines of every call
//! to it. Shared by both S3 clients; compiled whatever features are enabled.

use std::time::Duration;

use udm_core::config::{BlobBackend, Secret};
use udm_core::{Error, ErrorKind, Result};

/// Default [`S3Settings::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`S3Settings::read_timeout`].
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`S3Settings::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`S3Settings::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Connection settings of an S3 (or S3-compatible) service.
///
/// Every call has three deadlines: establishing a connection ([`connect_timeout`]), waiting
/// for the server to answer ([`read_timeout`]), and the whole call including retries
/// ([`call_timeout`]). A call that misses one fails with a retryable
/// [`ErrorKind::Unavailable`] naming the deadline. Each of the at most [`max_attempts`]
/// attempts gets an equal share of the call deadline ([`S3Settings::attempt_timeout`]).
///
/// [`connect_timeout`]: S3Settings::connect_timeout
/// [`read_timeout`]: S3Settings::read_timeout
/// [`call_timeout`]: S3Settings::call_timeout
/// [`max_attempts`]: S3Settings::max_attempts
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct S3Settings {
    /// Endpoint URL for S3-compatible servers; `None` = AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Access key id and secret (printed redacted); `None` = anonymous.
    pub credentials: Option<(Secret, Secret)>,
    /// Path-style addressing.
    pub path_style: bool,
    /// Deadline for establishing a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Deadline for the server's answer once the request is sent, and between reads of a
    /// response body (default 10 s, never more than the call deadline).
    pub read_timeout: Duration,
    /// Deadline for the whole call, all attempts and backoff included (default 30 s).
    pub call_timeout: Duration,
    /// Attempts per call, first included (default 3; 0 counts as 1).
    pub max_attempts: u32,
    /// Whether the server honours `If-Match` on PutObject atomically (AWS S3 does, since
    /// November 2024), so compare-and-swap puts (`PutMode::IfMatch`) are offered (default
    /// true). Set it to false for servers that ignore the header or check it without
    /// atomicity: such puts then fail with `Unsupported` instead of silently losing updates.
    pub conditional_put: bool,
}

impl S3Settings {
    /// Settings for an S3-compatible server at `endpoint` with static credentials and
    /// default deadlines.
    pub fn compatible(endpoint: &str, region: &str, key_id: &str, secret: &str) -> Self {
        Self {
            endpoint: Some(endpoint.to_owned()),
            credentials: Some((Secret::new(key_id), Secret::new(secret))),
            path_style: true,
            ..Self::defaults(region)
        }
    }

    /// The settings of an `s3` blob backend from the UDM configuration, with default deadlines.
    pub fn from_backend(blobs: &BlobBackend) -> Result<Self> {
        match blobs {
            BlobBackend::S3 { endpoint, region, access_key_id, secret_access_key, path_style, .. } => Ok(Self {
                endpoint: endpoint.clone(),
                credentials: access_key_id.clone().zip(secret_access_key.clone()),
                path_style: *path_style,
                ..Self::defaults(region)
            }),
            other => Err(Error::new(ErrorKind::Config, format!("not an s3 backend: {other:?}"))),
        }
    }

    fn defaults(region: &str) -> Self {
        Self {
            endpoint: None,
            region: region.to_owned(),
            credentials: None,
            path_style: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            conditional_put: true,
        }
    }

    /// Sets the connect and whole-call deadlines; the read deadline is capped at the call's.
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, call: Duration) -> Self {
        self.connect_timeout = connect;
        self.call_timeout = call;
        self.read_timeout = self.read_timeout.min(call);
        self
    }

    /// Sets the read deadline (capped at the call deadline when used).
    #[must_use]
    pub fn with_read_timeout(mut self, read: Duration) -> Self {
        self.read_timeout = read;
        self
    }

    /// Sets the number of attempts per call, first included.
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets [`S3Settings::conditional_put`].
    #[must_use]
    pub fn with_conditional_put(mut self, supported: bool) -> Self {
        self.conditional_put = supported;
        self
    }

    /// Attempts per call, at least 1.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// Deadline of one attempt: an equal share of the call deadline (whole milliseconds), so a
    /// hung attempt leaves time for the retries.
    pub fn attempt_timeout(&self) -> Duration {
        let ms = self.call_timeout.as_millis() / u128::from(self.attempts());
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX).max(1))
    }

    /// Longest pause between attempts: a quarter of the call deadline, at most 2 s.
    #[cfg(any(feature = "aws-sdk", feature = "object-store"))]
    pub(crate) fn max_backoff(&self) -> Duration {
        (self.call_timeout / 4).min(Duration::from_secs(2))
    }

    /// The read deadline actually applied: never more than one attempt's.
    pub fn effective_read_timeout(&self) -> Duration {
        self.read_timeout.min(self.attempt_timeout())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_setters() {
        let s = S3Settings::compatible("http://localhost:1", "us-east-1", "a", "b");
        assert_eq!(
            (s.connect_timeout, s.call_timeout, s.max_attempts),
            (Duration::from_secs(5), Duration::from_secs(30), 3)
        );
        assert_eq!(s.attempt_timeout(), Duration::from_secs(10));
        let s = s.with_timeouts(Duration::from_secs(1), Duration::from_secs(2)).with_max_attempts(0);
        assert_eq!(
            (s.connect_timeout, s.call_timeout, s.read_timeout),
            (Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(2))
        );
        assert_eq!((s.attempts(), s.attempt_timeout()), (1, Duration::from_secs(2)));
        assert_eq!(s.with_max_attempts(4).effective_read_timeout(), Duration::from_millis(500));
    }
}
