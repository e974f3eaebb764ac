//! `udm` — the UDM command line.
//!
//! `udm quickstart [--dir DIR]` runs a short tour on the zero-setup default (embedded store
//! files: `DIR/udm.redb` with the metadata, `DIR/udm-blobs.redb` with the snapshots; a fresh
//! temporary directory by default): create, update, enrich, read as of an instant, restore, history — printing what
//! happens. `udm health --dir DIR` checks the stores of a data directory.
//!
//! `udm queue stats | pending | dead | retry ID | cancel ID` inspects and steers the fallback
//! queue's spool — the file `fallback_queue.spool` of a config file (`--config FILE`), or
//! `DIR/udm-queue.redb` of the embedded default (`--dir DIR`) — directly: no `Udm` is built,
//! so nothing is replayed by the command (a retried entry is replayed by the application's
//! worker). The spool is locked while the application runs. `--json` prints JSON.
//!
//! `udm export` writes every version of every object — metadata and data — as canonical JSON
//! lines in a deterministic order (then each collection's counters and CVs): an audit export,
//! and the way to compare a store before a loss and after its rebuild. `udm rebuild [--pair
//! NAME]` rebuilds a pair's metadata from its blob store alone (after losing the metadata
//! database, or `DIR/udm.redb` of the embedded default), with a progress line on a terminal.
//! Both take `--config FILE` or `--dir DIR`, and `--json`.
//!
//! `udm drift` compares the metadata store with the blob store's shadow (and an actual state
//! given as JSON lines), streaming each finding. `udm retention [--dry-run]` prunes versions
//! by the retention policy, `udm gc [--dry-run]` deletes orphan snapshots and content, and
//! `udm recover --object T/D/C/ID | --collection T/D/C [--ov N | --at T | --cv N]
//! [--in-place] [--deep] [--dry-run]` recovers from the shadow and repairs damaged snapshots.
//!
//! Exit codes: 0 = done (clean), 1 = problems found (drift), 2 = error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod drift;
mod maintain;
use serde_json::{Value, json};
use udm_core::ports::{Clock, QueueEntry, QueueState, QueueStore};
use udm_core::query::HistoryQuery;
use udm_core::{Result, RouteContext};
use udm_facade::{EnrichOpts, ReadOpts, RestoreOutcome, Target, Udm, WriteOpts};

#[derive(Parser)]
#[command(name = "udm", version, about = "UDM: versioned JSON documents with history, time travel and restore")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A short tour on the embedded default (no servers needed).
    Quickstart {
        /// Data directory (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Health of the stores in a data directory.
    Health {
        /// Data directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Every version of every object as canonical JSON lines (an audit export).
    Export {
        #[command(flatten)]
        store: SpoolArgs,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rebuilds a pair's metadata from its blob store alone.
    Rebuild {
        #[command(flatten)]
        store: SpoolArgs,
        /// The pair (may be omitted when there is one).
        #[arg(long)]
        pair: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drift: the metadata store against the blob store's shadow and an optional actual
    /// state. Exit code 0 = in sync, 1 = drift found, 2 = error.
    Drift(drift::DriftArgs),
    /// Enforces the retention policy (config, or --days / --max-versions): prunes old
    /// versions, never heads, pins or what a running collection restore needs.
    Retention(maintain::RetentionArgs),
    /// Deletes orphan snapshots and content objects older than a grace period. Exit code 1
    /// when unreadable blobs were found.
    Gc(maintain::GcArgs),
    /// Recovers an object or a collection from the S3 shadow (a RESTORE version, or in place)
    /// and repairs damaged snapshots. Exit code 1 when something is unrecoverable.
    Recover(maintain::RecoverArgs),
    /// The fallback queue: sizes, entries, dead letters; retry or cancel an entry.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
        #[command(flatten)]
        spool: SpoolArgs,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
}

/// Where the stores are (and the fallback queue's spool).
#[derive(clap::Args)]
#[group(multiple = false)]
struct SpoolArgs {
    /// A config file (TOML) whose `fallback_queue.spool` names the spool.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The embedded default's data directory (spool `DIR/udm-queue.redb`).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum QueueAction {
    /// Pending, leased and dead counts.
    Stats,
    /// Pending entries.
    Pending {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Dead letters, with the error that stopped each.
    Dead {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Moves a dead letter back to pending, due now.
    Retry {
        /// The entry id (as `pending` / `dead` print it).
        id: String,
    },
    /// Removes an entry (pending or dead): it will never be applied.
    Cancel {
        /// The entry id.
        id: String,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The exit code: 0 = done (clean), 1 = problems found, 2 = error.
    let result: Result<u8> = match cli.command {
        Command::Quickstart { dir } => quickstart(dir).await.map(|()| 0),
        Command::Health { dir } => health(dir).await.map(|()| 0),
        Command::Queue { action, spool, json } => queue(action, spool, json).await.map(|()| 0),
        Command::Export { store, out } => export(store, out).await.map(|()| 0),
        Command::Rebuild { store, pair, json } => rebuild(store, pair, json).await.map(|()| 0),
        Command::Drift(args) => drift::run(args).await,
        Command::Retention(args) => maintain::retention(args).await,
        Command::Gc(args) => maintain::gc(args).await,
        Command::Recover(args) => maintain::recover(args).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("udm: {e}");
            ExitCode::from(2)
        }
    }
}

fn data_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    match dir {
        Some(d) => Ok(d),
        None => {
            let base = std::env::temp_dir().join(format!("udm-quickstart-{}", std::process::id()));
            std::fs::create_dir_all(&base)
                .map_err(|e| udm_core::Error::new(udm_core::ErrorKind::Config, format!("{}: {e}", base.display())))?;
            Ok(base)
        }
    }
}

fn show(label: &str, v: &Value) {
    println!("{label:<28} {v}");
}

async fn quickstart(dir: Option<PathBuf>) -> Result<()> {
    let dir = data_dir(dir)?;
    println!("UDM quick start — embedded store (metadata + snapshots) in {}\n", dir.display());
    let udm = Udm::embedded(&dir).await?;
    let users = udm.with(RouteContext::new("acme", "crm", "users")?);
    let id = format!("ada-{}", std::process::id());

    let v1 = users
        .create(json!({"name": "Ada", "tags": ["math"]}), WriteOpts::id(&id).actor("alice").reason("signup"))
        .await?;
    show(&format!("create {id}"), &json!({"ov": v1.ov.get(), "cv": v1.cv.0, "at": v1.at.to_string()}));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let v2 = users
        .update(
            &id,
            json!({"name": "Ada Lovelace", "tags": ["math"]}),
            Some(v1.ov),
            WriteOpts::default().actor("alice"),
        )
        .await?;
    show("update (expected ov 1)", &json!({"ov": v2.ov.get()}));
    let stale = users.update(&id, json!({"name": "stale"}), Some(v1.ov), WriteOpts::default()).await;
    if let Err(e) = stale {
        show(
            "update (stale ov 1)",
            &json!({"error": e.kind().as_str(), "current_ov": e.current_ov().map(|o| o.get())}),
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let enrich = EnrichOpts { function_id: Some("geo-v1".into()), ..EnrichOpts::default() };
    let v3 = users.enrich(&id, json!({"tags": ["computing", "math"], "geo": {"city": "London"}}), enrich).await?;
    show("enrich (geo-v1)", &json!({"ov": v3.ov.get()}));

    let latest = users.get_latest(&id, ReadOpts::default()).await?;
    show("latest", &latest.document());
    let then = users.as_of(&id, v1.at, ReadOpts::default()).await?;
    show(&format!("as of {}", v1.at), &then.data);

    match users.restore_object(&id, Target::Ov(v1.ov), WriteOpts::default().reason("undo")).await? {
        RestoreOutcome::Restored(w) => show("restore to ov 1", &json!({"ov": w.ov.get(), "restoredFrom": 1})),
        RestoreOutcome::Unchanged { ov } => show("restore to ov 1", &json!({"unchanged": ov.get()})),
    }
    show("latest after restore", &users.get_latest(&id, ReadOpts::default()).await?.data);

    println!("\nhistory of {id}:");
    for v in users.history(&id, HistoryQuery::default()).await?.items {
        let from = v.restored_from.map(|o| format!(" (from ov {})", o.get())).unwrap_or_default();
        println!(
            "  ov {} cv {} {:<8} {} by {}{from}",
            v.ov.get(),
            v.cv.0,
            v.op.as_str(),
            v.at,
            v.provenance.actor.as_deref().unwrap_or("-")
        );
    }
    let totals = udm.counters().totals(users.context()).await?;
    show("\ncounters", &serde_json::to_value(totals).unwrap_or_default());
    println!("\ndata kept in {}", dir.display());
    Ok(())
}

async fn health(dir: PathBuf) -> Result<()> {
    let udm = Udm::embedded(&dir).await?;
    let report = udm.admin().health().await;
    for p in &report.pairs {
        println!("{}: meta {:?}, json {:?}, content {:?}", p.name, p.meta, p.json, p.content);
    }
    if report.is_healthy() { Ok(()) } else { Err(udm_core::Error::unavailable("some backend is unhealthy")) }
}

/// The spool the arguments name, opened directly.
fn open_spool(args: SpoolArgs) -> Result<std::sync::Arc<dyn QueueStore>> {
    let mut q = udm_core::config::FallbackQueueConfig::default();
    match (args.config, args.dir) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| udm_core::Error::new(udm_core::ErrorKind::Config, format!("{}: {e}", file.display())))?;
            let config = udm_core::config::Config::from_toml(&text)?;
            config.validate()?;
            q = config.fallback_queue;
        }
        (None, Some(dir)) => q.spool = Some(Udm::embedded_spool(&dir).display().to_string()),
        (None, None) => return Err(udm_core::Error::validation("--config", "give --config FILE or --dir DIR")),
    }
    if let Some(path) = q.spool.as_deref()
        && !std::path::Path::new(path).exists()
    {
        return Err(udm_core::Error::not_found(format!("no fallback queue spool at {path}")));
    }
    Udm::open_queue(&q)
}

fn print_entries(entries: &[QueueEntry], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(entries).unwrap_or_default());
        return;
    }
    for e in entries {
        let error = e.last_error.as_deref().unwrap_or("-");
        println!("{}  attempts {}  next {}  queued {}  {error}", e.id, e.attempts, e.next_attempt_at, e.enqueued_at);
    }
    println!("{} entries", entries.len());
}

async fn queue(action: QueueAction, spool: SpoolArgs, json: bool) -> Result<()> {
    let q = open_spool(spool)?;
    match action {
        QueueAction::Stats => {
            let now = udm_facade::SystemClock.now();
            let s = q.stats(now).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                println!("pending {}  leased {}  dead {}", s.pending, s.leased, s.dead);
            }
        }
        QueueAction::Pending { limit } => print_entries(&q.list(QueueState::Pending, None, limit).await?, json),
        QueueAction::Dead { limit } => print_entries(&q.list(QueueState::Dead, None, limit).await?, json),
        QueueAction::Retry { id } => {
            q.retry_dead(&id, udm_facade::SystemClock.now()).await?;
            say(json, "retried", &id);
        }
        QueueAction::Cancel { id } => {
            q.cancel(&id).await?;
            say(json, "cancelled", &id);
        }
    }
    Ok(())
}

fn say(json: bool, what: &str, id: &str) {
    if json {
        println!("{}", json!({ what: id }));
    } else {
        println!("{what} {id}");
    }
}

/// The `Udm` the arguments describe.
async fn open_udm(args: SpoolArgs) -> Result<Udm> {
    match (args.config, args.dir) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| udm_core::Error::new(udm_core::ErrorKind::Config, format!("{}: {e}", file.display())))?;
            Udm::from_config(udm_core::config::Config::from_toml(&text)?).await
        }
        (None, Some(dir)) => Udm::embedded(&dir).await,
        (None, None) => Err(udm_core::Error::validation("--config", "give --config FILE or --dir DIR")),
    }
}

async fn export(store: SpoolArgs, out: Option<PathBuf>) -> Result<()> {
    let udm = open_udm(store).await?;
    let io = |e: std::io::Error| udm_core::Error::new(udm_core::ErrorKind::Unavailable, format!("export: {e}"));
    let report = match out {
        Some(path) => {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
            let r = udm.admin().export(&mut file).await?;
            std::io::Write::flush(&mut file).map_err(io)?;
            r
        }
        None => {
            let mut stdout = std::io::BufWriter::new(std::io::stdout());
            let r = udm.admin().export(&mut stdout).await?;
            std::io::Write::flush(&mut stdout).map_err(io)?;
            r
        }
    };
    eprintln!(
        "exported {} versions of {} objects in {} collections",
        report.versions, report.objects, report.collections
    );
    udm.admin().shutdown().await.map(|_| ())
}

async fn rebuild(store: SpoolArgs, pair: Option<String>, json: bool) -> Result<()> {
    use std::io::IsTerminal;
    let udm = open_udm(store).await?;
    let terminal = std::io::stderr().is_terminal();
    let progress = |p: &udm_facade::RebuildProgress| {
        if terminal {
            eprint!("\r{} {}: {}/{} versions   ", p.pair, p.collection, p.done, p.total);
        }
    };
    let report = udm.admin().rebuild(pair.as_deref(), &progress).await?;
    if terminal {
        eprintln!();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!(
            "rebuilt {} collections from {} log segments: {} versions imported, {} already there, {} done before",
            report.collections, report.segments, report.imported, report.unchanged, report.skipped
        );
    }
    udm.admin().shutdown().await.map(|_| ())
}
