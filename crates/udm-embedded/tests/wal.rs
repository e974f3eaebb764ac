//! The write-ahead log across a crash: a child process stages snapshots and commits versions
//! (each acknowledged, then noted in a file) and aborts without closing its stores. Reopened,
//! the metadata file applies its log again, and every acknowledged version and snapshot is
//! there.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use udm_core::Op;
use udm_core::ports::{BlobStore, MetaStore, PutOptions};
use udm_embedded::EmbeddedStore;
use udm_testkit::fixtures::{commit, key, ts};

/// Set in the child: the directory to write in.
const CHILD: &str = "UDM_WAL_TEST_CHILD_DIR";
const VERSIONS: usize = 40;

fn ctx() -> udm_core::RouteContext {
    udm_core::RouteContext::new("t", "d", "c").unwrap()
}

/// The child: writes, notes each acknowledgement, aborts.
async fn child(dir: &Path) -> ! {
    let meta = EmbeddedStore::open(&dir.join("udm.redb")).unwrap();
    let file = EmbeddedStore::open(&dir.join("udm-blobs.redb")).unwrap();
    let json = file.blobs_staged_in("json", &meta).unwrap();
    let mut acks = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("acks")).unwrap();
    for i in 0..VERSIONS {
        let snapshot = format!("t/d/c/o{i}/1.json");
        json.put(&snapshot, format!("{{\"n\":{i}}}").into_bytes(), &PutOptions::create_json().before_commit())
            .await
            .unwrap();
        let k = key(&ctx(), &format!("o{i}"));
        meta.commit(commit(&k, None, Op::Create, ts(1 + i as i64), &format!("r{i}"), &json!({"n": i}))).await.unwrap();
        writeln!(acks, "{i}").unwrap();
    }
    std::process::abort()
}

#[tokio::test]
async fn acknowledged_commits_survive_a_process_abort() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(Path::new(&dir)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "acknowledged_commits_survive_a_process_abort", "--nocapture"])
        .env(CHILD, dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let acked = std::fs::read_to_string(dir.path().join("acks")).unwrap().lines().count();
    assert_eq!(acked, VERSIONS, "the child was acknowledged every version before it aborted");

    let meta = EmbeddedStore::open(&dir.path().join("udm.redb")).unwrap();
    assert!(meta.replayed() > 0, "the abort kept logged commits out of the file; the log put them back");
    let file = EmbeddedStore::open(&dir.path().join("udm-blobs.redb")).unwrap();
    let json = file.blobs_staged_in("json", &meta).unwrap();
    for i in 0..acked {
        let k = key(&ctx(), &format!("o{i}"));
        let head = meta.head(&k).await.unwrap().unwrap_or_else(|| panic!("acknowledged version of o{i} lost"));
        assert_eq!(head.ov.get(), 1);
        let snapshot = json.get(&format!("t/d/c/o{i}/1.json")).await.unwrap();
        assert_eq!(snapshot, format!("{{\"n\":{i}}}").into_bytes(), "staged snapshot of o{i}");
    }
    assert_eq!(meta.collection_cv(&ctx()).await.unwrap().0, VERSIONS as u64, "each commit applied once");
    // Closed cleanly, the log is empty and nothing is applied again.
    drop((json, file, meta));
    assert_eq!(std::fs::metadata(dir.path().join("udm.redb.wal")).unwrap().len(), 0);
    let meta = EmbeddedStore::open(&dir.path().join("udm.redb")).unwrap();
    assert_eq!(meta.replayed(), 0);
    assert_eq!(meta.collection_cv(&ctx()).await.unwrap().0, VERSIONS as u64);
}

/// A log left by a store file that was then deleted does not apply to the new file.
#[tokio::test]
async fn a_log_beside_a_new_store_file_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("udm.redb");
    {
        let meta = EmbeddedStore::open(&path).unwrap();
        for i in 0..5 {
            let k = key(&ctx(), &format!("o{i}"));
            meta.commit(commit(&k, None, Op::Create, ts(1), &format!("r{i}"), &json!({"n": i}))).await.unwrap();
        }
        // As if the process died: keep the log, drop the store without its closing checkpoint.
        std::fs::copy(dir.path().join("udm.redb.wal"), dir.path().join("kept.wal")).unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(dir.path().join("kept.wal"), dir.path().join("udm.redb.wal")).unwrap();
    assert!(std::fs::metadata(dir.path().join("udm.redb.wal")).unwrap().len() > 0);
    let meta = EmbeddedStore::open(&path).unwrap();
    assert_eq!(meta.replayed(), 0);
    assert_eq!(meta.collection_cv(&ctx()).await.unwrap().0, 0, "nothing of the deleted file applied");
    assert_eq!(std::fs::metadata(dir.path().join("udm.redb.wal")).unwrap().len(), 0, "its log emptied");
}
