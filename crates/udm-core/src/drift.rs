//! Three-way drift detection: desired (MongoDB) vs shadow (S3) vs, optionally, an actual
//! state the caller supplies.
//!
//! For one object, [`detect_drift`] reports, for the shadow and for the actual state:
//! - `Missing`: a path desired has that the other lacks;
//! - `Extra`: a path the other has that desired lacks;
//! - `Modified`: both have it, with different values (expected = desired's, found = other's);
//! - `ChecksumMismatch`: a side's recorded checksum does not match its data (corruption).
//!
//! [`detect_collection_drift`] does the same per object id, with paths prefixed by the id,
//! and whole objects missing from one side reported once at the object's path.
//!
//! Checksums, the diff and the copies of reported values are all iterative, so drift of any
//! nesting depth cannot overflow the stack.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{Checksum, clone_value};
use crate::diff::{ChangeKind, diff, escape_segment};

/// Which state was compared against desired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftSource {
    /// The desired state itself (only for its own checksum mismatches).
    Desired,
    /// The S3 shadow.
    Shadow,
    /// The caller-supplied actual state.
    Actual,
}

/// What kind of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Desired has it, the source does not.
    Missing,
    /// The source has it, desired does not.
    Extra,
    /// Both have it, values differ.
    Modified,
    /// The recorded checksum does not match the data (or the stored copy is unreadable).
    ChecksumMismatch,
    /// A snapshot no committed version names, older than the grace period (a failed
    /// commit's leftover; orphan GC removes it).
    OrphanSnapshot,
    /// The metadata store's head and the shadow's latest version differ (OV, CV, checksum
    /// or snapshot).
    HeadMismatch,
    /// The shadow lags: committed CVs the shadow log (and so the version index) lacks.
    CvGap,
    /// Versions retention removed on purpose: reported, but not drift.
    Pruned,
}

/// One drift finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftItem {
    /// Where it was found.
    pub source: DriftSource,
    /// What kind.
    pub kind: DriftKind,
    /// JSON Pointer (prefixed with `/<object id>` in collection reports).
    pub path: String,
    /// Desired's value (or the recorded checksum for checksum mismatches).
    pub expected: Option<Value>,
    /// The source's value (or the computed checksum).
    pub found: Option<Value>,
}

/// Counts per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftSummary {
    /// `Missing` items.
    pub missing: usize,
    /// `Extra` items.
    pub extra: usize,
    /// `Modified` items.
    pub modified: usize,
    /// `ChecksumMismatch` items.
    pub checksum_mismatch: usize,
    /// `OrphanSnapshot` items.
    pub orphan_snapshot: usize,
    /// `HeadMismatch` items.
    pub head_mismatch: usize,
    /// `CvGap` items.
    pub cv_gap: usize,
    /// `Pruned` items (intentional: they do not make a report drifted).
    pub pruned: usize,
    /// Whether nothing drifted (`Pruned` items do not count).
    pub in_sync: bool,
}

impl DriftSummary {
    /// Counts `item` in.
    pub fn add(&mut self, item: &DriftItem) {
        match item.kind {
            DriftKind::Missing => self.missing += 1,
            DriftKind::Extra => self.extra += 1,
            DriftKind::Modified => self.modified += 1,
            DriftKind::ChecksumMismatch => self.checksum_mismatch += 1,
            DriftKind::OrphanSnapshot => self.orphan_snapshot += 1,
            DriftKind::HeadMismatch => self.head_mismatch += 1,
            DriftKind::CvGap => self.cv_gap += 1,
            DriftKind::Pruned => self.pruned += 1,
        }
        self.in_sync = self.drifted() == 0;
    }

    /// Items that are drift (all but `Pruned`).
    pub fn drifted(&self) -> usize {
        self.missing
            + self.extra
            + self.modified
            + self.checksum_mismatch
            + self.orphan_snapshot
            + self.head_mismatch
            + self.cv_gap
    }
}

/// A drift report: every item and a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Every finding, shadow first, then actual.
    pub items: Vec<DriftItem>,
    /// Counts.
    pub summary: DriftSummary,
}

impl DriftReport {
    fn from_items(items: Vec<DriftItem>) -> Self {
        let mut summary = DriftSummary { in_sync: true, ..DriftSummary::default() };
        for i in &items {
            summary.add(i);
        }
        Self { items, summary }
    }
}

/// A stored state: its data and, if recorded, the checksum it should hash to.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The data.
    pub data: &'a Value,
    /// The checksum recorded for it, if any.
    pub recorded: Option<&'a Checksum>,
}

impl<'a> Observed<'a> {
    /// Data with no recorded checksum.
    pub fn plain(data: &'a Value) -> Self {
        Self { data, recorded: None }
    }
}

/// Drift of one object.
pub fn detect_drift(desired: Observed<'_>, shadow: Observed<'_>, actual: Option<&Value>) -> DriftReport {
    let mut items = Vec::new();
    object_items("", desired, shadow, actual, &mut items);
    DriftReport::from_items(items)
}

fn object_items(
    prefix: &str,
    desired: Observed<'_>,
    shadow: Observed<'_>,
    actual: Option<&Value>,
    items: &mut Vec<DriftItem>,
) {
    checksum_item(prefix, DriftSource::Desired, desired, items);
    checksum_item(prefix, DriftSource::Shadow, shadow, items);
    diff_items(prefix, DriftSource::Shadow, desired.data, shadow.data, items);
    if let Some(actual) = actual {
        diff_items(prefix, DriftSource::Actual, desired.data, actual, items);
    }
}

fn checksum_item(prefix: &str, source: DriftSource, side: Observed<'_>, items: &mut Vec<DriftItem>) {
    let Some(recorded) = side.recorded else { return };
    let computed = Checksum::of_json(side.data);
    if *recorded != computed {
        items.push(DriftItem {
            source,
            kind: DriftKind::ChecksumMismatch,
            path: prefix.to_owned(),
            expected: Some(recorded.to_string().into()),
            found: Some(computed.to_string().into()),
        });
    }
}

/// The paths where `other` (from `source`) differs from `desired`, as items under `prefix`
/// (a JSON Pointer, e.g. `/<object id>`).
pub fn diff_items(prefix: &str, source: DriftSource, desired: &Value, other: &Value, items: &mut Vec<DriftItem>) {
    for c in diff(desired, other) {
        let kind = match c.kind {
            ChangeKind::Removed => DriftKind::Missing,
            ChangeKind::Added => DriftKind::Extra,
            ChangeKind::Modified => DriftKind::Modified,
        };
        items.push(DriftItem { source, kind, path: format!("{prefix}{}", c.path), expected: c.before, found: c.after });
    }
}

/// Drift of a collection: per object id, desired vs shadow vs optional actual.
pub fn detect_collection_drift(
    desired: &BTreeMap<String, Observed<'_>>,
    shadow: &BTreeMap<String, Observed<'_>>,
    actual: Option<&BTreeMap<String, Value>>,
) -> DriftReport {
    let mut items = Vec::new();
    for (id, d) in desired {
        let prefix = format!("/{}", escape_segment(id));
        match shadow.get(id) {
            Some(s) => object_items(&prefix, *d, *s, None, &mut items),
            None => items.push(whole(DriftSource::Shadow, DriftKind::Missing, &prefix, Some(d.data), None)),
        }
    }
    for (id, s) in shadow.iter().filter(|(id, _)| !desired.contains_key(*id)) {
        let prefix = format!("/{}", escape_segment(id));
        items.push(whole(DriftSource::Shadow, DriftKind::Extra, &prefix, None, Some(s.data)));
    }
    if let Some(actual) = actual {
        for (id, d) in desired {
            let prefix = format!("/{}", escape_segment(id));
            match actual.get(id) {
                Some(a) => diff_items(&prefix, DriftSource::Actual, d.data, a, &mut items),
                None => items.push(whole(DriftSource::Actual, DriftKind::Missing, &prefix, Some(d.data), None)),
            }
        }
        for (id, a) in actual.iter().filter(|(id, _)| !desired.contains_key(*id)) {
            let prefix = format!("/{}", escape_segment(id));
            items.push(whole(DriftSource::Actual, DriftKind::Extra, &prefix, None, Some(a)));
        }
    }
    DriftReport::from_items(items)
}

/// One item for a whole object (or value) at `path`.
pub fn whole(
    source: DriftSource,
    kind: DriftKind,
    path: &str,
    expected: Option<&Value>,
    found: Option<&Value>,
) -> DriftItem {
    DriftItem {
        source,
        kind,
        path: path.to_owned(),
        expected: expected.map(clone_value),
        found: found.map(clone_value),
    }
}

/// Re-orders object ids that arrive in plain byte order (how metadata stores list them) into
/// the order of `<id>/` (how a blob store lists the objects' key prefixes), so the two can be
/// merge-joined. The orders differ only where an id is a prefix of another followed by a
/// byte below `/` (`a` before `a-b` plainly, but `a-b/` before `a/`): such an id is held back
/// until the ids it must follow have passed. It holds at most one chain of ids, each a
/// prefix of the next, so memory is bounded by the longest id, not by the number of ids.
///
/// ```
/// let mut order = udm_core::drift::SlashOrder::default();
/// let mut out = Vec::new();
/// for id in ["a", "a-b", "a0"] {
///     out.extend(order.push(id.to_owned()));
/// }
/// out.extend(order.finish());
/// assert_eq!(out, ["a-b", "a", "a0"]);
/// ```
#[derive(Debug, Default)]
pub struct SlashOrder {
    held: Vec<String>,
}

impl SlashOrder {
    /// Takes the next id (ids must come in ascending byte order); returns the ids now due,
    /// in `<id>/` order.
    pub fn push(&mut self, id: String) -> Vec<String> {
        let mut due = Vec::new();
        while let Some(top) = self.held.last() {
            let waits = id.len() > top.len() && id.starts_with(top.as_str()) && id.as_bytes()[top.len()] < b'/';
            if waits {
                break;
            }
            due.extend(self.held.pop());
        }
        self.held.push(id);
        due
    }

    /// The ids still held, in `<id>/` order (at the end of the input).
    pub fn finish(&mut self) -> Vec<String> {
        let mut due = Vec::with_capacity(self.held.len());
        while let Some(id) = self.held.pop() {
            due.push(id);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slash_order_matches_a_blob_listing_of_the_prefixes() {
        let alphabet = ['-', '.', '0', 'a', '~'];
        let mut all: Vec<String> = Vec::new();
        for len in 1..=3u32 {
            for n in 0..alphabet.len().pow(len) {
                let (mut n, mut id) = (n, String::new());
                for _ in 0..len {
                    id.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                all.push(id);
            }
        }
        let mut seed = 7u64;
        for round in 0..200 {
            let mut ids: Vec<String> = all
                .iter()
                .filter(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    round == 0 || (seed >> 33).is_multiple_of(3)
                })
                .cloned()
                .collect();
            ids.sort();
            let mut order = SlashOrder::default();
            let mut got = Vec::new();
            for id in &ids {
                got.extend(order.push(id.clone()));
                assert!(order.held.len() <= 3, "held: {:?}", order.held);
            }
            got.extend(order.finish());
            let mut want = ids.clone();
            want.sort_by_key(|id| format!("{id}/"));
            assert_eq!(got, want, "round {round}");
        }
    }

    #[test]
    fn three_way_report() {
        let desired = json!({"name": "a", "tags": ["x"], "only_desired": 1});
        let shadow = json!({"name": "b", "tags": ["x"], "only_shadow": 2});
        let actual = json!({"name": "a", "tags": ["x"], "only_desired": 1});
        let r = detect_drift(Observed::plain(&desired), Observed::plain(&shadow), Some(&actual));
        assert_eq!(
            r.summary,
            DriftSummary { missing: 1, extra: 1, modified: 1, in_sync: false, ..DriftSummary::default() }
        );
        assert!(r.items.iter().all(|i| i.source == DriftSource::Shadow));
        let m = r.items.iter().find(|i| i.kind == DriftKind::Modified).unwrap();
        assert_eq!(
            (m.path.as_str(), m.expected.clone(), m.found.clone()),
            ("/name", Some(json!("a")), Some(json!("b")))
        );
    }

    #[test]
    fn checksum_mismatch_is_reported() {
        let d = json!({"a": 1});
        let wrong = Checksum::of_json(&json!({"a": 2}));
        let r = detect_drift(Observed::plain(&d), Observed { data: &d, recorded: Some(&wrong) }, None);
        assert_eq!(r.summary.checksum_mismatch, 1);
        assert_eq!(r.items[0].source, DriftSource::Shadow);
    }

    #[test]
    fn collection_drift_names_objects() {
        let (a, b) = (json!({"v": 1}), json!({"v": 2}));
        let desired = BTreeMap::from([("o1".to_owned(), Observed::plain(&a)), ("o2".to_owned(), Observed::plain(&a))]);
        let shadow = BTreeMap::from([("o1".to_owned(), Observed::plain(&b)), ("o3".to_owned(), Observed::plain(&a))]);
        let r = detect_collection_drift(&desired, &shadow, None);
        let got: Vec<_> = r.items.iter().map(|i| (i.kind, i.path.as_str())).collect();
        assert_eq!(got, [(DriftKind::Modified, "/o1/v"), (DriftKind::Missing, "/o2"), (DriftKind::Extra, "/o3")]);
    }
}
