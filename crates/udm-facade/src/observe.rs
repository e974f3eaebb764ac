//! Observability of facade operations: one span per operation (collection, object id,
//! request id — never document data) and, through the `metrics` facade, its latency and
//! errors by kind (`udm_op_seconds{op}`, `udm_op_errors_total{op,kind}`; see `udm-layers`).
//! Port calls inside it get their own spans and metrics from the layers every pair is
//! wrapped in.

use std::future::Future;

use tracing::Instrument;
use udm_core::Result;

use crate::runtime::Stopwatch;

/// Runs `fut` as facade operation `op` inside `span`, recording its latency and any error.
pub(crate) async fn observe<T>(
    op: &'static str,
    span: tracing::Span,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let watch = Stopwatch::start();
    let result = fut.instrument(span).await;
    udm_layers::metric::op_latency(op, watch.elapsed());
    if let Err(e) = &result {
        udm_layers::metric::op_error(op, e.kind());
        tracing::debug!(op, kind = ?e.kind(), retryable = e.is_retryable(), "udm operation failed");
    }
    result
}
