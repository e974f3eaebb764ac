//! The S3 shadow's operator tools on every setup: after ordinary writes, drift (deep, no
//! grace) is clean, recovering everything from the shadow finds nothing to do, a recovery of
//! an old version appends a RESTORE, and the orphan GC finds nothing to delete.

use serde_json::json;
use udm_core::RouteContext;
use udm_facade::{DriftOptions, DriftScope, ReadOpts, RecoverMode, RecoverOptions, RecoverPoint, WriteOpts};

use crate::setup::Env;

pub(crate) async fn shadow_tools(env: Env) {
    let tenant = udm_testkit::fixtures::unique_ctx("x").tenant;
    let ctx = RouteContext::new(tenant.as_str(), "crm", "users").unwrap();
    let c = env.udm.with(ctx.clone());
    let ids: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        c.create(json!({"email": format!("{id}@x"), "score": i}), WriteOpts::id(id)).await.unwrap();
        env.clock.advance(5);
        c.update(id, json!({"email": format!("{id}@y"), "score": i}), None, WriteOpts::default()).await.unwrap();
    }
    c.delete("s5", None, WriteOpts::default()).await.unwrap();
    let admin = env.udm.admin();
    admin.flush_shadow().await.unwrap();

    let options = DriftOptions { orphan_grace: std::time::Duration::ZERO, deep: true };
    let drift = admin.drift(DriftScope::Collection(ctx.clone()), options, None, &mut |_| {}).await.unwrap();
    assert!(drift.summary.in_sync, "{drift:?}");
    assert_eq!(drift.objects, 6, "{drift:?}");

    let latest = RecoverOptions::default();
    let all = c.recover_all(latest, &mut |e| panic!("nothing to recover: {e:?}")).await.unwrap();
    assert_eq!((all.objects, all.unchanged, all.restored, all.unrecoverable), (6, 6, 0, 0), "{all:?}");
    let in_place = RecoverOptions { mode: RecoverMode::InPlace, ..latest };
    let r = c.recover("s1", in_place, &mut |_| {}).await.unwrap();
    assert_eq!((r.imported, r.unchanged), (0, 1), "{r:?}");
    let first = RecoverOptions { point: RecoverPoint::Ov(udm_core::Ov::FIRST), ..latest };
    let r = c.recover("s1", first, &mut |_| {}).await.unwrap();
    assert_eq!(r.restored, 1, "{r:?}");
    assert_eq!(c.get_latest("s1", ReadOpts::default()).await.unwrap().data, json!({"email": "s1@x", "score": 1}));

    let gc = admin.collect_garbage(Some(&ctx), std::time::Duration::ZERO, false, &mut |_| {}).await.unwrap();
    assert_eq!((gc.snapshots, gc.content, gc.unreadable), (0, 0, 0), "{gc:?}");
    admin.flush_shadow().await.unwrap();
    let again = admin.drift(DriftScope::Collection(ctx), options, None, &mut |_| {}).await.unwrap();
    assert!(again.summary.in_sync, "{again:?}");
}
