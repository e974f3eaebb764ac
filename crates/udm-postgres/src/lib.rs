//! # udm-postgres — UDM's metadata, queue and counter stores on PostgreSQL
//!
//! [`PostgresStore`] implements [`MetaStore`](udm_core::ports::MetaStore),
//! [`QueueStore`](udm_core::ports::QueueStore) and
//! [`CounterStore`](udm_core::ports::CounterStore) on
//! [`tokio-postgres`](https://docs.rs/tokio-postgres), with a small fixed-size pool of its
//! own (see the `pool` module). Same operations and semantics as the embedded and MongoDB
//! adapters; every one passes the conformance suite of `udm_testkit::conformance`.
//!
//! **Commits.** A version commit — of one version or of a group
//! ([`MetaStore::commit_many`](udm_core::ports::MetaStore::commit_many)) — is **one
//! transaction** at READ COMMITTED that first locks the collection's row in
//! `udm_collections` (an upsert, so the first commit creates it). Every write to a
//! collection's heads, versions and request records (commit, import, prune, hard delete)
//! takes that lock first, so the transactions of one collection run one after the other,
//! and because each statement at READ COMMITTED reads the latest committed data, what a
//! commit reads after the lock (request records, heads) is current: the compare-and-set on
//! the head and the CV it assigns from the row cannot race. Why not REPEATABLE READ or
//! SERIALIZABLE: their snapshot is taken before the lock is granted, so every commit that
//! waited for the lock would fail with a serialization error and run again; the row lock
//! gives the same guarantee without those retries, and collections never wait on each
//! other. The request ids, the version records, the heads and the counter deltas are then
//! written with one statement each (`unnest` of arrays), and the CV with one update. The
//! statements are pipelined (see the `pool` module): the lock and the two reads go out as
//! one round trip, the five writes as another, so a commit is four round trips with `BEGIN`
//! and `COMMIT`, whatever the batch size.
//! Serialization failures and deadlocks that still happen (e.g. two counter adds) roll the
//! transaction back and it runs again, within the call deadline (see the `txn` module).
//!
//! **Reads** are single statements on indexed columns; list pages fetch candidates by
//! index (collection, id order, deleted flag) and decide with the core's reference
//! predicate and [`select_heads`](udm_core::query::select_heads), so their answers are
//! exactly the reference implementation's (see the `list` module).
//!
//! **Schema.** The adapter creates and migrates its tables itself, in the schema of
//! [`PostgresConfig::schema`] (see the `schema` module: ordered migration scripts under an
//! advisory lock). Documents are UDM's JSON in `text` columns (exact round trips; `jsonb`
//! would reorder keys and respell numbers).
//!
//! **No call can hang**: every port method runs under [`PostgresConfig::timeout`] as a whole
//! (pool wait, connect, statements, retries); on expiry the answer is a retryable
//! `Unavailable`, and a connection cut off inside a transaction is closed, never reused.
//!
//! **TLS is not offered yet**: connections are plain TCP (`NoTls`); a URL asking for
//! `sslmode=require` is a `Config` error. Use it on a trusted network or through a local
//! TLS tunnel until then.
//!
//! ```no_run
//! # async fn demo() -> udm_core::Result<()> {
//! use udm_postgres::{PostgresConfig, PostgresStore};
//! let store = PostgresStore::connect(&PostgresConfig::new("postgres://udm:secret@127.0.0.1:5432/udm")).await?;
//! # let _ = store; Ok(()) }
//! ```

#[macro_use]
mod txn;
mod codec;
mod error;
mod import;
mod list;
mod meta;
mod pool;
mod queue;
mod runtime;
mod schema;
mod shadow;
mod write;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use udm_core::config::REDACTED;
use udm_core::{Error, ErrorKind, Result};

use crate::pool::Pool;
use crate::runtime::within;

/// Default [`PostgresConfig::schema`].
pub const DEFAULT_SCHEMA: &str = "udm";
/// Default [`PostgresConfig::pool_size`].
pub const DEFAULT_POOL_SIZE: usize = 10;
/// Default [`PostgresConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection settings of one PostgreSQL metadata store. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?options` (or `postgresql://`).
    pub url: String,
    /// The schema holding UDM's tables (created when missing): 1 to 63 lower-case ASCII
    /// letters, digits and `_`, not starting with a digit or `pg_`. Default [`DEFAULT_SCHEMA`].
    pub schema: String,
    /// Most connections open at once (default [`DEFAULT_POOL_SIZE`]).
    pub pool_size: usize,
    /// Whole-call deadline of every store method, and of [`PostgresStore::connect`] itself
    /// (default [`DEFAULT_TIMEOUT`]); also the TCP connect timeout.
    pub timeout: Duration,
}

impl PostgresConfig {
    /// Settings with the default schema, pool size and timeout.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets [`PostgresConfig::schema`].
    #[must_use]
    pub fn with_schema(mut self, schema: &str) -> Self {
        schema.clone_into(&mut self.schema);
        self
    }

    /// Sets [`PostgresConfig::pool_size`].
    #[must_use]
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets [`PostgresConfig::timeout`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL with its password (userinfo and `password=` option) hidden.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The driver's settings, checked without contacting anything.
    fn driver_config(&self) -> Result<tokio_postgres::Config> {
        let config_err =
            |m: String| Error::new(ErrorKind::Config, format!("postgres url {}: {m}", self.redacted_url()));
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(config_err("must start with postgres:// or postgresql://".into()));
        }
        schema::check_schema(&self.schema)?;
        if self.pool_size == 0 {
            return Err(Error::new(ErrorKind::Config, "postgres pool_size must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(Error::new(ErrorKind::Config, "postgres timeout must be above zero"));
        }
        let mut c = tokio_postgres::Config::from_str(&self.url).map_err(|e| config_err(e.to_string()))?;
        if c.get_hosts().is_empty() {
            return Err(config_err("has no host".into()));
        }
        match c.get_ssl_mode() {
            SslMode::Require => return Err(config_err("TLS (sslmode=require) is not offered yet".into())),
            _ => c.ssl_mode(SslMode::Disable),
        };
        let options = match c.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c search_path={}", self.schema),
            _ => format!("-c search_path={}", self.schema),
        };
        c.options(&options);
        if c.get_application_name().is_none() {
            c.application_name("udm");
        }
        c.connect_timeout(self.timeout);
        Ok(c)
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted_url())
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `url` with the password of its userinfo shown as `***` and its query string (options,
/// which may carry a `password=`) dropped.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return REDACTED.to_owned() };
    let rest = rest.split('?').next().unwrap_or_default();
    let rest = match rest.rsplit_once('@') {
        Some((user, hosts)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:{REDACTED}@{hosts}"),
            None => format!("{user}@{hosts}"),
        },
        None => rest.to_owned(),
    };
    format!("{scheme}://{rest}")
}

/// PostgreSQL-backed metadata, queue and counter store. Cheap to clone (clones share the
/// pool).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Arc<Pool>,
    url: String,
    schema: String,
    timeout: Duration,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.url).field("schema", &self.schema).finish()
    }
}

impl PostgresStore {
    /// Checks the settings, connects, and creates or migrates the schema (idempotent; safe
    /// when several processes start at once). Bounded by [`PostgresConfig::timeout`] as a
    /// whole: an unreachable or silent server is a retryable `Unavailable`, never a hang; a
    /// malformed URL or schema name, a failed login or an unknown database is `Config`.
    pub async fn connect(cfg: &PostgresConfig) -> Result<Self> {
        let driver = cfg.driver_config()?;
        let store = Self {
            pool: Arc::new(Pool::new(driver, cfg.pool_size)),
            url: cfg.redacted_url(),
            schema: cfg.schema.clone(),
            timeout: cfg.timeout,
        };
        within("connect", cfg.timeout, async {
            let mut lease = store.pool.get().await?;
            schema::migrate(lease.conn(), &store.schema).await
        })
        .await?;
        Ok(store)
    }

    /// The schema's version after [`PostgresStore::connect`]'s migrations (the number of
    /// migration scripts this UDM knows).
    pub fn schema_version() -> i32 {
        i32::try_from(schema::MIGRATIONS.len()).unwrap_or(i32::MAX)
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Drops the schema with every UDM table in it (tests and dev resets only).
    pub async fn drop_schema(&self) -> Result<()> {
        self.bounded("drop schema", async {
            let mut lease = self.pool.get().await?;
            // The name was checked at connect: it needs no quoting.
            let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
            lease.conn().batch(&sql).await.map_err(|e| error::classify("drop schema", e))
        })
        .await
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one port call under the whole-call deadline.
    pub(crate) async fn bounded<T>(&self, op: &str, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        within(op, self.timeout, call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_passwords() {
        let c = PostgresConfig::new("postgres://app:hunter2@db.example:5432/udm?password=hunter2&sslmode=disable");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://app:***@db.example:5432/udm"), "{shown}");
        assert_eq!(redact_url("postgres://h:1/db"), "postgres://h:1/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://u:p/w@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("host=h password=x"), REDACTED);
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let bad = [
            PostgresConfig::new("http://127.0.0.1/db"),
            PostgresConfig::new("postgres://127.0.0.1:notaport/db"),
            PostgresConfig::new("postgres://127.0.0.1/db?sslmode=require"),
            PostgresConfig::new("postgres://127.0.0.1/db").with_schema("Bad-Name"),
            PostgresConfig::new("postgres://127.0.0.1/db").with_pool_size(0),
            PostgresConfig::new("postgres://127.0.0.1/db").with_timeout(Duration::ZERO),
        ];
        for c in bad {
            assert_eq!(c.driver_config().unwrap_err().kind(), ErrorKind::Config, "{c:?}");
        }
        let c = PostgresConfig::new("postgres://u@127.0.0.1:5/db?options=-c%20work_mem%3D4MB").driver_config().unwrap();
        assert_eq!(c.get_options(), Some("-c work_mem=4MB -c search_path=udm"));
    }
}
