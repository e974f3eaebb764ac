//! The throwaway PostgreSQL cluster of `cargo xtask services up|down|status`.
//!
//! - Binaries: `initdb` and `pg_ctl` from `PATH`, else the newest `/usr/lib/postgresql/*/bin`,
//!   else installed with `apt-get update && apt-get install -y postgresql`.
//! - Cluster: `target/services/pg/data` (recreated by every `up`: nothing in it is kept),
//!   `initdb -U postgres --auth=trust`, listening on 127.0.0.1 only (no Unix socket), on a
//!   free port; its log is `target/services/pg/server.log`. It is a test server: `fsync` and
//!   `synchronous_commit` are off (crash durability is not tested against it).
//! - PostgreSQL refuses to run as root: when `id -u` is 0, `initdb` and `pg_ctl` run as the
//!   unprivileged system user [`PG_USER`] (created with `useradd` when missing) through
//!   `runuser -u udm-pg --`, and `target/services/pg` is chowned to it.
//! - Started with `pg_ctl -w start`, stopped with `pg_ctl -m fast -w stop` (never by signal
//!   from the PID file of the other services).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{run, succeeds};

/// The unprivileged user the cluster runs as when xtask runs as root.
pub(crate) const PG_USER: &str = "udm-pg";

/// Where the cluster lives: `target/services/pg`.
fn base(services: &Path) -> PathBuf {
    services.join("pg")
}

fn data(services: &Path) -> PathBuf {
    base(services).join("data")
}

/// `initdb` and `pg_ctl`.
struct Bins {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

/// The first `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// `initdb` and `pg_ctl` from PATH, else from the newest `/usr/lib/postgresql/*/bin`.
fn find_bins() -> Option<Bins> {
    if let (Some(initdb), Some(pg_ctl)) = (on_path("initdb"), on_path("pg_ctl")) {
        return Some(Bins { initdb, pg_ctl });
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    let (_, bin) = versions.pop()?;
    Some(Bins { initdb: bin.join("initdb"), pg_ctl: bin.join("pg_ctl") })
}

/// [`find_bins`], installing the distribution's `postgresql` package when there are none.
fn bins() -> Result<Bins, String> {
    if let Some(b) = find_bins() {
        return Ok(b);
    }
    if !is_root() {
        return Err("initdb/pg_ctl not found: install PostgreSQL (apt-get install -y postgresql)".into());
    }
    eprintln!("installing PostgreSQL (apt-get install -y postgresql)");
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get").args(["install", "-y", "postgresql"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    find_bins().ok_or_else(|| "initdb/pg_ctl still not found after installing postgresql".into())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command running `program` as the cluster's owner: [`PG_USER`] under root, else us.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Creates [`PG_USER`] when running as root and it does not exist yet.
fn ensure_user() -> Result<(), String> {
    if !is_root() || succeeds(Command::new("id").args(["-u", PG_USER])) {
        return Ok(());
    }
    run(Command::new("useradd").args([
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        PG_USER,
    ]))
}

/// The postmaster's PID, when its PID file names a live process.
pub(crate) fn running_pid(services: &Path) -> Option<u32> {
    let text = fs::read_to_string(data(services).join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    let stat = fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).unwrap_or_default();
    (!stat.is_empty() && !stat.contains(") Z ")).then_some(pid)
}

/// Creates a fresh cluster listening on 127.0.0.1:`port` and starts it; returns the URL the
/// tests connect to.
pub(crate) fn up(services: &Path, port: u16) -> Result<String, String> {
    let b = bins()?;
    ensure_user()?;
    // A cluster left running by an earlier `up` (without `down`) is stopped, then replaced.
    if running_pid(services).is_some() {
        let _ = stop_with(&b, services);
    }
    let base = base(services);
    if base.exists() {
        fs::remove_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    }
    let data = data(services);
    fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    if is_root() {
        run(Command::new("chown").args(["-R", &format!("{PG_USER}:{PG_USER}")]).arg(&base))?;
    }
    run(as_owner(&b.initdb)
        .current_dir(&base)
        .args(["--no-sync", "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "-D"])
        .arg(&data)
        .stdout(std::process::Stdio::null()))?;
    let conf = format!(
        "\n# cargo xtask services: a throwaway test cluster\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = ''\n\
         max_connections = 300\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n"
    );
    let conf_path = data.join("postgresql.conf");
    let mut text = fs::read_to_string(&conf_path).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    text.push_str(&conf);
    fs::write(&conf_path, text).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    run(as_owner(&b.pg_ctl)
        .current_dir(&base)
        .args(["-w", "-t", "60", "-s", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(base.join("server.log"))
        .arg("start"))
    .map_err(|e| format!("{e}; see {}", base.join("server.log").display()))?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}

/// Stops the cluster (`pg_ctl -m fast stop`), if one runs.
pub(crate) fn down(services: &Path) -> Result<(), String> {
    if running_pid(services).is_none() {
        return Ok(());
    }
    let b = find_bins().ok_or("initdb/pg_ctl not found")?;
    stop_with(&b, services)
}

fn stop_with(b: &Bins, services: &Path) -> Result<(), String> {
    run(as_owner(&b.pg_ctl)
        .current_dir(base(services))
        .args(["-m", "fast", "-w", "-t", "60", "-s", "-D"])
        .arg(data(services))
        .arg("stop"))
}
