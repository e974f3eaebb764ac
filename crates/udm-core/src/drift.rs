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
    /// The recorded checksum does not match the data.
    ChecksumMismatch,
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
    /// Whether nothing drifted.
    pub in_sync: bool,
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
        let count = |k| items.iter().filter(|i| i.kind == k).count();
        let summary = DriftSummary {
            missing: count(DriftKind::Missing),
            extra: count(DriftKind::Extra),
            modified: count(DriftKind::Modified),
            checksum_mismatch: count(DriftKind::ChecksumMismatch),
            in_sync: items.is_empty(),
        };
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

fn diff_items(prefix: &str, source: DriftSource, desired: &Value, other: &Value, items: &mut Vec<DriftItem>) {
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

fn whole(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn three_way_report() {
        let desired = json!({"name": "a", "tags": ["x"], "only_desired": 1});
        let shadow = json!({"name": "b", "tags": ["x"], "only_shadow": 2});
        let actual = json!({"name": "a", "tags": ["x"], "only_desired": 1});
        let r = detect_drift(Observed::plain(&desired), Observed::plain(&shadow), Some(&actual));
        assert_eq!(r.summary, DriftSummary { missing: 1, extra: 1, modified: 1, checksum_mismatch: 0, in_sync: false });
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
