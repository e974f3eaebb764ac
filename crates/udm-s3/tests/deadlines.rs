//! Every S3 call has a deadline: against a server that accepts connections and never answers,
//! puts and gets through both S3 clients fail with a retryable `Unavailable` (which deadline
//! fired is in the message; timing is not asserted).

#![cfg(any(feature = "aws-sdk", feature = "object-store"))]

mod fake;

use std::time::Duration;

use udm_core::ErrorKind;
use udm_core::ports::{BlobStore, PutOptions};
use udm_s3::S3Settings;

async fn settings() -> S3Settings {
    S3Settings::compatible(&fake::silent_server().await, "us-east-1", "a", "b")
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(1))
}

async fn assert_calls_time_out(b: &dyn BlobStore) {
    let e = b.put("t/d/k.json", b"{}".to_vec(), &PutOptions::create_json()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable(), "{e}");
    assert!(e.message().contains("deadline"), "{e}");
    let e = b.get("t/d/k.json").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable(), "{e}");
    assert!(e.message().contains("deadline"), "{e}");
}

#[cfg(feature = "aws-sdk")]
#[tokio::test]
async fn aws_sdk_calls_have_deadlines() {
    assert_calls_time_out(&udm_s3::AwsS3Blobs::new(&settings().await, "bucket")).await;
}

#[cfg(feature = "object-store")]
#[tokio::test]
async fn object_store_calls_have_deadlines() {
    assert_calls_time_out(&udm_s3::ObjectStoreBlobs::s3(&settings().await, "bucket").unwrap()).await;
}
