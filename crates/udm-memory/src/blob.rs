//! In-memory blob store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use udm_core::ports::{
    BlobCapabilities, BlobMeta, BlobPage, BlobStore, MAX_LIST_PAGE, PutMode, PutOptions, check_key, check_prefix,
};
use udm_core::{Checksum, Error, ErrorKind, Result};

/// Stored bytes and content type, by key.
type Objects = BTreeMap<String, (Vec<u8>, Option<String>)>;

/// Blobs in process memory; the reference implementation of the [`BlobStore`] contract.
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
        if let Some(slot) = self.lock().get_mut(key) {
            slot.0 = bytes;
        }
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<Checksum> {
        check_key(key)?;
        let sum = Checksum::of_bytes(&bytes);
        let mut m = self.lock();
        if options.mode == PutMode::Create && m.contains_key(key) {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("{key} already exists")));
        }
        m.insert(key.to_owned(), (bytes, options.content_type.clone()));
        Ok(sum)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        check_key(key)?;
        self.lock().get(key).map(|(b, _)| b.clone()).ok_or_else(|| Error::not_found(format!("blob {key}")))
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        check_key(key)?;
        Ok(self.lock().get(key).map(|(b, t)| BlobMeta { size: b.len() as u64, content_type: t.clone() }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.lock().remove(key);
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
        let mut keys: Vec<String> = m
            .range((start, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = if more { keys.last().cloned() } else { None };
        Ok(BlobPage { keys, next })
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }

    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities { presign: false, durable: false, content_types: true }
    }
}
