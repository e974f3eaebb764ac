//! The shadow version index: per-object index segments in the blob store (work in progress).

use udm_core::{ObjectKey, Ov, Result};

use crate::shadow::Target;

/// Marks versions `ovs` of `key` as pruned in the object's shadow index segments (the entries
/// stay, flagged, so S3-only reads answer `Pruned` for them and drift reports them as
/// intentional). Idempotent.
pub(crate) async fn mark_pruned(_t: &Target, _key: &ObjectKey, _ovs: &[Ov]) -> Result<()> {
    Ok(())
}
