//! Backend kinds provided by other crates plug in through `Backends`, with no change to
//! udm-core or the facade: the config carries their table as given, the registered factory
//! builds the ports.

use std::sync::Arc;

use serde_json::json;
use udm_core::config::Config;
use udm_core::ports::{BlobStore, CounterStore, MetaStore};
use udm_core::{ErrorKind, RouteContext};
use udm_facade::{Backends, ReadOpts, Udm, WriteOpts};
use udm_memory::{MemoryBlobs, MemoryMeta};

const CONFIG: &str = r#"
[[backends]]
name = "a"
meta = { kind = "acme-kv", endpoint = "kv://secret-token@host" }
blobs = { kind = "acme-blobs", bucket = "b" }
"#;

#[tokio::test]
async fn registered_kinds_build_the_pairs() {
    let json = Arc::new(MemoryBlobs::new());
    let seen = json.clone();
    let backends = Backends::new()
        .meta("acme-kv", |table| {
            let endpoint = table.settings["endpoint"].as_str().unwrap_or_default().to_owned();
            Box::pin(async move {
                assert!(endpoint.starts_with("kv://"));
                let m = Arc::new(MemoryMeta::new());
                Ok((m.clone() as Arc<dyn MetaStore>, m as Arc<dyn CounterStore>))
            })
        })
        .blobs("acme-blobs", move |_| {
            let json = json.clone();
            Box::pin(
                async move { Ok((json as Arc<dyn BlobStore>, Arc::new(MemoryBlobs::new()) as Arc<dyn BlobStore>)) },
            )
        });
    let udm = Udm::from_config_with(Config::from_toml(CONFIG).unwrap(), &backends).await.unwrap();
    let c = udm.with(RouteContext::new("t", "d", "c").unwrap());
    c.create(json!({"v": 1}), WriteOpts::id("x")).await.unwrap();
    assert_eq!(c.get_latest("x", ReadOpts::default()).await.unwrap().data["v"], 1);
    assert_eq!(seen.count_containing("/versions/"), 1, "the snapshot went to the registered blob store");
    let shown = format!("{:?}", udm.admin().backends());
    assert!(shown.contains("acme-kv") && !shown.contains("secret-token"), "{shown}");
}

#[tokio::test]
async fn an_unregistered_kind_is_unsupported_and_named() {
    let e = Udm::from_config(Config::from_toml(CONFIG).unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("acme-kv"), "{e}");
}
