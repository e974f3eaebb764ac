//! The embedded store with its blobs in the metadata file (`blobs = { kind = "embedded" }`):
//! a snapshot put leaves its fsync to the version's metadata commit that follows it in the
//! same file, so a write costs one sync, not two. Counted through
//! `EmbeddedStore::synced_commits` on the same workload with blob buckets that share the
//! metadata store's commits and with buckets that sync every put.

use std::sync::Arc;

use serde_json::json;
use udm_core::RouteContext;
use udm_core::config::Config;
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
