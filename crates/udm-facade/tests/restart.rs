//! Servers stopped and restarted on the same data directory while writers write, with the
//! fallback queue on: SecantusDB (the metadata server; moto from the services holds the blobs)
//! and s3s-fs (a persistent S3 server; the services' SecantusDB holds the metadata), each
//! started by the test on a data directory of its own from the binaries `cargo xtask services
//! up` installs, and stopped by PID.
//!
//! **What the server guarantees, and what is asserted.** SecantusDB forgets acknowledged
//! commits when killed with SIGKILL, even with `w: majority, j: true` (a defect of that test
//! server, see `../shared/BACKENDS.md`), so a crash cannot be tested against it. A graceful
//! stop (SIGTERM) was measured to keep every acknowledged write (200 single inserts and a
//! two-insert transaction, all present after the restart), so that is the stop used here and
//! the guarantee asserted: every write acknowledged before the stop is still there after it.
//! Writes during the downtime are queued (each within its deadline) and the queue applies
//! them once the server is back: each once, in its writer's order, with its data.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use udm_core::config::Config;
use udm_core::ports::{BlobStore, CounterStore, MetaStore};
use udm_core::query::HistoryQuery;
use udm_core::{ErrorKind, RouteContext};
use udm_facade::{Collection, Pair, ReadOpts, Udm, WriteOpts};
use udm_mongo::{MongoConfig, MongoStore};
use udm_s3::{AwsS3Blobs, S3Settings};

const OBJECTS: usize = 6;
const BUDGET: Duration = Duration::from_secs(4);

/// Which server a [`Server`] runs.
#[derive(Clone, Copy)]
enum Kind {
    /// SecantusDB on a storage directory.
    Mongo,
    /// s3s-fs on a data directory.
    S3,
}

/// A server this test started; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    kind: Kind,
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Server {
    fn start(kind: Kind, port: u16, dir: &Path) -> Self {
        let (bin, mut cmd) = match kind {
            Kind::Mongo => {
                let bin = udm_testkit::services::mongo_server_binary();
                let mut cmd = Command::new(&bin);
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path"])
                    .arg(dir)
                    .args(["--log-level", "WARNING"]);
                (bin, cmd)
            }
            Kind::S3 => {
                let bin = udm_testkit::services::s3s_fs_binary();
                let mut cmd = Command::new(&bin);
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", "test", "--secret-key", "testsecret"])
                    .arg(dir);
                (bin, cmd)
            }
        };
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} ({})", bin.display(), udm_testkit::services::START_HINT));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "{} did not start on port {port}", bin.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { kind, child: Some(child), port, dir: dir.to_owned() }
    }

    /// A crash: SIGKILL to the process this test started.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A graceful stop: SIGTERM to the process this test started, then wait for it to exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        *self = Self::start(self.kind, self.port, &self.dir.clone());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn queue_config(spool: &Path) -> Config {
    let mut c = Config::in_memory();
    c.fallback_queue.enabled = true;
    c.fallback_queue.spool = Some(spool.join("spool.redb").display().to_string());
    c.fallback_queue.poll_interval_ms = 100;
    c.fallback_queue.retry.base_delay_ms = 50;
    c.fallback_queue.retry.max_delay_ms = 500;
    c.fallback_queue.retry.max_attempts = 1_000;
    c.deadlines.write_budget_ms = BUDGET.as_millis() as u64;
    c
}

/// Before the fault: each object created and updated, all committed; the request ids so far.
async fn before_the_fault(coll: &Collection) -> Vec<Vec<String>> {
    let mut want: Vec<Vec<String>> = vec![Vec::new(); OBJECTS];
    for (o, w) in want.iter_mut().enumerate() {
        let id = format!("o{o}");
        coll.create(json!({"o": o, "n": "created"}), WriteOpts::id(&id).request_id(&format!("{id}-c"))).await.unwrap();
        w.push(format!("{id}-c"));
        let r = format!("{id}-before");
        coll.update(&id, json!({"o": o, "n": "before"}), None, WriteOpts::default().request_id(&r)).await.unwrap();
        w.push(r);
    }
    want
}

/// While the server is down: every write is queued, within its deadline; the longest call.
async fn during_the_downtime(udm: &Udm, coll: &Collection, want: &mut [Vec<String>]) -> Duration {
    let mut longest = Duration::ZERO;
    for n in 0..3 {
        for (o, w) in want.iter_mut().enumerate() {
            let id = format!("o{o}");
            let r = format!("{id}-down{n}");
            let started = Instant::now();
            let e = coll
                .update(&id, json!({"o": o, "n": format!("down {n}")}), None, WriteOpts::default().request_id(&r))
                .await
                .expect_err("the server is down");
            longest = longest.max(started.elapsed());
            assert_eq!(e.kind(), ErrorKind::Queued, "{r}: {e}");
            w.push(r);
        }
    }
    assert!(longest <= BUDGET + Duration::from_secs(1), "a call took {longest:?}");
    assert_eq!(udm.admin().queue_stats().await.unwrap().pending, (3 * OBJECTS) as u64);
    longest
}

/// After the restart: the queue drains; each object holds exactly its acknowledged writes,
/// once each, in order, every version's snapshot readable and verified.
async fn drain_and_check(udm: &Udm, coll: &Collection, want: &[Vec<String>]) {
    let started = Instant::now();
    while udm.admin().queue_stats().await.unwrap().pending > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "the queue did not drain after the restart");
        udm.admin().run_queue_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (o, w) in want.iter().enumerate() {
        let id = format!("o{o}");
        let page = coll.history(&id, HistoryQuery { limit: 100, ..HistoryQuery::default() }).await.unwrap();
        let got: Vec<String> = page.items.iter().map(|v| v.provenance.request_id.to_string()).collect();
        assert_eq!(&got, w, "{id}: the acknowledged writes, once each, in order (those before the fault kept)");
        for v in &page.items {
            coll.get_version(&id, v.ov, ReadOpts::default()).await.unwrap_or_else(|e| panic!("{id} v{}: {e}", v.ov));
        }
        let last = coll.get_latest(&id, ReadOpts::default()).await.unwrap().data;
        assert_eq!(last, json!({"o": o, "n": "down 2"}));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_metadata_server_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(Kind::Mongo, free_port(), data.path());
    let uri = format!("mongodb://127.0.0.1:{}/?directConnection=true&retryWrites=false", server.port);
    let cfg = MongoConfig::new(&uri, "udm_restart")
        .with_connect_timeout(Duration::from_millis(500))
        .with_server_selection_timeout(Duration::from_millis(500))
        .with_call_timeout(Duration::from_secs(1))
        .with_commit_retry_budget(Duration::from_secs(1));
    let meta = Arc::new(MongoStore::connect(&cfg).await.expect("the test's own SecantusDB"));
    let endpoint = udm_testkit::services::s3_endpoint();
    let settings = S3Settings::compatible(&endpoint, "us-east-1", "test", "testsecret");
    let run = std::process::id();
    let (jb, cb) = (format!("restart-{run}-json"), format!("restart-{run}-content"));
    for b in [&jb, &cb] {
        AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("bucket (is moto running? cargo xtask services up)");
    }
    let pair = Pair {
        name: "p".into(),
        meta: meta.clone() as Arc<dyn MetaStore>,
        counters: meta as Arc<dyn CounterStore>,
        json: Arc::new(AwsS3Blobs::new(&settings, &jb)) as Arc<dyn BlobStore>,
        content: Arc::new(AwsS3Blobs::new(&settings, &cb)) as Arc<dyn BlobStore>,
        describe: "restartable SecantusDB + moto".into(),
    };
    let spool = tempfile::tempdir().unwrap();
    let udm = Udm::builder().pair(pair).config(queue_config(spool.path())).build().unwrap();
    let coll = udm.with(RouteContext::new("restart", "suite", "docs").unwrap());

    let mut want = before_the_fault(&coll).await;
    server.stop();
    let longest = during_the_downtime(&udm, &coll, &mut want).await;
    server.restart();
    drain_and_check(&udm, &coll, &want).await;
    assert_eq!(udm.admin().stats().dead_lettered, 0);
    eprintln!(
        "restart: {} writes before the stop kept, {} queued during the downtime and applied once; longest call {longest:?}",
        2 * OBJECTS,
        3 * OBJECTS
    );
    udm.admin().shutdown().await.unwrap();
}

/// s3s-fs keeps what it acknowledged across SIGKILL (measured, see `../shared/BACKENDS.md`), so
/// its crash is tested: killed while writers write, restarted on its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_an_s3_server_crash() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(Kind::S3, free_port(), data.path());
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let settings = S3Settings::compatible(&endpoint, "us-east-1", "test", "testsecret")
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(1))
        .with_max_attempts(1);
    let (jb, cb) = ("restart-json", "restart-content");
    for b in [jb, cb] {
        AwsS3Blobs::new(&settings, b).ensure_bucket().await.expect("a bucket on the test's own s3s-fs");
    }
    let uri = udm_testkit::services::mongo_uri();
    let meta = MongoStore::connect(&MongoConfig::new(&uri, &format!("udm_restart_s3_{}", std::process::id())))
        .await
        .expect("MongoDB (is it running? cargo xtask services up)");
    let meta = Arc::new(meta);
    let pair = Pair {
        name: "p".into(),
        meta: meta.clone() as Arc<dyn MetaStore>,
        counters: meta as Arc<dyn CounterStore>,
        json: Arc::new(AwsS3Blobs::new(&settings, jb)) as Arc<dyn BlobStore>,
        content: Arc::new(AwsS3Blobs::new(&settings, cb)) as Arc<dyn BlobStore>,
        describe: "SecantusDB + restartable s3s-fs".into(),
    };
    let spool = tempfile::tempdir().unwrap();
    let udm = Udm::builder().pair(pair).config(queue_config(spool.path())).build().unwrap();
    let coll = udm.with(RouteContext::new("restart", "suite", "s3").unwrap());

    let mut want = before_the_fault(&coll).await;
    server.kill();
    let longest = during_the_downtime(&udm, &coll, &mut want).await;
    server = Server::start(Kind::S3, server.port, data.path());
    drain_and_check(&udm, &coll, &want).await;
    assert_eq!(udm.admin().stats().dead_lettered, 0);
    eprintln!(
        "s3 crash: {} writes before the kill kept (snapshots verified), {} queued during the downtime and \
         applied once; longest call {longest:?}",
        2 * OBJECTS,
        3 * OBJECTS
    );
    udm.admin().shutdown().await.unwrap();
    drop(server);
}
