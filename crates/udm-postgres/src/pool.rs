//! A small fixed-size connection pool with a per-connection prepared-statement cache.
//!
//! At most `pool_size` connections are leased at once (a semaphore); idle ones are kept and
//! reused, new ones are opened on demand. A connection goes back to the pool only when it is
//! **clean**: not closed, and not inside a transaction. A call cut off by its deadline (or
//! failing mid-transaction in a way that leaves the transaction open) drops its connection
//! instead, which closes it: the server then rolls the transaction back. So no connection is
//! ever reused in an unknown state.
//!
//! Every SQL statement of this crate is a `&'static str`; each connection prepares each one
//! once ([`Conn::stmt`]) and reuses the prepared statement (one round trip per query after
//! that). Queries take `&Conn`, so a transaction can **pipeline** statements (poll them
//! together, e.g. with `tokio::try_join!`): the driver sends them back to back, the server
//! runs them in order, and the batch costs one round trip. Unqualified table names resolve through the connection's `search_path`, set at
//! connect to the store's schema.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};
use udm_core::{Error, Result};

use crate::error::{PgError, classify};

/// Query parameters.
pub(crate) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// One query parameter (for parameter arrays that must outlive a pipelined statement).
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

/// One connection and its prepared statements.
pub(crate) struct Conn {
    client: Client,
    stmts: Mutex<HashMap<&'static str, Statement>>,
    in_txn: bool,
}

impl Conn {
    /// The prepared statement of `sql` (prepared on first use by this connection).
    pub(crate) async fn stmt(&self, sql: &'static str) -> Result<Statement, PgError> {
        let cached = self.stmts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(sql).cloned();
        if let Some(s) = cached {
            return Ok(s);
        }
        let s = self.client.prepare(sql).await?;
        self.stmts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(sql, s.clone());
        Ok(s)
    }

    /// Prepares (or finds prepared) every statement of `sqls`, so a pipeline of them sends
    /// each on its first poll, in order.
    pub(crate) async fn prepare(&self, sqls: &[&'static str]) -> Result<(), PgError> {
        for sql in sqls {
            self.stmt(sql).await?;
        }
        Ok(())
    }

    /// Runs a query, returning its rows.
    pub(crate) async fn query(&self, sql: &'static str, params: &Params<'_>) -> Result<Vec<Row>, PgError> {
        let s = self.stmt(sql).await?;
        self.client.query(&s, params).await
    }

    /// Runs a query returning at most one row.
    pub(crate) async fn query_opt(&self, sql: &'static str, params: &Params<'_>) -> Result<Option<Row>, PgError> {
        let s = self.stmt(sql).await?;
        self.client.query_opt(&s, params).await
    }

    /// Runs a statement, returning the number of rows it changed.
    pub(crate) async fn execute(&self, sql: &'static str, params: &Params<'_>) -> Result<u64, PgError> {
        let s = self.stmt(sql).await?;
        self.client.execute(&s, params).await
    }

    /// Runs SQL text without parameters (simple query protocol; several statements allowed).
    pub(crate) async fn batch(&self, sql: &str) -> Result<(), PgError> {
        self.client.batch_execute(sql).await
    }

    /// Opens a transaction (`BEGIN` followed by `mode`, e.g. `ISOLATION LEVEL REPEATABLE READ
    /// READ ONLY`, or nothing for the default READ COMMITTED).
    pub(crate) async fn begin(&mut self, mode: &'static str) -> Result<(), PgError> {
        self.in_txn = true;
        match mode {
            "" => self.client.batch_execute("BEGIN").await,
            _ => self.client.batch_execute(&format!("BEGIN {mode}")).await,
        }
    }

    /// Commits. Whatever the answer, the transaction is over (a commit that fails is rolled
    /// back by the server), unless the connection broke (then it is closed and dropped).
    pub(crate) async fn commit(&mut self) -> Result<(), PgError> {
        let r = self.client.batch_execute("COMMIT").await;
        self.in_txn = false;
        r
    }

    /// Rolls back; on failure the connection stays marked as inside a transaction, so the
    /// pool drops it.
    pub(crate) async fn rollback(&mut self) {
        if self.client.batch_execute("ROLLBACK").await.is_ok() {
            self.in_txn = false;
        }
    }

    fn clean(&self) -> bool {
        !self.in_txn && !self.client.is_closed()
    }
}

/// The pool.
pub(crate) struct Pool {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl Pool {
    /// A pool of at most `size` connections made with `config` (nothing is opened yet).
    pub(crate) fn new(config: tokio_postgres::Config, size: usize) -> Self {
        Self { config, idle: Mutex::new(Vec::new()), permits: Semaphore::new(size) }
    }

    /// Leases a connection: an idle one, or a new one once a slot is free.
    pub(crate) async fn get(&self) -> Result<Lease<'_>> {
        let permit = self.permits.acquire().await.map_err(|_| Error::internal("postgres pool closed"))?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut found = None;
            while let Some(c) = idle.pop() {
                if c.clean() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Lease { pool: self, conn: Some(conn), _permit: permit })
    }

    async fn connect(&self) -> Result<Conn> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| classify("connecting", e))?;
        // The connection task ends when the client is dropped or the server goes away.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { client, stmts: Mutex::new(HashMap::new()), in_txn: false })
    }
}

/// A leased connection: back to the pool on drop when clean, else closed.
pub(crate) struct Lease<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
    _permit: SemaphorePermit<'p>,
}

impl Lease<'_> {
    /// The connection.
    #[allow(clippy::expect_used)] // an invariant of this type, not caller data
    pub(crate) fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a lease holds its connection until it is dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take().filter(Conn::clean) {
            self.pool.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c);
        }
    }
}
