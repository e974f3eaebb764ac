//! [`BlobStore`] on the `object_store` crate: S3 (and compatibles), local filesystem, memory.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutPayload};
use udm_core::ports::{
    BlobCapabilities, BlobMeta, BlobPage, BlobStore, MAX_LIST_PAGE, PutMode, PutOptions, check_key, check_prefix,
    check_presign_ttl,
};
use udm_core::{Checksum, Error, ErrorKind, Result};

use crate::S3Settings;
use crate::error::from_object_store;

/// A bucket (or directory) through `object_store`.
pub struct ObjectStoreBlobs {
    store: Arc<dyn ObjectStore>,
    /// The S3 store again, for presigning (`None` for other backends).
    signer: Option<Arc<object_store::aws::AmazonS3>>,
    label: String,
    capabilities: BlobCapabilities,
    /// Whether the backend lists in key order (S3, memory) or needs sorting (filesystem).
    ordered_listing: bool,
}

impl fmt::Debug for ObjectStoreBlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreBlobs").field("store", &self.label).finish()
    }
}

impl ObjectStoreBlobs {
    /// In process memory (tests).
    pub fn memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            signer: None,
            label: "memory".into(),
            capabilities: BlobCapabilities { presign: false, durable: false, content_types: true },
            ordered_listing: true,
        }
    }

    /// A local directory (created if missing). Content types are not recorded.
    pub fn local(root: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::new(ErrorKind::Config, format!("blob directory {}: {e}", root.display())))?;
        let fs = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| from_object_store("opening", &root.display().to_string(), e))?;
        Ok(Self {
            store: Arc::new(fs),
            signer: None,
            label: format!("fs:{}", root.display()),
            capabilities: BlobCapabilities { presign: false, durable: true, content_types: false },
            ordered_listing: false,
        })
    }

    /// One bucket of an S3 (or S3-compatible) service.
    pub fn s3(settings: &S3Settings, bucket: &str) -> Result<Self> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style);
        if let Some(endpoint) = &settings.endpoint {
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some((id, secret)) = &settings.credentials {
            b = b.with_access_key_id(id.expose()).with_secret_access_key(secret.expose());
        }
        let store = Arc::new(b.build().map_err(|e| from_object_store("configuring", bucket, e))?);
        Ok(Self {
            store: store.clone(),
            signer: Some(store),
            label: format!("s3:{bucket}"),
            capabilities: BlobCapabilities { presign: true, durable: true, content_types: true },
            ordered_listing: true,
        })
    }
}

fn path(key: &str) -> Result<Path> {
    check_key(key)?;
    Path::parse(key).map_err(|e| Error::validation("key", format!("{key:?}: {e}")))
}

#[async_trait]
impl BlobStore for ObjectStoreBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<Checksum> {
        let p = path(key)?;
        let sum = Checksum::of_bytes(&bytes);
        let mut attributes = Attributes::new();
        if self.capabilities.content_types
            && let Some(t) = &options.content_type
        {
            attributes.insert(Attribute::ContentType, t.clone().into());
        }
        let mode = match options.mode {
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Overwrite => object_store::PutMode::Overwrite,
        };
        let opts = object_store::PutOptions { mode, attributes, ..Default::default() };
        self.store.put_opts(&p, PutPayload::from(bytes), opts).await.map_err(|e| from_object_store("put", key, e))?;
        Ok(sum)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let p = path(key)?;
        let r = self.store.get(&p).await.map_err(|e| from_object_store("get", key, e))?;
        let bytes = r.bytes().await.map_err(|e| from_object_store("get", key, e))?;
        Ok(bytes.to_vec())
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        let p = path(key)?;
        let opts = GetOptions { head: true, ..Default::default() };
        match self.store.get_opts(&p, opts).await {
            Ok(r) => Ok(Some(BlobMeta {
                size: r.meta.size,
                content_type: r.attributes.get(&Attribute::ContentType).map(|v| v.to_string()),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(from_object_store("head", key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = path(key)?;
        match self.store.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(from_object_store("delete", key, e)),
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
        check_prefix(prefix)?;
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        // object_store prefixes match whole segments: list the enclosing directory and
        // filter by the string prefix.
        let dir = prefix.rfind('/').map(|i| &prefix[..i]).filter(|d| !d.is_empty());
        let dir = dir.map(path).transpose()?;
        let offset = match after {
            Some(a) if a >= prefix => Some(Path::parse(a).map_err(|e| Error::validation("after", e.to_string()))?),
            _ => None,
        };
        let mut stream = match &offset {
            Some(o) => self.store.list_with_offset(dir.as_ref(), o),
            None => self.store.list(dir.as_ref()),
        };
        let mut keys = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| from_object_store("list", prefix, e))?;
            let k = meta.location.to_string();
            if !k.starts_with(prefix) || after.is_some_and(|a| k.as_str() <= a) {
                continue;
            }
            keys.push(k);
            if self.ordered_listing && keys.len() > limit {
                break;
            }
        }
        if !self.ordered_listing {
            keys.sort();
        }
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = if more { keys.last().cloned() } else { None };
        Ok(BlobPage { keys, next })
    }

    async fn presign_get(&self, key: &str, ttl_secs: u64) -> Result<String> {
        let p = path(key)?;
        check_presign_ttl(ttl_secs)?;
        let Some(signer) = &self.signer else {
            return Err(Error::new(ErrorKind::Unsupported, format!("{} cannot presign URLs", self.label)));
        };
        let url = signer
            .signed_url(object_store::signer::Method::GET, &p, std::time::Duration::from_secs(ttl_secs))
            .await
            .map_err(|e| from_object_store("presign", key, e))?;
        Ok(url.to_string())
    }

    async fn health(&self) -> Result<()> {
        let mut stream = self.store.list(None);
        match stream.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(from_object_store("health", &self.label, e)),
        }
    }

    fn capabilities(&self) -> BlobCapabilities {
        self.capabilities
    }
}
