//! [`MetaStore::list_heads`](udm_core::ports::MetaStore::list_heads): candidates are fetched
//! by index, the page is decided by the core's reference semantics.
//!
//! - **No sort** (id order, with or without a filter): keyset windows of `limit + 1` heads
//!   in id order from the cursor (the primary key `(prefix, oid)`), each pushed down with
//!   its `LIMIT`, until the page is full or the collection's heads run out. Each head's
//!   indexed props (their own column) are decoded first and the exact predicate decides;
//!   only heads that pass are decoded in full.
//! - **Sorted**: in one REPEATABLE READ read-only transaction (one snapshot), the id and
//!   indexed props of every head of the collection (live ones only, unless deleted ones are
//!   asked for) are read and ranked by (sort value, id) after the cursor, keeping the first
//!   `limit + 1`; only those are read in full. This is O(heads of the collection) per page,
//!   like the embedded adapter's sorted lists: an expression index per indexed prop would
//!   remove it.
//!
//! Either way [`select_heads`] makes the final page from those `≤ limit + 1` heads, so its
//! filter, order, cursors and `next` are exactly the reference implementation's.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value};
use udm_core::query::{Cursor, HeadQuery, Order, Page, select_heads, sort_cmp};
use udm_core::{Error, Head, ObjectId, Result, RouteContext};

use crate::PostgresStore;
use crate::codec::{col, decode, doc, prefix_of};
use crate::error::{PgError, classify, to_i64};
use crate::pool::Conn;
use crate::txn::Step;

const ASC_ALL: &str = "SELECT oid, indexed, doc FROM udm_heads WHERE prefix = $1 AND (NOT deleted OR $2) \
     ORDER BY oid LIMIT $3";
const ASC_FROM: &str = "SELECT oid, indexed, doc FROM udm_heads WHERE prefix = $1 AND (NOT deleted OR $2) \
     AND oid > $4 ORDER BY oid LIMIT $3";
const DESC_ALL: &str = "SELECT oid, indexed, doc FROM udm_heads WHERE prefix = $1 AND (NOT deleted OR $2) \
     ORDER BY oid DESC LIMIT $3";
const DESC_FROM: &str = "SELECT oid, indexed, doc FROM udm_heads WHERE prefix = $1 AND (NOT deleted OR $2) \
     AND oid < $4 ORDER BY oid DESC LIMIT $3";
const LISTINGS: &str = "SELECT oid, indexed FROM udm_heads WHERE prefix = $1 AND (NOT deleted OR $2)";
const HEADS_BY_ID: &str = "SELECT oid, doc FROM udm_heads WHERE prefix = $1 AND oid = ANY($2)";

/// A candidate of a sorted page: its sort value and id.
type Candidate = (Option<Value>, ObjectId);

impl PostgresStore {
    pub(crate) async fn list(&self, ctx: &RouteContext, q: &HeadQuery) -> Result<Page<Head>> {
        let after = q.after.as_deref().map(Cursor::decode).transpose()?;
        let prefix = prefix_of(ctx);
        let heads = match (&q.sort_by, after) {
            (None, None) => self.by_id(&prefix, q, None).await?,
            (None, Some(c)) if c.value.is_none() => self.by_id(&prefix, q, Some(c.id.as_str())).await?,
            (sort_by, after) => {
                let sort_by = sort_by.as_deref();
                in_txn!(self, "list", "ISOLATION LEVEL REPEATABLE READ READ ONLY", |c| sorted_in(
                    c,
                    &prefix,
                    q,
                    sort_by,
                    after.as_ref()
                ))?
            }
        };
        select_heads(heads, q)
    }

    /// The first `limit + 1` passing heads in id order (`q.order`) strictly after `after`.
    async fn by_id(&self, prefix: &str, q: &HeadQuery, after: Option<&str>) -> Result<Vec<Head>> {
        let what = "list";
        let want = q.limit + 1;
        let window = to_i64(want as u64, "limit")?;
        let mut lease = self.pool().get().await?;
        let c = lease.conn();
        let mut out = Vec::new();
        let mut from: Option<String> = after.map(str::to_owned);
        loop {
            let sql = match (q.order, from.is_some()) {
                (Order::Asc, false) => ASC_ALL,
                (Order::Asc, true) => ASC_FROM,
                (Order::Desc, false) => DESC_ALL,
                (Order::Desc, true) => DESC_FROM,
            };
            let rows = match &from {
                Some(f) => c.query(sql, &[&prefix, &q.include_deleted, &window, f]).await,
                None => c.query(sql, &[&prefix, &q.include_deleted, &window]).await,
            }
            .map_err(|e| classify(what, e))?;
            let returned = rows.len();
            for r in &rows {
                let indexed: Map<String, Value> = decode(col(r, 1, "head")?, "head")?;
                if q.filter.matches_flat(&indexed) && out.len() < want {
                    out.push(doc::<Head>(r, 2, "head")?);
                }
            }
            match rows.last() {
                Some(last) if returned == want && out.len() < want => from = Some(col(last, 0, "head")?),
                _ => return Ok(out),
            }
        }
    }
}

/// The first `limit + 1` passing heads in (sort value, id) order strictly after `after`, in
/// one snapshot (see the module docs).
async fn sorted_in(
    c: &mut Conn,
    prefix: &str,
    q: &HeadQuery,
    sort_by: Option<&str>,
    after: Option<&Cursor>,
) -> Result<Step<Vec<Head>>, PgError> {
    let mut candidates: Vec<Candidate> = Vec::new();
    for r in c.query(LISTINGS, &[&prefix, &q.include_deleted]).await? {
        let id: &str = or_abort!(col(&r, 0, "head"));
        let mut indexed: Map<String, Value> = or_abort!(decode(or_abort!(col(&r, 1, "head")), "head"));
        if !q.filter.matches_flat(&indexed) {
            continue;
        }
        let id = or_abort!(ObjectId::with_max(id, udm_core::id::MAX_STORED_ID_BYTES));
        let value = sort_by.and_then(|p| indexed.remove(p));
        let beyond = after.is_none_or(|c| {
            let o = c.cmp_item(value.as_ref(), &id);
            if q.order == Order::Asc { o == Ordering::Greater } else { o == Ordering::Less }
        });
        if beyond {
            candidates.push((value, id));
        }
    }
    let rank = |a: &Candidate, b: &Candidate| {
        let o = sort_cmp(a.0.as_ref(), b.0.as_ref()).then_with(|| a.1.cmp(&b.1));
        if q.order == Order::Asc { o } else { o.reverse() }
    };
    let keep = q.limit + 1;
    if candidates.len() > keep {
        candidates.select_nth_unstable_by(keep - 1, rank);
        candidates.truncate(keep);
    }
    let ids: Vec<&str> = candidates.iter().map(|(_, id)| id.as_str()).collect();
    let mut found: HashMap<String, Head> = HashMap::new();
    for r in c.query(HEADS_BY_ID, &[&prefix, &ids]).await? {
        found.insert(or_abort!(col(&r, 0, "head")), or_abort!(doc(&r, 1, "head")));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match found.remove(id) {
            Some(h) => out.push(h),
            None => {
                return Ok(Step::Abort(Err(Error::internal(format!("postgres: head {id} vanished in a snapshot")))));
            }
        }
    }
    Ok(Step::Commit(out))
}
