//! In-memory blob store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use udm_core::ports::{
    BlobBody, BlobCapabilities, BlobMeta, BlobPage, BlobStore, ETag, MAX_LIST_PAGE, PutMode, PutOptions, PutResult,
    check_key, check_prefix, etag_mismatch,
};
use udm_core::{Checksum, Error, ErrorKind, Result};

/// One stored blob.
#[derive(Debug)]
struct Stored {
    bytes: Vec<u8>,
    content_type: Option<String>,
    etag: ETag,
}

/// Stored blobs by key, and the last generation handed out as an ETag.
#[derive(Debug, Default)]
struct Objects {
    map: BTreeMap<String, Stored>,
    generation: u64,
}

/// Blobs in process memory; the reference implementation of the [`BlobStore`] contract.
/// ETags are generations (`"g<n>"`), new on every put, so they change on every overwrite;
/// compare-and-swap is atomic (one lock).
#[derive(Debug, Default)]
pub struct MemoryBlobs {
    objects: Mutex<Objects>,
}

impl MemoryBlobs {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the bytes at `key` behind the store's back (corruption tests).
    pub fn tamper(&self, key: &str, bytes: Vec<u8>) {
        if let Some(slot) = self.lock().map.get_mut(key) {
            slot.bytes = bytes;
        }
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// How many stored keys contain `part` (e.g. `/objects/`: the snapshots, not the commit
    /// log's segments).
    pub fn count_containing(&self, part: &str) -> usize {
        self.lock().map.keys().filter(|k| k.contains(part)).count()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().map.is_empty()
    }
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
        check_key(key)?;
        let checksum = Checksum::of_bytes(&bytes);
        let mut m = self.lock();
        let current = m.map.get(key).map(|s| &s.etag);
        match &options.mode {
            PutMode::Create if current.is_some() => {
                return Err(Error::new(ErrorKind::AlreadyExists, format!("{key} already exists")));
            }
            PutMode::IfMatch(want) if current != Some(want) => return Err(etag_mismatch(key, want, Some(current))),
            _ => {}
        }
        m.generation += 1;
        let etag = ETag::new(format!("\"g{}\"", m.generation));
        let stored = Stored { bytes, content_type: options.content_type.clone(), etag: etag.clone() };
        m.map.insert(key.to_owned(), stored);
        Ok(PutResult { checksum, etag: Some(etag) })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.get_with_etag(key).await?.bytes)
    }

    async fn get_with_etag(&self, key: &str) -> Result<BlobBody> {
        check_key(key)?;
        self.lock()
            .map
            .get(key)
            .map(|s| BlobBody { bytes: s.bytes.clone(), etag: Some(s.etag.clone()) })
            .ok_or_else(|| Error::not_found(format!("blob {key}")))
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        check_key(key)?;
        Ok(self.lock().map.get(key).map(|s| BlobMeta {
            size: s.bytes.len() as u64,
            content_type: s.content_type.clone(),
            etag: Some(s.etag.clone()),
        }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.lock().map.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
        check_prefix(prefix)?;
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let m = self.lock();
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let keys: Vec<String> = m
            .map
            .range((start, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(BlobPage::from_overfetch(keys, limit))
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }

    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities { presign: false, durable: false, content_types: true, etags: true, conditional_put: true }
    }
}
