//! The embedded store with its blobs in the metadata file (`blobs = { kind = "embedded" }`):
//! a snapshot put leaves its fsync to the version's metadata commit that follows it in the
//! same file, so a write costs one sync, not two. Counted through
//! `EmbeddedStore::synced_commits` on the same workload with blob buckets that share the
//! metadata store's commits and with buckets that sync every put.

use std::sync::Arc;

use serde_json::json;
use udm_core::RouteContext;
use udm_core::config::Config;
use udm_core::ports::BlobStore;
use udm_embedded::EmbeddedStore;
use udm_facade::{Pair, ReadOpts, Udm, WriteOpts};

const WRITES: u64 = 24;

const CONFIG: &str = r#"
[[backends]]
name = "local"
meta = { kind = "memory" }
blobs = { kind = "memory" }
"#;

/// Syncs taken by `WRITES` sequential creates (each read back afterwards).
async fn syncs_for_creates(shared: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("udm.redb")).unwrap();
    let bucket = |b: &str| if shared { store.blobs_sharing_commits(b) } else { store.blobs(b) }.unwrap();
    let pair = Pair {
        name: "local".into(),
        meta: Arc::new(store.clone()),
        counters: Arc::new(store.clone()),
        json: Arc::new(bucket("json")),
        content: Arc::new(bucket("content")),
        describe: "embedded".into(),
    };
    let udm = Udm::builder().config(Config::from_toml(CONFIG).unwrap()).pair(pair).build().unwrap();
    let c = udm.with(RouteContext::new("t", "d", "c").unwrap());
    let before = store.synced_commits();
    for i in 0..WRITES {
        c.create(json!({"n": i, "pad": "x".repeat(300)}), WriteOpts::id(&format!("o-{i}"))).await.unwrap();
    }
    let syncs = store.synced_commits() - before;
    for i in 0..WRITES {
        let got = c.get_latest(&format!("o-{i}"), ReadOpts::default()).await.unwrap();
        assert_eq!(got.data["n"], json!(i), "the snapshot behind each commit reads back");
    }
    syncs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_takes_one_sync_when_its_blobs_share_the_metadata_file() {
    let shared = syncs_for_creates(true).await;
    let separate = syncs_for_creates(false).await;
    // Each write: one metadata commit; the shadow flusher adds a synced watermark commit now
    // and then (its segment puts defer too), so fewer than two syncs per write.
    assert!((WRITES..2 * WRITES).contains(&shared), "{shared} syncs for {WRITES} writes sharing the file");
    // Buckets that sync every put pay for the snapshot put too: at least two per write.
    assert!(separate >= 2 * WRITES, "{separate} syncs for {WRITES} writes syncing every put");
}

/// The default's layout (`Udm::embedded`): a blob file of its own whose snapshot puts stage
/// in the metadata file. Each write syncs the metadata file once and the blob file not at
/// all (syncing each snapshot put there instead costs one more per write); the shadow
/// flusher's puts then move the staged snapshots, so the blob file ends up holding every
/// one, as a complete copy should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_takes_one_sync_when_its_blobs_stage_in_the_metadata_file() {
    for staged in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let meta = EmbeddedStore::open(&dir.path().join("udm.redb")).unwrap();
        let file = EmbeddedStore::open(&dir.path().join("udm-blobs.redb")).unwrap();
        let bucket = |b: &str| if staged { file.blobs_staged_in(b, &meta) } else { file.blobs(b) }.unwrap();
        let json = bucket("json");
        let pair = Pair {
            name: "local".into(),
            meta: Arc::new(meta.clone()),
            counters: Arc::new(meta.clone()),
            json: Arc::new(json.clone()),
            content: Arc::new(bucket("content")),
            describe: "embedded".into(),
        };
        let udm = Udm::builder().config(Config::from_toml(CONFIG).unwrap()).pair(pair).build().unwrap();
        let c = udm.with(RouteContext::new("t", "d", "c").unwrap());
        for i in 0..WRITES {
            let id = format!("o-{i}");
            c.create(json!({"n": i, "pad": "x".repeat(300)}), WriteOpts::id(&id)).await.unwrap();
            // Let the flush this write notified run, so only the next write is counted.
            udm.admin().flush_shadow().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            let before = (meta.synced_commits(), file.synced_commits());
            c.update(&id, json!({"n": i, "v": 2}), None, WriteOpts::default()).await.unwrap();
            let after = (meta.synced_commits(), file.synced_commits());
            let want = if staged { (1, 0) } else { (1, 1) };
            assert_eq!((after.0 - before.0, after.1 - before.1), want, "syncs (metadata, blob file), staged: {staged}");
        }
        udm.admin().flush_shadow().await.unwrap();
        let plain = file.blobs("json").unwrap();
        for i in 0..WRITES {
            let id = format!("o-{i}");
            assert_eq!(c.get_latest(&id, ReadOpts::default()).await.unwrap().data["v"], json!(2));
            for v in c.history(&id, udm_core::query::HistoryQuery::default()).await.unwrap().items {
                let key = &v.snapshot.key;
                assert!(plain.head(key).await.unwrap().is_some(), "{key} is in the blob file after the flush");
            }
        }
        assert_eq!(json.staged().await.unwrap(), 0);
    }
}
