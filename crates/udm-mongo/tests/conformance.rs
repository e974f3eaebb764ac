//! The conformance suite on MongoDB, against the real test server (SecantusDB, started by
//! `cargo xtask services up`). Without a server these tests fail, naming the command.

use std::sync::Arc;

use udm_core::ports::{CounterStore, QueueStore};
use udm_mongo::{MongoConfig, MongoStore};
use udm_testkit::conformance::MetaAdapters;
use udm_testkit::services::mongo_uri;

async fn store() -> Arc<MongoStore> {
    let cfg = MongoConfig::new(&mongo_uri(), "udm_conformance");
    Arc::new(MongoStore::connect(&cfg).await.unwrap_or_else(|e| panic!("connecting to {}: {e}", cfg.uri)))
}

mod mongo_meta {
    use super::*;
    udm_testkit::conformance_tests!(meta, async { MetaAdapters::from_one(store().await) });
}

mod mongo_queue {
    use super::*;
    udm_testkit::conformance_tests!(queue, async { store().await as Arc<dyn QueueStore> });
}

mod mongo_counter {
    use super::*;
    udm_testkit::conformance_tests!(counter, async { store().await as Arc<dyn CounterStore> });
}

/// Health reports a latency; bad URIs and database names are typed config errors.
#[tokio::test]
async fn health_and_bad_settings() {
    let s = store().await;
    assert!(s.ping_latency().await.unwrap() < std::time::Duration::from_secs(5));
    for (uri, db) in [("http://127.0.0.1", "udm"), ("mongodb://127.0.0.1:1", "bad.name")] {
        let e = MongoStore::connect(&MongoConfig::new(uri, db)).await.unwrap_err();
        assert_eq!(e.kind(), udm_core::ErrorKind::Config, "{uri} {db}: {e}");
    }
}

/// An unreachable server is a retryable `Unavailable`, quickly.
#[tokio::test]
async fn unreachable_server_is_retryable() {
    let mut cfg = MongoConfig::new("mongodb://127.0.0.1:9/?directConnection=true", "udm");
    cfg.server_selection_timeout = Some(std::time::Duration::from_millis(300));
    let s = MongoStore::connect(&cfg).await;
    let e = match s {
        Err(e) => e,
        Ok(s) => s.ping_latency().await.unwrap_err(),
    };
    assert_eq!(e.kind(), udm_core::ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
}

/// Each indexed prop of a collection map gets the index its sorted and equality lists use:
/// `{ctx, deleted, sk.<prop>, oid}` (a dotted path is one sort-key field, `.` written `~d`).
#[tokio::test]
async fn collection_map_indexes() {
    use udm_core::metamap::{IndexedProp, MetadataMap};
    let s = store().await;
    let map = MetadataMap {
        indexed_props: vec![
            IndexedProp { path: "email".into(), required: true },
            IndexedProp { path: "address.city".into(), required: false },
        ],
        base64_props: vec![],
    };
    s.ensure_collection_indexes(&map).await.unwrap();
    s.ensure_collection_indexes(&map).await.expect("idempotent");
    let names = s.head_index_names().await.unwrap();
    for want in ["ctx_1_deleted_1_sk.email_1_oid_1", "ctx_1_deleted_1_sk.address~dcity_1_oid_1"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}
