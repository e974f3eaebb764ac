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

/// The blob suite on a bucket of a blob file that stages in a metadata file
/// ([`EmbeddedStore::blobs_staged_in`]), every create-only put marked as made before a
/// metadata commit — so the suite's creates are staged and its other puts, listings and
/// deletes run against staged rows.
mod embedded_staged_blobs {
    use async_trait::async_trait;
    use udm_core::Result;
    use udm_core::ports::{BlobCapabilities, BlobMeta, BlobPage, BlobStore, PutMode, PutOptions, PutResult};
    use udm_embedded::EmbeddedBlobs;

    use super::*;

    /// Marks every create-only put `before_commit`, as the facade marks snapshot puts.
    #[derive(Debug)]
    struct BeforeCommit(EmbeddedBlobs);

    #[async_trait]
    impl BlobStore for BeforeCommit {
        async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
            let options = match options.mode {
                PutMode::Create => options.clone().before_commit(),
                _ => options.clone(),
            };
            self.0.put_with_etag(key, bytes, &options).await
        }
        async fn get(&self, key: &str) -> Result<Vec<u8>> {
            self.0.get(key).await
        }
        async fn get_with_etag(&self, key: &str) -> Result<udm_core::ports::BlobBody> {
            self.0.get_with_etag(key).await
        }
        async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
            self.0.head(key).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.0.delete(key).await
        }
        async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
            self.0.list(prefix, after, limit).await
        }
        async fn health(&self) -> Result<()> {
            self.0.health().await
        }
        fn capabilities(&self) -> BlobCapabilities {
            self.0.capabilities()
        }
    }

    fn staged() -> Arc<dyn BlobStore> {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let meta = EmbeddedStore::open(&dir.join("udm.redb")).expect("metadata file");
        let file = EmbeddedStore::open(&dir.join("udm-blobs.redb")).expect("blob file");
        Arc::new(BeforeCommit(file.blobs_staged_in("json", &meta).expect("bucket")))
    }

    udm_testkit::conformance_tests!(blob, async { staged() });
}
