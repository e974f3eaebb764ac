//! `udm queue` on a spool with pending and dead entries, by `--dir` and by `--config`, as
//! text and as JSON; a missing spool is an error (exit code 2).

use std::path::Path;

use serde_json::{Value, json};
use udm_core::config::FallbackQueueConfig;
use udm_core::ports::{QueueEntry, QueueState};
use udm_core::retry::NextStep;
use udm_core::{ObjectId, ObjectKey, RequestId, RouteContext, Timestamp};
use udm_facade::Udm;

mod common;
use common::{ok, udm};

fn entry(n: u32) -> QueueEntry {
    let key = ObjectKey::new(RouteContext::new("t", "d", "c").unwrap(), ObjectId::new(format!("o{n}")).unwrap());
    let request_id = RequestId::new(format!("r{n}")).unwrap();
    QueueEntry {
        id: QueueEntry::id_for(&key, &request_id),
        key,
        request_id,
        payload: json!({}),
        attempts: 1,
        enqueued_at: Timestamp::from_millis(1_000).unwrap(),
        next_attempt_at: Timestamp::from_millis(2_000).unwrap(),
        leased_until: None,
        last_error: Some("unavailable: down".into()),
        state: QueueState::Pending,
    }
}

/// A spool at `path` with entries r1, r2 pending and r3 dead.
async fn spool(path: &Path) {
    let q = FallbackQueueConfig { enabled: true, spool: Some(path.display().to_string()), ..Default::default() };
    let store = Udm::open_queue(&q).unwrap();
    for n in 1..=3 {
        store.enqueue(entry(n)).await.unwrap();
    }
    store.fail("t/d/c/r3", "version conflict: expected 1", NextStep::DeadLetter).await.unwrap();
}

#[tokio::test]
async fn queue_commands_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    spool(&Udm::embedded_spool(dir.path())).await;
    let d = dir.path().to_str().unwrap();

    assert_eq!(ok(&udm(&["queue", "stats", "--dir", d])).trim(), "pending 2  leased 0  dead 1");
    let stats: Value = serde_json::from_str(&ok(&udm(&["queue", "stats", "--dir", d, "--json"]))).unwrap();
    assert_eq!((stats["pending"].as_u64(), stats["dead"].as_u64()), (Some(2), Some(1)));
    let pending = ok(&udm(&["queue", "pending", "--dir", d]));
    assert!(pending.contains("t/d/c/r1") && pending.contains("t/d/c/r2") && pending.contains("2 entries"), "{pending}");
    let dead: Value = serde_json::from_str(&ok(&udm(&["queue", "dead", "--dir", d, "--json"]))).unwrap();
    assert_eq!(dead[0]["id"], "t/d/c/r3");
    assert_eq!(dead[0]["lastError"], "version conflict: expected 1");

    ok(&udm(&["queue", "retry", "t/d/c/r3", "--dir", d]));
    assert_eq!(ok(&udm(&["queue", "stats", "--dir", d])).trim(), "pending 3  leased 0  dead 0");
    let cancelled: Value =
        serde_json::from_str(&ok(&udm(&["queue", "cancel", "t/d/c/r1", "--dir", d, "--json"]))).unwrap();
    assert_eq!(cancelled, json!({"cancelled": "t/d/c/r1"}));
    assert_eq!(ok(&udm(&["queue", "stats", "--dir", d])).trim(), "pending 2  leased 0  dead 0");

    let again = udm(&["queue", "cancel", "t/d/c/r1", "--dir", d]);
    assert_eq!(again.status.code(), Some(2), "cancelling a missing entry is an error");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not found"));
}

#[tokio::test]
async fn queue_commands_on_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let spool_path = dir.path().join("spool.redb");
    spool(&spool_path).await;
    let config = dir.path().join("udm.toml");
    let text = format!(
        "[[backends]]\nname = \"local\"\nmeta = {{ kind = \"memory\" }}\nblobs = {{ kind = \"memory\" }}\n\n\
         [fallback_queue]\nenabled = true\nspool = {:?}\n",
        spool_path.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let c = config.to_str().unwrap();
    assert_eq!(ok(&udm(&["queue", "stats", "--config", c])).trim(), "pending 2  leased 0  dead 1");

    let missing = udm(&["queue", "stats", "--dir", dir.path().join("nowhere").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no fallback queue spool"), "{missing:?}");
    let neither = udm(&["queue", "stats"]);
    assert!(!neither.status.success(), "a spool must be named");
}
