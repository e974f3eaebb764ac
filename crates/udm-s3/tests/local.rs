//! [`LocalBlobs`] beyond the conformance suite: a put is durable when it returns (the file,
//! then its directory entry, then the entries of any new directories, are fsynced in that
//! order), blobs survive reopening, and keys that a directory cannot hold are typed errors.

#![cfg(feature = "fs")]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use udm_core::ErrorKind;
use udm_core::ports::{BlobStore, PutOptions};
use udm_s3::LocalBlobs;

/// A store under a fresh directory, and the log of every path it fsyncs.
fn observed() -> (tempfile::TempDir, LocalBlobs, Arc<Mutex<Vec<PathBuf>>>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let blobs = LocalBlobs::open_with_sync_observer(
        &dir.path().join("blobs"),
        Arc::new(move |p: &Path| {
            sink.lock().unwrap().push(p.to_path_buf());
        }),
    )
    .expect("open");
    (dir, blobs, log)
}

fn take(log: &Mutex<Vec<PathBuf>>) -> Vec<PathBuf> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// Checks `synced` starts with the file published at `key` (synced under a temporary name in
/// the same directory) and then that directory, and returns the rest.
fn file_then_dir(root: &Path, key: &str, synced: &[PathBuf]) -> Vec<PathBuf> {
    let dest = root.join(key);
    let dir = dest.parent().unwrap();
    assert!(synced.len() >= 2, "{synced:?}");
    assert_eq!(synced[0].parent(), Some(dir), "the file is synced first: {synced:?}");
    assert!(!synced[0].exists() || synced[0] == dest, "the synced temporary file was published: {synced:?}");
    assert_eq!(synced[1], dir, "then its directory: {synced:?}");
    synced[2..].to_vec()
}

/// Regression (defect 11): the file and its directory entry are synced before put returns.
#[tokio::test]
async fn put_syncs_file_then_directory() {
    let (_dir, b, log) = observed();
    let root = b.root().to_path_buf();
    take(&log);
    b.put("t/d/c/objects/x/versions/1.r.json", b"{}".to_vec(), &PutOptions::create_json()).await.unwrap();
    // New directories t, d, …, versions: each one's entry is synced in its parent, up to the root.
    let rest = file_then_dir(&root, "t/d/c/objects/x/versions/1.r.json", &take(&log));
    let mut want: Vec<PathBuf> = root.join("t/d/c/objects/x").ancestors().take(6).map(Path::to_path_buf).collect();
    assert_eq!(want.last(), Some(&root));
    assert_eq!(rest, std::mem::take(&mut want));
    // A second version in the same directory: only the file and that directory.
    b.put("t/d/c/objects/x/versions/2.r.json", b"{}".to_vec(), &PutOptions::create_json()).await.unwrap();
    assert!(file_then_dir(&root, "t/d/c/objects/x/versions/2.r.json", &take(&log)).is_empty());
    // Overwrites are durable the same way.
    b.put("t/d/c/objects/x/versions/2.r.json", b"[]".to_vec(), &PutOptions::overwrite("application/json"))
        .await
        .unwrap();
    assert!(file_then_dir(&root, "t/d/c/objects/x/versions/2.r.json", &take(&log)).is_empty());
}

/// A create-only put that finds the key makes the existing entry durable before reporting it,
/// and leaves no temporary file behind.
#[tokio::test]
async fn create_only_conflict_syncs_and_cleans_up() {
    let (_dir, b, log) = observed();
    b.put("t/k", b"one".to_vec(), &PutOptions::create_json()).await.unwrap();
    take(&log);
    let e = b.put("t/k", b"two".to_vec(), &PutOptions::create_json()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(take(&log).contains(&b.root().join("t")));
    let names: Vec<_> = std::fs::read_dir(b.root().join("t")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["k"]);
    assert_eq!(b.get("t/k").await.unwrap(), b"one");
}

#[tokio::test]
async fn blobs_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBlobs::open(dir.path()).unwrap();
    b.put("t/a/b", b"x".to_vec(), &PutOptions::create_json()).await.unwrap();
    drop(b);
    let b = LocalBlobs::open(dir.path()).unwrap();
    assert_eq!(b.get("t/a/b").await.unwrap(), b"x");
    assert_eq!(b.list("t/", None, 10).await.unwrap().keys, ["t/a/b"]);
}

/// A directory cannot hold both `a/b` and `a/b/c`: a typed error, nothing changed.
#[tokio::test]
async fn key_and_keys_under_it() {
    let (_dir, b, _log) = observed();
    b.put("t/a", b"x".to_vec(), &PutOptions::create_json()).await.unwrap();
    let e = b.put("t/a/b", b"y".to_vec(), &PutOptions::create_json()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(b.get("t/a/b").await.unwrap_err().kind(), ErrorKind::NotFound);
    b.put("t/d/e", b"x".to_vec(), &PutOptions::create_json()).await.unwrap();
    for mode in [PutOptions::create_json(), PutOptions::overwrite("text/plain")] {
        let e = b.put("t/d", b"y".to_vec(), &mode).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    }
    assert_eq!(b.get("t/d").await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(b.head("t/d").await.unwrap().is_none());
    b.delete("t/d").await.expect("no blob there: deleting is a no-op");
    assert_eq!(b.list("t/", None, 10).await.unwrap().keys, ["t/a", "t/d/e"]);
}

/// Keys are validated before they become paths.
#[tokio::test]
async fn keys_never_escape_the_root() {
    let (dir, b, _log) = observed();
    for bad in ["../escape", "t/../../escape", "/etc/passwd", "t//x", "t/./x"] {
        let e = b.put(bad, b"x".to_vec(), &PutOptions::create_json()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Validation, "{bad}: {e}");
    }
    assert!(!dir.path().join("escape").exists());
}

/// Compare-and-swap is atomic across `LocalBlobs` instances of one process, whatever path
/// spelling opened the directory: 2 stores × 3 writers × 10 increments end at 60.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_swap_spans_instances_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = LocalBlobs::open(dir.path()).unwrap();
    let other_spelling = dir.path().join("sub").join("..");
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    let b = LocalBlobs::open(&other_spelling).unwrap();
    a.put("t/n", b"0".to_vec(), &PutOptions::create("text/plain")).await.unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut done = 0;
                while done < 10 {
                    let body = s.get_with_etag("t/n").await.unwrap();
                    let n: u64 = String::from_utf8(body.bytes).unwrap().parse().unwrap();
                    let opts = PutOptions::if_match(body.etag.unwrap(), "text/plain");
                    match s.put("t/n", (n + 1).to_string().into_bytes(), &opts).await {
                        Ok(_) => done += 1,
                        Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(a.get("t/n").await.unwrap(), b"60");
}
