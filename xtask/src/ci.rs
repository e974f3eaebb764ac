//! The CI pipeline.

use std::time::Instant;

use crate::cmd::{cargo, output, run, succeeds};

/// cargo-deny version installed when missing (newer releases may need a newer rustc).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Crates udm-core must never depend on: runtimes, databases, HTTP, cloud SDKs, IO.
const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "mio",
    "mongodb",
    "bson",
    "object_store",
    "reqwest",
    "hyper",
    "http",
    "rustls",
    "native-tls",
    "openssl",
    "redb",
    "rand",
    "getrandom",
    "tempfile",
];

type Step = (&'static str, fn() -> Result<(), String>);

pub(crate) fn all() -> Result<(), String> {
    let steps: &[Step] =
        &[("fmt", fmt), ("clippy", clippy), ("purity", purity), ("tests", tests), ("deny", deny), ("docs", docs)];
    let mut results = Vec::new();
    for (name, step) in steps {
        eprintln!("\n==> xtask ci: {name}");
        let start = Instant::now();
        let r = step();
        if let Err(e) = &r {
            eprintln!("!! {name} failed: {e}");
        }
        results.push((*name, r.is_ok(), start.elapsed().as_secs_f64()));
    }
    eprintln!("\n==> xtask ci summary");
    for (name, ok, secs) in &results {
        eprintln!("  {:<8} {:<6} {secs:>7.1}s", name, if *ok { "ok" } else { "FAILED" });
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    if failed.is_empty() { Ok(()) } else { Err(format!("failed steps: {}", failed.join(", "))) }
}

fn fmt() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))
}

fn clippy() -> Result<(), String> {
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]))
}

/// udm-core's normal dependency tree contains none of [`FORBIDDEN_IN_CORE`].
pub(crate) fn purity() -> Result<(), String> {
    let tree = output(cargo().args(["tree", "-p", "udm-core", "-e", "normal", "--prefix", "none", "--format", "{p}"]))?;
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| FORBIDDEN_IN_CORE.contains(name))
        .collect();
    if found.is_empty() {
        eprintln!("udm-core depends on none of: {}", FORBIDDEN_IN_CORE.join(", "));
        Ok(())
    } else {
        Err(format!("udm-core must stay pure but depends on {found:?}"))
    }
}

fn tests() -> Result<(), String> {
    if succeeds(cargo().args(["nextest", "--version"])) {
        run(cargo().args(["nextest", "run", "--workspace", "--all-features", "--no-fail-fast"]))?;
    } else {
        eprintln!("cargo-nextest not installed: using cargo test");
        run(cargo().args(["test", "--workspace", "--all-features", "--no-fail-fast", "--lib", "--bins", "--tests"]))?;
    }
    run(cargo().args(["test", "--workspace", "--all-features", "--doc"]))
}

fn deny() -> Result<(), String> {
    if !succeeds(cargo().args(["deny", "--version"])) {
        eprintln!("cargo-deny not installed: installing {CARGO_DENY_VERSION}");
        run(cargo().args(["install", "--locked", "cargo-deny", "--version", CARGO_DENY_VERSION]))?;
    }
    // Advisories need the RustSec database from the internet, which CI cannot reach.
    run(cargo().args(["deny", "check", "bans", "licenses", "sources"]))
}

fn docs() -> Result<(), String> {
    run(cargo().args(["doc", "--workspace", "--no-deps", "--all-features"]).env("RUSTDOCFLAGS", "-D warnings"))
}
