//! The two setups every scenario runs on.

use std::sync::Arc;

use udm_core::config::{BackendPair, BlobBackend, Config, MetaBackend, S3Client, Secret};
use udm_core::ports::BlobStore;
use udm_facade::Udm;
use udm_testkit::clock::ManualClock;

/// A built `Udm` plus what scenarios need to know about it.
pub(crate) struct Env {
    pub(crate) udm: Udm,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) pairs: usize,
    pub(crate) presign: bool,
    /// The same backends as `udm`, one `Udm` per pair alone (for route-mismatch tests).
    pub(crate) singles: Vec<Udm>,
    /// Independent clients of every pair's snapshot store (to count what is stored).
    pub(crate) snapshots: Vec<Arc<dyn BlobStore>>,
}

/// Collections, limits and switches shared by both setups.
fn shared_config(mut cfg: Config) -> Config {
    let extra = Config::from_toml(
        r#"
[[backends]]
name = "placeholder"
meta = { kind = "memory" }
blobs = { kind = "memory" }

[[collections]]
db = "crm"
collection = "users"
indexed_props = [{ path = "email" }, { path = "tier" }, { path = "score" }, { path = "address.city" }]
base64_props = [{ path = "avatar.data", content_type = "image/png" }]
counter_rules = [
  { name = "vips", on = ["CREATE", "UPDATE"], when = { "data.tier" = "vip" } },
  { name = "by_bot", when = { "actor" = "bot" } },
]

[dev_shadow]
enabled = true
ttl_secs = 60
max_bytes = 2048

[hard_delete]
enabled = true

[limits]
max_document_bytes = 65536
max_depth = 20
max_id_bytes = 64
"#,
    )
    .expect("shared config");
    cfg.collections = extra.collections;
    cfg.dev_shadow = extra.dev_shadow;
    cfg.hard_delete = extra.hard_delete;
    cfg.limits = extra.limits;
    cfg
}

async fn build(cfg: Config, clock: &Arc<ManualClock>) -> Udm {
    Udm::builder_from_config(cfg).await.expect("connect").clock(clock.clone()).build().expect("build")
}

/// Two (MongoDB, S3) pairs on the real test servers: pair-a uses the AWS SDK client, pair-b
/// object_store; each has its own database and buckets.
pub(crate) async fn servers() -> Env {
    let uri = udm_testkit::services::mongo_uri();
    let endpoint = udm_testkit::services::s3_endpoint();
    let pair = |name: &str, client: S3Client| BackendPair {
        name: name.into(),
        meta: MetaBackend::Mongo {
            uri: udm_core::config::MongoUri::new(&uri),
            database: format!("udm_e2e_{}", name.replace('-', "_")),
            max_pool_size: None,
            connect_timeout_ms: None,
            server_selection_timeout_ms: Some(5000),
        },
        blobs: BlobBackend::S3 {
            endpoint: Some(endpoint.clone()),
            region: "us-east-1".into(),
            access_key_id: Some(Secret::new("test")),
            secret_access_key: Some(Secret::new("testsecret")),
            json_bucket: format!("e2e-{name}-json"),
            content_bucket: format!("e2e-{name}-content"),
            backups_bucket: None,
            path_style: true,
            client,
        },
    };
    let pairs = vec![pair("pair-a", S3Client::AwsSdk), pair("pair-b", S3Client::ObjectStore)];
    let settings = udm_s3::S3Settings::compatible(&endpoint, "us-east-1", "test", "testsecret");
    for p in &pairs {
        for suffix in ["json", "content", "backups"] {
            udm_s3::AwsS3Blobs::new(&settings, &format!("e2e-{}-{suffix}", p.name))
                .ensure_bucket()
                .await
                .expect("bucket");
        }
    }
    let clock = Arc::new(ManualClock::at(1_700_000_000_000));
    let mut cfg = shared_config(Config::single(pairs[0].clone()));
    cfg.backends = pairs.clone();
    let udm = build(cfg.clone(), &clock).await;
    let mut singles = Vec::new();
    for p in &pairs {
        let mut one = cfg.clone();
        one.backends = vec![p.clone()];
        singles.push(build(one, &clock).await);
    }
    let snapshots: Vec<Arc<dyn BlobStore>> = pairs
        .iter()
        .map(|p| Arc::new(udm_s3::AwsS3Blobs::new(&settings, &format!("e2e-{}-json", p.name))) as Arc<dyn BlobStore>)
        .collect();
    Env { udm, clock, pairs: 2, presign: true, singles, snapshots }
}

/// A (PostgreSQL, S3) pair's config: `meta = { kind = "postgres", url, schema }`.
fn postgres_pair(name: &str, endpoint: &str) -> BackendPair {
    let meta = format!(
        "{{ kind = \"postgres\", url = \"{}\", schema = \"udm_e2e_{}\" }}",
        udm_testkit::services::postgres_url(),
        name.replace('-', "_")
    );
    let text = format!("[[backends]]\nname = \"{name}\"\nmeta = {meta}\nblobs = {{ kind = \"memory\" }}\n");
    let mut pair = Config::from_toml(&text).expect("postgres pair").backends.remove(0);
    pair.blobs = s3_blobs(name, endpoint, S3Client::AwsSdk);
    pair
}

fn s3_blobs(name: &str, endpoint: &str, client: S3Client) -> BlobBackend {
    BlobBackend::S3 {
        endpoint: Some(endpoint.to_owned()),
        region: "us-east-1".into(),
        access_key_id: Some(Secret::new("test")),
        secret_access_key: Some(Secret::new("testsecret")),
        json_bucket: format!("e2e-{name}-json"),
        content_bucket: format!("e2e-{name}-content"),
        backups_bucket: None,
        path_style: true,
        client,
    }
}

/// Builds the `Env` of `pairs` (buckets made, one single-pair `Udm` per pair when several).
async fn env_of(pairs: Vec<BackendPair>, endpoint: &str) -> Env {
    let settings = udm_s3::S3Settings::compatible(endpoint, "us-east-1", "test", "testsecret");
    for p in &pairs {
        for suffix in ["json", "content", "backups"] {
            udm_s3::AwsS3Blobs::new(&settings, &format!("e2e-{}-{suffix}", p.name))
                .ensure_bucket()
                .await
                .expect("bucket (is moto running? cargo xtask services up)");
        }
    }
    let clock = Arc::new(ManualClock::at(1_700_000_000_000));
    let mut cfg = shared_config(Config::single(pairs[0].clone()));
    cfg.backends = pairs.clone();
    let udm = build(cfg.clone(), &clock).await;
    let mut singles = Vec::new();
    if pairs.len() > 1 {
        for p in &pairs {
            let mut one = cfg.clone();
            one.backends = vec![p.clone()];
            singles.push(build(one, &clock).await);
        }
    }
    let snapshots: Vec<Arc<dyn BlobStore>> = pairs
        .iter()
        .map(|p| Arc::new(udm_s3::AwsS3Blobs::new(&settings, &format!("e2e-{}-json", p.name))) as Arc<dyn BlobStore>)
        .collect();
    Env { udm, clock, pairs: pairs.len(), presign: true, singles, snapshots }
}

/// One (PostgreSQL, S3) pair on the real test servers, built from config
/// (`meta.kind = "postgres"`).
pub(crate) async fn postgres() -> Env {
    let endpoint = udm_testkit::services::s3_endpoint();
    env_of(vec![postgres_pair("pg-a", &endpoint)], &endpoint).await
}

/// A mixed deployment: one (MongoDB, S3) pair and one (PostgreSQL, S3) pair in one `Udm`,
/// objects routed across them.
pub(crate) async fn mixed() -> Env {
    let endpoint = udm_testkit::services::s3_endpoint();
    let mongo = BackendPair {
        name: "mixed-mongo".into(),
        meta: MetaBackend::Mongo {
            uri: udm_core::config::MongoUri::new(udm_testkit::services::mongo_uri()),
            database: "udm_e2e_mixed_mongo".into(),
            max_pool_size: None,
            connect_timeout_ms: None,
            server_selection_timeout_ms: Some(5000),
        },
        blobs: s3_blobs("mixed-mongo", &endpoint, S3Client::ObjectStore),
    };
    env_of(vec![mongo, postgres_pair("mixed-pg", &endpoint)], &endpoint).await
}

/// The zero-setup default ([`Udm::embedded`]): a metadata file and a blob file of its own,
/// whose snapshot puts stage in the metadata file until the next put to the blob file moves
/// them (`EmbeddedStore::blobs_staged_in`), in a fresh directory. The stores are opened here
/// and handed to the builder as the pair, so the test can read the same files' snapshots
/// (redb allows one handle per file and process).
pub(crate) async fn embedded() -> Env {
    let dir = tempfile::tempdir().expect("temp").keep();
    let store = udm_embedded::EmbeddedStore::open(&dir.join("udm.redb")).expect("embedded store");
    let file = udm_embedded::EmbeddedStore::open(&dir.join("udm-blobs.redb")).expect("blob file");
    let pair = BackendPair {
        name: "local".into(),
        meta: MetaBackend::Embedded { path: dir.join("udm.redb").display().to_string() },
        blobs: BlobBackend::Embedded { path: Some(dir.join("udm-blobs.redb").display().to_string()) },
    };
    let clock = Arc::new(ManualClock::at(1_700_000_000_000));
    let shared = Arc::new(store.clone());
    let json: Arc<dyn BlobStore> = Arc::new(file.blobs_staged_in("json", &store).expect("bucket"));
    let udm = Udm::builder()
        .config(shared_config(Config::single(pair)))
        .pair(udm_facade::Pair {
            name: "local".into(),
            meta: shared.clone(),
            counters: shared,
            json: json.clone(),
            content: Arc::new(file.blobs_staged_in("content", &store).expect("bucket")),
            describe: "embedded".into(),
        })
        .clock(clock.clone())
        .build()
        .expect("build");
    Env { udm, clock, pairs: 1, presign: false, singles: vec![], snapshots: vec![json] }
}
