//! [`LocalBlobs`]: a [`BlobStore`] in a local directory, on `std::fs` inside
//! `tokio::task::spawn_blocking`, durable when a put returns.
//!
//! A put writes a temporary file in the key's directory and `sync_all`s it, then publishes it:
//! create-only with `hard_link` (which fails if the name exists, so of racing puts exactly one
//! wins), overwrite with `rename`. It then fsyncs the directory holding the new entry, and
//! every ancestor whose own entry is not yet known durable (directories the put had to
//! create, or found but never synced by this process), up to the root. Only then does put
//! return: the metadata commit that points at a snapshot is synced right after it, so the
//! snapshot must already be on stable storage (defect 11).
//!
//! Temporary files are named `.udm-tmp <n>`: the space makes them invalid keys, so listings
//! never show them, even one left behind by a crash.
//!
//! **ETags and compare-and-swap.** A blob's ETag is the SHA-256 of its bytes (hex), so it
//! changes whenever the bytes do; rewriting identical bytes keeps it (harmless for a
//! read-modify-write, whose outcome depends only on the bytes read). Inode + size + mtime was
//! rejected: inodes are reused as soon as the replaced file is unlinked and file timestamps
//! are coarse (one kernel tick), so a *different* blob could get an old ETag back and a stale
//! compare-and-swap would succeed. `head` and `get_with_etag` therefore hash the file.
//! A compare-and-swap (`PutMode::IfMatch`) reads and hashes the current file, then renames the
//! new one into place, holding a lock that overwrites and deletes of the same file also take:
//! it is atomic among all `LocalBlobs` of **one process** (the lock is process-wide, keyed by
//! the canonical root and the key). Across processes it is **not** atomic: two processes
//! swapping the same blob at once can both succeed (use an S3 store, or one writer process).

mod list;

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use udm_core::ports::{
    BlobBody, BlobCapabilities, BlobMeta, BlobPage, BlobStore, ETag, MAX_LIST_PAGE, PutMode, PutOptions, PutResult,
    check_key, check_prefix, etag_mismatch,
};
use udm_core::{Checksum, Error, ErrorKind, Result};

/// Called with every path [`LocalBlobs`] has just fsynced (files and directories), in order.
/// Tests use it to check durability; production code needs none.
pub type SyncObserver = Arc<dyn Fn(&Path) + Send + Sync>;

/// Directories remembered as durable before the memory is reset (then they are synced again).
const MAX_KNOWN_DIRS: usize = 65_536;

/// Process-wide locks serializing compare-and-swaps, overwrites and deletes of one file (by
/// hash of canonical root and key; unrelated files may share a stripe).
static FILE_LOCKS: [Mutex<()>; 64] = [const { Mutex::new(()) }; 64];

/// The ETag of `bytes`: their SHA-256, hex.
fn etag_of(sum: &Checksum) -> ETag {
    ETag::new(sum.to_string())
}

/// Blobs as files under a root directory (keys are relative paths). Content types are not
/// recorded; presigning is unsupported.
#[derive(Clone)]
pub struct LocalBlobs {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// The canonical root, naming files in [`FILE_LOCKS`] whatever path opened them.
    lock_root: PathBuf,
    observer: Option<SyncObserver>,
    /// Directories under the root whose entry in their parent has been fsynced.
    durable_dirs: Mutex<HashSet<PathBuf>>,
    /// Temporary file names.
    next_tmp: AtomicU64,
}

impl fmt::Debug for LocalBlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBlobs").field("root", &self.inner.root).finish()
    }
}

impl LocalBlobs {
    /// Opens the directory `root`, creating it (and its missing parents, durably) if needed.
    pub fn open(root: &Path) -> Result<Self> {
        Self::open_observed(root, None)
    }

    /// Like [`LocalBlobs::open`], reporting every fsync to `observer`, those made while
    /// creating the root included.
    pub fn open_with_sync_observer(root: &Path, observer: SyncObserver) -> Result<Self> {
        Self::open_observed(root, Some(observer))
    }

    fn open_observed(root: &Path, observer: Option<SyncObserver>) -> Result<Self> {
        let config = |e: io::Error| Error::new(ErrorKind::Config, format!("blob directory {}: {e}", root.display()));
        let mut inner = Inner {
            root: root.to_path_buf(),
            lock_root: root.to_path_buf(),
            observer,
            durable_dirs: Mutex::new(HashSet::new()),
            next_tmp: AtomicU64::new(0),
        };
        let missing = root.ancestors().take_while(|p| !p.as_os_str().is_empty() && !p.exists()).count();
        fs::create_dir_all(root).map_err(config)?;
        if !root.is_dir() {
            return Err(config(io::Error::new(io::ErrorKind::NotADirectory, "not a directory")));
        }
        inner.lock_root = fs::canonicalize(root).map_err(config)?;
        // The root's own entry, and those of the parents created for it.
        for dir in root.ancestors().skip(1).take(missing) {
            inner.sync_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }).map_err(config)?;
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::internal(format!("local blob store task: {e}")))?
    }
}

impl Inner {
    /// The file of a key already checked by [`check_key`].
    fn path_of(&self, key: &str) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(key.split('/'));
        p
    }

    /// The lock of `key`'s file (see [`FILE_LOCKS`]).
    fn file_lock(&self, key: &str) -> MutexGuard<'static, ()> {
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one((&self.lock_root, key));
        #[allow(clippy::cast_possible_truncation)] // reduced modulo 64 first
        let stripe = (h % FILE_LOCKS.len() as u64) as usize;
        FILE_LOCKS[stripe].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn observe(&self, path: &Path) {
        if let Some(o) = &self.observer {
            o(path);
        }
    }

    /// Makes the entries of `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()?;
            self.observe(dir);
        }
        #[cfg(not(unix))]
        let _ = dir; // Directories cannot be opened and synced portably elsewhere.
        Ok(())
    }

    /// Makes a new entry in `dir` durable: syncs `dir`, then the parent of every directory on
    /// the way up whose own entry is not known durable, stopping at the root.
    fn sync_new_entry(&self, dir: &Path) -> io::Result<()> {
        self.sync_dir(dir)?;
        let mut cur = dir;
        while cur != self.root && !self.known_durable(cur) {
            let Some(up) = cur.parent() else { break };
            self.sync_dir(up)?;
            self.remember_durable(cur);
            cur = up;
        }
        Ok(())
    }

    fn known_durable(&self, dir: &Path) -> bool {
        self.durable_dirs.lock().unwrap_or_else(PoisonError::into_inner).contains(dir)
    }

    fn remember_durable(&self, dir: &Path) {
        let mut known = self.durable_dirs.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_KNOWN_DIRS {
            known.clear();
        }
        known.insert(dir.to_path_buf());
    }

    /// Creates a fresh temporary file in `dir`.
    fn temp_file(&self, dir: &Path) -> io::Result<(File, PathBuf)> {
        loop {
            let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".udm-tmp {}.{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => return Ok((f, path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `bytes` to a durable temporary file in `dir`.
    fn write_temp(&self, dir: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
        let (mut file, tmp) = self.temp_file(dir)?;
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        match written {
            Ok(()) => {
                self.observe(&tmp);
                Ok(tmp)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn put(&self, key: &str, bytes: &[u8], mode: &PutMode) -> Result<()> {
        if matches!(mode, PutMode::Create) {
            return self.publish(key, bytes, mode);
        }
        // Overwrites take the lock too, so a compare-and-swap never loses one.
        let _lock = self.file_lock(key);
        if let PutMode::IfMatch(want) = mode {
            let current = self.read(key)?.map(|b| etag_of(&Checksum::of_bytes(&b)));
            if current.as_ref() != Some(want) {
                return Err(etag_mismatch(key, want, Some(current.as_ref())));
            }
        }
        self.publish(key, bytes, mode)
    }

    /// Writes a temporary file and links (create-only) or renames it into place, durably.
    fn publish(&self, key: &str, bytes: &[u8], mode: &PutMode) -> Result<()> {
        let dest = self.path_of(key);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => not_both(key),
            _ => io_error("put", key, e),
        })?;
        let tmp = self.write_temp(&dir, bytes).map_err(|e| io_error("put", key, e))?;
        let create = matches!(mode, PutMode::Create);
        let published = if create { fs::hard_link(&tmp, &dest) } else { fs::rename(&tmp, &dest) };
        if create || published.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        match published {
            Ok(()) => self.sync_new_entry(&dir).map_err(|e| io_error("put", key, e)),
            Err(e) if dest.is_dir() => Err(not_both(key).with_source(e)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // The existing blob may come from a put that crashed before its directory
                // sync: make it durable before the caller relies on it.
                self.sync_new_entry(&dir).map_err(|e| io_error("put", key, e))?;
                Err(Error::new(ErrorKind::AlreadyExists, format!("blob {key} already exists")).with_source(e))
            }
            Err(e) => Err(io_error("put", key, e)),
        }
    }

    /// The bytes of `key`, or `None`. One `read` of one open file: a concurrent rename
    /// replaces the name, not the file being read, so the bytes are one version.
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match fs::read(self.path_of(key)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if is_absent(e.kind()) => Ok(None),
            Err(e) => Err(io_error("get", key, e)),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.read(key)?.ok_or_else(|| Error::not_found(format!("blob {key}")))
    }

    fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        match fs::metadata(self.path_of(key)) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if is_absent(e.kind()) => return Ok(None),
            Err(e) => return Err(io_error("head", key, e)),
        }
        // The ETag is a content hash: read the bytes (size from them, so both describe one version).
        Ok(self.read(key)?.map(|b| BlobMeta {
            size: b.len() as u64,
            content_type: None,
            etag: Some(etag_of(&Checksum::of_bytes(&b))),
        }))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let _lock = self.file_lock(key);
        let path = self.path_of(key);
        match fs::remove_file(&path) {
            Ok(()) => {
                let dir = path.parent().unwrap_or(&self.root);
                self.sync_dir(dir).map_err(|e| io_error("delete", key, e))
            }
            Err(e) if is_absent(e.kind()) || path.is_dir() => Ok(()),
            Err(e) => Err(io_error("delete", key, e)),
        }
    }
}

/// Errors meaning "no blob at this key" (missing, or a directory / under a file).
fn is_absent(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory)
}

fn not_both(key: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("blob {key}: a local directory cannot hold both a key and keys under it (`a/b` and `a/b/c`)"),
    )
}

/// Maps an IO error, deciding retryability here.
fn io_error(op: &str, key: &str, e: io::Error) -> Error {
    use io::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::AlreadyExists => ErrorKind::AlreadyExists,
        K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::Config,
        K::InvalidFilename => ErrorKind::Validation,
        K::StorageFull | K::QuotaExceeded | K::Interrupted | K::TimedOut | K::WouldBlock | K::ResourceBusy => {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("local blob {op} {key}: {e}")).with_source(e)
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put_with_etag(&self, key: &str, bytes: Vec<u8>, options: &PutOptions) -> Result<PutResult> {
        check_key(key)?;
        let checksum = Checksum::of_bytes(&bytes);
        let (key, mode) = (key.to_owned(), options.mode.clone());
        self.blocking(move |s| s.put(&key, &bytes, &mode)).await?;
        Ok(PutResult { etag: Some(etag_of(&checksum)), checksum })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        check_key(key)?;
        let key = key.to_owned();
        self.blocking(move |s| s.get(&key)).await
    }

    async fn get_with_etag(&self, key: &str) -> Result<BlobBody> {
        let bytes = self.get(key).await?;
        let etag = Some(etag_of(&Checksum::of_bytes(&bytes)));
        Ok(BlobBody { bytes, etag })
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        check_key(key)?;
        let key = key.to_owned();
        self.blocking(move |s| s.head(&key)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let key = key.to_owned();
        self.blocking(move |s| s.delete(&key)).await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<BlobPage> {
        check_prefix(prefix)?;
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.blocking(move |s| {
            list::page(&s.root, &prefix, after.as_deref(), limit).map_err(|e| io_error("list", &prefix, e))
        })
        .await
    }

    async fn health(&self) -> Result<()> {
        self.blocking(|s| match fs::metadata(&s.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::unavailable(format!("blob directory {} is not a directory", s.root.display()))),
            Err(e) => Err(Error::unavailable(format!("blob directory {}: {e}", s.root.display())).with_source(e)),
        })
        .await
    }

    fn capabilities(&self) -> BlobCapabilities {
        // Compare-and-swap is atomic within one process only (see the module docs).
        BlobCapabilities { presign: false, durable: true, content_types: false, etags: true, conditional_put: true }
    }
}
