//! Network faults on the peer links: a TCP proxy in the harness for every ordered pair of
//! nodes (replica → voter), through which the replica reaches that voter's peer port when it
//! follows it. A link passes bytes, delays them, holds one direction or both (a blackhole: the
//! bytes wait, as TCP retransmits them through a real outage, and flow again once it heals),
//! or is cut (every connection through it is reset and new ones are closed at once).
//!
//! What goes through the links: everything a replica sends its leader and receives from it
//! (registration, heartbeats, the replication streams, acknowledgements) and the promotion
//! requests a replica sends the leader it followed. What does not: client traffic, and the
//! promotion requests sent to the members a leader listed (they name each member's own peer
//! port); the `isolate` fault ([`crate::firewall`]) cuts a node off entirely. With automatic
//! failover members talk to each other at the addresses the controller records, never
//! through a proxy: none is started, and the firewall's rules make the links
//! ([`crate::links`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes read at once from one side of a connection.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks a direction holds (delayed or blackholed) before it stops reading, leaving the rest
/// to TCP's own buffers and flow control.
const HELD_CHUNKS_MAX: usize = 256;

/// How often a held direction looks again at the link's mode.
const HOLD_POLL: Duration = Duration::from_millis(5);

/// How long the proxy waits to reach the voter's real peer port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a link does to the bytes through it. "Forward" is from the connecting replica to the
/// voter it follows; "backward" the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Every chunk arrives this long after it was read.
    Delay(Duration),
    /// Both directions held: nothing arrives, nothing is lost.
    Blackhole,
    /// The replica's bytes are held; the voter's still arrive.
    HoldForward,
    /// The voter's bytes are held; the replica's still arrive.
    HoldBackward,
    /// Every connection reset, new ones closed at once.
    Cut,
}

impl Mode {
    /// Whether bytes going `forward` (or backward) must wait.
    fn holds(self, forward: bool) -> bool {
        match self {
            Mode::Blackhole => true,
            Mode::HoldForward => forward,
            Mode::HoldBackward => !forward,
            Mode::Pass | Mode::Delay(_) | Mode::Cut => false,
        }
    }

    /// The same fault seen from the other end: what holds the isolated node's bytes on a link
    /// it connects through holds the backward direction on a link others connect through.
    #[must_use]
    pub fn reversed(self) -> Mode {
        match self {
            Mode::HoldForward => Mode::HoldBackward,
            Mode::HoldBackward => Mode::HoldForward,
            other => other,
        }
    }
}

/// What one link shares with its threads.
struct LinkState {
    mode: Mutex<Mode>,
    /// Both sockets of every open connection, by number, to reset on a cut.
    connections: Mutex<BTreeMap<u64, [TcpStream; 2]>>,
    next_connection: AtomicU64,
    stopped: AtomicBool,
}

impl LinkState {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connections(&self) -> MutexGuard<'_, BTreeMap<u64, [TcpStream; 2]>> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reset_all(&self) {
        for sockets in std::mem::take(&mut *self.connections()).into_values() {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

/// One proxy: a listening port on 127.0.0.1 that forwards to a voter's peer port.
pub struct Link {
    pub port: u16,
    state: Arc<LinkState>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Link {
    /// Listens on a free port and forwards every connection to `127.0.0.1:target`.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub fn start(target: u16) -> Result<Link, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
        let port = listener.local_addr().map_err(|error| error.to_string())?.port();
        let state = Arc::new(LinkState {
            mode: Mutex::new(Mode::Pass),
            connections: Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        let accept_thread = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || accept_loop(&listener, &shared, target))
            .map_err(|error| error.to_string())?;
        Ok(Link { port, state, accept_thread: Some(accept_thread) })
    }

    #[must_use]
    pub fn mode(&self) -> Mode {
        self.state.mode()
    }

    /// Sets what the link does from now on; a cut resets every open connection.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
        if mode == Mode::Cut {
            self.state.reset_all();
        }
    }

    /// Connections open through the link now.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.state.connections().len()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Relaxed);
        self.set_mode(Mode::Cut);
        // Wakes the accept loop blocked in accept(2) so that it sees `stopped`.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            CONNECT_TIMEOUT,
        );
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<LinkState>, target: u16) {
    for incoming in listener.incoming() {
        if state.stopped.load(Ordering::Relaxed) {
            return;
        }
        let Ok(replica_side) = incoming else { continue };
        if state.mode() == Mode::Cut {
            // Closed at once, as a reset would.
            continue;
        }
        let address = SocketAddr::from(([127, 0, 0, 1], target));
        let Ok(voter_side) = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) else {
            continue;
        };
        if let Err(error) = connect_through(state, replica_side, voter_side) {
            eprintln!("chaos: proxy to port {target}: {error}");
        }
    }
}

/// Registers a connection and starts its four threads: a reader and a writer each way.
fn connect_through(
    state: &Arc<LinkState>,
    replica_side: TcpStream,
    voter_side: TcpStream,
) -> std::io::Result<()> {
    replica_side.set_nodelay(true)?;
    voter_side.set_nodelay(true)?;
    let number = state.next_connection.fetch_add(1, Ordering::Relaxed);
    state.connections().insert(number, [replica_side.try_clone()?, voter_side.try_clone()?]);
    let writers_done = Arc::new(AtomicU8::new(0));
    let forward = (replica_side.try_clone()?, voter_side.try_clone()?, true);
    let backward = (voter_side, replica_side, false);
    for (from, to, forward) in [forward, backward] {
        let (sender, receiver) = sync_channel(HELD_CHUNKS_MAX);
        std::thread::spawn(move || read_side(from, &sender));
        let shared = Arc::clone(state);
        let done = Arc::clone(&writers_done);
        std::thread::spawn(move || {
            write_side(&to, &receiver, &shared, forward);
            // The second writer to finish forgets the connection.
            if done.fetch_add(1, Ordering::AcqRel) == 1 {
                shared.connections().remove(&number);
            }
        });
    }
    Ok(())
}

/// Reads chunks and hands them on with the time they were read, until the end of the stream;
/// dropping the sender then tells the writer.
fn read_side(mut from: TcpStream, sender: &SyncSender<(Instant, Vec<u8>)>) {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(length) => {
                if sender.send((Instant::now(), buffer[..length].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes each chunk once the link lets it through; half-closes the far side when the near
/// side ended.
fn write_side(
    mut to: &TcpStream,
    receiver: &Receiver<(Instant, Vec<u8>)>,
    state: &LinkState,
    forward: bool,
) {
    for (read_at, chunk) in receiver {
        if !wait_until_let_through(state, forward, read_at) || to.write_all(&chunk).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Waits while the link holds this direction or delays the chunk; false when it was cut or
/// stopped meanwhile.
fn wait_until_let_through(state: &LinkState, forward: bool, read_at: Instant) -> bool {
    loop {
        if state.stopped.load(Ordering::Relaxed) {
            return false;
        }
        let mode = state.mode();
        match mode {
            Mode::Cut => return false,
            Mode::Delay(delay) => {
                let due = read_at + delay;
                let now = Instant::now();
                if now >= due {
                    return true;
                }
                std::thread::sleep((due - now).min(HOLD_POLL));
            }
            _ if mode.holds(forward) => std::thread::sleep(HOLD_POLL),
            _ => return true,
        }
    }
}

/// Every link of a cluster, by (replica, voter) node index.
pub struct Network {
    links: BTreeMap<(usize, usize), Link>,
}

impl Network {
    /// A link from every node to every voter other than itself; `peer_ports[i]` is node `i`'s
    /// real peer port and `voters` how many of the first nodes are voters.
    ///
    /// # Errors
    ///
    /// When a link cannot listen.
    pub fn start(peer_ports: &[u16], voters: usize) -> Result<Network, String> {
        let mut links = BTreeMap::new();
        for from in 0..peer_ports.len() {
            for (to, &port) in peer_ports.iter().enumerate().take(voters) {
                if from != to {
                    links.insert((from, to), Link::start(port)?);
                }
            }
        }
        Ok(Network { links })
    }

    /// The address node `from` names to reach voter `to`'s peer port.
    #[must_use]
    pub fn address(&self, from: usize, to: usize) -> Option<String> {
        self.links.get(&(from, to)).map(|link| format!("127.0.0.1:{}", link.port))
    }

    /// Sets every link to or from `node`: `mode` as seen by `node` (`HoldForward`: what
    /// `node` sends is held).
    pub fn isolate(&self, node: usize, mode: Mode) {
        for (&(from, to), link) in &self.links {
            if from == node {
                link.set_mode(mode);
            } else if to == node {
                link.set_mode(mode.reversed());
            }
        }
    }

    /// Sets the links between `node` and `peer` only (both ways that exist): `mode` as seen
    /// by `node`. Two nodes with no link between them (two learners) are left alone.
    pub fn cut_between(&self, node: usize, peer: usize, mode: Mode) {
        if let Some(link) = self.links.get(&(node, peer)) {
            link.set_mode(mode);
        }
        if let Some(link) = self.links.get(&(peer, node)) {
            link.set_mode(mode.reversed());
        }
    }

    /// Every link passes again.
    pub fn heal(&self) {
        for link in self.links.values() {
            link.set_mode(Mode::Pass);
        }
    }

    /// The ports of the links `node` connects through.
    #[must_use]
    pub fn ports_from(&self, node: usize) -> Vec<u16> {
        self.links
            .iter()
            .filter(|((from, _), _)| *from == node)
            .map(|(_, link)| link.port)
            .collect()
    }

    #[must_use]
    pub fn link(&self, from: usize, to: usize) -> Option<&Link> {
        self.links.get(&(from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that echoes every byte back, on its own thread.
    fn echo_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        port
    }

    fn connect(link: &Link) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", link.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        stream
    }

    fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text)?;
        let mut answer = vec![0u8; text.len()];
        stream.read_exact(&mut answer)?;
        Ok(answer)
    }

    #[test]
    fn a_passing_link_carries_bytes_both_ways() {
        let link = Link::start(echo_server()).unwrap();
        let mut stream = connect(&link);
        assert_eq!(round_trip(&mut stream, b"hello").unwrap(), b"hello");
        assert_eq!(link.open_connections(), 1);
    }

    #[test]
    fn a_blackhole_holds_bytes_and_delivers_them_once_healed() {
        let link = Link::start(echo_server()).unwrap();
        let mut stream = connect(&link);
        link.set_mode(Mode::Blackhole);
        assert!(round_trip(&mut stream, b"held").is_err(), "nothing may come back");
        link.set_mode(Mode::Pass);
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"held");
    }

    #[test]
    fn holding_one_direction_lets_the_other_through() {
        // The echo server answers only what reached it. Held going forward, "ab" waits in the
        // proxy; held coming back instead, it reaches the server, whose answer then waits,
        // as does the answer to "cd"; healed, both answers arrive in order.
        let link = Link::start(echo_server()).unwrap();
        let mut stream = connect(&link);
        link.set_mode(Mode::HoldForward);
        assert!(round_trip(&mut stream, b"ab").is_err());
        link.set_mode(Mode::HoldBackward);
        assert!(round_trip(&mut stream, b"cd").is_err());
        link.set_mode(Mode::Pass);
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"abcd");
    }

    #[test]
    fn a_cut_resets_connections_and_refuses_new_ones_until_healed() {
        let link = Link::start(echo_server()).unwrap();
        let mut stream = connect(&link);
        assert!(round_trip(&mut stream, b"x").is_ok());
        link.set_mode(Mode::Cut);
        assert!(round_trip(&mut stream, b"y").is_err());
        let mut fresh = connect(&link);
        assert!(round_trip(&mut fresh, b"z").is_err());
        link.set_mode(Mode::Pass);
        let mut healed = connect(&link);
        assert_eq!(round_trip(&mut healed, b"ok").unwrap(), b"ok");
    }

    #[test]
    fn a_delay_delays_every_chunk() {
        let link = Link::start(echo_server()).unwrap();
        let mut stream = connect(&link);
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        link.set_mode(Mode::Delay(Duration::from_millis(100)));
        let began = Instant::now();
        assert_eq!(round_trip(&mut stream, b"slow").unwrap(), b"slow");
        // Delayed going and coming back.
        assert!(began.elapsed() >= Duration::from_millis(200), "{:?}", began.elapsed());
    }

    #[test]
    fn isolating_a_node_sets_the_links_it_sends_through_and_the_links_to_it() {
        let ports: Vec<u16> = (0..3).map(|_| echo_server()).collect();
        let network = Network::start(&ports, 2).unwrap();
        // Node 2 is a learner: links 0→1, 1→0, 2→0, 2→1.
        assert!(network.address(0, 2).is_none());
        assert!(network.address(2, 0).is_some());
        network.isolate(0, Mode::HoldForward);
        assert_eq!(network.link(0, 1).unwrap().mode(), Mode::HoldForward);
        assert_eq!(network.link(1, 0).unwrap().mode(), Mode::HoldBackward);
        assert_eq!(network.link(2, 0).unwrap().mode(), Mode::HoldBackward);
        assert_eq!(network.link(2, 1).unwrap().mode(), Mode::Pass);
        network.heal();
        assert_eq!(network.link(0, 1).unwrap().mode(), Mode::Pass);
        network.cut_between(2, 1, Mode::HoldForward);
        assert_eq!(network.link(2, 1).unwrap().mode(), Mode::HoldForward);
        assert_eq!(network.link(0, 1).unwrap().mode(), Mode::Pass);
        assert_eq!(network.link(2, 0).unwrap().mode(), Mode::Pass);
    }
}
