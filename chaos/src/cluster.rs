//! The cluster under test: real `strata node` processes on loopback, each with its own config,
//! data directory and log file in the run's output directory, sharing one directory as shared
//! storage. [`Cluster`] owns the processes and the harness's own view of the roles it set
//! (who leads, whom each replica follows); the workloads read that view through [`View`].
//!
//! Every child is killed when the cluster is dropped (normal end, error or panic), and each is
//! started with `PR_SET_PDEATHSIG` so that it dies with the harness even on SIGKILL.

use std::fmt;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admin::{self, AdminReply};
use crate::client::{Reply, RespConnection};
use crate::firewall::Firewall;
use crate::proxy::Network;
use crate::timeline::Timeline;

/// How long a node may take to answer PING after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a set-role request may take: a follower's returns once it caught up, or after
/// 60 s (docs/admin-api.md).
pub const ROLE_TIMEOUT: Duration = Duration::from_secs(75);

/// How long the operator waits for a promotion's answer. A promotion asks the other members
/// (3 s each at most), so it normally answers within seconds; a node whose control thread is
/// busy (a follower set-role request waiting for its catch-up) may not answer for a minute,
/// and the operator had better try another follower meanwhile.
pub const PROMOTION_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a status request may take.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Who replaces a lost leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Failover {
    /// The harness's operator, as a person would: checked promotions and re-points
    /// ([`crate::operator`]).
    #[default]
    Manual,
    /// The cluster's own controller (`[cluster] failover = "automatic"`): the operator only
    /// forms the cluster, restarts what died and gives a removed node a role again.
    Automatic,
}

impl Failover {
    /// The name on the command line and in the nodes' configs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Failover::Manual => "manual",
            Failover::Automatic => "automatic",
        }
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<Failover> {
        [Failover::Manual, Failover::Automatic].into_iter().find(|mode| mode.name() == name)
    }
}

impl fmt::Display for Failover {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Settings of the cluster and of every node's config file.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// The `strata` binary.
    pub binary: PathBuf,
    /// Where configs, data directories, shared storage and logs go.
    pub out_dir: PathBuf,
    /// Nodes that may lead or follow.
    pub voters: usize,
    /// Nodes that follow asynchronously and are never promoted.
    pub learners: usize,
    pub shards: u32,
    pub partitions: u32,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub min_insync_replicas: u32,
    /// Manual failover (the operator promotes), or automatic (the controller does).
    pub failover: Failover,
    /// `[cluster] failover_timeout`: how long a leader may go without confirming its lease
    /// before the controller replaces it (automatic failover).
    pub failover_timeout_ms: u64,
    /// Gives each node a tmpfs of its own as its data directory, so that the nemesis can fill
    /// it (needs root; `None` keeps the data directories on the run's filesystem).
    pub disk_bytes: Option<u64>,
    /// libfaketime, under which every node runs so that the nemesis can step its wall clock
    /// (`None`: the nodes run without it).
    pub faketime: Option<PathBuf>,
    /// Makes an nftables table for the `isolate` fault, and with automatic failover for the
    /// `partition` fault too (needs root and nftables).
    pub firewall: bool,
    /// Known replication bugs put back in every node (`STRATA_MUTATIONS`), to show the
    /// checker finds them; empty for a true run.
    pub mutations: String,
}

impl ClusterSettings {
    /// Three voters and a learner, two in-sync members at least, heartbeats every 200 ms.
    #[must_use]
    pub fn new(binary: PathBuf, out_dir: PathBuf) -> ClusterSettings {
        ClusterSettings {
            binary,
            out_dir,
            voters: 3,
            learners: 1,
            shards: 1,
            partitions: 8,
            heartbeat_interval_ms: 200,
            heartbeat_timeout_ms: 2000,
            min_insync_replicas: 2,
            failover: Failover::Manual,
            failover_timeout_ms: 1500,
            disk_bytes: None,
            faketime: None,
            firewall: false,
            mutations: String::new(),
        }
    }
}

/// What a node may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Voter,
    Learner,
}

/// The role the harness last gave a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// Admin mode: just started, or a set-role request failed.
    Unassigned,
    Leader,
    /// Follower (voter) or learner of the named leader.
    Replica {
        leader: String,
    },
}

/// A node the workloads can reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub port: u16,
}

/// The harness's view of the cluster, shared with the workloads.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub leader: Option<Endpoint>,
    /// Running, unpaused followers and learners given their role.
    pub replicas: Vec<Endpoint>,
    /// Every node, running or not.
    pub nodes: Vec<Endpoint>,
    /// Whether the clients find the leader and the replicas themselves among `nodes` (asking
    /// each what it is), as clients of a cluster with automatic failover must, instead of
    /// following `leader` and `replicas`.
    pub discover: bool,
}

/// One node: its ports, files, process and assignment.
pub struct Node {
    pub name: String,
    pub kind: Kind,
    pub client_port: u16,
    pub http_port: u16,
    pub peer_port: u16,
    pub directory: PathBuf,
    /// The tmpfs mounted for this node's data, when the cluster has them.
    pub disk: Option<PathBuf>,
    pub assignment: Assignment,
    /// Since when the process is stopped with SIGSTOP (None: not stopped).
    pub paused_since: Option<Instant>,
    /// Whether the nemesis holds its disk full now.
    pub disk_full: bool,
    /// Whether its disk was full since the process started.
    pub disk_was_full: bool,
    /// Whether the nemesis cut every packet to and from it now.
    pub isolated: bool,
    /// Whether it was removed from the cluster and is not to be pointed at a leader until the
    /// fault ends.
    pub removed: bool,
    /// How many times the process was started: a set-role answer that began before the
    /// latest start says nothing of the process running now.
    pub generation: u64,
    /// With automatic failover: whether it is a member of the cluster as far as the harness
    /// knows (it joined, and was not removed since); the operator gives a role to those that
    /// are not.
    pub member: bool,
    /// The group id its process runs under, which marks the connections it opens
    /// ([`crate::firewall`]); only with automatic failover and a firewall.
    pub group: Option<u32>,
    child: Option<Child>,
}

impl Node {
    /// This node's peer address, as its replicas name it.
    #[must_use]
    pub fn peer_address(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    #[must_use]
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Running and not paused: it can answer.
    #[must_use]
    pub fn available(&self) -> bool {
        self.running() && self.paused_since.is_none()
    }

    fn log_path(&self) -> PathBuf {
        self.directory.join("node.log")
    }

    fn config_path(&self) -> PathBuf {
        self.directory.join("strata.toml")
    }

    /// The data directory: on the node's tmpfs when it has one.
    fn data_path(&self) -> PathBuf {
        self.disk.as_ref().unwrap_or(&self.directory).join("data")
    }

    /// The file libfaketime reads this node's wall-clock offset from.
    #[must_use]
    pub fn clock_path(&self) -> PathBuf {
        self.directory.join("faketime.rc")
    }

    /// The file that fills the node's tmpfs while a disk-full fault lasts.
    #[must_use]
    pub fn ballast_path(&self) -> Option<PathBuf> {
        self.disk.as_ref().map(|disk| disk.join("ballast"))
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint { name: self.name.clone(), port: self.client_port }
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
            if pid > 0 {
                // SAFETY: kill(2) with the pid of a child this process has not reaped yet.
                unsafe { libc::kill(pid, signal) };
            }
        }
    }
}

/// The nodes of one run and who leads them.
pub struct Cluster {
    pub settings: ClusterSettings,
    pub nodes: Vec<Node>,
    /// The node the harness made leader last (None while no promotion succeeded).
    pub leader: Option<usize>,
    /// The proxies every replica reaches the voters' peer ports through.
    pub network: Network,
    /// The follower the operator tries first at the next promotion (a stale promotion's).
    pub preferred_candidate: Option<usize>,
    /// The run's nftables table, when it isolates nodes (and, with automatic failover, cuts
    /// peer links).
    pub firewall: Option<Firewall>,
    view: Arc<Mutex<View>>,
}

impl Cluster {
    /// Writes every node's config and starts the processes (in admin mode); waits until each
    /// answers PING. Roles are set by [`crate::operator`].
    ///
    /// # Errors
    ///
    /// A file that cannot be written, or a node that does not start.
    pub fn start(settings: ClusterSettings) -> Result<Cluster, String> {
        let shared = settings.out_dir.join("shared");
        std::fs::create_dir_all(&shared).map_err(|error| format!("{shared:?}: {error}"))?;
        let mut ports = PortPicker::new();
        let mut nodes = Vec::new();
        let count = settings.voters + settings.learners;
        let automatic = settings.failover == Failover::Automatic;
        let groups = if automatic && settings.firewall { Firewall::groups(count) } else { vec![] };
        // Every node of the cluster proves this secret on its peer connections.
        let secret = format!("{:032x}", rand::random::<u128>());
        for index in 0..count {
            let kind = if index < settings.voters { Kind::Voter } else { Kind::Learner };
            let name = format!("n{}", index + 1);
            let directory = settings.out_dir.join(&name);
            std::fs::create_dir_all(&directory)
                .map_err(|error| format!("{directory:?}: {error}"))?;
            let disk = match settings.disk_bytes {
                Some(bytes) => Some(mount_disk(&directory.join("disk"), bytes)?),
                None => None,
            };
            std::fs::write(directory.join("faketime.rc"), "+0\n")
                .map_err(|error| format!("{directory:?}: {error}"))?;
            let node = Node {
                name,
                kind,
                client_port: ports.next()?,
                http_port: ports.next()?,
                peer_port: ports.next()?,
                directory,
                disk,
                assignment: Assignment::Unassigned,
                paused_since: None,
                disk_full: false,
                disk_was_full: false,
                isolated: false,
                removed: false,
                generation: 0,
                member: false,
                group: groups.get(index).copied(),
                child: None,
            };
            std::fs::write(node.config_path(), config_text(&settings, &node, &shared, &secret))
                .map_err(|error| format!("writing {:?}: {error}", node.config_path()))?;
            nodes.push(node);
        }
        // With automatic failover members reach each other at the addresses they advertise,
        // never through the proxies: none is started.
        let peer_ports: Vec<u16> =
            if automatic { Vec::new() } else { nodes.iter().map(|node| node.peer_port).collect() };
        let network = Network::start(&peer_ports, settings.voters)?;
        let firewall = if settings.firewall {
            Some(Firewall::create_marking(&groups).map_err(|error| error.to_string())?)
        } else {
            None
        };
        let mut cluster = Cluster {
            settings,
            nodes,
            leader: None,
            network,
            preferred_candidate: None,
            firewall,
            view: Arc::new(Mutex::new(View::default())),
        };
        for index in 0..cluster.nodes.len() {
            cluster.restart(index)?;
        }
        Ok(cluster)
    }

    /// The view the workloads read.
    #[must_use]
    pub fn view(&self) -> Arc<Mutex<View>> {
        Arc::clone(&self.view)
    }

    /// Updates the shared view from the assignments. A paused leader stays the leader until
    /// another is promoted, as it would for a client that cannot tell a pause from a slow
    /// node; a paused replica is left out, so that replica readers start on one that answers.
    pub fn publish(&self) {
        let view = self.current_view();
        *self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = view;
    }

    fn current_view(&self) -> View {
        let leader = self.leader.filter(|&index| self.nodes[index].running());
        let leader_name = leader.map(|index| self.nodes[index].name.clone());
        let replicas = self
            .nodes
            .iter()
            .filter(|node| node.available())
            .filter(|node| match (&node.assignment, &leader_name) {
                (Assignment::Replica { leader }, Some(name)) => leader == name,
                _ => false,
            })
            .map(Node::endpoint)
            .collect();
        View {
            leader: leader.map(|index| self.nodes[index].endpoint()),
            replicas,
            nodes: self.nodes.iter().map(Node::endpoint).collect(),
            discover: self.settings.failover == Failover::Automatic,
        }
    }

    /// The name of the node the harness believes leads, or "none".
    #[must_use]
    pub fn leader_name(&self) -> &str {
        self.leader.map_or("none", |index| self.nodes[index].name.as_str())
    }

    /// Starts a node that is not running and waits until it answers PING; it is then in
    /// admin mode.
    ///
    /// # Errors
    ///
    /// When it cannot be started, exits, or does not answer within `START_TIMEOUT`.
    pub fn restart(&mut self, index: usize) -> Result<(), String> {
        let node = &mut self.nodes[index];
        if node.child.is_some() {
            return Ok(());
        }
        node.child = Some(spawn(&self.settings, node)?);
        node.generation += 1;
        node.disk_was_full = node.disk_full;
        node.paused_since = None;
        node.assignment = Assignment::Unassigned;
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited(index) {
                return Err(format!("{} exited during start-up: {status}", self.nodes[index].name));
            }
            if ping(self.nodes[index].client_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("{} did not answer PING within {START_TIMEOUT:?}", self.nodes[index].name))
    }

    /// Restarts node `index` as a `restart` event of the timeline saying `why`; a restart
    /// that fails is a problem.
    pub fn restart_recorded(&mut self, index: usize, timeline: &mut Timeline, why: &str) {
        let name = self.nodes[index].name.clone();
        let event = timeline.begin("restart", &name, why);
        let outcome = self.restart(index);
        if let Err(error) = &outcome {
            timeline.problem(&name, format!("restarting {name}: {error}"));
        }
        timeline.end(event, if outcome.is_ok() { "restarted" } else { "restart failed" });
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused_since = None;
        node.assignment = Assignment::Unassigned;
        self.publish();
    }

    /// SIGSTOP: the process stops answering anyone, keeping its sockets open.
    pub fn pause(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if node.running() {
            node.signal(libc::SIGSTOP);
            node.paused_since = Some(Instant::now());
        }
        self.publish();
    }

    /// SIGCONT.
    pub fn resume(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.signal(libc::SIGCONT);
        node.paused_since = None;
        self.publish();
    }

    /// The exit status of a node whose process ended by itself (it is then not running).
    pub fn exited(&mut self, index: usize) -> Option<ExitStatus> {
        let node = &mut self.nodes[index];
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        node.paused_since = None;
        node.assignment = Assignment::Unassigned;
        Some(status)
    }

    /// Cuts every TCP packet to or from node `index`: its client, admin and peer ports and the
    /// proxies it reaches its leaders through.
    ///
    /// # Errors
    ///
    /// Without a firewall, or when nft refuses.
    pub fn isolate(&mut self, index: usize) -> Result<(), String> {
        let firewall = self.firewall.as_ref().ok_or("no firewall in this run")?;
        let node = &self.nodes[index];
        let mut ports = vec![node.client_port, node.http_port, node.peer_port];
        ports.extend(self.network.ports_from(index));
        let isolated = match node.group {
            // The connections it opens to the other members too.
            Some(group) => firewall.isolate_marked(&ports, group),
            None => firewall.isolate(&ports),
        };
        isolated.map_err(|error| error.to_string())?;
        self.nodes[index].isolated = true;
        Ok(())
    }

    /// Removes node `index` from the cluster on its leader, as an operator does with
    /// `DELETE /admin/node/<name>`; it is not pointed at a leader again until `removed` is
    /// cleared.
    ///
    /// # Errors
    ///
    /// Without an answering leader, or when it refuses.
    pub fn remove(&mut self, index: usize) -> Result<(), String> {
        let leader = self.leader.ok_or("no leader")?;
        let name = self.nodes[index].name.clone();
        let path = format!("/admin/node/{name}");
        let port = self.nodes[leader].http_port;
        let reply = admin::request(port, "DELETE", &path, None, STATUS_TIMEOUT)?;
        if !reply.ok() {
            return Err(format!("the leader refused: {}", reply.text.trim()));
        }
        let node = &mut self.nodes[index];
        node.removed = true;
        node.assignment = Assignment::Unassigned;
        self.publish();
        Ok(())
    }

    /// Lets every packet through again.
    ///
    /// # Errors
    ///
    /// When nft refuses.
    pub fn reconnect(&mut self) -> Result<(), String> {
        if let Some(firewall) = &self.firewall {
            firewall.heal().map_err(|error| error.to_string())?;
        }
        for node in &mut self.nodes {
            node.isolated = false;
        }
        Ok(())
    }

    /// The address node `replica` names to reach voter `leader`'s peer port: the proxy
    /// between them.
    #[must_use]
    pub fn leader_address(&self, replica: usize, leader: usize) -> String {
        self.network.address(replica, leader).unwrap_or_else(|| self.nodes[leader].peer_address())
    }

    /// A set-role request to a node's admin API.
    ///
    /// # Errors
    ///
    /// When the node cannot be reached or does not answer in time.
    pub fn set_role(
        &self,
        index: usize,
        body: &str,
        timeout: Duration,
    ) -> Result<AdminReply, String> {
        let port = self.nodes[index].http_port;
        admin::request(port, "POST", "/admin/node/current", Some(body), timeout)
    }

    /// A GET of the admin API.
    ///
    /// # Errors
    ///
    /// When the node cannot be reached or does not answer in time.
    pub fn status(&self, index: usize, path: &str) -> Result<AdminReply, String> {
        admin::request(self.nodes[index].http_port, "GET", path, None, STATUS_TIMEOUT)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(disk) = &node.disk {
                unmount_disk(disk);
            }
        }
    }
}

/// Mounts a tmpfs of `bytes` at `path` (created if missing), unmounting first what an earlier
/// run may have left there.
fn mount_disk(path: &Path, bytes: u64) -> Result<PathBuf, String> {
    unmount_disk(path);
    std::fs::create_dir_all(path).map_err(|error| format!("{path:?}: {error}"))?;
    let target = c_path(path)?;
    let options = std::ffi::CString::new(format!("size={bytes},mode=0755"))
        .map_err(|error| error.to_string())?;
    // SAFETY: mount(2) with NUL-terminated strings that live until it returns.
    let result = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        return Err(format!("mounting a tmpfs at {path:?}: {error}"));
    }
    Ok(path.to_path_buf())
}

/// Unmounts the tmpfs at `path`, if one is mounted there (lazily: a child still dying may
/// hold files open).
pub fn unmount_disk(path: &Path) {
    if let Ok(target) = c_path(path) {
        // SAFETY: umount2(2) with a NUL-terminated path that lives until it returns.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn c_path(path: &Path) -> Result<std::ffi::CString, String> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|error| error.to_string())
}

/// Whether this process may mount a tmpfs (it runs as root, or with CAP_SYS_ADMIN): tried
/// on a scratch directory under `out_dir`.
#[must_use]
pub fn can_mount(out_dir: &Path) -> bool {
    let probe = out_dir.join(".mount-probe");
    let mounted = mount_disk(&probe, 1 << 20).is_ok();
    unmount_disk(&probe);
    let _ = std::fs::remove_dir(&probe);
    mounted
}

fn spawn(settings: &ClusterSettings, node: &Node) -> Result<Child, String> {
    let binary = &settings.binary;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.log_path())
        .map_err(|error| format!("{:?}: {error}", node.log_path()))?;
    let log_copy = log.try_clone().map_err(|error| error.to_string())?;
    let mut command = Command::new(binary);
    command
        .args(["node", "--config"])
        .arg(node.config_path())
        .env("STRATA_LOG", "info")
        // Plain text in the log files, without terminal colour codes.
        .env("NO_COLOR", "1")
        .env("STRATA_MUTATIONS", &settings.mutations);
    if let Some(faketime) = &settings.faketime {
        // Only the wall clock moves; the file is read again at most once a second.
        command
            .env("LD_PRELOAD", faketime)
            .env("FAKETIME_TIMESTAMP_FILE", node.clock_path())
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    if let Some(group) = node.group {
        // Marks the connections it opens, for the firewall's rules (as root only).
        command.gid(group);
    }
    command
        .stdin(Stdio::null())
        .stdout(log_copy)
        .stderr(log)
        // Its own process group: a Ctrl-C at the terminal reaches the harness only, which
        // then kills every node itself.
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2), which
    // is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn().map_err(|error| format!("starting {binary:?}: {error}"))
}

/// `wal_failed_partitions` of the node's `INFO persistence`: partitions whose log failed (a
/// full disk), which refuse writes until the node restarts. None when it does not answer.
#[must_use]
pub fn failed_partitions(port: u16) -> Option<u64> {
    let mut connection = RespConnection::connect(port, Duration::from_secs(1)).ok()?;
    let Ok(Reply::Bulk(Some(text))) = connection.command(&["INFO", "persistence"]) else {
        return None;
    };
    let text = String::from_utf8_lossy(&text);
    text.lines().find_map(|line| line.strip_prefix("wal_failed_partitions:")?.trim().parse().ok())
}

fn ping(port: u16) -> bool {
    let Ok(mut connection) = RespConnection::connect(port, Duration::from_secs(1)) else {
        return false;
    };
    matches!(connection.command(&["PING"]), Ok(Reply::Status(status)) if status == "PONG")
}

fn config_text(settings: &ClusterSettings, node: &Node, shared: &Path, secret: &str) -> String {
    format!(
        "[general]\nshards = {}\nserver_mode = \"admin\"\ncpu_affinity = \"none\"\n\
         [network]\nserver_address = \"127.0.0.1\"\nclient_port = {}\nhttp_port = {}\n\
         peer_ip = \"127.0.0.1\"\npeer_port = {}\n\
         [storage]\ndata_dir = \"{}\"\nstorage_type = \"local\"\nshared_dir = \"{}\"\n\
         upload_interval = 200\n\
         [wal]\nwal_flush = \"FlushAtOnce\"\nsegment_size = \"4MB\"\n\
         snapshot_size = \"16MB\"\nsnapshot_interval = 20\n\
         [cluster]\npartitions = {}\nheartbeat_interval = {}\nheartbeat_timeout = {}\n\
         min_insync_replicas = {}\nfailover = \"{}\"\nfailover_timeout = {}\n\
         [security]\ncluster_secret = \"{secret}\"\n",
        settings.shards,
        node.client_port,
        node.http_port,
        node.peer_port,
        node.data_path().display(),
        shared.display(),
        settings.partitions,
        settings.heartbeat_interval_ms,
        settings.heartbeat_timeout_ms,
        settings.min_insync_replicas,
        settings.failover.name(),
        settings.failover_timeout_ms,
    )
}

/// Free TCP ports on 127.0.0.1, below Linux's ephemeral range (so that no outgoing connection
/// takes one before its node binds it), from a stretch chosen by this process's id.
struct PortPicker {
    next: u32,
}

impl PortPicker {
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;

    fn new() -> PortPicker {
        PortPicker { next: std::process::id().wrapping_mul(389) % Self::COUNT }
    }

    fn next(&mut self) -> Result<u16, String> {
        for _ in 0..Self::COUNT {
            let port = u16::try_from(Self::FIRST + self.next % Self::COUNT).unwrap_or(0);
            self.next += 1;
            if port != 0 && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
        Err("no free port below 32768".into())
    }
}
