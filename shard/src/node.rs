//! Starting a node: one thread per shard, each pinned to a core with its own executor.
//!
//! Start-up runs in three steps on every shard thread: bind the client port (SO_REUSEPORT, so
//! the kernel spreads connections over the shards), recover the owned partitions, report to the
//! starting thread. Only when every shard has recovered does any of them accept clients.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};
use strata_core::auth::Password;
use strata_core::ShardId;

use crate::cluster::ControlMessage;
use crate::cluster::{ClusterShared, NodeHandle};
use crate::hop::RingEnds;
use crate::metrics::NodeMetrics;
use crate::options::NodeOptions;
use crate::shard::{Counters, Mesh, Shard, SHARD_MESSAGES_MAX};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("shard {shard}: cannot listen on {address}: {source}")]
    Listen { shard: u32, address: std::net::SocketAddr, source: std::io::Error },
    #[error("shard {shard}: cannot start its executor: {source}")]
    Runtime { shard: u32, source: std::io::Error },
    #[error("shard {shard}: recovery failed: {source}")]
    Recovery { shard: u32, source: strata_wal::WalError },
    #[error("cannot start shard thread: {0}")]
    Thread(std::io::Error),
    #[error("shard {0} stopped during start-up")]
    Vanished(u32),
}

impl NodeError {
    /// A distinct process exit code for each reason the node could not start.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            NodeError::Listen { .. } => 3,
            NodeError::Runtime { .. } | NodeError::Thread(_) | NodeError::Vanished(_) => 4,
            NodeError::Recovery { .. } => 5,
        }
    }
}

/// A node whose shards have recovered and serve clients.
pub struct RunningNode {
    threads: Vec<JoinHandle<()>>,
    pub recovery_time: Duration,
    handle: NodeHandle,
}

impl RunningNode {
    /// The control thread's way to the shards.
    #[must_use]
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Blocks until every shard thread ends (they run until the process exits).
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

type Report = Result<(), NodeError>;

/// Starts every shard and returns once all of them serve, or with the first start-up error.
/// `shared` holds the serving mode the shards start in.
pub fn start(options: NodeOptions, shared: Arc<ClusterShared>) -> Result<RunningNode, NodeError> {
    let started = Instant::now();
    let shard_count = options.shard_count;
    let partition_count = options.partition_count;
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shard_count).map(|_| flume::bounded::<ControlMessage>(SHARD_MESSAGES_MAX)).unzip();
    let counters = Arc::new(Counters::default());
    let metrics = Arc::new(NodeMetrics::new(Arc::clone(&counters), shard_count, partition_count));
    let handle = NodeHandle {
        senders,
        shared: Arc::clone(&shared),
        partition_count,
        metrics: Arc::clone(&metrics),
    };
    let password = options.requirepass.as_deref().map(|text| Password::new(text.as_bytes()));
    let doorbells = (0..shard_count).map(|_| crate::hop::Doorbell::default()).collect();
    let device_sync = Arc::default();
    let mesh = Arc::new(Mesh {
        doorbells,
        options,
        counters,
        metrics,
        started,
        shared,
        password,
        device_sync,
    });
    let rings = crate::hop::ring_mesh(shard_count as usize);
    let (report_sender, report_receiver) = mpsc::channel::<Report>();
    let mut go_senders = Vec::new();
    let mut threads = Vec::new();
    for (index, (receiver, rings)) in receivers.into_iter().zip(rings).enumerate() {
        let (go_sender, go_receiver) = mpsc::channel::<bool>();
        go_senders.push(go_sender);
        let mesh = Arc::clone(&mesh);
        let report = report_sender.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || {
                let channels = ShardChannels { control: receiver, rings };
                run_shard(ShardId(index as u32), mesh, channels, &report, &go_receiver);
            })
            .map_err(NodeError::Thread)?;
        threads.push(thread);
    }
    drop(report_sender);
    let mut first_error = None;
    for index in 0..shard_count {
        match report_receiver.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {
                first_error.get_or_insert(NodeError::Vanished(index));
            }
        }
    }
    let go = first_error.is_none();
    for sender in go_senders {
        let _ = sender.send(go);
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok(RunningNode { threads, recovery_time: started.elapsed(), handle })
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

/// An io_uring executor whose completions run only when the shard asks for them
/// (DEFER_TASKRUN, one submitting thread, cooperative task running): this keeps the kernel from
/// retrying socket receives while the sender's core holds the socket lock. Kernels before 6.1
/// lack these flags; then the ring is set up without them.
fn uring_runtime(id: ShardId) -> std::io::Result<UringRuntime> {
    let build = |ring: io_uring::Builder| {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .uring_builder(ring)
            .enable_timer()
            .build()
    };
    let mut ring = io_uring::IoUring::builder();
    ring.setup_coop_taskrun().setup_single_issuer().setup_defer_taskrun();
    build(ring).or_else(|error| {
        tracing::info!(shard = id.0, %error, "io_uring without deferred task running");
        build(io_uring::IoUring::builder())
    })
}

/// What a shard thread receives on: the control thread's channel and its ends of the rings.
struct ShardChannels {
    control: flume::Receiver<ControlMessage>,
    rings: RingEnds,
}

fn run_shard(
    id: ShardId,
    mesh: Arc<Mesh>,
    channels: ShardChannels,
    report: &mpsc::Sender<Report>,
    go: &mpsc::Receiver<bool>,
) {
    if let Some(cores) = mesh.options.shard_cores.as_deref().filter(|cores| !cores.is_empty()) {
        let core = cores[id.0 as usize % cores.len()];
        match monoio::utils::bind_to_cpu_set([core]) {
            Ok(()) => tracing::info!(shard = id.0, core, "shard thread pinned"),
            Err(error) => tracing::warn!(shard = id.0, core, ?error, "cannot pin shard thread"),
        }
    }
    let force_epoll = mesh.options.force_epoll;
    if !force_epoll && monoio::utils::detect_uring() {
        let runtime = uring_runtime(id);
        match runtime {
            Ok(mut runtime) => {
                tracing::info!(shard = id.0, "io_uring driver");
                runtime.block_on(shard_main(id, mesh, channels, report, go));
                return;
            }
            Err(error) => {
                tracing::warn!(shard = id.0, %error, "io_uring cannot start; using epoll")
            }
        }
    } else if !force_epoll {
        tracing::warn!(shard = id.0, "io_uring is not available here; using epoll");
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
        Ok(mut runtime) => {
            tracing::info!(shard = id.0, "epoll driver");
            runtime.block_on(shard_main(id, mesh, channels, report, go));
        }
        Err(source) => {
            let _ = report.send(Err(NodeError::Runtime { shard: id.0, source }));
        }
    }
}

async fn shard_main(
    id: ShardId,
    mesh: Arc<Mesh>,
    channels: ShardChannels,
    report: &mpsc::Sender<Report>,
    go: &mpsc::Receiver<bool>,
) {
    let address = mesh.options.client_address;
    let listener = match TcpListener::bind_with_config(
        address,
        &ListenerOpts::new().reuse_port(true).backlog(1024),
    ) {
        Ok(listener) => listener,
        Err(source) => {
            let _ = report.send(Err(NodeError::Listen { shard: id.0, address, source }));
            return;
        }
    };
    let own_listener = match mesh.options.shard_port_base {
        None => None,
        Some(base) => {
            let port = u16::try_from(u32::from(base) + id.0).unwrap_or(u16::MAX);
            let address = std::net::SocketAddr::new(address.ip(), port);
            match TcpListener::bind_with_config(address, &ListenerOpts::new().backlog(1024)) {
                Ok(listener) => Some(listener),
                Err(source) => {
                    let _ = report.send(Err(NodeError::Listen { shard: id.0, address, source }));
                    return;
                }
            }
        }
    };
    let ShardChannels { control, rings } = channels;
    let shard = Rc::new(Shard::new(id, mesh, rings));
    for partition in shard.owned_partitions() {
        if let Err(source) = shard.recover_partition(partition) {
            let _ = report.send(Err(NodeError::Recovery { shard: id.0, source }));
            return;
        }
    }
    let _ = report.send(Ok(()));
    // Blocking here is fine: no task of this shard runs yet.
    if !go.recv().unwrap_or(false) {
        return;
    }
    monoio::spawn(Rc::clone(&shard).serve_control(control));
    monoio::spawn(Rc::clone(&shard).serve_hops());
    monoio::spawn(Rc::clone(&shard).send_hops());
    for partition in shard.owned_partitions() {
        monoio::spawn(Rc::clone(&shard).run_flusher(partition));
    }
    monoio::spawn(Rc::clone(&shard).run_housekeeping());
    monoio::spawn(Rc::clone(&shard).run_active_expiry());
    monoio::spawn(Rc::clone(&shard).run_ticks());
    if let Some(own_listener) = own_listener {
        monoio::spawn(accept_clients(Rc::clone(&shard), own_listener, true));
    }
    accept_clients(shard, listener, false).await;
}

/// Accepts clients on `listener`: the node's client port, or this shard's own port
/// (`own_port`), whose connections CLUSTER NODES shows as `myself`.
async fn accept_clients(shard: Rc<Shard>, listener: TcpListener, own_port: bool) {
    let counters = &shard.mesh.counters;
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(shard = shard.id.0, %error, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counters.connections_received.fetch_add(1, Ordering::Relaxed);
        let current = counters.connections_current.fetch_add(1, Ordering::Relaxed);
        if current >= shard.mesh.options.connections_max {
            counters.connections_current.fetch_sub(1, Ordering::Relaxed);
            counters.connections_rejected.fetch_add(1, Ordering::Relaxed);
            monoio::spawn(reject(stream));
            continue;
        }
        let _ = stream.set_nodelay(true);
        let client_id = counters.client_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let origin = Origin { client_id, own_port, local_address: stream.local_addr().ok() };
        match shard.mesh.options.client_tls.clone() {
            Some(tls) => monoio::spawn(serve_tls(Rc::clone(&shard), stream, tls, origin)),
            None => monoio::spawn(crate::connection::serve(Rc::clone(&shard), stream, origin)),
        };
    }
}

/// A client over TLS: the handshake, then the same connection loop.
async fn serve_tls(
    shard: Rc<Shard>,
    stream: monoio::net::TcpStream,
    tls: std::sync::Arc<rustls::ServerConfig>,
    origin: Origin,
) {
    match crate::tls::TlsSocket::accept(stream, tls).await {
        Ok(client) => crate::connection::serve(shard, client, origin).await,
        Err(error) => {
            shard.mesh.counters.connections_current.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(shard = shard.id.0, %error, "client port: TLS handshake failed");
        }
    }
}

/// Where a client connection came in.
pub(crate) struct Origin {
    pub(crate) client_id: u64,
    /// Accepted on the shard's own port (`shard_port_base`), not the node's client port.
    pub(crate) own_port: bool,
    /// The local end of the connection: the address CLUSTER shows when the node listens on
    /// every interface.
    pub(crate) local_address: Option<std::net::SocketAddr>,
}

async fn reject(mut stream: monoio::net::TcpStream) {
    use monoio::io::AsyncWriteRentExt;
    let _ = stream.write_all(b"-ERR max number of clients reached\r\n".to_vec()).await;
}
