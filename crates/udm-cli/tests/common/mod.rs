//! Running the `udm` binary from the CLI's tests.

use std::process::{Command, Output};

/// `udm ARGS…`.
pub(crate) fn udm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_udm")).args(args).output().unwrap()
}

/// Its stdout, after asserting it succeeded.
pub(crate) fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    stdout
}
