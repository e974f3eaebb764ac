//! [`BlobStore`] scenarios.

use std::sync::Arc;

use udm_core::ports::{BlobStore, MAX_LIST_PAGE, PutOptions};
use udm_core::{Checksum, ErrorKind};

use crate::fixtures::unique_ctx;

fn prefix() -> String {
    format!("{}/", unique_ctx("blobs").tenant)
}

/// Put, get, head, overwrite and delete; checksums returned for what was stored.
pub async fn put_get_head_delete(b: Arc<dyn BlobStore>) {
    let k = format!("{}a/b.json", prefix());
    let sum = b.put(&k, b"{\"x\":1}".to_vec(), &PutOptions::create_json()).await.expect("put");
    assert_eq!(sum, Checksum::of_bytes(b"{\"x\":1}"));
    assert_eq!(b.get(&k).await.unwrap(), b"{\"x\":1}");
    let meta = b.head(&k).await.unwrap().expect("head");
    assert_eq!(meta.size, 7);
    if b.capabilities().content_types {
        assert_eq!(meta.content_type.as_deref(), Some("application/json"));
    }
    b.put(&k, b"second".to_vec(), &PutOptions::overwrite("text/plain")).await.expect("overwrite");
    assert_eq!(b.get(&k).await.unwrap(), b"second");
    let empty = format!("{}empty", prefix());
    b.put(&empty, Vec::new(), &PutOptions::create("application/octet-stream")).await.expect("empty blob");
    assert_eq!(b.get(&empty).await.unwrap(), b"");
    b.delete(&k).await.unwrap();
    assert!(b.head(&k).await.unwrap().is_none());
    b.delete(&k).await.expect("deleting twice is fine");
    b.health().await.expect("health");
}

/// A create-only put never replaces an existing object.
pub async fn create_only_never_overwrites(b: Arc<dyn BlobStore>) {
    let k = format!("{}snap.json", prefix());
    b.put(&k, b"original".to_vec(), &PutOptions::create_json()).await.unwrap();
    let e = b.put(&k, b"replacement".to_vec(), &PutOptions::create_json()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(b.get(&k).await.unwrap(), b"original");
}

/// Of 8 concurrent create-only puts of one key, exactly one wins and its bytes stay.
pub async fn create_only_race(b: Arc<dyn BlobStore>) {
    for round in 0..5 {
        let k = format!("{}race-{round}.json", prefix());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (b, k) = (b.clone(), k.clone());
                tokio::spawn(async move {
                    (i, b.put(&k, format!("writer {i}").into_bytes(), &PutOptions::create_json()).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                (i, Ok(_)) => winners.push(i),
                (_, Err(e)) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(b.get(&k).await.unwrap(), format!("writer {}", winners[0]).into_bytes());
    }
}

/// Listing pages through 1,050 keys in order, honours `after`, and never leaves its prefix.
pub async fn list_paginates_past_1000(b: Arc<dyn BlobStore>) {
    let p = prefix();
    let n = MAX_LIST_PAGE + 50;
    let mut want: Vec<String> = (0..n).map(|i| format!("{p}k/{i:05}")).collect();
    let puts: Vec<_> = want
        .chunks(n.div_ceil(16))
        .map(|chunk| {
            let (b, chunk) = (b.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for k in chunk {
                    b.put(&k, b"x".to_vec(), &PutOptions::create("text/plain")).await.expect("put");
                }
            })
        })
        .collect();
    for t in puts {
        t.await.expect("put task");
    }
    b.put(&format!("{p}l/outside"), b"x".to_vec(), &PutOptions::create("text/plain")).await.unwrap();
    want.sort();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = b.list(&format!("{p}k/"), after.as_deref(), MAX_LIST_PAGE + 500).await.expect("list");
        pages += 1;
        assert!(page.keys.len() <= MAX_LIST_PAGE);
        got.extend(page.keys);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(got, want);
    assert!(pages >= 2);
    let small = b.list(&format!("{p}k/"), Some(&format!("{p}k/00009")), 3).await.unwrap();
    assert_eq!(small.keys, [format!("{p}k/00010"), format!("{p}k/00011"), format!("{p}k/00012")]);
    assert!(small.next.is_some());
    assert!(b.list(&format!("{p}nothing/"), None, 10).await.unwrap().keys.is_empty());
}

/// Invalid keys are rejected before any IO, and leave the store unchanged.
pub async fn bad_keys_change_nothing(b: Arc<dyn BlobStore>) {
    let p = prefix();
    b.put(&format!("{p}ok"), b"x".to_vec(), &PutOptions::create("text/plain")).await.unwrap();
    for bad in ["", "/abs", "a/../b", "a//b", "trailing/", "sp ace", "x\\y"] {
        let e = b.put(bad, b"x".to_vec(), &PutOptions::create("text/plain")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Validation, "put {bad:?}");
        assert_eq!(b.get(bad).await.unwrap_err().kind(), ErrorKind::Validation, "get {bad:?}");
        assert_eq!(b.delete(bad).await.unwrap_err().kind(), ErrorKind::Validation, "delete {bad:?}");
    }
    assert_eq!(b.list("../", None, 10).await.unwrap_err().kind(), ErrorKind::Validation);
    assert_eq!(b.list(&p, None, 10).await.unwrap().keys, [format!("{p}ok")]);
}

/// Missing blobs: get is not-found, head is `None`.
pub async fn missing_blobs(b: Arc<dyn BlobStore>) {
    let k = format!("{}missing.json", prefix());
    assert_eq!(b.get(&k).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(b.head(&k).await.unwrap().is_none());
}

/// Presigned URLs where supported; a typed error otherwise; bad lifetimes always rejected.
pub async fn presign_per_capability(b: Arc<dyn BlobStore>) {
    let k = format!("{}p.json", prefix());
    b.put(&k, b"{}".to_vec(), &PutOptions::create_json()).await.unwrap();
    for bad_ttl in [0, 604_801] {
        assert_eq!(b.presign_get(&k, bad_ttl).await.unwrap_err().kind(), ErrorKind::Validation);
    }
    match b.capabilities().presign {
        true => {
            let url = b.presign_get(&k, 60).await.expect("presign");
            assert!(url.starts_with("http") && url.contains("p.json"), "{url}");
        }
        false => assert_eq!(b.presign_get(&k, 60).await.unwrap_err().kind(), ErrorKind::Unsupported),
    }
}
