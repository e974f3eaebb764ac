//! [`BlobStore`] on the AWS SDK: create-only puts with `If-None-Match: *`, compare-and-swap
//! puts with `If-Match: <etag>`, SHA-256 checksums sent with every put (servers that verify
//! them reject corrupted uploads) and verified on get, ETags from put, get and head, native
//! delimiter listings, presigned GET URLs, bucket health and creation.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Builder, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, ByteStreamError};
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use base64::Engine as _;
use udm_core::ports::{
    BlobBody, BlobCapabilities, BlobListing, BlobMeta, BlobPage, BlobStore, ETag, MAX_LIST_PAGE, PutMode, PutOptions,
    PutResult, check_key, check_prefix, check_presign_ttl, etag_mismatch, skip_past,
};
use udm_core::{Checksum, Error, ErrorKind, Result};

use crate::S3Settings;
use crate::error::{any_cause, kind_of_status, missed_deadline};

/// One bucket through the AWS SDK.
#[derive(Clone)]
pub struct AwsS3Blobs {
    client: Client,
    bucket: String,
    deadlines: Deadlines,
    conditional_put: bool,
}

impl fmt::Debug for AwsS3Blobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsS3Blobs").field("bucket", &self.bucket).finish()
    }
}

/// The deadlines of every call, named in timeout errors.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    connect: Duration,
    read: Duration,
    attempt: Duration,
    call: Duration,
}

impl Deadlines {
    fn of(settings: &S3Settings) -> Self {
        Self {
            connect: settings.connect_timeout,
            read: settings.effective_read_timeout(),
            attempt: settings.attempt_timeout(),
            call: settings.call_timeout,
        }
    }

    /// Maps an SDK error to the UDM error, deciding retryability at this boundary.
    fn sdk_error<E>(&self, context: &str, key: &str, e: SdkError<E, HttpResponse>) -> Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let kind = match &e {
            SdkError::TimeoutError(_) => {
                // The SDK names the deadline it enforced: "operation attempt timeout (single
                // attempt)" or "operation timeout (all attempts including retries)".
                let attempt = any_cause(&e, |c| c.to_string().contains("attempt timeout"));
                let (within, name) = if attempt { (self.attempt, "attempt") } else { (self.call, "call") };
                return missed_deadline(context, key, within, name).with_source(e);
            }
            SdkError::DispatchFailure(d) if d.is_timeout() => {
                let message = format!(
                    "s3 {context} {key}: no response within the connect ({:?}) or read ({:?}) deadline",
                    self.connect, self.read
                );
                return Error::unavailable(message).with_source(e);
            }
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => ErrorKind::Unavailable,
            SdkError::ServiceError(s) => kind_of_status(s.raw().status().as_u16()),
            _ => ErrorKind::Internal,
        };
        let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
        Error::new(kind, format!("s3 {context} {key}: {detail}")).with_source(e)
    }
}

/// An error while reading a GET body. Only a checksum the SDK found wrong is a
/// `ChecksumMismatch`; a timeout, reset or short body is a retryable `Unavailable`.
fn body_error(key: &str, e: ByteStreamError) -> Error {
    // The SDK's checksum error type is private to an internal crate (aws-smithy-checksums):
    // recognise it by its message, pinned by the `checksum_mismatch_is_not_retryable` test.
    let mismatch = any_cause(&e, |c| c.to_string().to_ascii_lowercase().contains("checksum mismatch"));
    let kind = if mismatch { ErrorKind::ChecksumMismatch } else { ErrorKind::Unavailable };
    let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
    Error::new(kind, format!("s3 get {key}: reading the body: {detail}")).with_source(e)
}

fn base64_sha256(sum: &Checksum) -> String {
    base64::engine::general_purpose::STANDARD.encode(sum.as_bytes())
}

impl AwsS3Blobs {
    /// A client for one bucket, with the connect / read / attempt / call deadlines and the
    /// bounded retries of `settings`, so outages surface as retryable errors instead of hangs.
    pub fn new(settings: &S3Settings, bucket: &str) -> Self {
        let deadlines = Deadlines::of(settings);
        let max_backoff = settings.max_backoff();
        let retry = RetryConfig::standard()
            .with_max_attempts(settings.attempts())
            .with_initial_backoff(Duration::from_millis(100).min(max_backoff))
            .with_max_backoff(max_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(deadlines.connect)
            .read_timeout(deadlines.read)
            .operation_attempt_timeout(deadlines.attempt)
            .operation_timeout(deadlines.call)
            .build();
        let mut b = Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .force_path_style(settings.path_style)
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(endpoint) = &settings.endpoint {
            b = b.endpoint_url(endpoint);
        }
        if let Some((id, secret)) = &settings.credentials {
            b = b.credentials_provider(Credentials::new(id.expose(), secret.expose(), None, None, "udm-config"));
        }
        Self {
            client: Client::from_conf(b.build()),
            bucket: bucket.to_owned(),
            deadlines,
            conditional_put: settings.conditional_put,
        }
    }

    /// Creates the bucket if it does not exist (dev and test setups).
    pub async fn ensure_bucket(&self) -> Result<()> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(());
        }
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.deadlines.sdk_error("create bucket", &self.bucket, e);
                // Created meanwhile by someone else: fine.
                if matches!(err.kind(), ErrorKind::AlreadyExists) { Ok(()) } else { Err(err) }
            }
        }
    }
}

#[async_trait]
impl BlobStore for AwsS3Blobs {
    async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
        check_key(key)?;
        let sum = Checksum::of_bytes(&bytes);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(base64_sha256(&sum))
            .body(ByteStream::from(bytes));
        if let Some(t) = &options.content_type {
            req = req.content_type(t);
        }
        match &options.mode {
            PutMode::Create => req = req.if_none_match("*"),
            PutMode::Overwrite => {}
            PutMode::IfMatch(_) if !self.conditional_put => {
                let message = format!("s3:{}: compare-and-swap puts are disabled for this store", self.bucket);
                return Err(Error::new(ErrorKind::Unsupported, message));
            }
            PutMode::IfMatch(etag) => req = req.if_match(etag.as_str()),
        }
        let out = match (&options.mode, req.send().await.map_err(|e| self.deadlines.sdk_error("put", key, e))) {
            // 412: another ETag; 404: absent; 409: a concurrent conditional put won (AWS).
            (PutMode::IfMatch(want), Err(e)) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::NotFound) => {
                return Err(etag_mismatch(key, want, None).with_source(e));
            }
            (_, out) => out?,
        };
        Ok(PutResult { checksum: sum, etag: out.e_tag().map(ETag::new) })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.get_with_etag(key).await?.bytes)
    }

    async fn get_with_etag(&self, key: &str) -> Result<BlobBody> {
        check_key(key)?;
        let call = async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .map_err(|e| self.deadlines.sdk_error("get", key, e))?;
            let etag = out.e_tag().map(ETag::new);
            // The SDK's deadlines end with the headers: the call deadline covers the body too.
            let body = out.body.collect().await.map_err(|e| body_error(key, e))?;
            Ok(BlobBody { bytes: body.into_bytes().to_vec(), etag })
        };
        let within = self.deadlines.call;
        tokio::time::timeout(within, call).await.map_err(|_| missed_deadline("get", key, within, "call"))?
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        check_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(o) => Ok(Some(BlobMeta {
                size: o.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                content_type: o.content_type().map(str::to_owned),
                etag: o.e_tag().map(ETag::new),
            })),
            Err(e) => {
                let err = self.deadlines.sdk_error("head", key, e);
                if err.kind() == ErrorKind::NotFound { Ok(None) } else { Err(err) }
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.deadlines.sdk_error("delete", key, e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
        check_prefix(prefix)?;
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(i32::try_from(limit).unwrap_or(1000));
        if let Some(a) = after.filter(|a| *a >= prefix) {
            req = req.start_after(a);
        }
        let out = req.send().await.map_err(|e| self.deadlines.sdk_error("list", prefix, e))?;
        let keys: Vec<String> = out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
        let next = if out.is_truncated().unwrap_or(false) { keys.last().cloned() } else { None };
        Ok(BlobPage { keys, next })
    }

    async fn list_with_delimiter(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<BlobListing> {
        check_prefix(prefix)?;
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .max_keys(i32::try_from(limit).unwrap_or(1000));
        if let Some(a) = start_after.filter(|a| *a >= prefix) {
            // After a common prefix, S3 would list it again: start after all its keys.
            req = req.start_after(skip_past(a));
        }
        let out = req.send().await.map_err(|e| self.deadlines.sdk_error("list", prefix, e))?;
        let keys: Vec<String> = out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
        let prefixes: Vec<String> =
            out.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_owned)).collect();
        let last = keys.last().max(prefixes.last()).cloned();
        let next = if out.is_truncated().unwrap_or(false) { last } else { None };
        Ok(BlobListing { keys, prefixes, next })
    }

    async fn presign_get(&self, key: &str, ttl_secs: u64) -> Result<String> {
        check_key(key)?;
        check_presign_ttl(ttl_secs)?;
        let cfg = PresigningConfig::expires_in(Duration::from_secs(ttl_secs))
            .map_err(|e| Error::validation("ttl_secs", e.to_string()))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(cfg)
            .await
            .map_err(|e| self.deadlines.sdk_error("presign", key, e))?;
        Ok(req.uri().to_owned())
    }

    async fn health(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.deadlines.sdk_error("head bucket", &self.bucket, e))?;
        Ok(())
    }

    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities {
            presign: true,
            durable: true,
            content_types: true,
            etags: true,
            conditional_put: self.conditional_put,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_known_digest() {
        // SHA-256("abc"), base64 as S3 expects it.
        let sum = Checksum::of_bytes(b"abc");
        assert_eq!(base64_sha256(&sum), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
    }
}
