//! The zero-setup default against what its users would otherwise build (issue 8): UDM's
//! embedded default (`Udm::embedded`, two redb files) against a hand-made PostgreSQL history
//! table — a `docs` table and a trigger that copies every row version into `docs_history`
//! (primary key `(id, version)`, an index on `(id, valid_from)`), queried with prepared
//! statements — on the same workload: 1,000 documents × 11 writes (a create and ten updates),
//! then reads of the latest version, of version n, as of an instant and of the history list,
//! then restores of an old version. Both sides are durable: redb syncs each commit, and the
//! bench turns PostgreSQL's `fsync` and `synchronous_commit` on for the run (the test server
//! runs with them off) and back off afterwards. Every operation alternates between the two
//! sides, so load lands on both alike; every answer is checked.
//!
//! Also the disk: the embedded default's two files against the canonical JSON bytes of every
//! version they hold (target ≤ 1.5×), next to PostgreSQL's two tables with their indexes —
//! once closed (`Udm::close`, which compacts them) and just before, while open.
//! `UDM_BENCH_BASELINE_DOCS` overrides the 1,000 documents (quick runs);
//! `UDM_BENCH_BASELINE_LAYOUT=one-file` runs UDM with its blobs in the metadata file
//! (`blobs = { kind = "embedded" }`: one fsync per write) instead of the default's two files.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use udm_core::query::HistoryQuery;
use udm_core::{Ov, RouteContext, Timestamp};
use udm_facade::{ReadOpts, RestoreOutcome, Target, Udm, WriteOpts};

use super::Stats;
use super::history::XorShift;

const WRITES: usize = 11;
const READ_ROUNDS: usize = 2_000;
const RESTORES: usize = 500;
const SCHEMA: &str = "udm_bench_hist";

/// Whether `UDM_BENCH_BASELINE_LAYOUT=one-file` asks for the blobs in the metadata file.
fn one_file() -> bool {
    std::env::var("UDM_BENCH_BASELINE_LAYOUT").is_ok_and(|v| v == "one-file")
}

/// A uniform-enough index in `0..n` (the history section's deterministic generator).
fn below(rng: &mut XorShift, n: usize) -> usize {
    (rng.in_1_to(n as u64) - 1) as usize
}

/// Version `v` of document `i`: a customer record of about 1 KiB (12 fields, a nested
/// address, a tag list and a note of pseudo-random words, so neither side compresses it away).
fn document(i: usize, v: usize) -> Value {
    const WORDS: [&str; 16] = [
        "order", "shipped", "invoice", "paid", "return", "credit", "account", "review", "priority", "delayed",
        "contact", "renewal", "discount", "support", "upgrade", "closed",
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((i as u64) << 8 | v as u64));
    let notes: Vec<&str> = (0..110).map(|_| WORDS[below(&mut rng, WORDS.len())]).collect();
    let tier = ["gold", "silver", "bronze"][(i + v) % 3];
    json!({
        "name": format!("Customer {i}"),
        "email": format!("customer{i}@example.com"),
        "version": v,
        "tier": tier,
        "balance": (((i * 7919 + v * 31) % 100_000) as f64 + 0.25) / 100.0,
        "active": v % 4 != 3,
        "tags": [WORDS[(i + v) % 16], WORDS[(i * 3 + v) % 16], WORDS[(i * 5) % 16]],
        "address": {"street": format!("{} Main Street", 1 + i % 977), "city": "Springfield", "zip": format!("{:05}", i * 13 % 99_999)},
        "orders": v * 3 + i % 7,
        "score": (i * 31 + v * 17) % 1000,
        "updatedBy": format!("agent-{}", (i + v) % 40),
        "notes": notes.join(" "),
    })
}

/// Microseconds since the epoch of a PostgreSQL `timestamptz` column.
const US: &str = "(extract(epoch from valid_from) * 1000000)::bigint";

struct Pg {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    update: tokio_postgres::Statement,
    restore: tokio_postgres::Statement,
    latest: tokio_postgres::Statement,
    version: tokio_postgres::Statement,
    as_of: tokio_postgres::Statement,
    history: tokio_postgres::Statement,
}

impl Pg {
    async fn new(url: &str) -> Pg {
        let client = super::postgres::raw_client(url).await;
        // Durable for the run (the test server runs with fsync off): ALTER SYSTEM cannot run in
        // the implicit transaction of a multi-statement batch, hence one call each.
        client.batch_execute("ALTER SYSTEM SET fsync = on").await.expect("fsync on");
        client.batch_execute("SELECT pg_reload_conf()").await.expect("reload");
        client.batch_execute("SET synchronous_commit = on").await.expect("synchronous commit");
        let s = SCHEMA;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};
                 CREATE TABLE {s}.docs (id text PRIMARY KEY, version int NOT NULL, valid_from timestamptz NOT NULL, data jsonb NOT NULL);
                 CREATE TABLE {s}.docs_history (id text NOT NULL, version int NOT NULL, valid_from timestamptz NOT NULL,
                     op text NOT NULL, data jsonb NOT NULL, PRIMARY KEY (id, version));
                 CREATE INDEX ON {s}.docs_history (id, valid_from);
                 CREATE FUNCTION {s}.keep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                     INSERT INTO {s}.docs_history VALUES (NEW.id, NEW.version, NEW.valid_from, TG_OP, NEW.data);
                     RETURN NEW; END $$;
                 CREATE TRIGGER keep AFTER INSERT OR UPDATE ON {s}.docs FOR EACH ROW EXECUTE FUNCTION {s}.keep();"
            ))
            .await
            .expect("history schema");
        let prepare = async |sql: String| client.prepare(&sql).await.expect("prepare");
        Pg {
            insert: prepare(format!(
                "INSERT INTO {s}.docs VALUES ($1, 1, clock_timestamp(), $2::text::jsonb) RETURNING {US}"
            ))
            .await,
            update: prepare(format!(
                "UPDATE {s}.docs SET version = version + 1, valid_from = clock_timestamp(), data = $2::text::jsonb
                 WHERE id = $1 RETURNING {US}"
            ))
            .await,
            restore: prepare(format!(
                "UPDATE {s}.docs d SET version = d.version + 1, valid_from = clock_timestamp(), data = h.data
                 FROM {s}.docs_history h WHERE d.id = $1 AND h.id = $1 AND h.version = $2 RETURNING d.version"
            ))
            .await,
            latest: prepare(format!("SELECT data::text FROM {s}.docs WHERE id = $1")).await,
            version: prepare(format!("SELECT data::text FROM {s}.docs_history WHERE id = $1 AND version = $2")).await,
            as_of: prepare(format!(
                "SELECT version, data::text FROM {s}.docs_history WHERE id = $1
                 AND valid_from <= 'epoch'::timestamptz + $2::bigint * interval '1 microsecond'
                 ORDER BY valid_from DESC LIMIT 1"
            ))
            .await,
            history: prepare(format!(
                "SELECT version, {US}, op FROM {s}.docs_history WHERE id = $1 ORDER BY version LIMIT 100"
            ))
            .await,
            client,
        }
    }

    async fn bytes(&self) -> i64 {
        let sql =
            format!("SELECT pg_total_relation_size('{SCHEMA}.docs') + pg_total_relation_size('{SCHEMA}.docs_history')");
        self.client.query_one(&sql, &[]).await.expect("size").get(0)
    }

    async fn done(&self) {
        self.client.batch_execute("ALTER SYSTEM RESET fsync").await.expect("fsync reset");
        self.client.batch_execute("SELECT pg_reload_conf()").await.expect("reload");
    }
}

/// One timed call.
async fn timed<T>(samples: &mut Vec<Duration>, f: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let out = f.await;
    samples.push(t.elapsed());
    out
}

/// The operations, UDM's name first, PostgreSQL's second.
const OPS: [(&str, &str); 7] = [
    ("udm create", "pg create"),
    ("udm update", "pg update"),
    ("udm get_latest", "pg get_latest"),
    ("udm get_version", "pg get_version"),
    ("udm as_of", "pg as_of"),
    ("udm history (11)", "pg history (11)"),
    ("udm restore", "pg restore"),
];

pub(crate) async fn run(url: &str) -> Map<String, Value> {
    let docs: usize = std::env::var("UDM_BENCH_BASELINE_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let pg = Pg::new(url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let udm = if one_file() {
        let mut config = Udm::embedded_config(dir.path());
        config.backends[0].blobs = udm_core::config::BlobBackend::Embedded { path: None };
        Udm::from_config(config).await.expect("embedded, one file")
    } else {
        Udm::embedded(dir.path()).await.expect("embedded")
    };
    let c = udm.with(RouteContext::new("bench", "db", "customers").expect("ctx"));
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); OPS.len() * 2];
    let (mut ids, mut canonical) = (Vec::with_capacity(docs), 0usize);
    // Per document and version (1-based index v - 1): UDM's and PostgreSQL's timestamps.
    let mut times: Vec<Vec<(Timestamp, i64)>> = vec![Vec::with_capacity(WRITES); docs];
    let started = Instant::now();
    for v in 1..=WRITES {
        let op = if v == 1 { 0 } else { 1 };
        for (i, t) in times.iter_mut().enumerate() {
            let data = document(i, v);
            canonical += udm_core::canonical::canonical_bytes(&data).len();
            let text = data.to_string();
            let id = format!("c{i:05}");
            // Alternate which side goes first.
            let (u, p) = if (i + v) % 2 == 0 {
                let u = timed(&mut samples[2 * op], udm_write(&c, &id, v, data)).await;
                (u, timed(&mut samples[2 * op + 1], pg_write(&pg, &id, v, &text)).await)
            } else {
                let p = timed(&mut samples[2 * op + 1], pg_write(&pg, &id, v, &text)).await;
                (timed(&mut samples[2 * op], udm_write(&c, &id, v, data)).await, p)
            };
            t.push((u, p));
            if v == 1 {
                ids.push(id);
            }
        }
    }
    let load = started.elapsed();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..READ_ROUNDS {
        for op in 2..6 {
            let i = below(&mut rng, docs);
            let v = 1 + below(&mut rng, WRITES);
            let id = &ids[i];
            let order = if below(&mut rng, 2) == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let s = &mut samples[2 * op + side];
                let want = document(i, if op == 2 { WRITES } else { v });
                match (op, side) {
                    (2, 0) => {
                        assert_eq!(timed(s, c.get_latest(id, ReadOpts::default())).await.expect("latest").data, want)
                    }
                    (3, 0) => {
                        let ov = Ov::new(v as u64).expect("ov");
                        assert_eq!(
                            timed(s, c.get_version(id, ov, ReadOpts::default())).await.expect("version").data,
                            want
                        );
                    }
                    (4, 0) => {
                        let r = timed(s, c.as_of(id, times[i][v - 1].0, ReadOpts::default())).await.expect("as_of");
                        assert_eq!((r.ov.get(), r.data), (v as u64, want));
                    }
                    (5, 0) => {
                        let page = timed(s, c.history(id, HistoryQuery::default())).await.expect("history");
                        assert_eq!(page.items.len(), WRITES);
                    }
                    (2, 1) => assert_eq!(pg_data(timed(s, pg.client.query_one(&pg.latest, &[id])).await), want),
                    (3, 1) => {
                        let row = timed(s, pg.client.query_one(&pg.version, &[id, &(v as i32)])).await;
                        assert_eq!(pg_data(row), want);
                    }
                    (4, 1) => {
                        let row =
                            timed(s, pg.client.query_one(&pg.as_of, &[id, &times[i][v - 1].1])).await.expect("as_of");
                        assert_eq!(row.get::<_, i32>(0), v as i32);
                        assert_eq!(serde_json::from_str::<Value>(row.get(1)).expect("json"), want);
                    }
                    _ => {
                        let rows = timed(s, pg.client.query(&pg.history, &[id])).await.expect("history");
                        assert_eq!(rows.len(), WRITES);
                    }
                }
            }
        }
    }
    // Restores: distinct documents, each back to a random earlier version.
    for (n, i) in (0..docs).step_by((docs / RESTORES).max(1)).take(RESTORES).enumerate() {
        let v = 1 + below(&mut rng, WRITES - 1);
        let id = &ids[i];
        canonical += udm_core::canonical::canonical_bytes(&document(i, v)).len();
        for side in if n % 2 == 0 { [0, 1] } else { [1, 0] } {
            let s = &mut samples[12 + side];
            if side == 0 {
                let target = Target::Ov(Ov::new(v as u64).expect("ov"));
                let out = timed(s, c.restore_object(id, target, WriteOpts::default())).await.expect("restore");
                assert!(matches!(out, RestoreOutcome::Restored(w) if w.ov.get() == WRITES as u64 + 1));
            } else {
                let row = timed(s, pg.client.query_one(&pg.restore, &[id, &(v as i32)])).await.expect("restore");
                assert_eq!(row.get::<_, i32>(0), WRITES as i32 + 1);
            }
        }
    }
    // Closed as an application would on exit: the files are measured as they are left.
    let udm_open_bytes = dir_bytes(dir.path());
    drop(c);
    assert!(udm.close().await.expect("close").closed, "the embedded files are closed");
    if let Ok(keep) = std::env::var("UDM_BENCH_BASELINE_KEEP") {
        for e in std::fs::read_dir(dir.path()).expect("dir").flatten() {
            std::fs::copy(e.path(), std::path::Path::new(&keep).join(e.file_name())).expect("keep");
        }
    }
    let udm_bytes = dir_bytes(dir.path());
    let files = file_sizes(dir.path());
    let pg_bytes = pg.bytes().await as u64;
    pg.done().await;
    report(docs, load, &samples, canonical as u64, (udm_open_bytes, udm_bytes, &files), pg_bytes)
}

/// Writes version `v` of a document through UDM (a create when `v` is 1); its timestamp.
async fn udm_write(c: &udm_facade::Collection, id: &str, v: usize, data: Value) -> Timestamp {
    let w = if v == 1 {
        c.create(data, WriteOpts::id(id)).await.expect("udm create")
    } else {
        c.update(id, data, None, WriteOpts::default()).await.expect("udm update")
    };
    assert_eq!(w.ov.get(), v as u64);
    w.at
}

/// Writes version `v` of a document into the history table; its timestamp in µs.
async fn pg_write(pg: &Pg, id: &str, v: usize, text: &str) -> i64 {
    let stmt = if v == 1 { &pg.insert } else { &pg.update };
    pg.client.query_one(stmt, &[&id, &text]).await.expect("pg write").get(0)
}

fn pg_data(row: Result<tokio_postgres::Row, tokio_postgres::Error>) -> Value {
    serde_json::from_str(row.expect("pg read").get(0)).expect("json")
}

/// Bytes of the files directly in `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    file_sizes(dir).iter().map(|(_, n)| n).sum()
}

/// The files directly in `dir` with their sizes, by name.
fn file_sizes(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.len())))
        .collect();
    out.sort();
    out
}

fn report(
    docs: usize,
    load: Duration,
    samples: &[Vec<Duration>],
    canonical: u64,
    (udm_open, udm, files): (u64, u64, &[(String, u64)]),
    pg: u64,
) -> Map<String, Value> {
    let mut out = Map::new();
    println!(
        "\nEmbedded {} vs a PostgreSQL history table (trigger), {docs} documents × {WRITES} writes \
         (loaded in {:.1} s), {READ_ROUNDS} read rounds, {RESTORES} restores; both durable:",
        if one_file() { "(one file: blobs in the metadata file)" } else { "default (two files)" },
        load.as_secs_f64()
    );
    println!(
        "{:<18} {:>14} {:>14} {:>10}   {:>12} {:>12}   (target ≤ 1.00x on p50)",
        "operation", "udm p50 µs", "pg p50 µs", "udm / pg", "udm p90 µs", "pg p90 µs"
    );
    for (k, (u, p)) in OPS.iter().enumerate() {
        let su = Stats { name: u, samples: samples[2 * k].clone() };
        let sp = Stats { name: p, samples: samples[2 * k + 1].clone() };
        let ratio = su.pct(0.5) / sp.pct(0.5);
        let label = u.trim_start_matches("udm ");
        println!(
            "{label:<18} {:>14.0} {:>14.0} {ratio:>9.2}x   {:>12.0} {:>12.0}",
            su.pct(0.5),
            sp.pct(0.5),
            su.pct(0.9),
            sp.pct(0.9)
        );
        out.insert(format!("baseline {u}"), su.json());
        out.insert(format!("baseline {p}"), sp.json());
        out.insert(format!("baseline ratio {label}"), json!(ratio));
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "disk: canonical JSON of every version {:.1} MiB; embedded files closed {:.1} MiB = {:.2}x (target ≤ 1.5x), \
         open {:.1} MiB = {:.2}x; PostgreSQL tables + indexes {:.1} MiB = {:.2}x",
        mib(canonical),
        mib(udm),
        udm as f64 / canonical as f64,
        mib(udm_open),
        udm_open as f64 / canonical as f64,
        mib(pg),
        pg as f64 / canonical as f64
    );
    let each: Vec<String> = files.iter().map(|(name, n)| format!("{name} {:.1} MiB", mib(*n))).collect();
    println!("      closed files: {}", each.join(", "));
    for (name, n) in files {
        out.insert(format!("baseline udm file bytes {name}"), json!(n));
    }
    out.insert("baseline canonical bytes".into(), json!(canonical));
    out.insert("baseline udm disk bytes".into(), json!(udm));
    out.insert("baseline udm disk bytes open".into(), json!(udm_open));
    out.insert("baseline pg disk bytes".into(), json!(pg));
    out
}
