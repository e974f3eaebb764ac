//! Group commit for independent writes ([`EmbeddedStore::write_grouped`]): writes that arrive
//! while another is committing wait, and the next commit applies them all in ONE redb write
//! transaction — one fsync for the lot instead of one each. The commit-log flusher puts a
//! log segment and up to 16 index segments and markers at once, so they share a sync instead
//! of queueing behind each other's. (Puts made before a metadata commit do not come here:
//! they are logged, see the `wal` and `stage` modules.)
//!
//! Each grouped operation must change nothing when it fails (check first, then write), so a
//! failing operation (a lost compare-and-swap, an existing key) answers its caller and the
//! others still commit; operations apply in arrival order, so a later one sees an earlier
//! one's write. If the commit itself fails, every operation of the group fails with it.
//! A lone write waits for nobody: the first arrival commits at once, and only writes that
//! arrive during that commit form the next group.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::WriteTransaction;
use tokio::sync::oneshot;
use udm_core::{Error, Result};

use crate::{EmbeddedStore, db_err};

/// One waiting operation and where its answer goes.
type Op = Box<dyn FnOnce(&WriteTransaction) -> Result<u64> + Send>;
/// An operation and where its answer goes.
type Waiting = (Op, oneshot::Sender<Result<u64>>);

/// The queue and whether a committer is running (one lock, so no write is left waiting with
/// no committer).
#[derive(Default)]
pub(crate) struct Group {
    state: Mutex<(Vec<Waiting>, bool)>,
    /// Transactions committed by groups ([`EmbeddedStore::grouped_commits`]).
    commits: AtomicU64,
}

impl EmbeddedStore {
    /// Runs `op` in a write transaction shared with the other grouped writes waiting at the
    /// time, committed (synced) together. `op` must change nothing when it returns an error.
    pub(crate) async fn write_grouped(
        &self,
        op: impl FnOnce(&WriteTransaction) -> Result<u64> + Send + 'static,
    ) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state =
                self.group.state.lock().map_err(|_| Error::internal("embedded store: group lock poisoned"))?;
            state.0.push((Box::new(op), tx));
            !std::mem::replace(&mut state.1, true)
        };
        if start {
            let (db, group, syncs) = (self.db.clone(), self.group.clone(), self.syncs.clone());
            tokio::task::spawn_blocking(move || commit_groups(db, &group, &syncs));
        }
        rx.await.map_err(|_| Error::internal("embedded store: the group committer stopped"))?
    }

    /// Write transactions committed for grouped writes so far (blob puts): fewer than the
    /// puts when they arrived together. For tests and diagnostics.
    pub fn grouped_commits(&self) -> u64 {
        self.group.commits.load(Ordering::Relaxed)
    }
}

/// Clears the running flag (failing whatever still waits) if the committer unwinds.
struct Running<'a>(&'a Group);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.0.clear();
            state.1 = false;
        }
    }
}

/// Commits groups until nobody waits. Whether another group waits is decided *before* a
/// group is answered, and the last group's answers go out only after this thread has let go
/// of the file — so a caller that drops its store on its answer can reopen the file at once.
fn commit_groups(db: Arc<crate::Db>, group: &Arc<Group>, syncs: &AtomicU64) {
    let running = Running(group);
    // The next group, taken under the lock that also retires the committer when none waits.
    let next = || match group.state.lock() {
        Ok(mut state) if state.0.is_empty() => {
            state.1 = false;
            Ok(None)
        }
        Ok(mut state) => Ok(Some(std::mem::take(&mut state.0))),
        Err(_) => Err(()),
    };
    let mut batch = match next() {
        Ok(Some(batch)) => batch,
        Ok(None) => {
            std::mem::forget(running);
            return;
        }
        Err(()) => return,
    };
    loop {
        let answers = commit_group(&db, batch, group, syncs);
        match next() {
            Ok(Some(more)) => {
                answer(answers);
                batch = more;
            }
            Ok(None) => {
                drop(db);
                answer(answers);
                std::mem::forget(running);
                return;
            }
            Err(()) => {
                answer(answers);
                return;
            }
        }
    }
}

/// Sends each operation its answer.
fn answer(answers: Vec<(Result<u64>, oneshot::Sender<Result<u64>>)>) {
    for (answer, reply) in answers {
        // A caller that gave up (its deadline passed) no longer listens.
        let _ = reply.send(answer);
    }
}

/// Commits one group in one write transaction; each operation's answer, to be sent.
fn commit_group(
    db: &redb::Database,
    batch: Vec<Waiting>,
    group: &Group,
    syncs: &AtomicU64,
) -> Vec<(Result<u64>, oneshot::Sender<Result<u64>>)> {
    let tx = match db.begin_write().map_err(db_err) {
        Ok(tx) => tx,
        Err(e) => return batch.into_iter().map(|(_, reply)| (Err(e.clone()), reply)).collect(),
    };
    let answers: Vec<(Result<u64>, oneshot::Sender<Result<u64>>)> =
        batch.into_iter().map(|(op, reply)| (op(&tx), reply)).collect();
    let committed = tx.commit().map_err(db_err);
    group.commits.fetch_add(1, Ordering::Relaxed);
    if committed.is_ok() {
        syncs.fetch_add(1, Ordering::Relaxed);
    }
    answers
        .into_iter()
        .map(|(answer, reply)| {
            let answer = match (&committed, answer) {
                (Err(e), Ok(_)) => Err(e.clone()),
                (_, answer) => answer,
            };
            (answer, reply)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use udm_core::ErrorKind;
    use udm_core::ports::{BlobStore, PutOptions};

    use crate::EmbeddedStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn puts_arriving_together_share_commits_and_each_gets_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("b.redb")).unwrap();
        let blobs = store.blobs("json").unwrap();
        let puts: Vec<_> = (0..64)
            .map(|i| {
                let b = blobs.clone();
                tokio::spawn(
                    async move { b.put(&format!("k/{i}"), vec![i as u8; 300], &PutOptions::create_json()).await },
                )
            })
            .collect();
        for p in puts {
            p.await.unwrap().unwrap();
        }
        for i in 0..64 {
            assert_eq!(blobs.get(&format!("k/{i}")).await.unwrap(), vec![i as u8; 300]);
        }
        let commits = store.grouped_commits();
        assert!((1..64).contains(&commits), "64 concurrent puts took {commits} commits");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn puts_before_a_commit_leave_their_sync_to_it_only_in_a_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let store = EmbeddedStore::open(&path).unwrap();
        let shared = store.blobs_sharing_commits("json").unwrap();
        let own = store.blobs("json").unwrap();
        let start = store.synced_commits();
        for i in 0..8u8 {
            shared.put(&format!("s/{i}"), vec![i; 300], &PutOptions::create_json().before_commit()).await.unwrap();
        }
        assert_eq!(store.synced_commits(), start, "puts before a commit sync with it, not on their own");
        assert_eq!(shared.get("s/7").await.unwrap(), vec![7; 300], "visible at once");
        shared.put("now", vec![9; 10], &PutOptions::create_json()).await.unwrap();
        assert_eq!(store.synced_commits(), start + 1, "a put without the hint syncs");
        own.put("own", vec![8; 10], &PutOptions::create_json().before_commit()).await.unwrap();
        assert_eq!(store.synced_commits(), start + 2, "a bucket not sharing the metadata's commits syncs every put");
        drop((shared, own, store));
        let reopened = EmbeddedStore::open(&path).unwrap().blobs("json").unwrap();
        for i in 0..8u8 {
            assert_eq!(
                reopened.get(&format!("s/{i}")).await.unwrap(),
                vec![i; 300],
                "made durable by the sync after it"
            );
        }
        assert_eq!(reopened.get("own").await.unwrap(), vec![8; 10]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_reopens_as_soon_as_the_last_put_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        for round in 0..100u8 {
            let store = EmbeddedStore::open(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
            let blobs = store.blobs("json").unwrap();
            blobs.put(&format!("k/{round}"), vec![round; 64], &PutOptions::create_json()).await.unwrap();
            // Dropped on the answer: the committer thread must no longer hold the file.
        }
        let blobs = EmbeddedStore::open(&path).unwrap().blobs("json").unwrap();
        assert_eq!(blobs.get("k/99").await.unwrap(), vec![99; 64]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_put_fails_alone_and_its_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("b.redb")).unwrap();
        let blobs = store.blobs("json").unwrap();
        let racers: Vec<_> = (0..16)
            .map(|i| {
                let b = blobs.clone();
                tokio::spawn(async move {
                    let put = b.put("same", vec![i as u8; 200], &PutOptions::create_json()).await;
                    let other = b.put(&format!("own/{i}"), vec![i as u8; 10], &PutOptions::create_json()).await;
                    (i, put, other)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for r in racers {
            let (i, put, other) = r.await.unwrap();
            other.unwrap();
            match put {
                Ok(_) => winners.push(i),
                Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one create-only put wins");
        assert_eq!(blobs.get("same").await.unwrap(), vec![winners[0] as u8; 200]);
        for i in 0..16 {
            assert_eq!(blobs.get(&format!("own/{i}")).await.unwrap(), vec![i as u8; 10]);
        }
    }
}
