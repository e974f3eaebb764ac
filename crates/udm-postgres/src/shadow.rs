//! The shadow commit log's bookkeeping ([`udm_core::shadow`]): each collection's row in
//! `udm_collections` carries its CV and the logged watermark `logged`; the backlog is the
//! rows with `cv > logged` (a partial index holds exactly those), and the versions to log
//! are read by `(prefix, cv)` range.

use udm_core::layout::parse_collection_record_prefix;
use udm_core::query::Page;
use udm_core::shadow::{LogEntry, ShadowPending};
use udm_core::{Cv, Result, RouteContext, VersionRecord};

use crate::PostgresStore;
use crate::codec::{RequestRecord, col, doc, prefix_of};
use crate::error::{classify, corrupt, to_i64, to_u64};

const BACKLOG: &str = "SELECT prefix FROM udm_collections WHERE cv > logged AND prefix > $1 ORDER BY prefix LIMIT $2";
const WATERMARKS: &str = "SELECT cv, logged FROM udm_collections WHERE prefix = $1";
const PENDING: &str = "SELECT v.doc, r.doc FROM udm_versions v \
     LEFT JOIN udm_requests r ON r.prefix = v.prefix AND r.request_id = v.request_id \
     WHERE v.prefix = $1 AND v.cv > $2 AND v.cv <= $3 ORDER BY v.cv";
/// Recorded even before the collection's first commit (as the reference implementation does).
const LOGGED: &str = "INSERT INTO udm_collections AS t (prefix, logged) VALUES ($1, $2) \
     ON CONFLICT (prefix) DO UPDATE SET logged = GREATEST(t.logged, EXCLUDED.logged)";

impl PostgresStore {
    pub(crate) async fn backlog(&self, after: Option<&str>, limit: usize) -> Result<Page<RouteContext>> {
        let what = "shadow backlog";
        let mut lease = self.pool().get().await?;
        let n = to_i64(limit as u64 + 1, "limit")?;
        let rows = lease.conn().query(BACKLOG, &[&after.unwrap_or(""), &n]).await.map_err(|e| classify(what, e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(ctx) = parse_collection_record_prefix(col::<&str>(r, 0, "collection")?) {
                out.push(ctx);
            }
        }
        Ok(Page::from_overfetch(out, limit, prefix_of))
    }

    pub(crate) async fn pending(&self, ctx: &RouteContext, limit: usize) -> Result<ShadowPending> {
        let what = "shadow pending";
        let prefix = prefix_of(ctx);
        let mut lease = self.pool().get().await?;
        let c = lease.conn();
        let (cv, after) = match c.query_opt(WATERMARKS, &[&prefix]).await.map_err(|e| classify(what, e))? {
            Some(r) => (
                Cv(to_u64(col(&r, 0, "collection")?, "collection cv")?),
                Cv(to_u64(col(&r, 1, "collection")?, "collection watermark")?),
            ),
            None => (Cv::ZERO, Cv::ZERO),
        };
        let upto = Cv(cv.0.min(after.0.saturating_add(limit as u64))).max(after);
        let mut entries = Vec::new();
        if upto > after {
            let (from, to) = (to_i64(after.0, "cv")?, to_i64(upto.0, "cv")?);
            for r in c.query(PENDING, &[&prefix, &from, &to]).await.map_err(|e| classify(what, e))? {
                let record: VersionRecord = doc(&r, 0, "version")?;
                let req: Option<&str> = col(&r, 1, "request")?;
                let Some(req) = req else {
                    return Err(corrupt("request", format!("{} of {} has no request record", record.ov, record.key)));
                };
                let req: RequestRecord = crate::codec::decode(req, "request")?;
                entries.push(LogEntry { record, fingerprint: req.fingerprint });
            }
        }
        Ok(ShadowPending { after, upto, entries })
    }

    pub(crate) async fn logged(&self, ctx: &RouteContext, upto: Cv) -> Result<()> {
        let upto = to_i64(upto.0, "upto")?;
        let mut lease = self.pool().get().await?;
        lease.conn().execute(LOGGED, &[&prefix_of(ctx), &upto]).await.map_err(|e| classify("shadow logged", e))?;
        Ok(())
    }
}
