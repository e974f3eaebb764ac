//! Closing a store: when its last handle goes, the write-ahead log is checkpointed and the
//! file compacted, so what it leaves on disk is the size of what it holds — redb alone only
//! trims free pages at the file's end, and a busy file is often half free space.

use udm_core::ErrorKind;
use udm_core::ports::{BlobStore, PutOptions};
use udm_embedded::EmbeddedStore;

/// `len` bytes that do not compress (xorshift), different for every `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn the_last_handle_compacts_the_file_and_keeps_every_live_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("udm-blobs.redb");
    let store = EmbeddedStore::open(&path).unwrap();
    let json = store.blobs("json").unwrap();
    let put = PutOptions::overwrite("application/octet-stream");
    for i in 0..600u64 {
        json.put(&format!("t/d/c/{i:04}"), noise(i, 6_000), &put).await.unwrap();
    }
    // The first 500 go: their pages are free but lie below the last 100 rows, so trimming
    // the file's end alone gives little back.
    for i in 0..500u64 {
        json.delete(&format!("t/d/c/{i:04}")).await.unwrap();
    }
    let open = len(&path);
    assert!(open > 3_000_000, "the rows took room: {open} bytes");

    let clone = store.clone();
    drop((store, json));
    assert_eq!(len(&path), open, "a clone keeps the file open and as it was");
    drop(clone);
    let closed = len(&path);
    assert!(closed < open / 3, "compacted on close: {closed} bytes of {open}");

    let store = EmbeddedStore::open(&path).unwrap();
    let json = store.blobs("json").unwrap();
    for i in 0..600u64 {
        let got = json.get(&format!("t/d/c/{i:04}")).await;
        if i < 500 {
            assert_eq!(got.unwrap_err().kind(), ErrorKind::NotFound, "row {i} stays deleted");
        } else {
            assert_eq!(got.unwrap(), noise(i, 6_000), "row {i} survives the compaction");
        }
    }
}
