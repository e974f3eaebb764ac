//! Listing heads sorted by an indexed prop, pushed down to MongoDB without changing the answer.
//!
//! UDM orders sort values absent < null < booleans < numbers < strings < arrays/objects
//! ([`udm_core::query::sort_cmp`]); BSON orders missing = null < numbers < strings < objects <
//! arrays < booleans < … < MaxKey, compares integers with doubles exactly where UDM compares
//! them as `f64`, and orders arrays by their smallest or largest element. So one BSON sort
//! cannot give UDM's order. But inside each of these **classes** of a head's sort key
//! (`sk.<prop>`, see [`crate::docs::sort_keys`]) the two orders agree exactly, ties broken
//! by `oid`:
//!
//! | class    | UDM values                         | BSON filter on the sort key      |
//! |----------|------------------------------------|----------------------------------|
//! | absent   | prop missing                       | `$exists: false`                 |
//! | null     | `null`                             | `$type: "null"`                  |
//! | bool     | `false`, `true`                    | `$type: "bool"`                  |
//! | number   | numbers in `(-2^53, 2^53)`         | `$gt: -2^53, $lt: 2^53`          |
//! | string   | strings (byte order both sides)    | `$type: "string"`                |
//!
//! Every other head (numbers outside that range, arrays and objects — stored as `MaxKey`) is
//! in the **rest**, which is fetched whole and ordered by the reference (it is empty in the
//! usual collection). A page asks the classes in UDM order (reversed for descending), each
//! sorted `{sk.<prop>, oid}` with a limit (the per-prop index
//! `{ctx, deleted, sk.<prop>, oid}` serves it), starting strictly after the cursor in the
//! cursor's class and skipping the classes before it, until `limit + 1` heads that pass the
//! exact predicate are found. The union of those and the rest contains the first
//! `limit + 1` heads of the reference order, so [`select_heads`] over it decides the page
//! exactly as it would over the whole collection. If a fetched head's stored value is not of
//! the class its query asked for (a head written before sort keys existed, or a server that
//! matches differently), the page falls back to a full scan rather than guess.

use bson::{Bson, Document, doc};
use futures_util::TryStreamExt;
use serde_json::Value;
use udm_core::query::{Cursor, HeadQuery, Order, Page, select_heads};
use udm_core::{Head, Result};

use crate::MongoStore;
use crate::docs::{EXACT_NUMBERS, exact_scalar, from_json, sort_key_field, sort_key_name, to_bson};
use crate::error::classify;
use crate::meta::merge_flat;

/// A sort value's place in UDM's order, in that order. Pushed-down classes and the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Absent,
    Null,
    Bool,
    NegativeRest,
    Number,
    PositiveRest,
    Str,
    CompoundRest,
}

/// The classes queried with sort and limit, in ascending UDM order.
const PUSHED: [Class; 5] = [Class::Absent, Class::Null, Class::Bool, Class::Number, Class::Str];

impl Class {
    fn of(v: Option<&Value>) -> Self {
        match v {
            None => Self::Absent,
            Some(Value::Null) => Self::Null,
            Some(Value::Bool(_)) => Self::Bool,
            Some(n @ Value::Number(x)) => {
                if exact_scalar(n) {
                    Self::Number
                } else if x.as_f64().is_some_and(|f| f < 0.0) {
                    Self::NegativeRest
                } else {
                    Self::PositiveRest
                }
            }
            Some(Value::String(_)) => Self::Str,
            Some(Value::Array(_) | Value::Object(_)) => Self::CompoundRest,
        }
    }

    fn is_rest(self) -> bool {
        matches!(self, Self::NegativeRest | Self::PositiveRest | Self::CompoundRest)
    }

    /// The BSON filter selecting exactly this pushed class's sort keys.
    fn filter(self, field: &str) -> Document {
        match self {
            Self::Absent => doc! { field: { "$exists": false } },
            Self::Null => doc! { field: { "$type": "null" } },
            Self::Bool => doc! { field: { "$type": "bool" } },
            Self::Number => doc! { field: { "$gt": -EXACT_NUMBERS, "$lt": EXACT_NUMBERS } },
            Self::Str => doc! { field: { "$type": "string" } },
            Self::NegativeRest | Self::PositiveRest | Self::CompoundRest => rest_filter(field),
        }
    }

    /// Whether all values of the class share one sort key (order inside it is by id only).
    fn single_valued(self) -> bool {
        matches!(self, Self::Absent | Self::Null)
    }
}

/// The rest: sort keys outside every pushed class.
fn rest_filter(field: &str) -> Document {
    doc! { "$or": [
        { field: { "$lte": -EXACT_NUMBERS } },
        { field: { "$gte": EXACT_NUMBERS } },
        { field: { "$type": "maxKey" } },
    ] }
}

/// A position inside one class: the sort key as stored and the object id.
#[derive(Clone, Debug, PartialEq)]
struct Position {
    key: Bson,
    oid: String,
}

/// Heads strictly after `pos` (in the query's direction) inside class `class`.
fn after(class: Class, field: &str, pos: &Position, order: Order) -> Document {
    let cmp = if order == Order::Asc { "$gt" } else { "$lt" };
    if class.single_valued() {
        doc! { "oid": { cmp: &pos.oid } }
    } else {
        doc! { "$or": [
            { field: { cmp: pos.key.clone() } },
            { field: { "$eq": pos.key.clone() }, "oid": { cmp: &pos.oid } },
        ] }
    }
}

/// What a sorted list needs from one page's queries.
pub(crate) struct SortedList<'a> {
    pub(crate) q: &'a HeadQuery,
    /// The sort prop.
    pub(crate) prop: &'a str,
    /// Conjuncts every query carries (ctx, deleted, pushed-down filter).
    pub(crate) base: Document,
}

impl MongoStore {
    /// One page of a list sorted by a prop, pushed down (see the module doc). `Ok(None)` when
    /// the pushdown cannot be trusted for this query or data; the caller then scans.
    pub(crate) async fn list_sorted(&self, list: &SortedList<'_>) -> Result<Option<Page<Head>>> {
        let q = list.q;
        let (Some(field), Some(name)) = (sort_key_field(list.prop), sort_key_name(list.prop)) else {
            return Ok(None);
        };
        let cursor = q.after.as_deref().map(Cursor::decode).transpose()?;
        let cursor_class = cursor.as_ref().map(|c| Class::of(c.value.as_ref()));
        let mut found = match self.fetch_rest(list, &field).await? {
            Some(rest) => rest,
            None => return Ok(None),
        };
        let mut pushed_found = 0;
        let classes: Vec<Class> =
            if q.order == Order::Asc { PUSHED.to_vec() } else { PUSHED.iter().rev().copied().collect() };
        for class in classes {
            if pushed_found > q.limit {
                break;
            }
            let start = match (&cursor, cursor_class) {
                (Some(c), Some(cc)) => {
                    let before = if q.order == Order::Asc { class < cc } else { class > cc };
                    if before {
                        continue;
                    }
                    (class == cc).then(|| Position {
                        key: c.value.as_ref().map_or(Bson::Null, to_bson),
                        oid: c.id.as_str().to_owned(),
                    })
                }
                _ => None,
            };
            let need = q.limit + 1 - pushed_found;
            match self.fetch_class(list, class, &field, &name, start, need).await? {
                Some(heads) => {
                    pushed_found += heads.len();
                    found.extend(heads);
                }
                None => return Ok(None),
            }
        }
        select_heads(found, q).map(Some)
    }

    /// Every head of the rest that passes the exact predicate (`None`: a head not in the rest).
    async fn fetch_rest(&self, list: &SortedList<'_>, field: &str) -> Result<Option<Vec<Head>>> {
        let filter = merge_flat(list.base.clone(), rest_filter(field));
        let mut cursor = self.heads().find(filter).await.map_err(|e| classify("list", e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| classify("list", e))? {
            let h: Head = from_json(&d, "head")?;
            if !Class::of(h.indexed.get(list.prop)).is_rest() {
                return Ok(None);
            }
            if list.q.filter.matches_flat(&h.indexed) {
                out.push(h);
            }
        }
        Ok(Some(out))
    }

    /// The first `need` heads of one class (after `start`) that pass the exact predicate, in
    /// order; fewer when the class runs out. `None`: a head not of the class.
    async fn fetch_class(
        &self,
        list: &SortedList<'_>,
        class: Class,
        field: &str,
        name: &str,
        mut start: Option<Position>,
        need: usize,
    ) -> Result<Option<Vec<Head>>> {
        let dir = if list.q.order == Order::Asc { 1 } else { -1 };
        let mut out = Vec::new();
        loop {
            let want = need - out.len();
            // Flat where the keys allow it, so the server can match the per-prop index.
            let mut filter = merge_flat(list.base.clone(), class.filter(field));
            if let Some(pos) = &start {
                filter = merge_flat(filter, after(class, field, pos, list.q.order));
            }
            let heads = self.heads();
            let find =
                heads.find(filter).sort(doc! { field: dir, "oid": dir }).limit(i64::try_from(want).unwrap_or(i64::MAX));
            let mut cursor = find.await.map_err(|e| classify("list", e))?;
            let mut returned = 0;
            while let Some(d) = cursor.try_next().await.map_err(|e| classify("list", e))? {
                returned += 1;
                let h: Head = from_json(&d, "head")?;
                if Class::of(h.indexed.get(list.prop)) != class {
                    return Ok(None);
                }
                let key = d.get_document("sk").ok().and_then(|sk| sk.get(name)).cloned().unwrap_or(Bson::Null);
                start = Some(Position { key, oid: h.key.id.as_str().to_owned() });
                if list.q.filter.matches_flat(&h.indexed) {
                    out.push(h);
                }
            }
            if returned < want || out.len() >= need {
                return Ok(Some(out));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn classes_follow_udm_order() {
        let vals = [
            None,
            Some(json!(null)),
            Some(json!(true)),
            Some(json!(-9007199254740992_i64)),
            Some(json!(-9007199254740991_i64)),
            Some(json!(9007199254740991_u64)),
            Some(json!(9007199254740992_u64)),
            Some(json!(u64::MAX)),
            Some(json!("")),
            Some(json!([])),
            Some(json!({})),
        ];
        let classes: Vec<Class> = vals.iter().map(|v| Class::of(v.as_ref())).collect();
        assert!(classes.windows(2).all(|w| w[0] <= w[1]), "{classes:?}");
        for w in vals.windows(2) {
            let (a, b) = (Class::of(w[0].as_ref()), Class::of(w[1].as_ref()));
            if a != b {
                assert_eq!(udm_core::query::sort_cmp(w[0].as_ref(), w[1].as_ref()), std::cmp::Ordering::Less);
            }
        }
        assert_eq!(classes[3], Class::NegativeRest);
        assert_eq!(classes[7], Class::PositiveRest);
        assert!(PUSHED.windows(2).all(|w| w[0] < w[1]));
    }
}
