//! `udm retention`, `udm gc` and `udm recover`: the S3 shadow's maintenance commands, each on
//! a config file (`--config FILE`) or the embedded default (`--dir DIR`), with `--dry-run`,
//! `--json` (one JSON object per event, then the report) and a progress line on a terminal.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;
use udm_core::{Cv, Error, ErrorKind, Ov, Result, RouteContext, Timestamp};
use udm_facade::{GcEvent, RecoverEvent, RecoverMode, RecoverOptions, RecoverPoint, RetentionEvent, Udm};

use crate::SpoolArgs;

/// `udm retention` arguments.
#[derive(clap::Args)]
pub(crate) struct RetentionArgs {
    #[command(flatten)]
    store: SpoolArgs,
    /// One collection: `TENANT/DB/COLLECTION` (default: every collection).
    #[arg(long)]
    collection: Option<String>,
    /// Overrides `retention.days`.
    #[arg(long)]
    days: Option<u32>,
    /// Overrides `retention.max_versions_per_item`.
    #[arg(long)]
    max_versions: Option<u32>,
    /// Report what would be pruned; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// JSON lines: one per event, then the report.
    #[arg(long)]
    json: bool,
}

/// `udm gc` arguments.
#[derive(clap::Args)]
pub(crate) struct GcArgs {
    #[command(flatten)]
    store: SpoolArgs,
    /// One collection: `TENANT/DB/COLLECTION` (default: every collection).
    #[arg(long)]
    collection: Option<String>,
    /// Orphans younger than this many seconds may be writes in flight: kept.
    #[arg(long, default_value_t = 3600)]
    grace_secs: u64,
    /// Report what would be deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// JSON lines: one per event, then the report.
    #[arg(long)]
    json: bool,
}

/// `udm recover` arguments.
#[derive(clap::Args)]
pub(crate) struct RecoverArgs {
    #[command(flatten)]
    store: SpoolArgs,
    /// One object: `TENANT/DB/COLLECTION/ID`.
    #[arg(long, conflicts_with = "collection", required_unless_present = "collection")]
    object: Option<String>,
    /// Every object of a collection: `TENANT/DB/COLLECTION`.
    #[arg(long)]
    collection: Option<String>,
    /// Recover this OV (one object).
    #[arg(long, conflicts_with_all = ["at", "cv"])]
    ov: Option<u64>,
    /// Recover the version current at this instant (RFC 3339 or milliseconds since the epoch).
    #[arg(long, conflicts_with = "cv")]
    at: Option<String>,
    /// Recover the version current at this collection version.
    #[arg(long)]
    cv: Option<u64>,
    /// Repair the metadata store to match the shadow (import what it lacks) instead of
    /// appending a RESTORE version.
    #[arg(long)]
    in_place: bool,
    /// Check every version's snapshot, not only the head's.
    #[arg(long)]
    deep: bool,
    /// Check and report; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// JSON lines: one per event, then the report.
    #[arg(long)]
    json: bool,
}

pub(crate) fn context(flag: &str, s: &str) -> Result<RouteContext> {
    match s.split('/').collect::<Vec<_>>().as_slice() {
        [t, d, c] => RouteContext::new(t, d, c),
        _ => Err(Error::validation(flag, format!("{s:?} is not TENANT/DB/COLLECTION"))),
    }
}

/// The config the arguments name.
fn config(args: &SpoolArgs) -> Result<udm_core::config::Config> {
    match (&args.config, &args.dir) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Error::new(ErrorKind::Config, format!("{}: {e}", file.display())))?;
            udm_core::config::Config::from_toml(&text)
        }
        (None, Some(dir)) => Ok(Udm::embedded_config(dir)),
        (None, None) => Err(Error::validation("--config", "give --config FILE or --dir DIR")),
    }
}

/// Prints events as they come (JSON lines, or a human line), and a progress line.
struct Printer {
    json: bool,
    terminal: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    failed: Option<std::io::Error>,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            terminal: std::io::stderr().is_terminal(),
            out: std::io::BufWriter::new(std::io::stdout()),
            failed: None,
        }
    }

    fn event(&mut self, e: &impl Serialize, human: impl FnOnce() -> String) {
        let line = if self.json { serde_json::to_string(e).unwrap_or_default() } else { human() };
        if let Err(err) = writeln!(self.out, "{line}") {
            self.failed.get_or_insert(err);
        }
    }

    fn progress(&self, objects: u64) {
        if self.terminal {
            eprint!("\r{objects} objects   ");
        }
    }

    fn finish(mut self, report: &impl Serialize, human: String) -> Result<()> {
        if self.terminal {
            eprintln!();
        }
        let io = |e: std::io::Error| Error::new(ErrorKind::Unavailable, format!("output: {e}"));
        let line = if self.json { serde_json::json!({ "report": report }).to_string() } else { human };
        writeln!(self.out, "{line}").map_err(io)?;
        self.out.flush().map_err(io)?;
        self.failed.map_or(Ok(()), |e| Err(io(e)))
    }
}

pub(crate) async fn retention(args: RetentionArgs) -> Result<u8> {
    let mut cfg = config(&args.store)?;
    if args.days.is_some() {
        cfg.retention.days = args.days;
    }
    if args.max_versions.is_some() {
        cfg.retention.max_versions_per_item = args.max_versions;
    }
    let scope = args.collection.as_deref().map(|c| context("--collection", c)).transpose()?;
    let udm = Udm::from_config(cfg).await?;
    let mut p = Printer::new(args.json);
    let report = udm
        .admin()
        .enforce_retention(scope.as_ref(), args.dry_run, &mut |e| match &e {
            RetentionEvent::Progress { objects } => p.progress(*objects),
            RetentionEvent::Pruned { collection, id, ovs, bytes, .. } => {
                p.event(&e, || format!("pruned {collection}/{id} ovs {ovs:?} ({bytes} bytes)"));
            }
            RetentionEvent::Skipped { collection, reason } => p.event(&e, || format!("skipped {collection}: {reason}")),
        })
        .await?;
    let verb = if args.dry_run { "would prune" } else { "pruned" };
    let human = format!(
        "{verb} {} versions of {} objects ({} snapshots, {} bytes; {} content objects, {} bytes); {} kept by pins; {} collections skipped",
        report.versions_pruned,
        report.objects,
        report.snapshots_deleted,
        report.snapshot_bytes,
        report.content_deleted,
        report.content_bytes,
        report.kept_pinned,
        report.skipped_collections
    );
    p.finish(&report, human)?;
    udm.admin().shutdown().await?;
    Ok(0)
}

pub(crate) async fn gc(args: GcArgs) -> Result<u8> {
    let scope = args.collection.as_deref().map(|c| context("--collection", c)).transpose()?;
    let udm = Udm::from_config(config(&args.store)?).await?;
    let mut p = Printer::new(args.json);
    let report = udm
        .admin()
        .collect_garbage(scope.as_ref(), Duration::from_secs(args.grace_secs), args.dry_run, &mut |e| match &e {
            GcEvent::Progress { objects } => p.progress(*objects),
            GcEvent::Orphan { key, bytes, kind, .. } => p.event(&e, || format!("orphan {kind} {key} ({bytes} bytes)")),
            GcEvent::Unreadable { key, error, .. } => p.event(&e, || format!("unreadable {key}: {error}")),
        })
        .await?;
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    let human = format!(
        "{verb} {} orphan snapshots ({} bytes) and {} content objects ({} bytes) in {} objects; {} kept in the grace period; {} unreadable",
        report.snapshots,
        report.snapshot_bytes,
        report.content,
        report.content_bytes,
        report.objects,
        report.kept_in_grace,
        report.unreadable
    );
    p.finish(&report, human)?;
    udm.admin().shutdown().await?;
    Ok(u8::from(report.unreadable > 0))
}

fn instant(s: &str) -> Result<Timestamp> {
    match s.parse::<i64>() {
        Ok(ms) => Timestamp::from_millis(ms),
        Err(_) => Timestamp::parse_rfc3339(s),
    }
}

pub(crate) async fn recover(args: RecoverArgs) -> Result<u8> {
    let point = match (args.ov, &args.at, args.cv) {
        (Some(ov), _, _) => RecoverPoint::Ov(Ov::new(ov)?),
        (_, Some(at), _) => RecoverPoint::At(instant(at)?),
        (_, _, Some(cv)) => RecoverPoint::Cv(Cv(cv)),
        _ => RecoverPoint::Latest,
    };
    let mode = if args.in_place { RecoverMode::InPlace } else { RecoverMode::Restore };
    let options = RecoverOptions { point, mode, dry_run: args.dry_run, deep: args.deep };
    let target = match (&args.object, &args.collection) {
        (Some(o), _) => match o.rsplit_once('/') {
            Some((ctx, id)) => (context("--object", ctx)?, Some(id.to_owned())),
            None => return Err(Error::validation("--object", format!("{o:?} is not TENANT/DB/COLLECTION/ID"))),
        },
        (None, Some(c)) => (context("--collection", c)?, None),
        (None, None) => return Err(Error::validation("--object", "give --object or --collection")),
    };
    let udm = Udm::from_config(config(&args.store)?).await?;
    let coll = udm.with(target.0);
    let mut p = Printer::new(args.json);
    let mut on = |e: RecoverEvent| match &e {
        RecoverEvent::Restored { id, from } => p.event(&e, || format!("restored {id} from the shadow's ov {from}")),
        RecoverEvent::Imported { id, ovs } => p.event(&e, || format!("imported {id} ovs {ovs:?}")),
        RecoverEvent::Repaired { id, key } => p.event(&e, || format!("repaired {id}: {key}")),
        RecoverEvent::Unrecoverable { id, reason } => p.event(&e, || format!("UNRECOVERABLE {id}: {reason}")),
    };
    let report = match &target.1 {
        Some(id) => coll.recover(id, options, &mut on).await?,
        None => coll.recover_all(options, &mut on).await?,
    };
    let verb = if args.dry_run { " (dry run)" } else { "" };
    let human = format!(
        "{} objects{verb}: {} restored, {} imported versions, {} snapshots repaired, {} unchanged, {} unrecoverable",
        report.objects, report.restored, report.imported, report.repaired, report.unchanged, report.unrecoverable
    );
    p.finish(&report, human)?;
    udm.admin().shutdown().await?;
    Ok(u8::from(report.unrecoverable > 0))
}
