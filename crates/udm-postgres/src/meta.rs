//! [`MetaStore`] and [`CounterStore`] on PostgreSQL: reads are single statements on indexed
//! columns; writes run in [`in_txn!`](crate::txn) (see the `write` and `import` modules).

use std::collections::BTreeMap;

use async_trait::async_trait;
use udm_core::counters::CounterDelta;
use udm_core::ports::{
    Commit, Committed, CounterStore, HardDeleted, ImportOutcome, ImportedVersion, JobRecord, MetaStore, ShrinkPolicy,
    ShrinkStats, check_batch, parse_object_cursor, select_collections,
};
use udm_core::query::{HeadQuery, HistoryQuery, Order, Page, check_head_query, check_limit, history_cursor};
use udm_core::shadow::ShadowPending;
use udm_core::version::SnapshotRef;
use udm_core::{
    Checksum, Cv, Head, Name, ObjectId, ObjectKey, Ov, RequestId, Result, RouteContext, Timestamp, VersionRecord,
};

use crate::PostgresStore;
use crate::codec::{RequestRecord, add_counters, col, doc, encode, prefix_of};
use crate::error::{classify, to_i64, to_u64};
use crate::import::import_in;
use crate::pool::Params;
use crate::txn::Step;
use crate::write::{commit_many_in, hard_delete_in, prune_in};

const FIND_REQUEST: &str = "SELECT doc FROM udm_requests WHERE prefix = $1 AND request_id = $2";
const HEAD: &str = "SELECT doc FROM udm_heads WHERE prefix = $1 AND oid = $2";
const VERSION: &str = "SELECT doc FROM udm_versions WHERE prefix = $1 AND oid = $2 AND ov = $3";
const VERSION_AT: &str = "SELECT doc FROM udm_versions WHERE prefix = $1 AND oid = $2 AND at <= $3 \
     ORDER BY at DESC, ov DESC LIMIT 1";
const VERSION_AT_CV: &str = "SELECT doc FROM udm_versions WHERE prefix = $1 AND oid = $2 AND cv <= $3 \
     ORDER BY cv DESC LIMIT 1";
const HISTORY_ASC: &str = "SELECT doc FROM udm_versions WHERE prefix = $1 AND oid = $2 AND ov > $3 \
     ORDER BY ov LIMIT $4";
const HISTORY_DESC: &str = "SELECT doc FROM udm_versions WHERE prefix = $1 AND oid = $2 AND ov < $3 \
     ORDER BY ov DESC LIMIT $4";
const COLLECTION_CV: &str = "SELECT cv FROM udm_collections WHERE prefix = $1";
const SHADOWED_ALL: &str = "SELECT doc FROM udm_heads WHERE shadow_at IS NOT NULL";
const SHADOWED_IN: &str = "SELECT doc FROM udm_heads WHERE prefix = $1 AND shadow_at IS NOT NULL";
const UNSHADOW: &str = "UPDATE udm_heads SET shadow_at = NULL, doc = $4 WHERE prefix = $1 AND oid = $2 AND ov = $3";
const COLLECTIONS: &str = "SELECT c.prefix FROM udm_collections c WHERE c.prefix >= $1 AND c.prefix < $2 \
     AND EXISTS (SELECT 1 FROM udm_heads h WHERE h.prefix = c.prefix)";
const OBJECTS: &str = "SELECT oid FROM udm_heads WHERE prefix = $1 AND oid > $2 ORDER BY oid LIMIT $3";
const SAVE_JOB: &str =
    "INSERT INTO udm_jobs (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc";
const LOAD_JOB: &str = "SELECT doc FROM udm_jobs WHERE id = $1";
const PING: &str = "SELECT 1";
const TOTALS: &str = "SELECT name, value FROM udm_counters WHERE prefix = $1";
const RESET_ALL: &str = "DELETE FROM udm_counters WHERE prefix = $1";
const RESET_SOME: &str = "DELETE FROM udm_counters WHERE prefix = $1 AND name = ANY($2)";

impl PostgresStore {
    /// One JSON document from the first column of a single-row query, or `None`.
    async fn one<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Option<T>> {
        let mut lease = self.pool().get().await?;
        match lease.conn().query_opt(sql, params).await.map_err(|e| classify(what, e))? {
            Some(r) => doc(&r, 0, what).map(Some),
            None => Ok(None),
        }
    }

    /// The JSON documents of the first column of a query.
    async fn many<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sql: &'static str,
        params: &Params<'_>,
    ) -> Result<Vec<T>> {
        let mut lease = self.pool().get().await?;
        let rows = lease.conn().query(sql, params).await.map_err(|e| classify(what, e))?;
        rows.iter().map(|r| doc(r, 0, what)).collect()
    }

    async fn shrink(&self, ctx: Option<&RouteContext>, policy: &ShrinkPolicy) -> Result<ShrinkStats> {
        let heads: Vec<Head> = match ctx {
            Some(ctx) => self.many("head", SHADOWED_IN, &[&prefix_of(ctx)]).await?,
            None => self.many("head", SHADOWED_ALL, &[]).await?,
        };
        let mut stats = ShrinkStats::default();
        let mut lease = self.pool().get().await?;
        for mut h in heads {
            let Some(shadow) = h.dev_shadow.take() else { continue };
            stats.scanned += 1;
            if shadow.written_at >= policy.expired_before && shadow.bytes <= policy.max_bytes {
                continue;
            }
            stats.removed += 1;
            stats.bytes_freed += shadow.bytes;
            if !policy.dry_run {
                // Only if the head did not move meanwhile (a newer head keeps its own shadow).
                let (prefix, ov, json) = (prefix_of(&h.key.ctx), to_i64(h.ov.get(), "ov")?, encode(&h)?);
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&prefix, &h.key.id.as_str(), &ov, &json];
                lease.conn().execute(UNSHADOW, &params).await.map_err(|e| classify("shrink", e))?;
            }
        }
        Ok(stats)
    }
}

#[async_trait]
impl MetaStore for PostgresStore {
    async fn commit_many(&self, commits: Vec<Commit>) -> Result<Vec<Result<Committed>>> {
        check_batch(&commits)?;
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded("commit", async { in_txn!(self, "commit", "", |c| commit_many_in(c, &commits)) }).await
    }

    async fn find_request(&self, ctx: &RouteContext, request_id: &RequestId) -> Result<Option<(Committed, Checksum)>> {
        self.bounded("request", async {
            let r: Option<RequestRecord> =
                self.one("request", FIND_REQUEST, &[&prefix_of(ctx), &request_id.as_str()]).await?;
            Ok(r.map(|r| (Committed { replayed: true, ..r.done }, r.fingerprint)))
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<Head>> {
        self.bounded("head", self.one("head", HEAD, &[&prefix_of(&key.ctx), &key.id.as_str()])).await
    }

    async fn version(&self, key: &ObjectKey, ov: Ov) -> Result<Option<VersionRecord>> {
        let ov = to_i64(ov.get(), "ov")?;
        self.bounded("version", self.one("version", VERSION, &[&prefix_of(&key.ctx), &key.id.as_str(), &ov])).await
    }

    async fn version_at(&self, key: &ObjectKey, at: Timestamp) -> Result<Option<VersionRecord>> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&prefix_of(&key.ctx), &key.id.as_str(), &at.as_millis()];
        self.bounded("version", self.one("version", VERSION_AT, &params)).await
    }

    async fn version_at_cv(&self, key: &ObjectKey, cv: Cv) -> Result<Option<VersionRecord>> {
        // CVs above bigint's range cannot be stored: "at or before" such a CV is the last one.
        let cv = i64::try_from(cv.0).unwrap_or(i64::MAX);
        self.bounded("version", self.one("version", VERSION_AT_CV, &[&prefix_of(&key.ctx), &key.id.as_str(), &cv]))
            .await
    }

    async fn history(&self, key: &ObjectKey, q: &HistoryQuery) -> Result<Page<VersionRecord>> {
        check_limit(q.limit)?;
        let n = to_i64(q.limit as u64 + 1, "limit")?;
        let (sql, from) = match (q.order, q.after) {
            (Order::Asc, a) => (HISTORY_ASC, a.map_or(Ok(0), |a| to_i64(a.get(), "after"))?),
            (Order::Desc, a) => (HISTORY_DESC, a.map_or(Ok(i64::MAX), |a| to_i64(a.get(), "after"))?),
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&prefix_of(&key.ctx), &key.id.as_str(), &from, &n];
        let items: Vec<VersionRecord> = self.bounded("history", self.many("version", sql, &params)).await?;
        Ok(Page::from_overfetch(items, q.limit, |r| history_cursor(r.ov)))
    }

    async fn list_heads(&self, ctx: &RouteContext, q: &HeadQuery) -> Result<Page<Head>> {
        check_head_query(q)?;
        self.bounded("list", self.list(ctx, q)).await
    }

    async fn collection_cv(&self, ctx: &RouteContext) -> Result<Cv> {
        self.bounded("collection cv", async {
            let mut lease = self.pool().get().await?;
            let row = lease
                .conn()
                .query_opt(COLLECTION_CV, &[&prefix_of(ctx)])
                .await
                .map_err(|e| classify("collection cv", e))?;
            match row {
                Some(r) => Ok(Cv(to_u64(col(&r, 0, "collection")?, "collection cv")?)),
                None => Ok(Cv::ZERO),
            }
        })
        .await
    }

    async fn shrink_dev_shadows(&self, ctx: Option<&RouteContext>, policy: &ShrinkPolicy) -> Result<ShrinkStats> {
        self.bounded("shrink", self.shrink(ctx, policy)).await
    }

    async fn hard_delete(&self, key: &ObjectKey, counters: Vec<CounterDelta>) -> Result<HardDeleted> {
        self.bounded("hard delete", async { in_txn!(self, "hard delete", "", |c| hard_delete_in(c, key, &counters)) })
            .await
    }

    async fn list_collections(
        &self,
        tenant: &Name,
        db: Option<&Name>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RouteContext>> {
        check_limit(limit)?;
        let prefix = match db {
            Some(d) => format!("{tenant}/{d}/"),
            None => format!("{tenant}/"),
        };
        // Keys under `prefix` sort between it and `prefix` with its final '/' bumped to '0'.
        let end = format!("{}0", prefix.trim_end_matches('/'));
        let ctxs = self
            .bounded("list collections", async {
                let mut lease = self.pool().get().await?;
                let rows = lease
                    .conn()
                    .query(COLLECTIONS, &[&prefix, &end])
                    .await
                    .map_err(|e| classify("list collections", e))?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    if let Some(ctx) = udm_core::layout::parse_collection_record_prefix(col(r, 0, "collection")?) {
                        out.push(ctx);
                    }
                }
                Ok(out)
            })
            .await?;
        select_collections(ctxs, tenant, db, after, limit)
    }

    async fn list_objects(&self, ctx: &RouteContext, after: Option<&str>, limit: usize) -> Result<Page<ObjectId>> {
        check_limit(limit)?;
        let after = after.map(parse_object_cursor).transpose()?;
        let n = to_i64(limit as u64 + 1, "limit")?;
        let from = after.as_ref().map_or("", ObjectId::as_str);
        self.bounded("list objects", async {
            let mut lease = self.pool().get().await?;
            let rows = lease
                .conn()
                .query(OBJECTS, &[&prefix_of(ctx), &from, &n])
                .await
                .map_err(|e| classify("list objects", e))?;
            let mut items = Vec::with_capacity(rows.len());
            for r in &rows {
                items.push(ObjectId::with_max(col::<&str>(r, 0, "head")?, udm_core::id::MAX_STORED_ID_BYTES)?);
            }
            Ok(Page::from_overfetch(items, limit, ToString::to_string))
        })
        .await
    }

    async fn import(&self, versions: Vec<ImportedVersion>) -> Result<ImportOutcome> {
        for v in &versions {
            v.check()?;
        }
        self.bounded("import", async { in_txn!(self, "import", "", |c| import_in(c, &versions)) }).await
    }

    async fn prune(&self, key: &ObjectKey, ovs: &[Ov]) -> Result<Vec<SnapshotRef>> {
        self.bounded("prune", async { in_txn!(self, "prune", "", |c| prune_in(c, key, ovs)) }).await
    }

    async fn shadow_backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
        check_limit(limit)?;
        self.bounded("shadow backlog", self.backlog(after, limit)).await
    }

    async fn shadow_pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
        check_limit(limit)?;
        self.bounded("shadow pending", self.pending(ctx, limit)).await
    }

    async fn shadow_logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()> {
        self.bounded("shadow logged", self.logged(ctx, upto)).await
    }

    async fn save_job(&self, job: &JobRecord) -> Result<()> {
        let json = encode(job)?;
        self.bounded("save job", async {
            let mut lease = self.pool().get().await?;
            lease.conn().execute(SAVE_JOB, &[&job.id, &json]).await.map_err(|e| classify("save job", e))?;
            Ok(())
        })
        .await
    }

    async fn load_job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.bounded("load job", self.one("job", LOAD_JOB, &[&id])).await
    }

    async fn ping(&self) -> Result<()> {
        self.bounded("ping", async {
            let mut lease = self.pool().get().await?;
            lease.conn().query(PING, &[]).await.map_err(|e| classify("ping", e))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl CounterStore for PostgresStore {
    async fn add(&self, deltas: &[CounterDelta]) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        self.bounded("counters", async {
            in_txn!(self, "counters", "", |c| async { add_counters(c, deltas).await.map(Step::Commit) })
        })
        .await
    }

    async fn totals(&self, ctx: &RouteContext) -> Result<BTreeMap<String, i64>> {
        self.bounded("counters", async {
            let mut lease = self.pool().get().await?;
            let rows = lease.conn().query(TOTALS, &[&prefix_of(ctx)]).await.map_err(|e| classify("counters", e))?;
            let mut out = BTreeMap::new();
            for r in &rows {
                out.insert(col(r, 0, "counter")?, col(r, 1, "counter")?);
            }
            Ok(out)
        })
        .await
    }

    async fn reset(&self, ctx: &RouteContext, counters: Option<&[String]>) -> Result<()> {
        self.bounded("counters reset", async {
            let mut lease = self.pool().get().await?;
            let prefix = prefix_of(ctx);
            let done = match counters {
                None => lease.conn().execute(RESET_ALL, &[&prefix]).await,
                Some(names) => lease.conn().execute(RESET_SOME, &[&prefix, &names]).await,
            };
            done.map(drop).map_err(|e| classify("counters reset", e))
        })
        .await
    }
}
