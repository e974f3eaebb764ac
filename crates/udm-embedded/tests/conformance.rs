//! The conformance suite on the embedded (redb) store, one fresh file per scenario.

use std::sync::Arc;

use udm_core::ports::{CounterStore, QueueStore};
use udm_embedded::EmbeddedStore;
use udm_testkit::conformance::MetaAdapters;

/// A store in a fresh temporary directory (kept alive for the process: scenarios are short).
fn store() -> Arc<EmbeddedStore> {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    Arc::new(EmbeddedStore::open(&dir.join("meta.redb")).expect("open embedded store"))
}

mod embedded_meta {
    use super::*;
    udm_testkit::conformance_tests!(meta, async { MetaAdapters::from_one(store()) });
}

mod embedded_queue {
    use super::*;
    udm_testkit::conformance_tests!(queue, async { store() as Arc<dyn QueueStore> });
}

mod embedded_counter {
    use super::*;
    udm_testkit::conformance_tests!(counter, async { store() as Arc<dyn CounterStore> });
}

/// Data survives closing and reopening the file.
#[tokio::test]
async fn reopen_keeps_everything() {
    use serde_json::json;
    use udm_core::ports::MetaStore;
    use udm_testkit::fixtures::{commit, key, ts, unique_ctx};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let ctx = unique_ctx("reopen");
    let k = key(&ctx, "x");
    {
        let s = EmbeddedStore::open(&path).unwrap();
        s.commit(commit(&k, None, udm_core::Op::Create, ts(1), "r", &json!({"a": 1}))).await.unwrap();
    }
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.head(&k).await.unwrap().unwrap().ov.get(), 1);
    assert_eq!(s.collection_cv(&ctx).await.unwrap().0, 1);
}

/// A directory that cannot be created is a typed config error, not a panic.
#[test]
fn unopenable_path_is_a_config_error() {
    let e = EmbeddedStore::open(std::path::Path::new("/proc/udm-cannot-exist/meta.redb")).unwrap_err();
    assert_eq!(e.kind(), udm_core::ErrorKind::Config);
}

mod embedded_blobs {
    use super::*;
    use udm_core::ports::BlobStore;
    udm_testkit::conformance_tests!(blob, async {
        Arc::new(store().blobs("json").expect("bucket")) as Arc<dyn BlobStore>
    });
}
