//! # udm-s3 — UDM's blob stores
//!
//! Implementations of [`BlobStore`](udm_core::ports::BlobStore), each behind a cargo feature
//! so a build pulls only the clients it uses (no feature is on by default; the facade picks):
//! - `fs`: [`LocalBlobs`], a durable local directory on `std::fs` (a put returns only once
//!   the file and its directory entry are on stable storage);
//! - `object-store`: [`ObjectStoreBlobs`] on the `object_store` crate: S3 and S3-compatible
//!   servers, or memory; create-only puts use `PutMode::Create`;
//! - `aws-sdk`: [`AwsS3Blobs`] on the AWS SDK: S3-native create-only puts
//!   (`If-None-Match: *`), SHA-256 checksums on every put and get, presigned GET URLs, bucket
//!   health and creation.
//!
//! Every store reports ETags (from put, `head` and `get_with_etag`), offers compare-and-swap
//! puts (`PutMode::IfMatch`: S3 `If-Match`; `LocalBlobs`: atomic within one process only) and
//! delimiter listings (native on the AWS SDK client).
//!
//! [`S3Settings`] (endpoint, credentials, the connect / read / whole-call deadlines of every
//! S3 call, and whether the server honours `If-Match`) is always available. The S3 clients
//! classify errors at the boundary: 404 → not found, 412/409 → already exists (for a
//! compare-and-swap put, 404/409/412 → conflict), missed deadlines, 5xx and throttling →
//! retryable unavailable.
//!
//! ```
//! # #[cfg(feature = "object-store")]
//! # async fn demo() -> udm_core::Result<()> {
//! use udm_core::ports::{BlobStore, PutOptions};
//! let blobs = udm_s3::ObjectStoreBlobs::memory();
//! blobs.put("acme/crm/users/k", b"{}".to_vec(), &PutOptions::create_json()).await?;
//! assert_eq!(blobs.get("acme/crm/users/k").await?, b"{}");
//! # Ok(()) }
//! ```

#[cfg(feature = "aws-sdk")]
mod aws;
#[cfg(any(feature = "aws-sdk", feature = "object-store"))]
mod error;
#[cfg(feature = "fs")]
mod local;
#[cfg(feature = "object-store")]
mod objstore;
mod settings;

#[cfg(feature = "aws-sdk")]
pub use aws::AwsS3Blobs;
#[cfg(feature = "fs")]
pub use local::{LocalBlobs, SyncObserver};
#[cfg(feature = "object-store")]
pub use objstore::ObjectStoreBlobs;
pub use settings::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_READ_TIMEOUT, S3Settings,
};
