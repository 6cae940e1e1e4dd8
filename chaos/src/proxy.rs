//! The TCP fault proxy on the peer links (`tc netem` is not available here): one listener in
//! front of each node's peer listener, on the node's own address, advertised as the node's
//! `peer_url` (`ClusterOptions::peer_front`), so every Raft, forwarding and threshold call
//! between nodes passes through it. It forwards bytes only: mutual TLS runs end to end between
//! the nodes (the certificates name the node's IP, which the front shares), and the upstream
//! connection leaves from the caller's own address, so the iptables partitions (`-s A -d B`)
//! still apply.
//!
//! A fault is set per node and applies to every link of that node — connections into its front
//! and connections from its address into the other fronts:
//! - `Delay(d)`: every chunk is held `d` before it is passed on, each way (a round trip: 2·d);
//! - `Drop`: a black hole — connections are accepted, nothing is passed on (bytes wait, TCP
//!   pushes back) until the fault ends, when what waited flows again, as after a lost route;
//! - `Reset`: every existing connection is aborted with a TCP reset, new ones are reset at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A fault on every peer link of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkFault {
    Delay(Duration),
    Drop,
    Reset,
}

/// The faults in force, by node.
pub type Faults = BTreeMap<usize, LinkFault>;

/// What a link between `src` (the caller's node, when its address is a node's) and `dst` (the
/// node behind the front) suffers: the worse of its two ends' faults (reset, then drop, then
/// the longer delay). Pure.
pub fn fault_of(faults: &Faults, src: Option<usize>, dst: usize) -> Option<LinkFault> {
    let rank = |f: &LinkFault| match f {
        LinkFault::Reset => (2, Duration::ZERO),
        LinkFault::Drop => (1, Duration::ZERO),
        LinkFault::Delay(d) => (0, *d),
    };
    [src.and_then(|s| faults.get(&s)), faults.get(&dst)]
        .into_iter()
        .flatten()
        .max_by_key(|f| rank(f))
        .copied()
}

/// Counters, for the report and the tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub bytes: AtomicU64,
}

struct Shared {
    faults: watch::Sender<Faults>,
    nodes_by_ip: Mutex<BTreeMap<IpAddr, usize>>,
    counters: Counters,
}

impl Shared {
    fn node_of(&self, ip: IpAddr) -> Option<usize> {
        self.nodes_by_ip.lock().ok()?.get(&ip).copied()
    }
}

/// The proxies of one cluster, on a runtime of their own.
pub struct ProxySet {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
}

/// How long the proxy waits for a node's peer listener to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Chunks in flight per direction before the proxy stops reading (TCP then pushes back).
const QUEUE: usize = 64;

impl ProxySet {
    pub fn new() -> Result<ProxySet> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chaos-proxy")
            .enable_all()
            .build()
            .context("the proxy runtime")?;
        Ok(ProxySet {
            runtime,
            shared: Arc::new(Shared {
                faults: watch::Sender::new(Faults::new()),
                nodes_by_ip: Mutex::new(BTreeMap::new()),
                counters: Counters::default(),
            }),
        })
    }

    /// Starts the front of node `id`, whose peer listener is (or will be) `upstream`, on the
    /// same IP and a free port; returns the front's address.
    pub fn front(&self, id: usize, upstream: SocketAddr) -> Result<SocketAddr> {
        if let Ok(mut map) = self.shared.nodes_by_ip.lock() {
            map.insert(upstream.ip(), id);
        }
        let listener = self
            .runtime
            .block_on(async { TcpListener::bind(SocketAddr::new(upstream.ip(), 0)).await })?;
        let front = listener.local_addr()?;
        let shared = self.shared.clone();
        self.runtime.spawn(serve(listener, upstream, id, shared));
        Ok(front)
    }

    /// Puts `fault` on every link of node `id` (`None`: heals them).
    pub fn set(&self, id: usize, fault: Option<LinkFault>) {
        self.shared.faults.send_modify(|f| match fault {
            Some(fault) => {
                f.insert(id, fault);
            }
            None => {
                f.remove(&id);
            }
        });
    }

    /// Heals every link.
    pub fn clear(&self) {
        self.shared.faults.send_modify(Faults::clear);
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, dst: usize, shared: Arc<Shared>) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let src = shared.node_of(peer.ip());
        tokio::spawn(link(client, peer.ip(), upstream, src, dst, shared.clone()));
    }
}

/// Aborts a connection with a TCP reset.
fn reset(stream: &TcpStream, shared: &Shared) {
    let _ = stream.set_zero_linger();
    shared.counters.resets.fetch_add(1, Ordering::Relaxed);
}

async fn link(
    client: TcpStream,
    from: IpAddr,
    upstream: SocketAddr,
    src: Option<usize>,
    dst: usize,
    shared: Arc<Shared>,
) {
    if fault_of(&shared.faults.borrow(), src, dst) == Some(LinkFault::Reset) {
        reset(&client, &shared);
        return;
    }
    let Some(server) = connect(from, upstream).await else {
        // The node is down: the caller sees its connection fail, as it would without a proxy.
        reset(&client, &shared);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, &shared, src, dst);
    let down = pump(server_read, client_write, &shared, src, dst);
    let (a, b) = tokio::join!(up, down);
    if a || b {
        shared.counters.resets.fetch_add(1, Ordering::Relaxed);
    }
}

/// Connects to the node's peer listener from `from` (the caller's address), so that firewall
/// rules naming the caller apply to the forwarded connection too.
async fn connect(from: IpAddr, upstream: SocketAddr) -> Option<TcpStream> {
    let socket = match upstream {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .ok()?;
    if from.is_ipv4() == upstream.is_ipv4() {
        // Not fatal: without it the connection leaves from the default address.
        let _ = socket.bind(SocketAddr::new(from, 0));
    }
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(upstream))
        .await
        .ok()?
        .ok()
}

/// Waits until the link is reset.
async fn until_reset(mut faults: watch::Receiver<Faults>, src: Option<usize>, dst: usize) {
    loop {
        if fault_of(&faults.borrow_and_update(), src, dst) == Some(LinkFault::Reset) {
            return;
        }
        if faults.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Copies one direction of a link, with the link's faults. Returns whether it was reset.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    src: Option<usize>,
    dst: usize,
) -> bool {
    let (tx, mut queue) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let reader = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = match fault_of(&shared.faults.borrow(), src, dst) {
                Some(LinkFault::Delay(d)) => d,
                _ => Duration::ZERO,
            };
            let chunk = buf.get(..n).unwrap_or_default().to_vec();
            if tx.send((Instant::now() + delay, chunk)).await.is_err() {
                break;
            }
        }
        drop(tx);
    };
    let writer = async {
        let mut faults = shared.faults.subscribe();
        while let Some((due, chunk)) = queue.recv().await {
            tokio::time::sleep_until(due).await;
            // A black hole: nothing passes until the fault ends.
            while fault_of(&faults.borrow_and_update(), src, dst) == Some(LinkFault::Drop) {
                if faults.changed().await.is_err() {
                    break;
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            shared
                .counters
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // The other side closed its half: close ours.
        let _ = to.shutdown().await;
    };
    let was_reset = tokio::select! {
        _ = async { tokio::join!(reader, writer) } => false,
        () = until_reset(shared.faults.subscribe(), src, dst) => true,
    };
    if was_reset {
        // Closing a socket with a zero linger sends a reset instead of a FIN (both halves of
        // each socket are dropped when both directions' pumps return).
        let _ = from.as_ref().set_zero_linger();
        let _ = to.as_ref().set_zero_linger();
    }
    was_reset
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant as StdInstant;

    use super::*;

    /// An echo server on loopback (one thread per connection).
    fn echo() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn dial(front: SocketAddr) -> StdStream {
        let stream = StdStream::connect(front).expect("connect to the front");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// Sends one byte and waits for the echo: the round trip, or the error.
    fn round_trip(stream: &mut StdStream) -> std::io::Result<Duration> {
        let started = StdInstant::now();
        stream.write_all(b"x")?;
        let mut byte = [0u8; 1];
        match stream.read(&mut byte)? {
            1 => Ok(started.elapsed()),
            _ => Err(std::io::Error::other("closed")),
        }
    }

    #[test]
    fn the_worse_fault_of_either_end_applies() {
        let mut faults = Faults::new();
        assert_eq!(fault_of(&faults, Some(1), 2), None);
        faults.insert(1, LinkFault::Delay(Duration::from_millis(50)));
        assert_eq!(
            fault_of(&faults, Some(1), 2),
            Some(LinkFault::Delay(Duration::from_millis(50)))
        );
        assert_eq!(fault_of(&faults, Some(3), 2), None);
        assert_eq!(fault_of(&faults, None, 2), None);
        faults.insert(2, LinkFault::Reset);
        assert_eq!(fault_of(&faults, Some(1), 2), Some(LinkFault::Reset));
        assert_eq!(fault_of(&faults, None, 2), Some(LinkFault::Reset));
        faults.insert(2, LinkFault::Delay(Duration::from_millis(80)));
        assert_eq!(
            fault_of(&faults, Some(1), 2),
            Some(LinkFault::Delay(Duration::from_millis(80)))
        );
    }

    #[test]
    fn a_delay_is_added_each_way_and_goes_away_when_healed() {
        let proxies = ProxySet::new().expect("proxies");
        let front = proxies.front(1, echo()).expect("front");
        let mut stream = dial(front);
        round_trip(&mut stream).expect("echo through the proxy");
        proxies.set(1, Some(LinkFault::Delay(Duration::from_millis(300))));
        let slow = round_trip(&mut stream).expect("echo with the delay");
        // 300 ms each way: never less than 600 ms (timers only ever fire late).
        assert!(slow >= Duration::from_millis(600), "{slow:?}");
        proxies.clear();
        // Healed: far below the delayed round trip (generous for a busy machine).
        let mut fast = Duration::MAX;
        for _ in 0..5 {
            fast = fast.min(round_trip(&mut stream).expect("echo healed"));
        }
        assert!(fast < Duration::from_millis(600), "{fast:?}");
        assert!(proxies.counters().bytes.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_reset_closes_connections_and_refuses_new_ones_until_healed() {
        let proxies = ProxySet::new().expect("proxies");
        let front = proxies.front(2, echo()).expect("front");
        let mut stream = dial(front);
        round_trip(&mut stream).expect("echo through the proxy");
        proxies.set(2, Some(LinkFault::Reset));
        // The open connection is reset (the read fails or sees the end; within the timeout).
        let mut byte = [0u8; 1];
        let started = StdInstant::now();
        let closed = match stream.read(&mut byte) {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        };
        assert!(closed && started.elapsed() < Duration::from_secs(30));
        // A new connection is accepted by the kernel and reset at once.
        let mut fresh = dial(front);
        assert!(round_trip(&mut fresh).is_err(), "a new link must be reset");
        assert!(proxies.counters().resets.load(Ordering::Relaxed) >= 2);
        proxies.set(2, None);
        let mut again = dial(front);
        round_trip(&mut again).expect("healed: echo again");
    }

    #[test]
    fn a_black_hole_holds_the_bytes_until_healed() {
        let proxies = ProxySet::new().expect("proxies");
        let front = proxies.front(3, echo()).expect("front");
        let mut stream = dial(front);
        round_trip(&mut stream).expect("echo through the proxy");
        proxies.set(3, Some(LinkFault::Drop));
        stream
            .set_read_timeout(Some(Duration::from_millis(700)))
            .expect("timeout");
        stream.write_all(b"y").expect("the proxy still accepts");
        let mut byte = [0u8; 1];
        let answer = stream.read(&mut byte);
        assert!(
            matches!(&answer, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "nothing may pass the black hole: {answer:?}"
        );
        proxies.clear();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        assert_eq!(stream.read(&mut byte).expect("released"), 1);
        assert_eq!(&byte, b"y");
    }
}
