//! `Config::validate`: every problem, with its field path.

use std::collections::HashSet;

use super::{BackendPair, BlobBackend, CollectionConfig, Config, MAX_BACKENDS, MetaBackend};
use crate::counters::CounterRule;
use crate::error::Problem;
use crate::id::{MAX_CONTEXT_PART_BYTES, MAX_STORED_ID_BYTES, check_ident};
use crate::route_key::KeyTemplate;

pub(super) fn problems(c: &Config) -> Vec<Problem> {
    let mut p = Vec::new();
    backends(&c.backends, &mut p);
    if let Err(e) = KeyTemplate::parse(&c.routing.key_template) {
        p.extend(e.problems().iter().cloned());
    }
    if let Some(uri) = &c.counters.mongo_uri
        && let Some(m) = uri.problem()
    {
        p.push(Problem::new("counters.mongo_uri", m));
    }
    if c.counters.mongo_uri.is_some() != c.counters.database.is_some() {
        p.push(Problem::new("counters", "mongo_uri and database go together"));
    }
    if let Some(msg) = c.counters.database.as_deref().and_then(mongo_db_problem) {
        p.push(Problem::new("counters.database", msg));
    }
    if c.retention.days == Some(0) {
        p.push(Problem::new("retention.days", "must be at least 1 (omit it to keep versions forever)"));
    }
    if c.retention.max_versions_per_item == Some(0) {
        p.push(Problem::new("retention.max_versions_per_item", "must be at least 1"));
    }
    collections(&c.collections, &mut p);
    sections(c, &mut p);
    p
}

fn backends(pairs: &[BackendPair], p: &mut Vec<Problem>) {
    if pairs.is_empty() || pairs.len() > MAX_BACKENDS {
        p.push(Problem::new("backends", format!("needs 1 to {MAX_BACKENDS} pairs, found {}", pairs.len())));
    }
    let mut names = HashSet::new();
    for (i, pair) in pairs.iter().enumerate() {
        let at = format!("backends[{i}]");
        ident(&format!("{at}.name"), &pair.name, MAX_CONTEXT_PART_BYTES, p);
        if !names.insert(pair.name.as_str()) {
            p.push(Problem::new(format!("{at}.name"), format!("duplicate pair name {:?}", pair.name)));
        }
        meta(&at, &pair.meta, p);
        blobs(&at, &pair.blobs, p);
        if matches!(pair.blobs, BlobBackend::Embedded { path: None })
            && !matches!(pair.meta, MetaBackend::Embedded { .. })
        {
            p.push(Problem::new(
                format!("{at}.blobs"),
                "kind \"embedded\" keeps blobs in the embedded metadata file: needs meta.kind = \"embedded\"",
            ));
        }
    }
}

fn meta(at: &str, m: &MetaBackend, p: &mut Vec<Problem>) {
    match m {
        MetaBackend::Mongo { uri, database, max_pool_size, .. } => {
            if let Some(msg) = uri.problem() {
                p.push(Problem::new(format!("{at}.meta.uri"), msg));
            }
            if let Some(msg) = mongo_db_problem(database) {
                p.push(Problem::new(format!("{at}.meta.database"), msg));
            }
            if *max_pool_size == Some(0) {
                p.push(Problem::new(format!("{at}.meta.max_pool_size"), "must be at least 1"));
            }
        }
        MetaBackend::Embedded { path } if path.trim().is_empty() => {
            p.push(Problem::new(format!("{at}.meta.path"), "must not be empty"));
        }
        MetaBackend::Embedded { .. } | MetaBackend::Memory => {}
        MetaBackend::Custom(c) => custom(&format!("{at}.meta"), c, p),
    }
}

fn blobs(at: &str, b: &BlobBackend, p: &mut Vec<Problem>) {
    match b {
        BlobBackend::S3 {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            json_bucket,
            content_bucket,
            backups_bucket,
            ..
        } => {
            if endpoint.as_deref().is_some_and(|e| !is_http_url(e)) {
                p.push(Problem::new(format!("{at}.blobs.endpoint"), "must be an http:// or https:// URL with a host"));
            }
            if region.trim().is_empty() {
                p.push(Problem::new(format!("{at}.blobs.region"), "must not be empty"));
            }
            if access_key_id.is_some() != secret_access_key.is_some() {
                p.push(Problem::new(format!("{at}.blobs"), "access_key_id and secret_access_key go together"));
            }
            let buckets = [("json_bucket", Some(json_bucket)), ("content_bucket", Some(content_bucket))];
            let backups = [("backups_bucket", backups_bucket.as_ref())];
            for (field, bucket) in buckets.into_iter().chain(backups).filter_map(|(f, b)| Some((f, b?))) {
                if let Some(msg) = bucket_problem(bucket) {
                    p.push(Problem::new(format!("{at}.blobs.{field}"), msg));
                }
            }
        }
        BlobBackend::Fs { root } if root.trim().is_empty() => {
            p.push(Problem::new(format!("{at}.blobs.root"), "must not be empty"));
        }
        BlobBackend::Fs { .. } | BlobBackend::Memory | BlobBackend::Embedded { .. } => {}
        BlobBackend::Custom(c) => custom(&format!("{at}.blobs"), c, p),
    }
}

/// A custom kind's name is an identifier (its settings are the registering adapter's to check).
fn custom(at: &str, c: &super::CustomBackend, p: &mut Vec<Problem>) {
    ident(&format!("{at}.kind"), &c.kind, MAX_CONTEXT_PART_BYTES, p);
}

fn collections(cols: &[CollectionConfig], p: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (i, c) in cols.iter().enumerate() {
        let at = format!("collections[{i}]");
        if let Some(t) = &c.tenant {
            ident(&format!("{at}.tenant"), t, MAX_CONTEXT_PART_BYTES, p);
        }
        ident(&format!("{at}.db"), &c.db, MAX_CONTEXT_PART_BYTES, p);
        ident(&format!("{at}.collection"), &c.collection, MAX_CONTEXT_PART_BYTES, p);
        if !seen.insert((c.tenant.as_deref(), c.db.as_str(), c.collection.as_str())) {
            p.push(Problem::new(at.clone(), "duplicate collection entry"));
        }
        p.extend(c.metadata_map().problems(&at));
        let mut rule_names = HashSet::new();
        for (j, r) in c.counter_rules.iter().enumerate() {
            let rat = format!("{at}.counter_rules[{j}]");
            if let Err(ps) = CounterRule::from_config(r, &rat) {
                p.extend(ps);
            }
            if !rule_names.insert(r.name.as_str()) {
                p.push(Problem::new(format!("{rat}.name"), "duplicate rule name"));
            }
        }
    }
}

fn sections(c: &Config, p: &mut Vec<Problem>) {
    if c.dev_shadow.enabled && (c.dev_shadow.ttl_secs == 0 || c.dev_shadow.max_bytes == 0) {
        p.push(Problem::new("dev_shadow", "ttl_secs and max_bytes must be positive when enabled"));
    }
    let r = &c.fallback_queue.retry;
    if r.max_attempts == 0 {
        p.push(Problem::new("fallback_queue.retry.max_attempts", "must be at least 1"));
    }
    if r.base_delay_ms == 0 || r.base_delay_ms > r.max_delay_ms {
        p.push(Problem::new("fallback_queue.retry", "need 0 < base_delay_ms <= max_delay_ms"));
    }
    if c.fallback_queue.poll_interval_ms == 0 || c.fallback_queue.lease_ms == 0 {
        p.push(Problem::new("fallback_queue", "poll_interval_ms and lease_ms must be positive"));
    }
    // Required when enabled unless a queue store is injected: checked where the spool opens.
    if c.fallback_queue.spool.as_deref().is_some_and(|path| path.trim().is_empty()) {
        p.push(Problem::new("fallback_queue.spool", "must not be empty"));
    }
    let w = &c.write_optimization;
    if w.max_batch == 0 || w.max_concurrency == 0 {
        p.push(Problem::new("write_optimization", "max_batch and max_concurrency must be at least 1"));
    }
    if w.max_batch > crate::ports::MAX_BATCH {
        p.push(Problem::new("write_optimization.max_batch", format!("at most {}", crate::ports::MAX_BATCH)));
    }
    if let Some(prefix) = &c.storage.key_prefix {
        ident("storage.key_prefix", prefix, MAX_CONTEXT_PART_BYTES, p);
    }
    let d = &c.deadlines;
    if d.connect_ms == 0 || d.call_ms == 0 || d.write_budget_ms == 0 || d.health_ms == 0 {
        p.push(Problem::new("deadlines", "connect_ms, call_ms, write_budget_ms and health_ms must be positive"));
    }
    let l = &c.limits;
    if l.max_document_bytes == 0 || l.max_depth == 0 {
        p.push(Problem::new("limits", "max_document_bytes and max_depth must be positive"));
    }
    if l.max_id_bytes == 0 || l.max_id_bytes > MAX_STORED_ID_BYTES {
        p.push(Problem::new("limits.max_id_bytes", format!("must be 1..={MAX_STORED_ID_BYTES}")));
    }
}

/// Well-formed settings of features that do not exist yet: refused rather than ignored.
pub(super) fn unsupported(c: &Config) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut refuse = |path: &str, what: &str| p.push(Problem::new(path, format!("{what} is not implemented yet")));
    if c.counters.mongo_uri.is_some() || c.counters.database.is_some() {
        refuse("counters", "a separate counters store");
    }
    for (i, b) in c.backends.iter().enumerate() {
        if let BlobBackend::S3 { backups_bucket: Some(_), .. } = &b.blobs {
            refuse(&format!("backends[{i}].blobs.backups_bucket"), "writing backups");
        }
    }

    p
}

fn ident(path: &str, value: &str, max: usize, p: &mut Vec<Problem>) {
    if let Err(e) = check_ident(path, value, max) {
        p.extend(e.problems().iter().cloned());
    }
}

/// MongoDB database names: 1–63 bytes, letters, digits, `_` and `-`.
pub(super) fn mongo_db_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() < 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (!ok).then(|| format!("{name:?} is not a valid database name (1-63 of letters, digits, '_', '-')"))
}

/// S3 bucket names: 3–63 of lower-case letters, digits, `.` and `-`, starting and ending
/// with a letter or digit, no `..`.
fn bucket_problem(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let edge = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && edge(b.first())
        && edge(b.last())
        && !name.contains("..");
    (!ok).then(|| format!("{name:?} is not a valid bucket name"))
}

/// `http://host…` or `https://host…` with a non-empty host.
fn is_http_url(e: &str) -> bool {
    e.strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace))
}
