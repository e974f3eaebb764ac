//! Reading a GET body through the AWS SDK: a connection that breaks mid-body is a retryable
//! `Unavailable`, only a checksum that does not match is a `ChecksumMismatch`.

#![cfg(feature = "aws-sdk")]

mod fake;

use udm_core::ErrorKind;
use udm_core::ports::BlobStore;
use udm_s3::{AwsS3Blobs, S3Settings};

async fn client(response: &str) -> AwsS3Blobs {
    let endpoint = fake::scripted_server(response.as_bytes().to_vec()).await;
    AwsS3Blobs::new(&S3Settings::compatible(&endpoint, "us-east-1", "a", "b"), "bucket")
}

/// Regression: a short body (Content-Length larger than what arrives before the connection
/// closes) was reported as a non-retryable `ChecksumMismatch`.
#[tokio::test]
async fn short_body_is_retryable_unavailable() {
    let b =
        client("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":").await;
    let e = b.get("t/d/k.json").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable(), "{e}");
}

/// A body whose SHA-256 differs from the one the server sent is a `ChecksumMismatch`, not
/// retryable (this also pins how the SDK's checksum error is recognised).
#[tokio::test]
async fn checksum_mismatch_is_not_retryable() {
    // SHA-256("abc"), sent with the body "{}".
    let b = client(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
         x-amz-checksum-sha256: ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=\r\n\r\n{}",
    )
    .await;
    let e = b.get("t/d/k.json").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch, "{e}");
    assert!(!e.is_retryable(), "{e}");
}
