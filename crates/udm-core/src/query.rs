//! Queries over heads and histories: filters, sort, cursor pagination.
//!
//! [`select_heads`] is the reference implementation of [`HeadQuery`] semantics; stores that
//! hold heads in memory or a key-value store use it directly, and the MongoDB adapter must
//! give the same answers (the conformance suite checks).
//!
//! Sort order is total: by the sort prop's value ([`sort_cmp`]: absent < null < booleans <
//! numbers < strings < arrays/objects by canonical bytes), then by object id. A cursor names
//! the last item returned (its sort value and id); the next page starts strictly after it.

use std::cmp::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::canonical::canonical_bytes;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::predicate::{Predicate, json_cmp};
use crate::version::{Head, Ov};

/// Largest page any query returns.
pub const MAX_PAGE: usize = 1000;

/// Longest `sort_by` path, in bytes.
pub const MAX_SORT_PATH_BYTES: usize = 256;

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor of the next page; `None` when this was the last.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` items fetched in order: the extra one only says there is
    /// more; the cursor is `cursor` of the page's last item then.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, cursor: impl FnOnce(&T) -> String) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more { items.last().map(cursor) } else { None };
        Page { items, next }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    /// Smallest first.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

/// A query over one collection's heads.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadQuery {
    /// Filter over indexed props (full dotted paths as keys).
    pub filter: Predicate,
    /// Include logically deleted objects.
    pub include_deleted: bool,
    /// Sort by this indexed prop (then id); `None` sorts by id only.
    pub sort_by: Option<String>,
    /// Direction.
    pub order: Order,
    /// Cursor from the previous page.
    pub after: Option<String>,
    /// Page size (1..=[`MAX_PAGE`]).
    pub limit: usize,
}

impl Default for HeadQuery {
    fn default() -> Self {
        Self {
            filter: Predicate::True,
            include_deleted: false,
            sort_by: None,
            order: Order::Asc,
            after: None,
            limit: 100,
        }
    }
}

/// A query over one object's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Start strictly after this OV (in `order`).
    pub after: Option<Ov>,
    /// Page size (1..=[`MAX_PAGE`]).
    pub limit: usize,
    /// Oldest or newest first.
    pub order: Order,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        Self { after: None, limit: 100, order: Order::Asc }
    }
}

/// Checks a page size.
pub fn check_limit(limit: usize) -> Result<()> {
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(())
    } else {
        Err(Error::validation("limit", format!("must be 1..={MAX_PAGE}, got {limit}")))
    }
}

/// Checks a sort path: like an indexed prop path ([`check_path`](crate::metamap::check_path):
/// non-empty segments not starting with `$`, not into `_system`) and at most
/// [`MAX_SORT_PATH_BYTES`] long. `None` (sort by id) is always fine.
pub fn check_sort_by(sort_by: Option<&str>) -> Result<()> {
    let Some(path) = sort_by else { return Ok(()) };
    if path.len() > MAX_SORT_PATH_BYTES {
        return Err(Error::validation(
            "sort_by",
            format!("must be at most {MAX_SORT_PATH_BYTES} bytes, got {}", path.len()),
        ));
    }
    crate::metamap::check_path(path).map_err(|m| Error::validation("sort_by", m))
}

/// Checks everything about a head query that does not need the data: page size and sort path.
/// Stores call it (through [`select_heads`] or directly) before touching their indexes.
pub fn check_head_query(query: &HeadQuery) -> Result<()> {
    check_limit(query.limit)?;
    check_sort_by(query.sort_by.as_deref())
}

fn type_rank(v: Option<&Value>) -> u8 {
    match v {
        None => 0,
        Some(Value::Null) => 1,
        Some(Value::Bool(_)) => 2,
        Some(Value::Number(_)) => 3,
        Some(Value::String(_)) => 4,
        Some(Value::Array(_) | Value::Object(_)) => 5,
    }
}

/// The total order of sort values (absent first).
pub fn sort_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    type_rank(a).cmp(&type_rank(b)).then_with(|| match (a, b) {
        (Some(x), Some(y)) => json_cmp(x, y).unwrap_or_else(|| canonical_bytes(x).cmp(&canonical_bytes(y))),
        _ => Ordering::Equal,
    })
}

/// A decoded cursor: the last item's sort value (absent = `None`) and id.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Sort value of the last item.
    pub value: Option<Value>,
    /// Id of the last item.
    pub id: ObjectId,
}

impl Cursor {
    /// Opaque text form.
    pub fn encode(&self) -> String {
        let v = json!([self.value.is_some(), self.value, self.id]);
        URL_SAFE_NO_PAD.encode(canonical_bytes(&v))
    }

    /// Parses the text form; anything malformed is a validation error.
    pub fn decode(s: &str) -> Result<Self> {
        let bad = || Error::validation("after", "malformed cursor");
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let (present, value, id): (bool, Value, ObjectId) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        Ok(Self { value: present.then_some(value), id })
    }

    /// Orders an item (sort value, id) against this cursor position, ascending.
    pub fn cmp_item(&self, value: Option<&Value>, id: &ObjectId) -> Ordering {
        sort_cmp(value, self.value.as_ref()).then_with(|| id.cmp(&self.id))
    }
}

/// Applies `query` to `heads` (any order): filter, deleted, sort, cursor, limit.
pub fn select_heads(heads: impl IntoIterator<Item = Head>, query: &HeadQuery) -> Result<Page<Head>> {
    check_head_query(query)?;
    let after = query.after.as_deref().map(Cursor::decode).transpose()?;
    let sort_value = |h: &Head| query.sort_by.as_ref().and_then(|p| h.indexed.get(p)).cloned();
    let mut items: Vec<(Option<Value>, Head)> = heads
        .into_iter()
        .filter(|h| query.include_deleted || !h.is_deleted())
        .filter(|h| query.filter.matches_flat(&h.indexed))
        .map(|h| (sort_value(&h), h))
        .filter(|(v, h)| {
            after.as_ref().is_none_or(|c| {
                let o = c.cmp_item(v.as_ref(), &h.key.id);
                if query.order == Order::Asc { o == Ordering::Greater } else { o == Ordering::Less }
            })
        })
        .collect();
    items.sort_by(|(va, a), (vb, b)| {
        let o = sort_cmp(va.as_ref(), vb.as_ref()).then_with(|| a.key.id.cmp(&b.key.id));
        if query.order == Order::Asc { o } else { o.reverse() }
    });
    let more = items.len() > query.limit;
    items.truncate(query.limit);
    let next = match items.last() {
        Some((v, h)) if more => Some(Cursor { value: v.clone(), id: h.key.id.clone() }.encode()),
        _ => None,
    };
    Ok(Page { items: items.into_iter().map(|(_, h)| h).collect(), next })
}

/// Cursor text of a history page that ended at `ov`.
pub fn history_cursor(ov: Ov) -> String {
    ov.get().to_string()
}

/// Parses a history cursor back into the OV to continue after.
pub fn parse_history_cursor(s: &str) -> Result<Ov> {
    s.parse::<u64>()
        .ok()
        .and_then(|n| Ov::new(n).ok())
        .ok_or_else(|| Error::validation("after", "malformed history cursor"))
}

/// Applies `query` to an object's version records given in ascending OV order.
pub fn select_history<T: Clone>(records: &[T], ov_of: impl Fn(&T) -> Ov, query: &HistoryQuery) -> Result<Page<T>> {
    check_limit(query.limit)?;
    let after = |r: &&T| match (query.after, query.order) {
        (None, _) => true,
        (Some(a), Order::Asc) => ov_of(r) > a,
        (Some(a), Order::Desc) => ov_of(r) < a,
    };
    let picked: Vec<T> = match query.order {
        Order::Asc => records.iter().filter(after).take(query.limit + 1).cloned().collect(),
        Order::Desc => records.iter().rev().filter(after).take(query.limit + 1).cloned().collect(),
    };
    Ok(Page::from_overfetch(picked, query.limit, |r| history_cursor(ov_of(r))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let c = Cursor { value: Some(json!({"a": [1, "x"]})), id: ObjectId::new("o1").unwrap() };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        let absent = Cursor { value: None, id: ObjectId::new("o2").unwrap() };
        assert_eq!(Cursor::decode(&absent.encode()).unwrap(), absent);
        for bad in ["", "!!", "bm90IGpzb24", &URL_SAFE_NO_PAD.encode(br#"[true,1,"../x"]"#)] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sort_order_is_total_across_types() {
        let vals = [
            None,
            Some(json!(null)),
            Some(json!(false)),
            Some(json!(-1)),
            Some(json!(2.5)),
            Some(json!("a")),
            Some(json!([])),
        ];
        for w in vals.windows(2) {
            assert_eq!(sort_cmp(w[0].as_ref(), w[1].as_ref()), Ordering::Less, "{w:?}");
        }
    }

    #[test]
    fn sort_by_is_checked_like_an_indexed_path() {
        let long = "a".repeat(10 * 1024);
        for bad in ["", "$x", "a..b", "a.$b", ".a", "a.", "_system.ov", long.as_str()] {
            let q = HeadQuery { sort_by: Some(bad.to_owned()), ..HeadQuery::default() };
            let e = select_heads(Vec::new(), &q).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Validation, "{bad:?}");
            assert_eq!(e.problems()[0].path, "sort_by", "{bad:?}");
        }
        assert!(check_sort_by(Some(&"a".repeat(MAX_SORT_PATH_BYTES))).is_ok());
        assert!(check_sort_by(Some(&"a".repeat(MAX_SORT_PATH_BYTES + 1))).is_err());
        assert!(check_sort_by(Some("address.city")).is_ok());
        assert!(check_sort_by(None).is_ok());
    }

    #[test]
    fn limits() {
        assert!(check_limit(0).is_err());
        assert!(check_limit(MAX_PAGE + 1).is_err());
        assert!(check_limit(1).is_ok());
    }
}
