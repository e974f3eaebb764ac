//! Retention: which versions of an object may be pruned.
//!
//! A version is a pruning candidate when it is older than `days` (relative to `now`) or is not
//! among the newest `max_versions_per_item`. Candidates are then protected, never pruned, if:
//! - it is the head (the newest version);
//! - a retained RESTORE version was restored from it (transitively: what a kept restore
//!   depends on is kept, and so on).
//!
//! With neither limit set nothing is pruned.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::version::Ov;

const MS_PER_DAY: i64 = 86_400_000;

/// Retention limits (both optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    /// Versions older than this many days may be pruned.
    pub days: Option<u32>,
    /// At most this many versions per object are kept.
    pub max_versions_per_item: Option<u32>,
}

/// What retention needs to know about one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionInfo {
    /// Its OV.
    pub ov: Ov,
    /// Its timestamp.
    pub at: Timestamp,
    /// For RESTORE versions, the OV they copied.
    pub restored_from: Option<Ov>,
}

/// The OVs that may be pruned, ascending. `versions` may come in any order.
pub fn prunable(versions: &[VersionInfo], policy: &RetentionPolicy, now: Timestamp) -> Vec<Ov> {
    if policy.days.is_none() && policy.max_versions_per_item.is_none() {
        return Vec::new();
    }
    let mut sorted = versions.to_vec();
    sorted.sort_by_key(|v| v.ov);
    let Some(head) = sorted.last().map(|v| v.ov) else { return Vec::new() };
    let cutoff = policy.days.map(|d| now.plus_millis(-i64::from(d) * MS_PER_DAY));
    let keep_newest = policy.max_versions_per_item.map(|m| m.max(1) as usize);
    let n = sorted.len();
    let mut pruned: BTreeSet<Ov> = sorted
        .iter()
        .enumerate()
        .filter(|(i, v)| {
            let too_old = cutoff.is_some_and(|c| v.at < c);
            let too_many = keep_newest.is_some_and(|k| n - i > k);
            v.ov != head && (too_old || too_many)
        })
        .map(|(_, v)| v.ov)
        .collect();
    // Protect what kept restores depend on, to a fixpoint (newest first covers chains).
    for v in sorted.iter().rev() {
        if !pruned.contains(&v.ov)
            && let Some(src) = v.restored_from
        {
            pruned.remove(&src);
        }
    }
    pruned.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ov: u64, day: i64, from: Option<u64>) -> VersionInfo {
        VersionInfo {
            ov: Ov::new(ov).unwrap(),
            at: Timestamp::from_millis(day * MS_PER_DAY).unwrap(),
            restored_from: from.map(|f| Ov::new(f).unwrap()),
        }
    }

    fn ovs(x: Vec<Ov>) -> Vec<u64> {
        x.into_iter().map(Ov::get).collect()
    }

    #[test]
    fn max_per_item_keeps_newest_and_restore_sources() {
        let vs = [v(1, 0, None), v(2, 1, None), v(3, 2, None), v(4, 3, Some(1)), v(5, 4, None)];
        let p = RetentionPolicy { days: None, max_versions_per_item: Some(2) };
        assert_eq!(ovs(prunable(&vs, &p, Timestamp::EPOCH)), [2, 3]);
    }

    #[test]
    fn days_never_prunes_head() {
        let vs = [v(1, 0, None), v(2, 1, None)];
        let p = RetentionPolicy { days: Some(1), max_versions_per_item: None };
        let now = Timestamp::from_millis(100 * MS_PER_DAY).unwrap();
        assert_eq!(ovs(prunable(&vs, &p, now)), [1]);
        assert!(prunable(&vs, &RetentionPolicy::default(), now).is_empty());
    }

    #[test]
    fn restore_chains_are_protected() {
        // 5 restores 3, 3 restores 1: keeping 5 keeps 3 keeps 1.
        let vs = [v(1, 0, None), v(2, 0, None), v(3, 0, Some(1)), v(4, 0, None), v(5, 0, Some(3))];
        let p = RetentionPolicy { days: None, max_versions_per_item: Some(1) };
        assert_eq!(ovs(prunable(&vs, &p, Timestamp::EPOCH)), [2, 4]);
    }
}
