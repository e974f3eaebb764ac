//! `udm drift` on the embedded default: in sync after the tour (exit 0), drift against an
//! actual state file found and streamed as JSON lines (exit 1), bad input refused (exit 2).

mod common;
use common::{ok, udm};

#[test]
fn drift_reports_in_sync_then_an_actual_state_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&udm(&["quickstart", "--dir", d]));
    let clean = ok(&udm(&["drift", "--dir", d, "--deep", "--json"]));
    let totals: serde_json::Value = serde_json::from_str(clean.lines().last().unwrap()).unwrap();
    assert_eq!(totals["totals"]["summary"]["in_sync"], true, "{clean}");
    assert_eq!(totals["totals"]["objects"], 1, "{clean}");
    let pair = ok(&udm(&["drift", "--dir", d, "--pair", "local", "--json"]));
    assert!(pair.contains("\"in_sync\":true") && pair.contains("\"objects\":1"), "{pair}");
    assert_eq!(udm(&["drift", "--dir", d, "--pair", "nope"]).status.code(), Some(2));

    // The object's latest data, from the export; downstream holds it with one field changed.
    let export = ok(&udm(&["export", "--dir", d]));
    let line = export.lines().rfind(|l| l.contains("\"ov\"")).unwrap();
    let last: serde_json::Value = serde_json::from_str(line).unwrap();
    let id = last["id"].as_str().unwrap().to_owned();
    let mut data = last["data"].clone();
    data["name"] = "Somebody else".into();
    let actual = dir.path().join("actual.jsonl");
    std::fs::write(&actual, format!("{}\n", serde_json::json!({"id": id, "data": data}))).unwrap();
    let a = actual.to_str().unwrap();
    let out = udm(&["drift", "--dir", d, "--collection", "acme/crm/users", "--actual", a, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let finding = &lines[0];
    assert_eq!(
        (&finding["source"], &finding["kind"], &finding["path"], &finding["found"]),
        (&"actual".into(), &"modified".into(), &format!("/{id}/name").into(), &"Somebody else".into()),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap()["totals"]["summary"]["modified"], 1);
    let human = udm(&["drift", "--dir", d, "--object", &format!("acme/crm/users/{id}"), "--actual", a]);
    assert_eq!(human.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&human.stdout).contains("DRIFT"));

    std::fs::write(&actual, "{\"id\": 1}\n").unwrap();
    let bad = udm(&["drift", "--dir", d, "--collection", "acme/crm/users", "--actual", a]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 1"), "{}", String::from_utf8_lossy(&bad.stderr));
    let missing = udm(&["drift", "--dir", d, "--object", "acme/crm/users/nobody"]);
    assert_eq!(missing.status.code(), Some(2));
    let malformed = udm(&["drift", "--dir", d, "--collection", "acme-crm"]);
    assert_eq!(malformed.status.code(), Some(2));
}
