//! `cargo xtask services up|down|status`: the real servers the adapter tests run against.
//!
//! - MongoDB-compatible: SecantusDB (PyPI, in a venv), in-memory storage;
//! - S3-compatible: moto's server 5.1.22 (PyPI, in a venv), started through
//!   `moto_atomic.py`, which makes its conditional puts atomic as S3's are (moto alone
//!   checks `If-Match` and stores in two steps, so two racing compare-and-swaps can both win);
//! - PostgreSQL: a throwaway cluster under `target/services/pg` (see [`crate::postgres`]).
//!
//! Venvs are cached under `target/services/` and reused across runs. `up` starts both on free
//! loopback ports and writes `target/services/env` (`UDM_TEST_MONGO_URI=…`,
//! `UDM_TEST_S3_ENDPOINT=…`, `UDM_TEST_POSTGRES_URL=…`, and the binaries of `UDM_TEST_MONGO_SERVER=…` and
//! `UDM_TEST_S3S_FS=…` — s3s-fs, a persistent S3 server installed with cargo — for tests that
//! start, stop and restart servers of their own), where the tests find them, plus
//! `target/services/pids`.
//! `down` stops exactly those PIDs (SIGTERM, then SIGKILL after 10 s), and PostgreSQL with
//! `pg_ctl -m fast stop`. Nothing binds anything but 127.0.0.1.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::cmd::{root, run};

struct Service {
    name: &'static str,
    venv: &'static str,
    packages: &'static [&'static str],
    probe: &'static str,
}

const MONGO: Service =
    Service { name: "mongo", venv: "venv-mongo", packages: &["SecantusDB==0.7.0b3"], probe: "secantusd-py" };

const S3: Service = Service { name: "s3", venv: "venv-s3", packages: &["moto[server]==5.1.22"], probe: "moto_server" };

/// moto's server behind one lock for object puts and deletes (see the script).
const MOTO_ATOMIC: &str = include_str!("moto_atomic.py");

fn dir() -> PathBuf {
    root().join("target").join("services")
}

fn env_file() -> PathBuf {
    dir().join("env")
}

fn pid_file() -> PathBuf {
    dir().join("pids")
}

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("up") => up(),
        Some("down") => down(),
        Some("status") => status(),
        _ => Err("usage: cargo xtask services <up | down | status>".into()),
    }
}

/// Installs (if needed) and starts both servers; idempotent when they already run.
pub(crate) fn up() -> Result<(), String> {
    if running_pids().is_some_and(|p| !p.is_empty()) {
        // Started by an xtask without PostgreSQL: add it, leave the others running.
        let env = fs::read_to_string(env_file()).unwrap_or_default();
        if !env.contains("UDM_TEST_POSTGRES_URL=") || crate::postgres::running_pid(&dir()).is_none() {
            let line = format!("UDM_TEST_POSTGRES_URL={}\n", crate::postgres::up(&dir(), free_port()?)?);
            let kept: String =
                env.lines().filter(|l| !l.starts_with("UDM_TEST_POSTGRES_URL=")).map(|l| format!("{l}\n")).collect();
            fs::write(env_file(), format!("{kept}{line}")).map_err(|e| e.to_string())?;
            eprintln!("postgres started: {line}");
        }
        eprintln!("services already up (cargo xtask services status)");
        return Ok(());
    }
    fs::create_dir_all(dir()).map_err(|e| format!("{}: {e}", dir().display()))?;
    for s in [&MONGO, &S3] {
        install(s)?;
    }
    let s3s_fs = install_s3s_fs()?;
    let mongo_port = free_port()?;
    let s3_port = free_port()?;
    let venv = |s: &Service, bin: &str| dir().join(s.venv).join("bin").join(bin);
    let mongo = spawn(
        MONGO.name,
        Command::new(venv(&MONGO, "secantusd-py")).args([
            "--host",
            "127.0.0.1",
            "--port",
            &mongo_port.to_string(),
            "--storage-path",
            ":memory:",
            "--log-level",
            "WARNING",
        ]),
    )?;
    let moto = dir().join("moto_atomic.py");
    fs::write(&moto, MOTO_ATOMIC).map_err(|e| format!("{}: {e}", moto.display()))?;
    let s3 = spawn(
        S3.name,
        Command::new(venv(&S3, "python")).arg(&moto).args(["-H", "127.0.0.1", "-p", &s3_port.to_string()]),
    )?;
    fs::write(pid_file(), format!("{mongo}\n{s3}\n")).map_err(|e| e.to_string())?;
    let ready = wait_for_port(mongo_port).and_then(|()| wait_for_port(s3_port));
    let postgres = ready.and_then(|()| crate::postgres::up(&dir(), free_port()?));
    let postgres = match postgres {
        Ok(url) => url,
        Err(e) => {
            let _ = down();
            return Err(format!("{e}; see logs in {}", dir().display()));
        }
    };
    // The server binary too: restart trials start (and stop) a server of their own on a
    // data directory.
    let env = format!(
        "UDM_TEST_MONGO_URI=mongodb://127.0.0.1:{mongo_port}/?directConnection=true&retryWrites=false\n\
         UDM_TEST_S3_ENDPOINT=http://127.0.0.1:{s3_port}\n\
         UDM_TEST_POSTGRES_URL={postgres}\n\
         UDM_TEST_MONGO_SERVER={}\n\
         UDM_TEST_S3S_FS={}\n",
        venv(&MONGO, "secantusd-py").display(),
        s3s_fs.display()
    );
    fs::write(env_file(), &env).map_err(|e| e.to_string())?;
    eprintln!("services up (pids {mongo}, {s3}):\n{env}");
    Ok(())
}

/// Stops the PIDs `up` recorded, and only those.
pub(crate) fn down() -> Result<(), String> {
    let pids = running_pids().unwrap_or_default();
    for pid in &pids {
        signal(*pid, "TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    for pid in pids.iter().filter(|p| alive(**p)) {
        eprintln!("pid {pid} ignored SIGTERM: SIGKILL");
        signal(*pid, "KILL");
    }
    let _ = fs::remove_file(pid_file());
    let _ = fs::remove_file(env_file());
    let pg = crate::postgres::down(&dir());
    eprintln!("services down ({} stopped{})", pids.len(), if pg.is_ok() { "" } else { "; postgres did not stop" });
    pg
}

fn status() -> Result<(), String> {
    match running_pids() {
        Some(pids) if !pids.is_empty() => {
            for pid in pids {
                eprintln!("pid {pid}: {}", if alive(pid) { "running" } else { "gone" });
            }
            match crate::postgres::running_pid(&dir()) {
                Some(pid) => eprintln!("postgres pid {pid}: running"),
                None => eprintln!("postgres: not running"),
            }
            eprint!("{}", fs::read_to_string(env_file()).unwrap_or_default());
        }
        _ => eprintln!("services are down (cargo xtask services up)"),
    }
    Ok(())
}

fn install(s: &Service) -> Result<(), String> {
    let venv = dir().join(s.venv);
    if venv.join("bin").join(s.probe).exists() {
        return Ok(());
    }
    eprintln!("installing {} into {}", s.packages.join(" "), venv.display());
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&python).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(s.packages))
}

/// The persistent S3 server (s3s-fs: data on disk, survives SIGKILL) that restart trials
/// start, kill and restart themselves; installed with cargo when missing (about 2–5 min on
/// 2 cores; 0.15+ needs a newer rustc).
fn install_s3s_fs() -> Result<std::path::PathBuf, String> {
    let root = dir().join("s3s-fs");
    let bin = root.join("bin").join("s3s-fs");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("installing s3s-fs 0.14.1 into {}", root.display());
    run(crate::cmd::cargo().args(["install", "--locked", "--quiet", "--root"]).arg(&root).args([
        "s3s-fs@0.14.1",
        "--features",
        "binary",
    ]))?;
    Ok(bin)
}

fn spawn(name: &str, cmd: &mut Command) -> Result<u32, String> {
    let log = fs::File::create(dir().join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {name} ({:?}): {e}", cmd.get_program()))?;
    Ok(child.id())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn wait_for_port(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after 60 s"))
}

fn running_pids() -> Option<Vec<u32>> {
    let text = fs::read_to_string(pid_file()).ok()?;
    Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    let stat = fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
}

/// Appends `KEY=VALUE` lines of the env file to `cmd`'s environment.
pub(crate) fn apply_env(cmd: &mut Command) -> Result<(), String> {
    let text = fs::read_to_string(env_file()).map_err(|e| format!("services are not up: {e}"))?;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            cmd.env(k, v);
        }
    }
    Ok(())
}
