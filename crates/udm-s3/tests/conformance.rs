//! The blob conformance suite on every blob store of the enabled features: `object_store` and
//! the AWS SDK against the real S3-compatible test server (moto, started by
//! `cargo xtask services up`), `object_store` in memory, and [`LocalBlobs`](udm_s3::LocalBlobs)
//! on a local directory. Without the server the S3 tests fail, naming the command.

#![cfg(any(feature = "fs", feature = "object-store", feature = "aws-sdk"))]

use std::sync::Arc;

use udm_core::ports::BlobStore;
#[cfg(feature = "object-store")]
use udm_s3::ObjectStoreBlobs;
#[cfg(feature = "aws-sdk")]
use {
    udm_s3::{AwsS3Blobs, S3Settings},
    udm_testkit::services::s3_endpoint,
};

#[cfg(feature = "aws-sdk")]
const BUCKET: &str = "udm-conformance";

#[cfg(feature = "aws-sdk")]
fn settings() -> S3Settings {
    S3Settings::compatible(&s3_endpoint(), "us-east-1", "test", "testsecret")
}

#[cfg(feature = "aws-sdk")]
async fn aws() -> Arc<dyn BlobStore> {
    let b = AwsS3Blobs::new(&settings(), BUCKET);
    b.ensure_bucket().await.unwrap_or_else(|e| panic!("creating bucket on {}: {e}", s3_endpoint()));
    Arc::new(b)
}

#[cfg(all(feature = "aws-sdk", feature = "object-store"))]
async fn objstore_s3() -> Arc<dyn BlobStore> {
    AwsS3Blobs::new(&settings(), BUCKET).ensure_bucket().await.expect("bucket");
    Arc::new(ObjectStoreBlobs::s3(&settings(), BUCKET).expect("object_store s3"))
}

#[cfg(feature = "fs")]
async fn local() -> Arc<dyn BlobStore> {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    Arc::new(udm_s3::LocalBlobs::open(&dir).expect("local"))
}

#[cfg(feature = "aws-sdk")]
mod aws_sdk_s3_blob {
    use super::*;
    udm_testkit::conformance_tests!(blob, aws());
}

#[cfg(all(feature = "aws-sdk", feature = "object-store"))]
mod object_store_s3_blob {
    use super::*;
    udm_testkit::conformance_tests!(blob, objstore_s3());
}

#[cfg(feature = "fs")]
mod local_blob {
    use super::*;
    udm_testkit::conformance_tests!(blob, local());
}

#[cfg(feature = "object-store")]
mod object_store_memory_blob {
    use super::*;
    udm_testkit::conformance_tests!(blob, async { Arc::new(ObjectStoreBlobs::memory()) as Arc<dyn BlobStore> });
}

/// A presigned URL really serves the object over plain HTTP, without credentials.
#[cfg(feature = "aws-sdk")]
#[tokio::test]
async fn presigned_url_serves_the_object() {
    use udm_core::ports::PutOptions;
    let b = aws().await;
    let key = format!("{}/presigned.json", udm_testkit::fixtures::unique_ctx("p").tenant);
    b.put(&key, b"{\"hello\":1}".to_vec(), &PutOptions::create_json()).await.unwrap();
    let url = b.presign_get(&key, 60).await.unwrap();
    let body = http_get(&url).await;
    assert!(body.ends_with("{\"hello\":1}"), "{body}");
}

/// Bucket health: reachable bucket ok; missing bucket not found; dead endpoint retryable.
#[cfg(all(feature = "aws-sdk", feature = "object-store"))]
#[tokio::test]
async fn bucket_health() {
    aws().await.health().await.expect("healthy");
    let missing = AwsS3Blobs::new(&settings(), "udm-no-such-bucket");
    assert_eq!(missing.health().await.unwrap_err().kind(), udm_core::ErrorKind::NotFound);
    let dead = S3Settings::compatible("http://127.0.0.1:9", "us-east-1", "a", "b")
        .with_max_attempts(1)
        .with_timeouts(std::time::Duration::from_millis(300), std::time::Duration::from_secs(5));
    let e = AwsS3Blobs::new(&dead, BUCKET).health().await.unwrap_err();
    assert!(e.is_retryable() && e.kind() == udm_core::ErrorKind::Unavailable, "{e}");
    let e = ObjectStoreBlobs::s3(&dead, BUCKET).unwrap().get("a/b").await.unwrap_err();
    assert_eq!(e.kind(), udm_core::ErrorKind::Unavailable, "{e}");
}

/// With `conditional_put` off (servers that do not honour `If-Match`), both S3 clients
/// refuse compare-and-swap puts with `Unsupported` and change nothing.
#[cfg(all(feature = "aws-sdk", feature = "object-store"))]
#[tokio::test]
async fn compare_and_swap_can_be_switched_off() {
    use udm_testkit::conformance::blob::{compare_and_swap_checks_the_etag, compare_and_swap_counter_race};
    aws().await;
    let s = settings().with_conditional_put(false);
    let stores: [Arc<dyn BlobStore>; 2] =
        [Arc::new(AwsS3Blobs::new(&s, BUCKET)), Arc::new(ObjectStoreBlobs::s3(&s, BUCKET).expect("s3"))];
    for b in stores {
        assert!(!b.capabilities().conditional_put && b.capabilities().etags);
        compare_and_swap_checks_the_etag(b.clone()).await;
        compare_and_swap_counter_race(b).await;
    }
}

/// Minimal HTTP/1.1 GET over loopback (the URL comes from our own test server).
#[cfg(feature = "aws-sdk")]
async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("path");
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}
