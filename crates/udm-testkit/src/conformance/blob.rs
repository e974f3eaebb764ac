//! [`BlobStore`] scenarios.

use std::sync::Arc;

use udm_core::ports::{BlobBody, BlobStore, ETag, MAX_LIST_PAGE, PutOptions};
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

/// ETags: a put reports one, `head` and `get_with_etag` report the same, and it changes
/// when an overwrite changes the bytes.
pub async fn etags_follow_overwrites(b: Arc<dyn BlobStore>) {
    let k = format!("{}tagged.json", prefix());
    let first = b.put_with_etag(&k, b"one".to_vec(), &PutOptions::create_json()).await.expect("put");
    assert_eq!(first.checksum, Checksum::of_bytes(b"one"));
    if !b.capabilities().etags {
        return;
    }
    let e1 = first.etag.expect("a store with etags reports one from put");
    assert_eq!(b.head(&k).await.unwrap().expect("head").etag.as_ref(), Some(&e1));
    let body = b.get_with_etag(&k).await.expect("get");
    assert_eq!((body.bytes.as_slice(), body.etag.as_ref()), (&b"one"[..], Some(&e1)));
    let second = b.put_with_etag(&k, b"two".to_vec(), &PutOptions::overwrite("text/plain")).await.expect("overwrite");
    let e2 = second.etag.expect("etag");
    assert_ne!(e1, e2, "an overwrite with other bytes changes the ETag");
    let meta = b.head(&k).await.unwrap().expect("head");
    assert_eq!((meta.size, meta.etag.as_ref()), (3, Some(&e2)));
    assert_eq!(b.get_with_etag(&k).await.unwrap().etag.as_ref(), Some(&e2));
    assert_eq!(b.get_with_etag(&format!("{}absent", prefix())).await.unwrap_err().kind(), ErrorKind::NotFound);
}

/// Compare-and-swap: succeeds with the current ETag; fails with `Conflict` and changes
/// nothing with a stale one or on an absent blob. Stores without it answer `Unsupported`.
pub async fn compare_and_swap_checks_the_etag(b: Arc<dyn BlobStore>) {
    let k = format!("{}cas.json", prefix());
    let e1 = b.put_with_etag(&k, b"v1".to_vec(), &PutOptions::create_json()).await.unwrap().etag;
    let Some(e1) = e1.filter(|_| b.capabilities().conditional_put) else {
        let any = ETag::new("\"whatever\"");
        let e = b.put(&k, b"v2".to_vec(), &PutOptions::if_match(any, "text/plain")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert_eq!(b.get(&k).await.unwrap(), b"v1");
        return;
    };
    let e2 = b.put_with_etag(&k, b"v2".to_vec(), &PutOptions::overwrite("text/plain")).await.unwrap().etag.unwrap();
    let stale = b.put_with_etag(&k, b"lost".to_vec(), &PutOptions::if_match(e1.clone(), "text/plain")).await;
    assert_eq!(stale.unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(b.get(&k).await.unwrap(), b"v2", "a failed swap changes nothing");
    assert_eq!(b.head(&k).await.unwrap().unwrap().etag.as_ref(), Some(&e2));
    let swapped = b.put_with_etag(&k, b"v3".to_vec(), &PutOptions::if_match(e2.clone(), "text/plain")).await;
    let e3 = swapped.expect("swap with the current ETag").etag.expect("etag");
    assert_ne!(e3, e2);
    assert_eq!(b.get_with_etag(&k).await.unwrap(), BlobBody { bytes: b"v3".to_vec(), etag: Some(e3.clone()) });
    let again = b.put(&k, b"v4".to_vec(), &PutOptions::if_match(e2, "text/plain")).await;
    assert_eq!(again.unwrap_err().kind(), ErrorKind::Conflict, "an ETag is good for one swap");
    let absent = format!("{}cas-absent.json", prefix());
    let e = b.put(&absent, b"x".to_vec(), &PutOptions::if_match(e3.clone(), "text/plain")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(b.head(&absent).await.unwrap().is_none(), "a swap never creates");
    b.delete(&k).await.unwrap();
    let e = b.put(&k, b"v5".to_vec(), &PutOptions::if_match(e3, "text/plain")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(b.head(&k).await.unwrap().is_none(), "a swap never resurrects");
}

/// 5 writers × 10 compare-and-swap increments of one counter blob end at 50, and the 50
/// successful swaps wrote 1..=50 exactly once each (no lost update).
pub async fn compare_and_swap_counter_race(b: Arc<dyn BlobStore>) {
    const WRITERS: u64 = 5;
    const INCREMENTS: u64 = 10;
    let k = format!("{}counter", prefix());
    b.put(&k, b"0".to_vec(), &PutOptions::create("text/plain")).await.unwrap();
    if !b.capabilities().conditional_put {
        let e = b.put(&k, b"1".to_vec(), &PutOptions::if_match(ETag::new("\"x\""), "text/plain")).await;
        assert_eq!(e.unwrap_err().kind(), ErrorKind::Unsupported);
        return;
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (b, k) = (b.clone(), k.clone());
            tokio::spawn(async move {
                let (mut wrote, mut conflicts) = (Vec::new(), 0u64);
                while (wrote.len() as u64) < INCREMENTS {
                    let body = b.get_with_etag(&k).await.expect("get");
                    let n: u64 = String::from_utf8(body.bytes).unwrap().parse().unwrap();
                    let etag = body.etag.expect("etag");
                    let next = (n + 1).to_string().into_bytes();
                    match b.put(&k, next, &PutOptions::if_match(etag, "text/plain")).await {
                        Ok(_) => wrote.push(n + 1),
                        Err(e) if e.kind() == ErrorKind::Conflict => conflicts += 1,
                        Err(e) => panic!("swap failed: {e}"),
                    }
                }
                (wrote, conflicts)
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in writers {
        let (wrote, _conflicts) = w.await.expect("writer");
        all.extend(wrote);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=WRITERS * INCREMENTS).collect::<Vec<_>>(), "every value written by exactly one swap");
    assert_eq!(b.get(&k).await.unwrap(), (WRITERS * INCREMENTS).to_string().into_bytes());
}

/// Delimiter listings: keys right under the prefix and common prefixes (only of segments
/// holding keys), merged in order, paged with `start_after` (a common prefix skips its
/// whole subtree), for prefixes with and without a trailing `/`.
pub async fn delimiter_listing_pages(b: Arc<dyn BlobStore>) {
    let p = format!("{}tree/", prefix());
    let mut keys = vec!["a.json", "b.json", "b/1", "b/2/deep", "b0", "d", "e/1"]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    keys.extend((0..25).map(|i| format!("c/x/{i:02}")));
    let puts: Vec<_> = keys
        .iter()
        .map(|k| {
            let (b, k) = (b.clone(), format!("{p}{k}"));
            tokio::spawn(async move { b.put(&k, b"x".to_vec(), &PutOptions::create("text/plain")).await.expect("put") })
        })
        .collect();
    for t in puts {
        t.await.expect("put task");
    }
    b.put(&format!("{}tree.json", prefix()), b"x".to_vec(), &PutOptions::create("text/plain")).await.unwrap();
    let at = |names: &[&str]| names.iter().map(|n| format!("{p}{n}")).collect::<Vec<_>>();

    let whole = b.list_with_delimiter(&p, None, 100).await.expect("list");
    assert_eq!(whole.keys, at(&["a.json", "b.json", "b0", "d"]));
    assert_eq!(whole.prefixes, at(&["b/", "c/", "e/"]));
    assert_eq!(whole.next, None);

    // Pages of 2 entries: a.json b.json | b/ b0 | c/ d | e/
    let (mut entries, mut after, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = b.list_with_delimiter(&p, after.as_deref(), 2).await.expect("page");
        pages += 1;
        assert!(page.len() <= 2 && !page.is_empty(), "{page:?}");
        let mut both: Vec<String> = page.keys.iter().chain(&page.prefixes).cloned().collect();
        both.sort();
        entries.extend(both);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(entries, at(&["a.json", "b.json", "b/", "b0", "c/", "d", "e/"]));
    assert_eq!(pages, 4);

    let after_b = b.list_with_delimiter(&p, Some(&format!("{p}b/")), 100).await.unwrap();
    assert_eq!((after_b.keys, after_b.prefixes), (at(&["b0", "d"]), at(&["c/", "e/"])), "after a common prefix");
    let after_key = b.list_with_delimiter(&p, Some(&format!("{p}b.json")), 1).await.unwrap();
    assert_eq!((after_key.keys.len(), after_key.prefixes.clone()), (0, at(&["b/"])));
    assert_eq!(after_key.next, Some(format!("{p}b/")));

    let partial = b.list_with_delimiter(&format!("{p}b"), None, 100).await.unwrap();
    assert_eq!((partial.keys, partial.prefixes), (at(&["b.json", "b0"]), at(&["b/"])), "prefix without '/'");
    let deeper = b.list_with_delimiter(&format!("{p}b/"), None, 100).await.unwrap();
    assert_eq!((deeper.keys, deeper.prefixes), (at(&["b/1"]), at(&["b/2/"])));
    let leaf = b.list_with_delimiter(&format!("{p}c/x/"), Some(&format!("{p}c/x/20")), 3).await.unwrap();
    assert_eq!(leaf.keys, at(&["c/x/21", "c/x/22", "c/x/23"]));
    assert_eq!(leaf.next, Some(format!("{p}c/x/23")));
    assert!(b.list_with_delimiter(&format!("{p}nothing/"), None, 10).await.unwrap().is_empty());
    assert_eq!(b.list_with_delimiter("../", None, 10).await.unwrap_err().kind(), ErrorKind::Validation);
}
