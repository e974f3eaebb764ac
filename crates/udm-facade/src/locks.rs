//! [`KeyedLocks`]: one async lock per key, for keys that come and go (objects, collections).
//!
//! A key's lock lives in the map only while somebody holds it or waits for it, so the map
//! stays as small as the work in flight. Waiters are served in arrival order (tokio's mutex
//! is fair), so no holder of a busy key starves.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct KeyedLocks<K>(Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>);

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

/// The turn of one key: released (and the key's entry dropped when nobody else wants it) on
/// drop, also when the future holding it is cancelled.
pub(crate) struct Turn<'a, K: Hash + Eq> {
    locks: &'a KeyedLocks<K>,
    key: Option<K>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    /// Waits for `key`'s turn.
    pub(crate) async fn lock(&self, key: K) -> Turn<'_, K> {
        let lock = {
            let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            all.entry(key.clone()).or_default().clone()
        };
        // Dropped while waiting: `lock_owned` gives its clone back, so the entry's count is
        // right for whoever releases next.
        let guard = lock.lock_owned().await;
        Turn { locks: self, key: Some(key), guard: Some(guard) }
    }

    /// Keys with a holder or a waiter (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl<K: Hash + Eq> Drop for Turn<'_, K> {
    fn drop(&mut self) {
        let mut all = self.locks.0.lock().unwrap_or_else(PoisonError::into_inner);
        drop(self.guard.take());
        if let Some(key) = self.key.take()
            && let Some(lock) = all.get(&key)
            // Only the map holds it now: nobody waits for this key.
            && Arc::strong_count(lock) == 1
        {
            all.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_per_key_and_no_entry_left_behind() {
        let locks: Arc<KeyedLocks<u8>> = Arc::default();
        let inside: Arc<[std::sync::atomic::AtomicUsize; 2]> = Arc::default();
        let tasks: Vec<_> = (0..32u8)
            .map(|i| {
                let (locks, inside) = (locks.clone(), inside.clone());
                tokio::spawn(async move {
                    let _turn = locks.lock(i % 2).await;
                    let here = &inside[usize::from(i % 2)];
                    assert_eq!(here.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0, "one holder per key");
                    tokio::task::yield_now().await;
                    here.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(locks.len(), 0, "every entry is dropped with its last turn");
        // A waiter that gives up leaves nothing behind either.
        let held = locks.lock(7).await;
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock(7)).await;
        assert!(gave_up.is_err());
        drop(held);
        assert_eq!(locks.len(), 0);
    }
}
