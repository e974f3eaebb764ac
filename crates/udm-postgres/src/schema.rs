//! The tables, created and migrated by the adapter itself.
//!
//! Migrations are an ordered list of SQL scripts ([`MIGRATIONS`]); script `i` is version
//! `i + 1`, recorded in `udm_schema_migrations(version int primary key)` once applied. On
//! connect, [`migrate`] runs in **one transaction** that first takes
//! `pg_advisory_xact_lock(<key of the schema>)`, so processes starting at once apply each
//! script exactly once: the others wait for the lock, then find the versions recorded. A
//! schema recorded at a version this code does not know (migrated by a newer UDM) is a
//! `Config` error. Scripts are only ever appended, never edited.
//!
//! Every key and ordering column is `text COLLATE "C"`, so the server orders ids, request ids
//! and record prefixes byte-wise, as the other adapters and the reference implementation do,
//! whatever the database's default collation. Documents (heads, version records, request
//! records, jobs, queue entries) are UDM's JSON in `text` columns, not `jsonb`: `jsonb`
//! reorders keys, respells numbers and rejects `\u0000` in strings, and every record must
//! read back exactly as written. The columns beside the document are what queries filter
//! and order on.

use udm_core::{Error, ErrorKind, Result};

use crate::error::{PgError, classify};
use crate::pool::Conn;

/// The migration scripts, in order (version = index + 1).
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the whole store.
    r#"
    CREATE TABLE udm_collections (
        prefix text COLLATE "C" PRIMARY KEY,
        cv bigint NOT NULL DEFAULT 0,
        logged bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX udm_collections_backlog ON udm_collections (prefix) WHERE cv > logged;
    CREATE TABLE udm_heads (
        prefix text COLLATE "C" NOT NULL,
        oid text COLLATE "C" NOT NULL,
        ov bigint NOT NULL,
        deleted boolean NOT NULL,
        shadow_at bigint,
        indexed text NOT NULL,
        doc text NOT NULL,
        PRIMARY KEY (prefix, oid)
    );
    CREATE INDEX udm_heads_shadow ON udm_heads (prefix) WHERE shadow_at IS NOT NULL;
    CREATE TABLE udm_versions (
        prefix text COLLATE "C" NOT NULL,
        oid text COLLATE "C" NOT NULL,
        ov bigint NOT NULL,
        cv bigint NOT NULL,
        at bigint NOT NULL,
        request_id text COLLATE "C" NOT NULL,
        doc text NOT NULL,
        PRIMARY KEY (prefix, oid, ov)
    );
    CREATE INDEX udm_versions_at ON udm_versions (prefix, oid, at, ov);
    CREATE INDEX udm_versions_cv ON udm_versions (prefix, oid, cv);
    CREATE INDEX udm_versions_log ON udm_versions (prefix, cv);
    CREATE TABLE udm_requests (
        prefix text COLLATE "C" NOT NULL,
        request_id text COLLATE "C" NOT NULL,
        oid text COLLATE "C" NOT NULL,
        doc text NOT NULL,
        PRIMARY KEY (prefix, request_id)
    );
    CREATE INDEX udm_requests_object ON udm_requests (prefix, oid);
    CREATE TABLE udm_counters (
        prefix text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        value bigint NOT NULL,
        PRIMARY KEY (prefix, name)
    );
    CREATE TABLE udm_jobs (
        id text COLLATE "C" PRIMARY KEY,
        doc text NOT NULL
    );
    CREATE TABLE udm_queue (
        id text COLLATE "C" PRIMARY KEY,
        state text NOT NULL,
        next_at bigint NOT NULL,
        lease bigint,
        attempts bigint NOT NULL,
        last_error text,
        doc text NOT NULL
    );
    CREATE INDEX udm_queue_due ON udm_queue (state, next_at, id);
    "#,
];

/// The advisory lock key of migrating `schema` (FNV-1a of a fixed prefix and the name).
pub(crate) fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "udm-migrate:".bytes().chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Whether `schema` is a name this adapter accepts: lower-case ASCII letters, digits and `_`,
/// not starting with a digit or `pg_`, at most 63 bytes (so it never needs quoting).
pub(crate) fn check_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with("pg_")
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "postgres schema {schema:?}: use 1 to 63 lower-case ASCII letters, digits and '_', \
                 not starting with a digit or pg_"
            ),
        ))
    }
}

/// Creates the schema and applies the migrations it lacks, in one transaction under the
/// advisory lock (see the module docs). Returns the schema's version afterwards.
pub(crate) async fn migrate(c: &mut Conn, schema: &str) -> Result<i32> {
    c.begin("").await.map_err(|e| classify("migrating", e))?;
    let answer = migrate_in(c, schema).await;
    match answer {
        Ok(Ok(v)) => {
            c.commit().await.map_err(|e| classify("migrating", e))?;
            Ok(v)
        }
        Ok(Err(e)) => {
            c.rollback().await;
            Err(e)
        }
        Err(e) => {
            c.rollback().await;
            Err(classify("migrating", e))
        }
    }
}

async fn migrate_in(c: &mut Conn, schema: &str) -> Result<Result<i32>, PgError> {
    c.query("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)]).await?;
    // The name was checked by `check_schema`: it needs no quoting.
    c.batch(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.udm_schema_migrations (
             version int PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let rows = c.query("SELECT version FROM udm_schema_migrations ORDER BY version", &[]).await?;
    let mut applied = Vec::with_capacity(rows.len());
    for r in rows {
        applied.push(r.try_get::<_, i32>(0)?);
    }
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if let Some(newer) = applied.iter().find(|v| **v > known) {
        return Ok(Err(Error::new(
            ErrorKind::Config,
            format!("postgres schema {schema} is at version {newer}, newer than this UDM knows ({known})"),
        )));
    }
    for (i, script) in MIGRATIONS.iter().enumerate() {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        if applied.contains(&version) {
            continue;
        }
        c.batch(script).await?;
        c.execute("INSERT INTO udm_schema_migrations (version) VALUES ($1)", &[&version]).await?;
    }
    Ok(Ok(known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["udm", "udm_test_1", "_x"] {
            check_schema(ok).unwrap();
        }
        for bad in ["", "Udm", "1udm", "pg_udm", "udm-x", "udm;drop", &"x".repeat(64)] {
            assert_eq!(check_schema(bad).unwrap_err().kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn lock_keys_differ_per_schema() {
        assert_ne!(lock_key("udm"), lock_key("udm2"));
        assert_eq!(lock_key("udm"), lock_key("udm"));
    }
}
