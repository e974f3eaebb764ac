//! Transactions: [`in_txn!`] runs a body in one transaction on one pooled connection and
//! retries the **whole** transaction when it lost a race (serialization failure `40001`,
//! deadlock `40P01`: the server rolled it back, so running it again is safe), with capped
//! exponential backoff and jitter, until the store's call deadline; then the answer is a
//! retryable `Unavailable`. Any other failure is answered at once, classified
//! ([`crate::error::classify`]). A `COMMIT` whose outcome is unknown (the connection broke)
//! is never run again: the answer is a retryable `Unavailable`, and callers replay with the
//! same request id.
//!
//! A body is an expression using the connection (`&mut Conn`) that yields
//! `Result<Step<T>, PgError>`: [`Step::Commit`] commits and answers its value,
//! [`Step::Abort`] rolls back and answers its result (a domain decision: a validation error,
//! a batch whose every item was answered without a write, …).
//!
//! A macro rather than a closure-taking function: async closures borrowing the connection
//! are not `Send` for all lifetimes inside `async_trait` methods.

/// What one transaction attempt decided.
pub(crate) enum Step<T> {
    /// Commit, then answer this.
    Commit(T),
    /// Roll back, then answer this.
    Abort(udm_core::Result<T>),
}

/// Turns a domain failure inside a transaction body into "roll back and answer it".
macro_rules! or_abort {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok($crate::txn::Step::Abort(Err(e))),
        }
    };
}

/// Runs statements of one transaction **pipelined** (sent back to back, one round trip; the
/// server runs them in order) inside a transaction body, binding each result to its name.
/// They are polled in the order written (`biased`), and a statement is sent when first
/// polled, so statements already prepared ([`Conn::prepare`](crate::pool::Conn::prepare))
/// run in the order written — which matters when a read must follow a lock:
/// `pipeline!(a = c.query(…), b = c.execute(…));`. Every statement's answer is awaited (none
/// is left half-read), and when some failed, the body returns the **cause**: the first error
/// that is not "current transaction is aborted" (`25P02`, which only says an earlier
/// statement of the pipeline failed).
macro_rules! pipeline {
    ($($name:ident = $f:expr),+ $(,)?) => {
        let ($($name,)+) = tokio::join!(biased; $($f),+);
        let mut cause: Option<$crate::error::PgError> = None;
        $( let $name = $name.map_err(|e| $crate::error::keep_cause(&mut cause, e)).ok(); )+
        #[allow(unused_parens)]
        let ($($name,)+) = match ($($name,)+) {
            ($(Some($name),)+) => ($($name,)+),
            _ => {
                return match cause {
                    Some(e) => Err(e),
                    None => Ok($crate::txn::Step::Abort(Err(udm_core::Error::internal(
                        "postgres: a pipelined statement failed without an error",
                    )))),
                };
            }
        };
    };
}

/// `in_txn!(store, "what", "isolation", |c| body)`: see the module docs. `isolation` is what
/// follows `BEGIN` (`""`: READ COMMITTED).
macro_rules! in_txn {
    ($store:expr, $what:expr, $mode:expr, |$c:ident| $body:expr) => {{
        let what: &str = $what;
        let deadline = $crate::runtime::Deadline::after($store.timeout());
        let mut backoff = $crate::runtime::backoff($crate::runtime::jitter_seed());
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let mut lease = $store.pool().get().await?;
            let outcome = {
                let $c: &mut $crate::pool::Conn = lease.conn();
                match $c.begin($mode).await {
                    Ok(()) => $body.await,
                    Err(e) => Err(e),
                }
            };
            let failed = match outcome {
                Ok($crate::txn::Step::Commit(v)) => match lease.conn().commit().await {
                    Ok(()) => break Ok(v),
                    Err(e) => e,
                },
                Ok($crate::txn::Step::Abort(answer)) => {
                    lease.conn().rollback().await;
                    break answer;
                }
                Err(e) => {
                    lease.conn().rollback().await;
                    e
                }
            };
            drop(lease);
            if $crate::error::retry_transaction(&failed) && !deadline.expired() {
                tokio::time::sleep(backoff.delay(attempts).min(deadline.remaining())).await;
                continue;
            }
            break Err($crate::error::classify(what, failed));
        }
    }};
}
