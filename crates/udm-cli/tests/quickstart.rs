//! The quick start runs on a fresh directory with no servers, and its output shows the tour.

use std::process::Command;

#[test]
fn quickstart_runs_with_zero_setup() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_udm")).args(["quickstart", "--dir"]).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    for want in
        ["create ada-", "version conflict", "enrich (geo-v1)", "as of ", "restore to ov 1", "RESTORE", "\"Ada\""]
    {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(dir.path().join("udm.redb").exists());
    // Health of the same directory afterwards.
    let h = Command::new(env!("CARGO_BIN_EXE_udm")).args(["health", "--dir"]).arg(dir.path()).output().unwrap();
    assert!(h.status.success(), "{}", String::from_utf8_lossy(&h.stdout));
}
