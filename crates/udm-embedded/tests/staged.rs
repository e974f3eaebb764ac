//! Blobs staged in the metadata file ([`EmbeddedStore::blobs_staged_in`]): a create-only put
//! made before a metadata commit costs the blob file no commit and no sync, reads back at
//! once, is carried into the metadata file by its next commit, and moves into the blob file
//! — with its ETag — before any other put lands there.

use std::sync::Arc;

use udm_core::ErrorKind;
use udm_core::ports::{BlobStore, PutOptions};
use udm_embedded::{EmbeddedBlobs, EmbeddedStore, STAGE_LIMIT};

struct Files {
    meta: EmbeddedStore,
    file: EmbeddedStore,
    /// The staging bucket.
    json: EmbeddedBlobs,
    /// The same bucket of the blob file, read without the staged rows.
    plain: EmbeddedBlobs,
    _dir: tempfile::TempDir,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let meta = EmbeddedStore::open(&dir.path().join("udm.redb")).unwrap();
    let file = EmbeddedStore::open(&dir.path().join("udm-blobs.redb")).unwrap();
    let json = file.blobs_staged_in("json", &meta).unwrap();
    let plain = file.blobs("json").unwrap();
    Files { meta, file, json, plain, _dir: dir }
}

/// A version's commit in the metadata file: it carries the rows staged so far.
async fn commit_version(meta: &EmbeddedStore, id: &str) {
    let ctx = udm_core::RouteContext::new("t", "d", "c").unwrap();
    let k = udm_testkit::fixtures::key(&ctx, id);
    let v = serde_json::json!({"id": id});
    let c = udm_testkit::fixtures::commit(&k, None, udm_core::Op::Create, udm_testkit::fixtures::ts(1), id, &v);
    udm_core::ports::MetaStore::commit(meta, c).await.unwrap();
}

fn snapshot() -> PutOptions {
    PutOptions::create_json().before_commit()
}

#[tokio::test]
async fn a_staged_put_syncs_neither_file_and_reads_back_at_once() {
    let f = files();
    let (meta_syncs, file_syncs) = (f.meta.synced_commits(), f.file.synced_commits());
    let put = f.json.put_with_etag("t/d/c/a.json", b"{\"a\":1}".to_vec(), &snapshot()).await.unwrap();
    assert_eq!(f.meta.synced_commits(), meta_syncs, "left to the metadata commit that follows");
    assert_eq!(f.file.synced_commits(), file_syncs, "the blob file is not touched");
    assert_eq!(f.json.staged().await.unwrap(), 1);
    assert_eq!(f.json.get("t/d/c/a.json").await.unwrap(), b"{\"a\":1}");
    let head = f.json.head("t/d/c/a.json").await.unwrap().expect("head of a staged row");
    assert_eq!((head.size, head.etag.as_ref()), (7, put.etag.as_ref()));
    assert_eq!(f.plain.get("t/d/c/a.json").await.unwrap_err().kind(), ErrorKind::NotFound, "not in the blob file yet");
}

#[tokio::test]
async fn any_other_put_moves_the_staged_rows_first_keeping_their_etags() {
    let f = files();
    let mut etags = Vec::new();
    for i in 0..3 {
        let put = f.json.put_with_etag(&format!("t/d/c/s{i}.json"), vec![b'x'; 200 + i], &snapshot()).await.unwrap();
        etags.push(put.etag.unwrap());
    }
    commit_version(&f.meta, "o").await;
    // Staged after the commit: its version is not committed, so no log segment can name it,
    // and the flusher's put leaves it where it is.
    f.json.put("t/d/c/later.json", b"{}".to_vec(), &snapshot()).await.unwrap();
    let file_syncs = f.file.synced_commits();
    f.json.put("t/d/c/log/0.json", b"[]".to_vec(), &PutOptions::overwrite("application/json")).await.unwrap();
    assert!(f.file.synced_commits() > file_syncs);
    assert_eq!(f.json.staged().await.unwrap(), 1, "only the row staged after the commit waits");
    assert_eq!(f.json.get("t/d/c/later.json").await.unwrap(), b"{}");
    for (i, etag) in etags.iter().enumerate() {
        let key = format!("t/d/c/s{i}.json");
        assert_eq!(f.plain.get(&key).await.unwrap(), vec![b'x'; 200 + i], "moved into the blob file");
        assert_eq!(f.plain.head(&key).await.unwrap().unwrap().etag.as_ref(), Some(etag), "same ETag after the move");
    }
    // A compare-and-swap on the ETag a staged create handed out still works after the move.
    let etag = etags[0].clone();
    f.json.put("t/d/c/s0.json", b"{}".to_vec(), &PutOptions::if_match(etag.clone(), "application/json")).await.unwrap();
    let stale = f.json.put("t/d/c/s0.json", b"{}".to_vec(), &PutOptions::if_match(etag, "application/json")).await;
    assert_eq!(stale.unwrap_err().kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn create_only_is_exclusive_across_both_files() {
    let f = files();
    f.json.put("t/d/c/k.json", b"1".to_vec(), &snapshot()).await.unwrap();
    let again = f.json.put("t/d/c/k.json", b"2".to_vec(), &snapshot()).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "staged already");
    let direct = f.json.put("t/d/c/k.json", b"3".to_vec(), &PutOptions::create_json()).await.unwrap_err();
    assert_eq!(direct.kind(), ErrorKind::AlreadyExists, "a direct create sees the staged row");
    assert_eq!(f.json.drain().await.unwrap(), 0, "the direct put drained it");
    let moved = f.json.put("t/d/c/k.json", b"4".to_vec(), &snapshot()).await.unwrap_err();
    assert_eq!(moved.kind(), ErrorKind::AlreadyExists, "in the blob file now");
    assert_eq!(f.json.get("t/d/c/k.json").await.unwrap(), b"1");
    assert_eq!(f.json.staged().await.unwrap(), 0, "a refused put stages nothing");
}

#[tokio::test]
async fn deletes_and_listings_see_staged_rows() {
    let f = files();
    for k in ["t/d/c/a.json", "t/d/c/b.json", "t/d/c/c.json"] {
        f.json.put(k, b"{}".to_vec(), &snapshot()).await.unwrap();
    }
    f.json.delete("t/d/c/b.json").await.unwrap();
    assert_eq!(f.json.get("t/d/c/b.json").await.unwrap_err().kind(), ErrorKind::NotFound);
    let page = f.json.list("t/d/c/", None, 10).await.unwrap();
    assert_eq!(page.keys, vec!["t/d/c/a.json".to_owned(), "t/d/c/c.json".to_owned()]);
    assert_eq!(f.json.staged().await.unwrap(), 0, "a listing drains first");
    f.json.delete("t/d/c/a.json").await.unwrap();
    assert_eq!(f.plain.head("t/d/c/a.json").await.unwrap(), None, "deleted from the blob file too");
}

#[tokio::test]
async fn rows_drain_on_their_own_past_the_limit() {
    let f = files();
    for i in 0..STAGE_LIMIT + 1 {
        f.json.put(&format!("t/d/c/{i:05}.json"), vec![b'y'; 64], &snapshot()).await.unwrap();
    }
    assert!(f.json.staged().await.unwrap() < STAGE_LIMIT, "drained without any other put");
    assert_eq!(f.plain.get("t/d/c/00000.json").await.unwrap(), vec![b'y'; 64]);
}

#[tokio::test]
async fn buckets_of_one_blob_file_stage_in_one_metadata_file() {
    let f = files();
    let other_meta = EmbeddedStore::open(&f._dir.path().join("other.redb")).unwrap();
    let e = f.file.blobs_staged_in("content", &other_meta).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = f.meta.blobs_staged_in("json", &f.meta).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "a file cannot stage in itself");
    // The content bucket shares the json bucket's stage: a json put drains content rows.
    let content = f.file.blobs_staged_in("content", &f.meta).unwrap();
    content
        .put("t/d/c/blob", vec![1, 2, 3], &PutOptions::create("application/octet-stream").before_commit())
        .await
        .unwrap();
    commit_version(&f.meta, "o").await;
    f.json.put("t/d/c/log/1.json", b"[]".to_vec(), &PutOptions::overwrite("application/json")).await.unwrap();
    assert_eq!(f.file.blobs("content").unwrap().get("t/d/c/blob").await.unwrap(), vec![1, 2, 3]);
}

/// Stagers, their versions' commits (which carry the rows), other puts and reads at once:
/// every staged row reads back throughout — pending, carried or moved — ends in the blob file
/// exactly once, and nothing stays staged after the last drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stagers_and_drains_lose_nothing() {
    let f = files();
    let json = Arc::new(f.json.clone());
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (json, meta) = (json.clone(), f.meta.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let key = format!("t/d/c/w{w}-{i}.json");
                json.put(&key, format!("{w}-{i}").into_bytes(), &snapshot()).await.unwrap();
                assert_eq!(json.get(&key).await.unwrap(), format!("{w}-{i}").into_bytes());
                commit_version(&meta, &format!("w{w}-{i}")).await;
                assert_eq!(json.get(&key).await.unwrap(), format!("{w}-{i}").into_bytes());
            }
        }));
    }
    let flusher = {
        let json = json.clone();
        tokio::spawn(async move {
            for n in 0..40 {
                json.put(&format!("t/d/c/log/{n}.json"), b"[]".to_vec(), &PutOptions::overwrite("application/json"))
                    .await
                    .unwrap();
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    flusher.await.unwrap();
    json.drain().await.unwrap();
    assert_eq!(json.staged().await.unwrap(), 0);
    let page = f.plain.list("t/d/c/w", None, 1_000).await.unwrap();
    assert_eq!(page.keys.len(), 200, "every staged row, once, in the blob file");
}

/// Staged and plain create-only puts of the same keys at once: exactly one create of each
/// key wins, across both files, and its bytes are what the key reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staged_and_plain_creates_of_one_key_have_exactly_one_winner() {
    let f = files();
    let json = Arc::new(f.json.clone());
    for round in 0..20 {
        let key = format!("t/d/c/race-{round}.json");
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let (json, key) = (json.clone(), key.clone());
                tokio::spawn(async move {
                    let options = if w % 2 == 0 { snapshot() } else { PutOptions::create_json() };
                    let r = json.put(&key, format!("{w}").into_bytes(), &options).await;
                    (w, r)
                })
            })
            .collect();
        let mut won = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (w, Ok(_)) => won.push(w),
                (_, Err(e)) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: one winner, got {won:?}");
        assert_eq!(json.get(&key).await.unwrap(), format!("{}", won[0]).into_bytes());
    }
    json.drain().await.unwrap();
    assert_eq!(f.plain.list("t/d/c/race-", None, 100).await.unwrap().keys.len(), 20);
}

/// A plain create-only put whose caller stops waiting (a deadline) still holds its key until
/// its commit is done: a staged put of the key that follows either loses to it or finds it
/// never committed — never both succeed with the plain bytes read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_put_keeps_its_key_until_its_commit_is_done() {
    let f = files();
    let (mut lost, mut won) = (0, 0);
    for round in 0..400u64 {
        let key = format!("t/d/c/abandoned-{round}.json");
        let create = PutOptions::create_json();
        let plain = f.json.put(&key, b"plain".to_vec(), &create);
        // Abandoned somewhere between its drain and its commit.
        let _ = tokio::time::timeout(std::time::Duration::from_micros(25 * (round % 40)), plain).await;
        let staged = f.json.put(&key, b"staged".to_vec(), &snapshot()).await;
        f.json.drain().await.unwrap();
        let got = f.json.get(&key).await.unwrap();
        match staged {
            Ok(_) => {
                assert_eq!(got, b"staged", "round {round}: the staged create won, so the plain one never committed");
                won += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
                assert_eq!(got, b"plain");
                lost += 1;
            }
        }
    }
    assert_eq!(won + lost, 400);
}

/// A drain whose caller stops waiting (a deadline) still holds the drain lock until its copy
/// into the blob file is done: a delete that follows never sees its row come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_drain_never_brings_a_deleted_row_back() {
    let f = files();
    for round in 0..300u64 {
        let key = format!("t/d/c/gone-{round}.json");
        f.json.put(&key, b"staged".to_vec(), &snapshot()).await.unwrap();
        commit_version(&f.meta, &format!("gone-{round}")).await;
        let log = PutOptions::overwrite("application/json");
        let drain = f.json.put("t/d/c/log/x.json", b"[]".to_vec(), &log);
        // Abandoned somewhere in its drain.
        let _ = tokio::time::timeout(std::time::Duration::from_micros(20 * (round % 30)), drain).await;
        f.json.delete(&key).await.unwrap();
        f.json.drain().await.unwrap();
        let got = f.json.get(&key).await;
        assert_eq!(
            got.map(|_| ()).unwrap_err().kind(),
            ErrorKind::NotFound,
            "round {round}: the deleted row came back"
        );
    }
}
