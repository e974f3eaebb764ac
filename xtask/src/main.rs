//! `cargo xtask` — project automation.
//!
//! - `cargo xtask ci`: everything CI runs — fmt check, clippy (`-D warnings`, all targets and
//!   features), the udm-core purity check, tests (nextest when installed, plus doctests),
//!   `cargo deny check bans licenses sources` (installs cargo-deny if missing), and docs with
//!   `-D warnings`. Runs every step, prints a summary, exits non-zero if any step failed.
//! - `cargo xtask test`: services up, the whole test suite (nextest + doctests), services down.
//! - `cargo xtask bench`: services up, criterion benches of pure code and the raw-baseline
//!   bench against the real servers, services down.
//! - `cargo xtask services up|down|status`: the real MongoDB- and S3-compatible servers and
//!   PostgreSQL.
//! - `cargo xtask purity`: only the udm-core dependency check.
//! - `cargo xtask tidy`: module docs, file length, clock/random reads only in runtime modules,
//!   every crate named in ARCHITECTURE.md (also run as a test).

mod ci;
mod cmd;
mod postgres;
mod services;
mod tidy;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <ci | test | bench | services up|down|status | purity | tidy>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::all(),
        Some("test") => ci::test_with_services(),
        Some("bench") => ci::bench(),
        Some("services") => services::main(&args[1..]),
        Some("purity") => ci::purity(),
        Some("tidy") => tidy::check(),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command {args:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
