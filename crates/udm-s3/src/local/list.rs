//! Listing a [`LocalBlobs`](super::LocalBlobs) directory: keys in lexicographic order, one page
//! at a time, without recursion.
//!
//! A depth-first walk with an explicit stack visits each directory's entries sorted by the key
//! text they stand for (a directory `a` as `a/`), which yields keys in lexicographic order, so
//! the walk stops as soon as the page is full. Subtrees entirely outside the prefix or at or
//! before `after` are never read. Depth is bounded: no key is longer than [`MAX_KEY_BYTES`].

use std::fs;
use std::io;
use std::path::Path;

use udm_core::ports::{BlobPage, MAX_KEY_BYTES, check_key};

/// One entry met by the walk: a key, or a directory as `dir/` (relative to the root).
struct Item {
    key: String,
    dir: bool,
}

/// Up to `limit` keys starting with `prefix`, strictly after `after`, in order.
pub(super) fn page(root: &Path, prefix: &str, after: Option<&str>, limit: usize) -> io::Result<BlobPage> {
    let start = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
    let mut stack = vec![Item { key: start.to_owned(), dir: true }];
    let mut keys = Vec::new();
    while let Some(item) = stack.pop() {
        if !item.dir {
            keys.push(item.key);
            if keys.len() > limit {
                break;
            }
            continue;
        }
        let mut children = read_dir(root, &item.key)?;
        children.retain(|c| wanted(c, prefix, after));
        // Largest first, so the smallest is popped next.
        children.sort_unstable_by(|a, b| b.key.cmp(&a.key));
        stack.extend(children);
    }
    Ok(BlobPage::from_overfetch(keys, limit))
}

/// Whether the walk needs `item`: a key in range, or a directory that may hold one.
fn wanted(item: &Item, prefix: &str, after: Option<&str>) -> bool {
    if !item.dir {
        return item.key.starts_with(prefix)
            && after.is_none_or(|a| item.key.as_str() > a)
            && check_key(&item.key).is_ok();
    }
    let d = item.key.as_str();
    let near_prefix = d.starts_with(prefix) || prefix.starts_with(d);
    // Every key under `d` sorts before `after` when `d` does and `after` is not under `d`.
    let all_before = after.is_some_and(|a| d < a && !a.starts_with(d));
    near_prefix && !all_before && d.len() < MAX_KEY_BYTES
}

/// The entries of directory `dir_key` (`""` = the root) that can be part of keys.
fn read_dir(root: &Path, dir_key: &str) -> io::Result<Vec<Item>> {
    let mut path = root.to_path_buf();
    path.extend(dir_key.split('/').filter(|s| !s.is_empty()));
    let entries = match fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut items = Vec::new();
    for entry in entries {
        let entry = entry?;
        // Names that cannot be a key segment (temporary files, non-UTF-8) are not blobs.
        let Some(name) = entry.file_name().to_str().filter(|n| check_key(n).is_ok()).map(str::to_owned) else {
            continue;
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            items.push(Item { key: format!("{dir_key}{name}/"), dir: true });
        } else if kind.is_file() {
            items.push(Item { key: format!("{dir_key}{name}"), dir: false });
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, key: &str) {
        let p = root.join(key);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn keys_come_in_byte_order_across_directories() {
        let dir = tempfile::tempdir().unwrap();
        // `a.x` < `a/y` < `a0` as strings, although the directory `a` sorts before `a.x`.
        for k in ["a0", "a/y", "a.x", "a/b/c", "a-b", "b", ".udm-tmp 1.2"] {
            touch(dir.path(), k);
        }
        let all = page(dir.path(), "", None, 100).unwrap();
        assert_eq!(all.keys, ["a-b", "a.x", "a/b/c", "a/y", "a0", "b"]);
        assert_eq!(all.next, None);
        let p = page(dir.path(), "a", Some("a.x"), 2).unwrap();
        assert_eq!(p.keys, ["a/b/c", "a/y"]);
        assert_eq!(p.next.as_deref(), Some("a/y"));
        assert_eq!(page(dir.path(), "a/", None, 10).unwrap().keys, ["a/b/c", "a/y"]);
        assert_eq!(page(dir.path(), "a/b/c", None, 10).unwrap().keys, ["a/b/c"]);
        assert!(page(dir.path(), "zz/", None, 10).unwrap().keys.is_empty());
    }
}
