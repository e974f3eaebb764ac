//! [`TracingLayer`]: one `tracing` span per port call.

use std::future::Future;

use tracing::Instrument;
use tracing::field::Empty;
use udm_core::Result;
use udm_core::ports::Layer;

use crate::call::{Answer, Call, error_kind_label};
use crate::intercept::{Intercepted, Interceptor};

/// The name of every port-call span.
pub const SPAN_NAME: &str = "udm.port";

/// Wraps a store so that every port call runs in a `DEBUG` span named [`SPAN_NAME`] with
/// the fields `port`, `op` and, where the call has them, `ctx` (`tenant/db/collection`),
/// `object`, `ov`, `request_id` and `key` (blob key, queue entry id, job id). A failed call
/// records `error_kind` (snake case, e.g. `not_found`) and `retryable` on its span and emits
/// a `DEBUG` event. Document data, error messages and credentials are never recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingLayer;

impl TracingLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

/// A store wrapped by [`TracingLayer`].
pub type Traced<S> = Intercepted<S, TracingLayer>;

impl<S> Layer<S> for TracingLayer {
    type Output = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Intercepted::new(inner, *self)
    }
}

impl Interceptor for TracingLayer {
    async fn intercept<T, F, Fut>(&self, call: Call<'_>, run: F) -> Result<T>
    where
        T: Answer,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        let span = tracing::debug_span!(
            "udm.port",
            port = call.port.as_str(),
            op = call.op,
            ctx = call.ctx.map(tracing::field::display),
            object = call.object.map(tracing::field::display),
            ov = call.ov.map(udm_core::Ov::get),
            request_id = call.request_id.map(tracing::field::display),
            key = call.key,
            error_kind = Empty,
            retryable = Empty,
        );
        let out = span.in_scope(run).instrument(span.clone()).await;
        if let Err(e) = &out {
            let kind = error_kind_label(e.kind());
            span.record("error_kind", kind);
            span.record("retryable", e.is_retryable());
            tracing::debug!(parent: &span, error_kind = kind, retryable = e.is_retryable(), "port call failed");
        }
        out
    }
}
