//! Where the real test servers are (started by `cargo xtask services up`).
//!
//! Settings come from the environment (`UDM_TEST_MONGO_URI`, `UDM_TEST_S3_ENDPOINT`,
//! `UDM_TEST_POSTGRES_URL`, which `cargo xtask test`/`ci` set) or, failing that, from
//! `target/services/env`, which `cargo xtask services up` writes. When neither has them the
//! calling test **fails** with a message naming the command: service tests never pass or skip
//! silently.

use std::path::PathBuf;

/// How to start the servers, for failure messages.
pub const START_HINT: &str = "start the test servers with `cargo xtask services up` (or run `cargo xtask test`)";

fn env_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/services/env")
}

fn setting(name: &str) -> String {
    if let Ok(v) = std::env::var(name)
        && !v.is_empty()
    {
        return v;
    }
    let text = std::fs::read_to_string(env_file()).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')).map(str::to_owned))
        .unwrap_or_else(|| panic!("{name} is not set and no running test servers were found: {START_HINT}"))
}

/// The MongoDB-compatible test server's binary (SecantusDB), for tests that start, stop and
/// restart a server of their own on a data directory.
pub fn mongo_server_binary() -> PathBuf {
    PathBuf::from(setting("UDM_TEST_MONGO_SERVER"))
}

/// The persistent S3 server's binary (s3s-fs), for tests that start, kill and restart a
/// server of their own on a data directory.
pub fn s3s_fs_binary() -> PathBuf {
    PathBuf::from(setting("UDM_TEST_S3S_FS"))
}

/// The MongoDB-compatible test server's connection string.
pub fn mongo_uri() -> String {
    setting("UDM_TEST_MONGO_URI")
}

/// The S3-compatible test server's endpoint URL.
pub fn s3_endpoint() -> String {
    setting("UDM_TEST_S3_ENDPOINT")
}

/// The PostgreSQL test server's connection URL (`postgres://postgres@127.0.0.1:PORT/postgres`).
pub fn postgres_url() -> String {
    setting("UDM_TEST_POSTGRES_URL")
}
