//! `cargo xtask tidy` (also a `#[test]`, in the spirit of rust-analyzer's tidy): checks the
//! code against the rules ARCHITECTURE.md states, so the document cannot drift from the code.
//!
//! - every Rust file under `crates/`, `tests/`, `benches/` and `xtask/` starts with `//!` docs;
//! - every crate under `crates/` is named in ARCHITECTURE.md (as `crates/<name>`);
//! - no file is longer than [`MAX_LINES`] lines;
//! - the real clock and random sources (`Instant::now`, `SystemTime::now`, `thread_rng`,
//!   `getrandom`, `RandomState`) are read only in files named `runtime.rs` (or under one
//!   `runtime/` module) of production crates; test code (`tests/`, `udm-testkit`, benches,
//!   `xtask`, `#[cfg(test)]` modules after their marker) is exempt.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::root;

/// Longest file allowed.
pub(crate) const MAX_LINES: usize = 800;

/// What reads the real clock or a random source.
const CLOCK_AND_RANDOM: &[&str] =
    &["Instant::now", "SystemTime::now", "thread_rng", "getrandom::", "RandomState::new", "rand::random"];

/// Runs every check; the error lists every violation.
pub(crate) fn check() -> Result<(), String> {
    let root = root();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["crates", "tests", "benches", "xtask"] {
        rust_files(&root.join(dir), &mut files);
    }
    for f in &files {
        let text = fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        problems.extend(file_problems(&rel, &text));
    }
    let arch = fs::read_to_string(root.join("ARCHITECTURE.md")).map_err(|e| format!("ARCHITECTURE.md: {e}"))?;
    let crates = fs::read_dir(root.join("crates")).map_err(|e| format!("crates/: {e}"))?;
    for entry in crates.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().join("Cargo.toml").exists() && !arch.contains(&format!("crates/{name}`")) {
            problems.push(format!("ARCHITECTURE.md does not name crates/{name}"));
        }
    }
    if problems.is_empty() {
        eprintln!("tidy: {} files ok", files.len());
        Ok(())
    } else {
        Err(format!("tidy found {} problems:\n  {}", problems.len(), problems.join("\n  ")))
    }
}

/// The problems of one file (`rel` is its path from the workspace root).
pub(crate) fn file_problems(rel: &str, text: &str) -> Vec<String> {
    let mut p = Vec::new();
    let first = text.lines().find(|l| !l.trim().is_empty() && !l.starts_with("#!["));
    if !first.is_some_and(|l| l.starts_with("//!")) {
        p.push(format!("{rel}: no `//!` module docs at the top"));
    }
    let lines = text.lines().count();
    if lines > MAX_LINES {
        p.push(format!("{rel}: {lines} lines (at most {MAX_LINES}); split it"));
    }
    if reads_clock_allowed(rel) {
        return p;
    }
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break; // unit tests below
        }
        let code = line.split("//").next().unwrap_or("");
        if let Some(bad) = CLOCK_AND_RANDOM.iter().find(|b| code.contains(*b)) {
            p.push(format!("{rel}:{}: reads the clock or a random source ({bad}) outside a runtime module", n + 1));
        }
    }
    p
}

/// Files allowed to read the clock and random sources: runtime modules and test code.
fn reads_clock_allowed(rel: &str) -> bool {
    let test_code = rel.starts_with("tests/")
        || rel.starts_with("benches/")
        || rel.starts_with("xtask/")
        || rel.starts_with("crates/udm-testkit/")
        || rel.contains("/tests/")
        || rel.contains("/examples/");
    test_code || rel.ends_with("/runtime.rs") || rel.contains("/runtime/")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_tidy() {
        check().unwrap();
    }

    #[test]
    fn each_rule_catches_its_violation() {
        assert!(file_problems("crates/x/src/a.rs", "//! ok\nfn f() {}\n").is_empty());
        assert_eq!(file_problems("crates/x/src/a.rs", "fn f() {}\n").len(), 1, "missing docs");
        let long = format!("//! d\n{}", "\n".repeat(MAX_LINES + 1));
        assert_eq!(file_problems("crates/x/src/a.rs", &long).len(), 1, "too long");
        let clock = "//! d\nfn f() { let t = std::time::Instant::now(); }\n";
        assert_eq!(file_problems("crates/x/src/a.rs", clock).len(), 1, "clock outside runtime");
        assert!(file_problems("crates/x/src/runtime.rs", clock).is_empty());
        assert!(file_problems("crates/x/tests/t.rs", clock).is_empty());
        let in_tests = "//! d\n#[cfg(test)]\nmod tests { fn f() { std::time::Instant::now(); } }\n";
        assert!(file_problems("crates/x/src/a.rs", in_tests).is_empty());
    }
}
