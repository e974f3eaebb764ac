//! `Udm::close`: shut down, wait for the background tasks to let go of the stores, close
//! them — so the embedded default's files can be opened again at once, compacted — and say
//! so only when it is true (handles the caller still holds keep the stores open).

use serde_json::json;
use udm_core::{ErrorKind, RouteContext};
use udm_facade::{ReadOpts, Udm, WriteOpts};

fn ctx() -> RouteContext {
    RouteContext::new("t", "d", "c").unwrap()
}

/// 100 documents × 3 writes of about 2 KiB each (enough to make the files grow and churn).
async fn load(udm: &Udm) {
    let c = udm.with(ctx());
    for v in 0..3 {
        for i in 0..100 {
            let data = json!({"i": i, "v": v, "pad": "x".repeat(2_000 + i)});
            if v == 0 {
                c.create(data, WriteOpts::id(&format!("d{i:03}"))).await.unwrap();
            } else {
                c.update(&format!("d{i:03}"), data, None, WriteOpts::default()).await.unwrap();
            }
        }
    }
}

fn files(dir: &std::path::Path) -> u64 {
    ["udm.redb", "udm-blobs.redb"].iter().map(|f| std::fs::metadata(dir.join(f)).unwrap().len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_frees_the_embedded_files_at_once_and_leaves_them_no_larger() {
    let dir = tempfile::tempdir().unwrap();
    let udm = Udm::embedded(dir.path()).await.unwrap();
    load(&udm).await;
    let open = files(dir.path());
    let report = udm.close().await.unwrap();
    assert!(report.closed, "nothing else holds the stores");
    let closed = files(dir.path());
    assert!(closed <= open, "closing compacts: {closed} bytes, {open} while open");
    // Opened again at once: a store still open in this process would refuse the file.
    let again = Udm::embedded(dir.path()).await.expect("the files are free when close returns");
    let c = again.with(ctx());
    for i in [0, 57, 99] {
        let got = c.get_latest(&format!("d{i:03}"), ReadOpts::default()).await.unwrap();
        assert_eq!((got.ov.get(), got.data["v"].as_i64()), (3, Some(2)));
    }
    drop(c);
    assert!(again.close().await.unwrap().closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_the_caller_keeps_keeps_the_stores_open_and_close_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let udm = Udm::embedded(dir.path()).await.unwrap();
    load(&udm).await;
    let kept = udm.with(ctx());
    let report = udm.close_within(std::time::Duration::from_millis(300)).await.unwrap();
    assert!(!report.closed, "the collection handle still holds the stores");
    let err = kept.create(json!({"late": true}), WriteOpts::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "shut down: no more writes");
    assert!(Udm::embedded(dir.path()).await.is_err(), "still open in this process");
    drop(kept);
    // The last handle went: the files are closed once the background tasks have ended too.
    let mut again = None;
    for _ in 0..500 {
        if let Ok(u) = Udm::embedded(dir.path()).await {
            again = Some(u);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let again = again.expect("closed after the last handle");
    assert_eq!(again.with(ctx()).get_latest("d042", ReadOpts::default()).await.unwrap().ov.get(), 3);
}
