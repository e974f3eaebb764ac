//! [`MetaStore::import`](udm_core::ports::MetaStore::import) in a constant number of round
//! trips per batch: the stored versions, request records and heads of the whole batch are
//! read with one `$in` each, the batch is checked in memory in order (each version sees the
//! ones before it, exactly as one-by-one imports would), and the writes go out as one
//! `delete_many` (request records of pruned versions making way), one `insert_many` of
//! versions, one `delete_many` + `insert_many` of the moved heads, the as-of index entries
//! (one read of the batch's index documents, one update per object that gains an entry) and
//! one CV update per collection — all in the one transaction. A rebuild imports 256 versions
//! per batch, so this is what makes it run near the raw bulk-insert rate.

use std::collections::{BTreeMap, HashMap};

use bson::{Document, doc};
use mongodb::ClientSession;
use mongodb::error::Error as MongoError;
use udm_core::layout::{collection_record_prefix, version_record_id};
use udm_core::ports::{ImportOutcome, ImportedVersion};
use udm_core::{Checksum, Head, VersionRecord};

use crate::MongoStore;
use crate::docs::{from_json, head_doc, obj_id, request_id_of, version_doc};
use crate::error::{corrupt, to_i64};
use crate::meta::{Step, committed_by};

/// Turns a domain failure inside a transaction attempt into "abort and answer it".
macro_rules! or_abort {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Step::Abort(Err(e))),
        }
    };
}

/// A request record: from the store (its `_id`, to delete if it makes way) or from this batch.
enum Request {
    Stored(Document),
    Batch(Document),
}

impl MongoStore {
    /// One attempt of an import transaction (see the module docs).
    pub(crate) async fn import_attempt(
        &self,
        s: &mut ClientSession,
        versions: &[ImportedVersion],
    ) -> Result<Step<ImportOutcome>, MongoError> {
        let mut out = ImportOutcome::default();
        if versions.is_empty() {
            return Ok(Step::Commit(out));
        }
        let vids: Vec<String> = versions.iter().map(|v| version_record_id(&v.record.key, v.record.ov)).collect();
        let mut stored: HashMap<String, (VersionRecord, Checksum)> = HashMap::new();
        let mut cursor = self.versions().find(doc! {"_id": {"$in": &vids}}).session(&mut *s).await?;
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            let id = or_abort!(d.get_str("_id").map_err(|e| corrupt("version", e))).to_owned();
            let rec = or_abort!(from_json::<VersionRecord>(&d, "version"));
            let fp = or_abort!(d.get_str("fp").map_err(|e| corrupt("version", e)).and_then(Checksum::from_hex));
            stored.insert(id, (rec, fp));
        }
        let reqs: Vec<String> =
            versions.iter().map(|v| request_id_of(&v.record.key.ctx, &v.record.provenance.request_id)).collect();
        let mut requests: HashMap<String, Request> = HashMap::new();
        let mut cursor = self.versions().find(doc! {"req": {"$in": &reqs}}).session(&mut *s).await?;
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            let req = or_abort!(d.get_str("req").map_err(|e| corrupt("version", e))).to_owned();
            requests.insert(req, Request::Stored(d));
        }
        let objs: Vec<String> = versions.iter().map(|v| obj_id(&v.record.key)).collect();
        let mut heads: HashMap<String, Head> = HashMap::new();
        let mut cursor = self.heads().find(doc! {"_id": {"$in": &objs}}).session(&mut *s).await?;
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            let h: Head = or_abort!(from_json(&d, "head"));
            heads.insert(obj_id(&h.key), h);
        }

        let mut made_way: Vec<String> = Vec::new();
        let mut inserts: Vec<Document> = Vec::new();
        let mut moved: BTreeMap<String, Head> = BTreeMap::new();
        let mut as_of = Vec::new();
        let mut max_cv: BTreeMap<String, i64> = BTreeMap::new();
        for ((v, vid), (req, obj)) in versions.iter().zip(vids).zip(reqs.into_iter().zip(objs)) {
            let r = &v.record;
            if or_abort!(v.check_existing(stored.get(&vid).map(|(r, f)| (r, f)))) {
                out.unchanged += 1;
                continue;
            }
            if let Some(found) = requests.get(&req) {
                let d = match found {
                    Request::Stored(d) | Request::Batch(d) => d,
                };
                let (done, fp) = or_abort!(committed_by(d));
                or_abort!(v.check_request(Some((&done, &fp))));
                // The same version, pruned earlier: its request record makes way for it.
                if let Request::Stored(d) = found {
                    made_way.push(or_abort!(d.get_str("_id").map_err(|e| corrupt("version", e))).to_owned());
                }
            }
            let head = moved.get(&obj).or(heads.get(&obj));
            if or_abort!(v.check_head(head)) {
                moved.insert(obj.clone(), v.head());
                out.heads_moved += 1;
            }
            let vdoc = or_abort!(version_doc(r, &v.fingerprint));
            requests.insert(req, Request::Batch(vdoc.clone()));
            stored.insert(vid, (r.clone(), v.fingerprint));
            inserts.push(vdoc);
            as_of.extend(crate::asof::entry_of(r));
            let cv = or_abort!(to_i64(r.cv.0, "cv"));
            let top = max_cv.entry(collection_record_prefix(&r.key.ctx)).or_insert(cv);
            *top = (*top).max(cv);
            out.inserted += 1;
        }
        if !made_way.is_empty() {
            self.versions().delete_many(doc! {"_id": {"$in": made_way}}).session(&mut *s).await?;
        }
        if !inserts.is_empty() {
            self.versions().insert_many(inserts).session(&mut *s).await?;
        }
        if !moved.is_empty() {
            let ids: Vec<&String> = moved.keys().collect();
            self.heads().delete_many(doc! {"_id": {"$in": ids}}).session(&mut *s).await?;
            let docs: Vec<Document> = or_abort!(moved.values().map(head_doc).collect::<udm_core::Result<_>>());
            self.heads().insert_many(docs).session(&mut *s).await?;
        }
        or_abort!(self.index_as_of(s, as_of).await?);
        for (ctx, cv) in max_cv {
            let update = doc! {"$max": {"cv": cv}, "$set": {"dirty": true}};
            self.cvs().update_one(doc! {"_id": ctx}, update).upsert(true).session(&mut *s).await?;
        }
        Ok(Step::Commit(out))
    }
}
