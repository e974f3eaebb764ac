//! A loopback TCP fault proxy between a client and a real server (MongoDB wire protocol, S3
//! HTTP, anything over TCP): a test starts a [`FaultProxy`] in front of the server, points the
//! client at [`FaultProxy::addr`] and switches the [`Mode`] with [`FaultProxy::set`] whenever it
//! likes; live connections follow the switch:
//!
//! - [`Mode::Pass`] forwards both ways;
//! - [`Mode::Outage`] closes every live connection now, and every new one once accepted;
//! - [`Mode::Stall`] forwards nothing either way: the client's own deadlines must fire;
//! - [`Mode::ResetMidRequest`] forwards half of the next request chunk, then resets the client;
//! - [`Mode::Slow`] delays every forwarded chunk, both ways.
//!
//! Counters (connections accepted and reset, bytes each way) back assertions. [`FaultProxy::stop`],
//! or a drop, closes the port and every connection: no task outlives the proxy.
//!
//! ```rust,no_run
//! use udm_testkit::proxy::{FaultProxy, Mode};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let proxy = FaultProxy::start(([127, 0, 0, 1], 27017).into()).await?;
//!     let uri = format!("mongodb://127.0.0.1:{}/?directConnection=true", proxy.port());
//!     // ... build the client from `uri` and run a request through the proxy ...
//!     proxy.set(Mode::Stall); // the server goes silent: the client's deadline must fire
//!     proxy.set(Mode::Pass); // the network heals: new connections work again
//!     proxy.stop().await; // or drop it: every connection it holds is closed
//!     Ok(())
//! }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::WriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The receiving end of the mode channel, one per task.
type ModeRx = watch::Receiver<Mode>;

/// The most bytes read from one side before they are forwarded to the other.
const CHUNK: usize = 16 * 1024;

/// What the proxy does with traffic; switch it with [`FaultProxy::set`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways untouched.
    #[default]
    Pass,
    /// Close every live connection now; accept new connections and close them at once.
    Outage,
    /// Forward nothing either way: the client sees a silent server. Bytes wait unread and flow
    /// again once the mode changes back.
    Stall,
    /// Forward half of each connection's next client→server chunk, close the server side (it
    /// sees a truncated request, then end of stream) and reset the client side (RST).
    ResetMidRequest,
    /// Delay every forwarded chunk, both ways, by this long.
    Slow(Duration),
}

/// What the proxy's tasks share: where to forward, and the counters.
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    accepted: AtomicU64,
    to_server: AtomicU64,
    to_client: AtomicU64,
    resets: AtomicU64,
}

/// A running fault proxy in front of one upstream server; see the [module docs](self).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    stop: watch::Sender<bool>,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`, in [`Mode::Pass`];
    /// the accept loop runs on the current tokio runtime.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let (stop, stop_rx) = watch::channel(false);
        let counter = AtomicU64::default;
        let (accepted, to_server, to_client, resets) = (counter(), counter(), counter(), counter());
        let shared = Arc::new(Shared { upstream, accepted, to_server, to_client, resets });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), mode_rx, stop_rx));
        Ok(Self { addr, mode, stop, shared, accept })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to, on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches the behaviour, for new and live connections alike.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections accepted so far, including those closed at once by [`Mode::Outage`].
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes handed to the server so far.
    pub fn bytes_to_server(&self) -> u64 {
        self.shared.to_server.load(Ordering::SeqCst)
    }

    /// Bytes handed to clients so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::SeqCst)
    }

    /// Connections reset by [`Mode::ResetMidRequest`] so far.
    pub fn connections_reset(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes every connection and returns once all the proxy's tasks ended.
    ///
    /// Dropping the proxy does the same without waiting: the accept loop sees its stop channel
    /// close.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        // The accept loop never panics, so there is no join error to report.
        let _ = self.accept.await;
    }
}

/// Accepts clients until [`FaultProxy::stop`] or a drop, then ends every connection task and
/// waits for them.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mode: ModeRx, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // `Ok` once stopped, `Err` if the proxy is gone: both end the loop.
            _ = async { stop.wait_for(|stopped| *stopped).await.is_ok() } => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => admit(&mut conns, client, &mode, &shared),
                // A failed accept only loses that client; the pause keeps a lasting error from spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

/// Counts a new client and starts relaying it, unless an outage closes it at once.
fn admit(conns: &mut JoinSet<()>, client: TcpStream, mode: &ModeRx, shared: &Arc<Shared>) {
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    if *mode.borrow() != Mode::Outage {
        conns.spawn(connection(client, mode.clone(), Arc::clone(shared)));
    }
}

/// How a relay step left the connection: still `Open`, one side at `Eof` (the other side was
/// told), or to be `Closed`, or `Reset` (closed with an RST to the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Open,
    Eof,
    Closed,
    Reset,
}

/// Relays one client to a fresh connection to `upstream` until either side or the mode ends it.
async fn connection(mut client: TcpStream, mut mode: ModeRx, shared: Arc<Shared>) {
    // An unreachable server closes the client, as a dead server would.
    let Ok(mut server) = TcpStream::connect(shared.upstream).await else { return };
    if relay(&mut client, &mut server, &mut mode, &shared).await == Flow::Reset {
        shared.resets.fetch_add(1, Ordering::SeqCst);
        // Without SO_LINGER the client sees a plain close instead of a reset: still a fault.
        let _ = client.set_zero_linger();
    }
}

/// Forwards chunks both ways, as the current mode says, until the connection must close.
async fn relay(client: &mut TcpStream, server: &mut TcpStream, mode: &mut ModeRx, shared: &Shared) -> Flow {
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = server.split();
    let (mut up, mut down) = (vec![0; CHUNK], vec![0; CHUNK]);
    let (mut client_open, mut server_open) = (true, true);
    while client_open || server_open {
        let now = *mode.borrow_and_update();
        if now == Mode::Outage {
            return Flow::Closed;
        }
        let flowing = now != Mode::Stall;
        let flow = tokio::select! {
            // Biased: a mode change is seen before bytes that arrived after it.
            biased;
            changed = mode.changed() => if changed.is_ok() { Flow::Open } else { Flow::Closed },
            read = client_rx.read(&mut up), if flowing && client_open => {
                let flow = until_outage(mode, forward(read, &up, &mut server_tx, now, &shared.to_server)).await;
                client_open &= flow != Flow::Eof;
                flow
            }
            read = server_rx.read(&mut down), if flowing && server_open => {
                let now = if now == Mode::ResetMidRequest { Mode::Pass } else { now };
                let flow = until_outage(mode, forward(read, &down, &mut client_tx, now, &shared.to_client)).await;
                server_open &= flow != Flow::Eof;
                flow
            }
        };
        if matches!(flow, Flow::Closed | Flow::Reset) {
            return flow;
        }
    }
    Flow::Closed
}

/// Runs `step` unless an outage begins (or the proxy goes away) first.
async fn until_outage(mode: &mut ModeRx, step: impl Future<Output = Flow> + Send) -> Flow {
    tokio::select! {
        flow = step => flow,
        _ = mode.wait_for(|m| *m == Mode::Outage) => Flow::Closed,
    }
}

/// Hands one chunk read from one side (`read` bytes of `buf`) to the other side, `to`.
async fn forward(read: io::Result<usize>, buf: &[u8], to: &mut WriteHalf<'_>, mode: Mode, sent: &AtomicU64) -> Flow {
    let chunk = match read {
        Ok(0) => {
            // Pass the end of stream on; if that fails the other side is gone and says so itself.
            let _ = to.shutdown().await;
            return Flow::Eof;
        }
        Ok(n) => &buf[..n],
        Err(_) => return Flow::Closed,
    };
    if mode == Mode::ResetMidRequest {
        let half = &chunk[..chunk.len() / 2];
        sent.fetch_add(half.len() as u64, Ordering::SeqCst);
        // Best effort: the connection is being torn down either way.
        let _ = (to.write_all(half).await, to.shutdown().await);
        return Flow::Reset;
    }
    if let Mode::Slow(delay) = mode {
        tokio::time::sleep(delay).await;
    }
    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    if to.write_all(chunk).await.is_err() { Flow::Closed } else { Flow::Open }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::time::Instant;

    use tokio::time::timeout;

    use super::*;

    const WAIT: Duration = Duration::from_secs(2);

    /// A server reading one connection to its end; its task returns how many bytes it got.
    async fn counting_server() -> (SocketAddr, JoinHandle<u64>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::io::copy(&mut stream, &mut tokio::io::sink()).await.unwrap()
        };
        (addr, tokio::spawn(received))
    }

    /// Sends `msg` and reads back as many bytes.
    async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        stream.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        timeout(WAIT, stream.read_exact(&mut back)).await.unwrap().unwrap();
        back
    }

    /// The peer closed (EOF) or reset the connection, promptly.
    async fn assert_closed(stream: &mut TcpStream) {
        let read = timeout(WAIT, stream.read(&mut [0; 16])).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "expected the connection closed, got {read:?}");
    }

    /// Connecting fails, or the connection closes at once.
    async fn assert_refused(addr: SocketAddr) {
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            assert_closed(&mut stream).await;
        }
    }

    /// A proxy in front of an echo server, and a client connected through it.
    async fn echo_proxy() -> (FaultProxy, TcpStream) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let server = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (mut rx, mut tx) = stream.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut rx, &mut tx).await });
            }
        });
        let proxy = FaultProxy::start(server).await.unwrap();
        let client = TcpStream::connect(proxy.addr()).await.unwrap();
        (proxy, client)
    }

    #[tokio::test]
    async fn pass_echoes_bytes_exactly() {
        let (proxy, mut client) = echo_proxy().await;
        assert_eq!(round_trip(&mut client, b"hello, proxy").await, b"hello, proxy");
        assert_eq!((proxy.connections_accepted(), proxy.bytes_to_server(), proxy.bytes_to_client()), (1, 12, 12));
    }

    #[tokio::test]
    async fn outage_closes_live_and_new_connections() {
        let (proxy, mut client) = echo_proxy().await;
        assert_eq!(round_trip(&mut client, b"ping").await, b"ping");
        proxy.set(Mode::Outage);
        assert_closed(&mut client).await;
        assert_refused(proxy.addr()).await;
        assert_eq!(proxy.bytes_to_server(), 4, "nothing forwarded during the outage");
    }

    #[tokio::test]
    async fn stall_silences_live_and_new_connections_until_pass() {
        let (proxy, mut live) = echo_proxy().await;
        assert_eq!(round_trip(&mut live, b"one").await, b"one");
        proxy.set(Mode::Stall);
        let mut stalled = TcpStream::connect(proxy.addr()).await.unwrap();
        live.write_all(b"two").await.unwrap();
        stalled.write_all(b"anyone?").await.unwrap();
        for stream in [&mut live, &mut stalled] {
            let read = timeout(Duration::from_millis(300), stream.read(&mut [0; 16])).await;
            assert!(read.is_err(), "the read must time out, got {read:?}");
        }
        assert_eq!((proxy.bytes_to_server(), proxy.bytes_to_client()), (3, 3), "nothing forwarded while stalled");
        proxy.set(Mode::Pass);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"back").await, b"back");
    }

    #[tokio::test]
    async fn reset_mid_request_truncates_and_resets() {
        let (server, received) = counting_server().await;
        let proxy = FaultProxy::start(server).await.unwrap();
        proxy.set(Mode::ResetMidRequest);
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        client.write_all(&[7; 1000]).await.unwrap();
        let read = timeout(WAIT, client.read(&mut [0; 16])).await.unwrap();
        assert!(matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset), "expected a reset, got {read:?}");
        let got = timeout(WAIT, received).await.unwrap().unwrap();
        assert!((1..1000).contains(&got), "the server got {got} of 1000 bytes");
        assert_eq!(proxy.connections_reset(), 1);
    }

    #[tokio::test]
    async fn slow_delays_each_round_trip() {
        let (proxy, mut client) = echo_proxy().await;
        proxy.set(Mode::Slow(Duration::from_millis(200)));
        let started = Instant::now();
        assert_eq!(round_trip(&mut client, b"slow").await, b"slow");
        assert!(started.elapsed() >= Duration::from_millis(150), "took only {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn stop_or_drop_closes_the_port_and_connections() {
        for stop in [true, false] {
            let (proxy, mut client) = echo_proxy().await;
            let addr = proxy.addr();
            assert_eq!(round_trip(&mut client, b"hi").await, b"hi");
            if stop {
                timeout(WAIT, proxy.stop()).await.expect("stop() ends every task promptly")
            } else {
                drop(proxy)
            }
            assert_closed(&mut client).await;
            assert_refused(addr).await;
        }
    }
}
