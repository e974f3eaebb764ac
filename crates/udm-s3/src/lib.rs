//! # udm-s3 — UDM's blob stores
//!
//! Two implementations of [`BlobStore`](udm_core::ports::BlobStore), so users can pick:
//! - [`ObjectStoreBlobs`] on the `object_store` crate: S3 and S3-compatible servers, a local
//!   directory, or memory; create-only puts use `PutMode::Create`;
//! - [`AwsS3Blobs`] on the AWS SDK: S3-native create-only puts (`If-None-Match: *`), SHA-256
//!   checksums on every put and get, presigned GET URLs, bucket health and creation.
//!
//! Both classify errors at the boundary: 404 → not found, 412/409 → already exists,
//! timeouts, 5xx and throttling → retryable unavailable.
//!
//! ```
//! # async fn demo() -> udm_core::Result<()> {
//! use udm_core::ports::{BlobStore, PutOptions};
//! let blobs = udm_s3::ObjectStoreBlobs::memory();
//! blobs.put("acme/crm/users/k", b"{}".to_vec(), &PutOptions::create_json()).await?;
//! assert_eq!(blobs.get("acme/crm/users/k").await?, b"{}");
//! # Ok(()) }
//! ```

mod aws;
mod error;
mod objstore;

use std::time::Duration;

use udm_core::config::{BlobBackend, Secret};
use udm_core::{Error, ErrorKind, Result};

pub use aws::AwsS3Blobs;
pub use objstore::ObjectStoreBlobs;

/// Connection settings of an S3 (or S3-compatible) service.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Endpoint URL for S3-compatible servers; `None` = AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Access key id and secret (printed redacted); `None` = anonymous.
    pub credentials: Option<(Secret, Secret)>,
    /// Path-style addressing.
    pub path_style: bool,
    /// Connect timeout (AWS SDK client).
    pub connect_timeout: Duration,
    /// Per-attempt timeout (AWS SDK client).
    pub operation_timeout: Duration,
    /// Attempts per request, first included (AWS SDK client).
    pub max_attempts: u32,
}

impl S3Settings {
    /// Settings for an S3-compatible server at `endpoint` with static credentials.
    pub fn compatible(endpoint: &str, region: &str, key_id: &str, secret: &str) -> Self {
        Self {
            endpoint: Some(endpoint.to_owned()),
            region: region.to_owned(),
            credentials: Some((Secret::new(key_id), Secret::new(secret))),
            path_style: true,
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(30),
            max_attempts: 3,
        }
    }

    /// The settings of an `s3` blob backend from the UDM configuration.
    pub fn from_backend(blobs: &BlobBackend) -> Result<Self> {
        match blobs {
            BlobBackend::S3 { endpoint, region, access_key_id, secret_access_key, path_style, .. } => Ok(Self {
                endpoint: endpoint.clone(),
                region: region.clone(),
                credentials: access_key_id.clone().zip(secret_access_key.clone()),
                path_style: *path_style,
                connect_timeout: Duration::from_secs(3),
                operation_timeout: Duration::from_secs(30),
                max_attempts: 3,
            }),
            other => Err(Error::new(ErrorKind::Config, format!("not an s3 backend: {other:?}"))),
        }
    }
}
