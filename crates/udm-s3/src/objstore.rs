//! [`BlobStore`] on the `object_store` crate: S3 (and compatibles) or memory.
//!
//! S3 calls have the deadlines of [`S3Settings`]: the client's connect, read and per-attempt
//! timeouts, retries bounded by the call deadline, and the call deadline itself around each
//! whole call (listing and body reads included).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, UpdateVersion,
};
use udm_core::ports::{
    BlobBody, BlobCapabilities, BlobMeta, BlobPage, BlobStore, ETag, MAX_LIST_PAGE, PutMode, PutOptions, PutResult,
    check_key, check_prefix, check_presign_ttl, etag_mismatch,
};
use udm_core::{Checksum, Error, ErrorKind, Result};

use crate::S3Settings;
use crate::error::{from_object_store, missed_deadline};

/// A bucket (or memory) through `object_store`.
pub struct ObjectStoreBlobs {
    store: Arc<dyn ObjectStore>,
    /// The S3 store again, for presigning (`None` for other backends).
    signer: Option<Arc<object_store::aws::AmazonS3>>,
    label: String,
    capabilities: BlobCapabilities,
    /// Deadline of each whole call (`None` in memory).
    call_timeout: Option<Duration>,
    /// The client's own deadlines, named in timeout errors.
    deadlines: String,
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
            capabilities: BlobCapabilities {
                presign: false,
                durable: false,
                content_types: true,
                etags: true,
                conditional_put: true,
            },
            call_timeout: None,
            deadlines: String::new(),
        }
    }

    /// One bucket of an S3 (or S3-compatible) service.
    pub fn s3(settings: &S3Settings, bucket: &str) -> Result<Self> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_client_options(client_options(settings))
            .with_retry(retry_config(settings));
        if let Some(endpoint) = &settings.endpoint {
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some((id, secret)) = &settings.credentials {
            b = b.with_access_key_id(id.expose()).with_secret_access_key(secret.expose());
        }
        let store = Arc::new(b.build().map_err(|e| from_object_store("configuring", bucket, e, ""))?);
        Ok(Self {
            store: store.clone(),
            signer: Some(store),
            label: format!("s3:{bucket}"),
            capabilities: BlobCapabilities {
                presign: true,
                durable: true,
                content_types: true,
                etags: true,
                conditional_put: settings.conditional_put,
            },
            call_timeout: Some(settings.call_timeout),
            deadlines: format!(
                "connect ({:?}), read ({:?}) or attempt ({:?})",
                settings.connect_timeout,
                settings.effective_read_timeout(),
                settings.attempt_timeout()
            ),
        })
    }

    /// Runs one whole call under the call deadline, classifying its errors.
    async fn call<T>(&self, context: &str, key: &str, f: impl Future<Output = object_store::Result<T>>) -> Result<T> {
        let out = match self.call_timeout {
            Some(d) => tokio::time::timeout(d, f).await.map_err(|_| missed_deadline(context, key, d, "call"))?,
            None => f.await,
        };
        out.map_err(|e| self.error(context, key, e))
    }

    fn error(&self, context: &str, key: &str, e: object_store::Error) -> Error {
        from_object_store(context, key, e, &self.deadlines)
    }
}

/// The HTTP client's deadlines: connect, read, and one attempt.
fn client_options(settings: &S3Settings) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        .with_read_timeout(settings.effective_read_timeout())
        .with_timeout(settings.attempt_timeout())
}

/// Retries: at most `max_attempts` attempts, none started after the call deadline.
fn retry_config(settings: &S3Settings) -> RetryConfig {
    let max_backoff = settings.max_backoff();
    RetryConfig {
        backoff: BackoffConfig { init_backoff: Duration::from_millis(100).min(max_backoff), max_backoff, base: 2.0 },
        max_retries: settings.attempts() as usize - 1,
        retry_timeout: settings.call_timeout,
    }
}

fn path(key: &str) -> Result<Path> {
    check_key(key)?;
    Path::parse(key).map_err(|e| Error::validation("key", format!("{key:?}: {e}")))
}

#[async_trait]
impl BlobStore for ObjectStoreBlobs {
    async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
        let p = path(key)?;
        let checksum = Checksum::of_bytes(&bytes);
        let mut attributes = Attributes::new();
        if self.capabilities.content_types
            && let Some(t) = &options.content_type
        {
            attributes.insert(Attribute::ContentType, t.clone().into());
        }
        let mode = match &options.mode {
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::IfMatch(_) if !self.capabilities.conditional_put => {
                let message = format!("{}: compare-and-swap puts are disabled for this store", self.label);
                return Err(Error::new(ErrorKind::Unsupported, message));
            }
            PutMode::IfMatch(etag) => {
                object_store::PutMode::Update(UpdateVersion { e_tag: Some(etag.to_string()), version: None })
            }
        };
        let opts = object_store::PutOptions { mode, attributes, ..Default::default() };
        let put = self.store.put_opts(&p, PutPayload::from(bytes), opts);
        let out = match (&options.mode, self.call("put", key, put).await) {
            // S3 answers 412 for another ETag and 404 for an absent object; memory 412 for both.
            (PutMode::IfMatch(want), Err(e)) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::NotFound) => {
                return Err(etag_mismatch(key, want, None).with_source(e));
            }
            (_, out) => out?,
        };
        Ok(PutResult { checksum, etag: out.e_tag.map(ETag::new) })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.get_with_etag(key).await?.bytes)
    }

    async fn get_with_etag(&self, key: &str) -> Result<BlobBody> {
        let p = path(key)?;
        let (etag, bytes) = self
            .call("get", key, async {
                let r = self.store.get(&p).await?;
                let etag = r.meta.e_tag.clone();
                Ok((etag, r.bytes().await?))
            })
            .await?;
        Ok(BlobBody { bytes: bytes.to_vec(), etag: etag.map(ETag::new) })
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        let p = path(key)?;
        let opts = GetOptions { head: true, ..Default::default() };
        let found = self
            .call("head", key, async {
                match self.store.get_opts(&p, opts).await {
                    Ok(r) => Ok(Some(r)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(found.map(|r| BlobMeta {
            size: r.meta.size,
            content_type: r.attributes.get(&Attribute::ContentType).map(|v| v.to_string()),
            etag: r.meta.e_tag.map(ETag::new),
        }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = path(key)?;
        self.call("delete", key, async {
            match self.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
        check_prefix(prefix)?;
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        // object_store prefixes match whole segments: list the enclosing directory and
        // filter by the string prefix. S3 and memory both list in key order.
        let dir = prefix.rfind('/').map(|i| &prefix[..i]).filter(|d| !d.is_empty());
        let dir = dir.map(path).transpose()?;
        let offset = match after {
            // After a whole subtree (`dir/` + DEL, from a delimiter listing): `dir/~` is a
            // valid path at or before it; the filter below drops the few keys in between.
            Some(a) if a >= prefix => {
                let a = a.strip_suffix('\u{7f}').map_or_else(|| a.to_owned(), |d| format!("{d}~"));
                Some(Path::parse(&a).map_err(|e| Error::validation("after", e.to_string()))?)
            }
            _ => None,
        };
        let keys = self
            .call("list", prefix, async {
                let mut stream = match &offset {
                    Some(o) => self.store.list_with_offset(dir.as_ref(), o),
                    None => self.store.list(dir.as_ref()),
                };
                let mut keys = Vec::new();
                while let Some(meta) = stream.next().await {
                    let k = meta?.location.to_string();
                    if k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a) {
                        keys.push(k);
                    }
                    if keys.len() > limit {
                        break;
                    }
                }
                Ok(keys)
            })
            .await?;
        Ok(BlobPage::from_overfetch(keys, limit))
    }

    async fn presign_get(&self, key: &str, ttl_secs: u64) -> Result<String> {
        let p = path(key)?;
        check_presign_ttl(ttl_secs)?;
        let Some(signer) = &self.signer else {
            return Err(Error::new(ErrorKind::Unsupported, format!("{} cannot presign URLs", self.label)));
        };
        let url = self
            .call(
                "presign",
                key,
                signer.signed_url(object_store::signer::Method::GET, &p, Duration::from_secs(ttl_secs)),
            )
            .await?;
        Ok(url.to_string())
    }

    async fn health(&self) -> Result<()> {
        self.call("health", &self.label, async {
            match self.store.list(None).next().await {
                None | Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(e),
            }
        })
        .await
    }

    fn capabilities(&self) -> BlobCapabilities {
        self.capabilities
    }
}
