//! `udm retention`, `udm gc` and `udm recover` on the embedded default after the tour: dry
//! runs change nothing (the export is identical), runs do what the dry runs said, a pruned
//! version cannot be recovered (exit 1), bad input and a missing policy are errors (exit 2).

mod common;
use common::{ok, udm};

fn report(stdout: &str) -> serde_json::Value {
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    last["report"].clone()
}

#[test]
fn retention_gc_and_recover_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&udm(&["quickstart", "--dir", d]));
    let before = ok(&udm(&["export", "--dir", d]));
    let id = before.lines().find_map(|l| l.split("\"id\":\"").nth(1)).unwrap().split('"').next().unwrap().to_owned();
    let object = format!("acme/crm/users/{id}");

    // No policy: refused. The tour's 4 versions, keep 2: ov 2 goes (ov 1 is what the restore copied).
    assert_eq!(udm(&["retention", "--dir", d]).status.code(), Some(2));
    let dry = ok(&udm(&["retention", "--dir", d, "--max-versions", "2", "--dry-run", "--json"]));
    assert_eq!(report(&dry)["versions_pruned"], 1, "{dry}");
    assert!(dry.lines().next().unwrap().contains("\"ovs\":[2]"), "{dry}");
    assert_eq!(ok(&udm(&["export", "--dir", d])), before, "a dry run changes nothing");
    let run = ok(&udm(&["retention", "--dir", d, "--max-versions", "2", "--json"]));
    assert_eq!(report(&run)["versions_pruned"], 1, "{run}");
    let after = ok(&udm(&["export", "--dir", d]));
    assert_eq!(after.lines().count(), before.lines().count() - 1, "{after}");

    // Retention removed its snapshots itself: no orphans.
    let gc = ok(&udm(&["gc", "--dir", d, "--grace-secs", "0", "--json"]));
    assert_eq!((report(&gc)["snapshots"].as_u64(), report(&gc)["objects"].as_u64()), (Some(0), Some(1)), "{gc}");

    // The head (a restore of ov 1) equals the shadow's ov 1: unchanged; ov 3 comes back as a
    // RESTORE; the pruned ov 2 is unrecoverable (exit 1).
    let same = ok(&udm(&["recover", "--dir", d, "--object", &object, "--ov", "1"]));
    assert!(same.contains("0 restored") && same.contains("1 unchanged"), "{same}");
    let human = ok(&udm(&["recover", "--dir", d, "--object", &object, "--ov", "3"]));
    assert!(human.contains("1 restored"), "{human}");
    assert!(ok(&udm(&["export", "--dir", d])).contains("\"restoredFrom\":3"));
    let pruned = udm(&["recover", "--dir", d, "--object", &object, "--ov", "2", "--json"]);
    assert_eq!(pruned.status.code(), Some(1), "{}", String::from_utf8_lossy(&pruned.stderr));
    let all = ok(&udm(&["recover", "--dir", d, "--collection", "acme/crm/users", "--in-place", "--deep", "--json"]));
    assert_eq!(
        (report(&all)["imported"].as_u64(), report(&all)["unrecoverable"].as_u64()),
        (Some(0), Some(0)),
        "{all}"
    );
    assert_eq!(udm(&["recover", "--dir", d, "--collection", "acme-crm"]).status.code(), Some(2));
    assert_eq!(udm(&["recover", "--dir", d]).status.code(), Some(2), "a scope is required");
}
