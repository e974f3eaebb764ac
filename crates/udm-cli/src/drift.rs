//! `udm drift`: the metadata store against the blob store's shadow and, optionally, an actual
//! state (JSON lines `{"id": …, "data": …}` sorted by id), one finding per line as found.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use udm_core::{Error, ErrorKind, Result, RouteContext};
use udm_facade::{ActualState, DriftEvent, DriftOptions, DriftScope};

use crate::{SpoolArgs, open_udm};

/// `udm drift` arguments.
#[derive(clap::Args)]
pub(crate) struct DriftArgs {
    #[command(flatten)]
    store: SpoolArgs,
    /// One object: `TENANT/DB/COLLECTION/ID`.
    #[arg(long, conflicts_with = "collection")]
    object: Option<String>,
    /// One collection: `TENANT/DB/COLLECTION` (default: every collection).
    #[arg(long, conflicts_with = "pair")]
    collection: Option<String>,
    /// Every collection of one pair (its metadata store against its blob store).
    #[arg(long, conflicts_with = "object")]
    pair: Option<String>,
    /// The actual state: a JSON-lines file of `{"id": …, "data": …}` sorted by id (with
    /// `--collection` or `--object`).
    #[arg(long)]
    actual: Option<PathBuf>,
    /// Unreferenced snapshots younger than this many seconds are writes in flight.
    #[arg(long, default_value_t = 3600)]
    grace_secs: u64,
    /// Compare every version (not only the head) and verify every snapshot.
    #[arg(long)]
    deep: bool,
    /// One JSON object per finding, then the totals.
    #[arg(long)]
    json: bool,
}

fn context(s: &str) -> Result<RouteContext> {
    match s.split('/').collect::<Vec<_>>().as_slice() {
        [t, d, c] => RouteContext::new(t, d, c),
        _ => Err(Error::validation("--collection", format!("{s:?} is not TENANT/DB/COLLECTION"))),
    }
}

fn scope(args: &DriftArgs) -> Result<DriftScope> {
    match (&args.object, &args.collection) {
        (Some(o), _) => match o.rsplit_once('/') {
            Some((ctx, id)) => Ok(DriftScope::Object(context(ctx)?, id.to_owned())),
            None => Err(Error::validation("--object", format!("{o:?} is not TENANT/DB/COLLECTION/ID"))),
        },
        (None, Some(c)) => Ok(DriftScope::Collection(context(c)?)),
        (None, None) => Ok(args.pair.clone().map_or(DriftScope::All, DriftScope::Pair)),
    }
}

/// The lines of `path` as an actual state (read lazily: memory stays bounded).
fn actual_state(path: &PathBuf) -> Result<ActualState> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::new(ErrorKind::Config, format!("{}: {e}", path.display())))?;
    let lines = std::io::BufReader::new(file).lines().enumerate();
    Ok(Box::new(lines.filter_map(|(n, line)| {
        let bad = |why: String| Error::validation("--actual", format!("line {}: {why}", n + 1));
        let line = match line {
            Ok(l) if l.trim().is_empty() => return None,
            Ok(l) => l,
            Err(e) => return Some(Err(bad(e.to_string()))),
        };
        Some(match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(mut m)) => match (m.remove("id"), m.remove("data")) {
                (Some(Value::String(id)), Some(data)) => Ok((id, data)),
                _ => Err(bad("expected {\"id\": string, \"data\": …}".into())),
            },
            Ok(_) => Err(bad("expected a JSON object".into())),
            Err(e) => Err(bad(e.to_string())),
        })
    })))
}

pub(crate) async fn run(args: DriftArgs) -> Result<u8> {
    let scope = scope(&args)?;
    let actual = args.actual.as_ref().map(actual_state).transpose()?;
    let options = DriftOptions { orphan_grace: Duration::from_secs(args.grace_secs), deep: args.deep };
    let udm = open_udm(args.store).await?;
    // Versions committed just before are logged first, so they are not reported as a gap; a
    // flush that fails (the blob store is down) leaves the gap to be reported.
    if let Err(e) = udm.admin().flush_shadow().await {
        eprintln!("udm: the shadow log could not be flushed first: {e}");
    }
    let terminal = std::io::stderr().is_terminal();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let json = args.json;
    let mut failed: Option<std::io::Error> = None;
    let totals = udm
        .admin()
        .drift(scope, options, actual, &mut |event| match event {
            DriftEvent::Finding(f) => {
                let line = if json {
                    serde_json::to_string(&f).unwrap_or_default()
                } else {
                    let object = f.id.as_deref().map(|id| format!("/{id}")).unwrap_or_default();
                    let show = |v: &Option<Value>| v.as_ref().map_or("-".to_owned(), Value::to_string);
                    format!(
                        "{:?} {:?} {}{object} {} expected {} found {} (pair {})",
                        f.item.source,
                        f.item.kind,
                        f.ctx,
                        f.item.path,
                        show(&f.item.expected),
                        show(&f.item.found),
                        f.pair
                    )
                };
                if let Err(e) = writeln!(out, "{line}") {
                    failed.get_or_insert(e);
                }
            }
            DriftEvent::Progress { objects } if terminal => eprint!("\r{objects} objects checked   "),
            DriftEvent::Progress { .. } => {}
        })
        .await;
    if terminal {
        eprintln!();
    }
    let totals = totals?;
    let io = |e: std::io::Error| Error::new(ErrorKind::Unavailable, format!("drift output: {e}"));
    if json {
        writeln!(out, "{}", json!({ "totals": totals })).map_err(io)?;
    } else {
        let s = &totals.summary;
        writeln!(
            out,
            "{} objects in {} collections: {}; missing {}, extra {}, modified {}, checksum mismatch {}, orphan snapshots {}, head mismatch {}, cv gaps {}, pruned {} (not drift)",
            totals.objects,
            totals.collections,
            if s.in_sync { "in sync" } else { "DRIFT" },
            s.missing,
            s.extra,
            s.modified,
            s.checksum_mismatch,
            s.orphan_snapshot,
            s.head_mismatch,
            s.cv_gap,
            s.pruned
        )
        .map_err(io)?;
    }
    out.flush().map_err(io)?;
    if let Some(e) = failed {
        return Err(io(e));
    }
    udm.admin().shutdown().await?;
    Ok(if totals.summary.in_sync { 0 } else { 1 })
}
