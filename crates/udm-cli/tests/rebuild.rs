//! On the embedded default, deleting the metadata file and running `udm rebuild --dir DIR`
//! gives back an identical export (`udm export --dir DIR`).

mod common;
use common::{ok, udm};

#[test]
fn a_deleted_metadata_file_is_rebuilt_from_the_blob_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&udm(&["quickstart", "--dir", d]));
    let before = ok(&udm(&["export", "--dir", d]));
    let lines = before.lines().count();
    assert!(lines >= 5, "the tour wrote versions: {before}");
    assert!(before.contains("\"op\":\"RESTORE\""), "{before}");

    std::fs::remove_file(dir.path().join("udm.redb")).unwrap();
    let empty = ok(&udm(&["export", "--dir", d]));
    assert!(!empty.contains("\"op\""), "no versions without the metadata file: {empty}");

    let report: serde_json::Value = serde_json::from_str(&ok(&udm(&["rebuild", "--dir", d, "--json"]))).unwrap();
    assert!(report["imported"].as_u64().unwrap() > 0, "{report}");
    let after = ok(&udm(&["export", "--dir", d]));
    assert_eq!(after, before, "the export after the rebuild");

    let again: serde_json::Value = serde_json::from_str(&ok(&udm(&["rebuild", "--dir", d, "--json"]))).unwrap();
    assert_eq!(again["imported"], 0, "{again}");
    let missing = udm(&["rebuild", "--dir", d, "--pair", "nope", "--json"]);
    assert_eq!(missing.status.code(), Some(2));
}
