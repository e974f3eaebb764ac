//! The CI pipeline.

use std::time::Instant;

use crate::cmd::{cargo, output, run, succeeds};
use crate::services;

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
    let steps: &[Step] = &[
        ("fmt", fmt),
        ("tidy", crate::tidy::check),
        ("clippy", clippy),
        ("purity", purity),
        ("lean", lean),
        ("tests", test_with_services),
        ("deny", deny),
        ("docs", docs),
    ];
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

/// The crates whose cargo features choose backends: each feature set is linted and tested.
const FEATURED: &[&str] = &["-p", "udm-facade", "-p", "udm-s3"];

fn clippy() -> Result<(), String> {
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]))?;
    // No features and default features of the crates with backend features (the workspace
    // run above unifies every feature, so those branches are never compiled there).
    for set in [&["--no-default-features"][..], &[]] {
        run(cargo().args(["clippy", "--all-targets"]).args(FEATURED).args(set).args(["--", "-D", "warnings"]))?;
    }
    Ok(())
}

/// Crates a production build with default features must not pull.
const NOT_IN_DEFAULT_BUILD: &[&str] = &["proptest", "udm-testkit", "aws-sdk-s3", "mongodb", "object_store", "reqwest"];

/// The facade's default build (the zero-setup default) pulls no test kit, no cloud SDK and no
/// database driver; the tests of the featured crates pass with no and with default features.
fn lean() -> Result<(), String> {
    let tree =
        output(cargo().args(["tree", "-p", "udm-facade", "-e", "normal", "--prefix", "none", "--format", "{p}"]))?;
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| NOT_IN_DEFAULT_BUILD.contains(name))
        .collect();
    if !found.is_empty() {
        return Err(format!("udm-facade's default build pulls {found:?}"));
    }
    let cli = output(cargo().args(["tree", "-p", "udm-cli", "-e", "normal", "--prefix", "none", "--format", "{p}"]))?;
    let mut crates: Vec<&str> = cli.lines().filter_map(|l| l.split_whitespace().next()).collect();
    crates.sort_unstable();
    crates.dedup();
    eprintln!("udm-facade (default features) pulls none of {NOT_IN_DEFAULT_BUILD:?}; udm-cli: {} crates", crates.len());
    for set in [&["--no-default-features"][..], &[]] {
        run(cargo().args(["test", "--lib", "--tests"]).args(FEATURED).args(set))?;
    }
    Ok(())
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

/// Brings the servers up, runs every test against them, and brings them down even when
/// something failed. A server that cannot start fails the step: service tests never skip.
pub(crate) fn test_with_services() -> Result<(), String> {
    // Build first, so compile time does not count against the servers' lifetime.
    run(cargo().args(["test", "--workspace", "--all-features", "--no-run"]))?;
    services::up()?;
    let result = tests();
    let stopped = services::down();
    result.and(stopped)
}

/// Criterion benches of pure code, then end-to-end latency (raw calls and UDM) on the real servers.
pub(crate) fn bench() -> Result<(), String> {
    run(cargo().args(["bench", "-p", "udm-benches", "--no-run"]))?;
    run(cargo().args(["bench", "-p", "udm-benches", "--bench", "core"]))?;
    services::up()?;
    let mut raw = cargo();
    raw.args(["bench", "-p", "udm-benches", "--bench", "e2e"]);
    let result = services::apply_env(&mut raw).and_then(|()| run(&mut raw));
    let stopped = services::down();
    result.and(stopped)
}

fn tests() -> Result<(), String> {
    let mut cmd = if succeeds(cargo().args(["nextest", "--version"])) {
        let mut c = cargo();
        c.args(["nextest", "run", "--workspace", "--all-features", "--no-fail-fast"]);
        c
    } else {
        eprintln!("cargo-nextest not installed: using cargo test");
        let mut c = cargo();
        c.args(["test", "--workspace", "--all-features", "--no-fail-fast", "--lib", "--bins", "--tests"]);
        c
    };
    services::apply_env(&mut cmd)?;
    let unit = run(&mut cmd);
    let doc = run(cargo().args(["test", "--workspace", "--all-features", "--doc"]));
    unit.and(doc)
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
