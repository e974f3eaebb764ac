//! Building pairs from configuration (adapters chosen by cargo features).

use std::sync::Arc;

use udm_core::Result;
use udm_core::config::{BlobBackend, Config, MetaBackend};
use udm_core::ports::{BlobStore, CounterStore, MetaStore};
#[cfg(not(all(feature = "embedded", feature = "mongo", feature = "s3")))]
use udm_core::{Error, ErrorKind};
use udm_testkit::memory::{MemoryBlobs, MemoryMeta};

use crate::{Pair, Udm};

#[cfg(not(all(feature = "embedded", feature = "mongo", feature = "s3")))]
fn missing_feature(what: &str, feature: &str) -> Error {
    Error::new(ErrorKind::Unsupported, format!("{what} needs udm-facade's `{feature}` feature"))
}

/// A pair with in-memory stores.
pub(crate) fn in_memory_pair(name: &str) -> Result<Pair> {
    let meta = Arc::new(MemoryMeta::new());
    Ok(Pair {
        name: name.to_owned(),
        meta: meta.clone(),
        counters: meta,
        json: Arc::new(MemoryBlobs::new()),
        content: Arc::new(MemoryBlobs::new()),
        describe: "memory".into(),
    })
}

async fn meta_store(m: &MetaBackend) -> Result<(Arc<dyn MetaStore>, Arc<dyn CounterStore>, String)> {
    match m {
        MetaBackend::Memory => {
            let s = Arc::new(MemoryMeta::new());
            Ok((s.clone(), s, "memory".into()))
        }
        #[cfg(feature = "embedded")]
        MetaBackend::Embedded { path } => {
            let s = Arc::new(udm_embedded::EmbeddedStore::open(std::path::Path::new(path))?);
            Ok((s.clone(), s, format!("embedded:{path}")))
        }
        #[cfg(not(feature = "embedded"))]
        MetaBackend::Embedded { .. } => Err(missing_feature("an embedded metadata store", "embedded")),
        #[cfg(feature = "mongo")]
        MetaBackend::Mongo { uri, database, .. } => {
            let cfg = udm_mongo::MongoConfig::from_backend(m)?;
            let s = Arc::new(udm_mongo::MongoStore::connect(&cfg).await?);
            Ok((s.clone(), s, format!("mongo:{}/{database}", uri.redacted())))
        }
        #[cfg(not(feature = "mongo"))]
        MetaBackend::Mongo { .. } => Err(missing_feature("a mongo metadata store", "mongo")),
    }
}

async fn blob_stores(b: &BlobBackend) -> Result<(Arc<dyn BlobStore>, Arc<dyn BlobStore>, String)> {
    match b {
        BlobBackend::Memory => Ok((Arc::new(MemoryBlobs::new()), Arc::new(MemoryBlobs::new()), "memory".into())),
        #[cfg(feature = "s3")]
        BlobBackend::Fs { root } => {
            let root = std::path::Path::new(root);
            let json = udm_s3::ObjectStoreBlobs::local(&root.join("json"))?;
            let content = udm_s3::ObjectStoreBlobs::local(&root.join("content"))?;
            Ok((Arc::new(json), Arc::new(content), format!("fs:{}", root.display())))
        }
        #[cfg(feature = "s3")]
        BlobBackend::S3 { json_bucket, content_bucket, client, endpoint, .. } => {
            let s = udm_s3::S3Settings::from_backend(b)?;
            let describe = format!("s3:{}:{json_bucket},{content_bucket}", endpoint.as_deref().unwrap_or("aws"));
            match client {
                udm_core::config::S3Client::AwsSdk => Ok((
                    Arc::new(udm_s3::AwsS3Blobs::new(&s, json_bucket)),
                    Arc::new(udm_s3::AwsS3Blobs::new(&s, content_bucket)),
                    describe,
                )),
                udm_core::config::S3Client::ObjectStore => Ok((
                    Arc::new(udm_s3::ObjectStoreBlobs::s3(&s, json_bucket)?),
                    Arc::new(udm_s3::ObjectStoreBlobs::s3(&s, content_bucket)?),
                    describe,
                )),
            }
        }
        #[cfg(not(feature = "s3"))]
        BlobBackend::Fs { .. } | BlobBackend::S3 { .. } => Err(missing_feature("an fs or s3 blob store", "s3")),
    }
}

impl Udm {
    /// Validates `config` and connects every pair it describes.
    pub async fn from_config(config: Config) -> Result<Self> {
        Self::builder_from_config(config).await?.build()
    }

    /// Like [`Udm::from_config`], but returns the builder so a clock or id generator can be
    /// injected before [`UdmBuilder::build`](crate::UdmBuilder::build).
    pub async fn builder_from_config(config: Config) -> Result<crate::UdmBuilder> {
        config.validate()?;
        let mut builder = Udm::builder();
        for b in &config.backends {
            let (meta, counters, m) = meta_store(&b.meta).await?;
            let (json, content, j) = blob_stores(&b.blobs).await?;
            builder = builder.pair(Pair {
                name: b.name.clone(),
                meta,
                counters,
                json,
                content,
                describe: format!("{m} + {j}"),
            });
        }
        Ok(builder.config(config))
    }

    /// The zero-setup default: an embedded metadata store and local-directory blobs under
    /// `dir` (`dir/meta.redb`, `dir/blobs/`).
    #[cfg(all(feature = "embedded", feature = "s3"))]
    pub async fn embedded(dir: &std::path::Path) -> Result<Self> {
        let pair = udm_core::config::BackendPair {
            name: "local".into(),
            meta: MetaBackend::Embedded { path: dir.join("meta.redb").display().to_string() },
            blobs: BlobBackend::Fs { root: dir.join("blobs").display().to_string() },
        };
        Self::from_config(Config::single(pair)).await
    }
}
