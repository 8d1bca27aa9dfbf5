//! A harness for tests that run real `strata` node processes on loopback.
//!
//! A [`TestNode`] owns a temporary data directory and a child process; dropping it kills the
//! process (SIGKILL) so no test leaves a server behind.
//!
//! [`raw`] is a bare RESP client for exact bytes, [`wal_files`] reads a data directory the way
//! `docs/wal-format.md` describes it, and [`keys`] computes a key's partition.

pub mod admin;
pub mod compare;
pub mod data;
pub mod disk;
pub mod keys;
pub mod peer;
pub mod raw;
pub mod redis_server;
pub mod s3;
pub mod wal_files;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a node may take to start serving in a test.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace's root directory.
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `strata` binary: `STRATA_BIN`, or the debug build, built once if missing.
pub fn strata_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(path) = std::env::var("STRATA_BIN") {
                return PathBuf::from(path);
            }
            let root = workspace_root();
            let target = std::env::var("CARGO_TARGET_DIR")
                .map_or_else(|_| root.join("target"), PathBuf::from);
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "-p", "strata", "--bin", "strata"])
                .current_dir(&root)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building strata failed");
            target.join("debug").join("strata")
        })
        .clone()
}

/// A free TCP port on 127.0.0.1, bound then released. It is taken below Linux's ephemeral
/// range (32768 and up), so that no outgoing connection of a node or client can take it before
/// the node binds it, and from a stretch of ports chosen by this process's id, so that tests
/// running in parallel processes rarely try the same ones.
#[must_use]
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(389) % COUNT;
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + offset) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below 32768");
}

/// The first of `count` consecutive ports free on 127.0.0.1.
#[must_use]
pub fn free_ports(count: u32) -> u16 {
    for _ in 0..1000 {
        let first = free_port();
        let rest = (1..count).all(|offset| {
            u16::try_from(u32::from(first) + offset)
                .is_ok_and(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        });
        if rest {
            return first;
        }
    }
    panic!("no {count} consecutive free ports");
}

/// A cluster secret drawn once per test process: every node a test starts shares it unless
/// the test says otherwise ([`NodeSettings::cluster_secret`]).
#[must_use]
pub fn test_cluster_secret() -> String {
    static SECRET: OnceLock<String> = OnceLock::new();
    SECRET.get_or_init(|| format!("{:032x}", rand::random::<u128>())).clone()
}

const SHARED_DIR_PREFIX: &str = "strata-test-shared-";

/// A directory serving as shared storage for the nodes of this test process. The first call
/// in a process removes the directories of test processes that are gone, so that they do not
/// pile up in the temporary directory.
#[must_use]
pub fn shared_dir() -> PathBuf {
    static SWEPT: OnceLock<()> = OnceLock::new();
    let temporary = std::env::temp_dir();
    SWEPT.get_or_init(|| remove_shared_dirs_of_gone_processes(&temporary));
    temporary.join(format!("{SHARED_DIR_PREFIX}{}", std::process::id()))
}

fn remove_shared_dirs_of_gone_processes(temporary: &Path) {
    let Ok(entries) = std::fs::read_dir(temporary) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.strip_prefix(SHARED_DIR_PREFIX)) else {
            continue;
        };
        let gone = pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists();
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Settings of a test node's config file.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub shards: u32,
    pub partitions: u32,
    pub wal_flush: &'static str,
    pub segment_size: &'static str,
    pub snapshot_size: &'static str,
    /// Seconds between snapshots of a partition with writes.
    pub snapshot_interval: u64,
    /// `auto` or `epoll`.
    pub io_driver: &'static str,
    /// `standalone` or `admin`.
    pub server_mode: &'static str,
    /// `[general] cpu_affinity`: `none` by default, since a test's nodes share the machine
    /// (and a test run's processes with them).
    pub cpu_affinity: &'static str,
    /// Heartbeat interval and timeout in milliseconds.
    pub heartbeat_interval: u64,
    pub heartbeat_timeout: u64,
    /// `[cluster] min_insync_replicas`.
    pub min_insync_replicas: u32,
    /// `[cluster] failover`: `manual` here (most tests drive Infinity's manual roles and
    /// promotions), `automatic` for the controller's tests.
    pub failover: &'static str,
    /// Lines added to the `[storage]` section. Empty: nodes in admin mode get a shared
    /// directory common to every node of this test process (cluster roles need shared
    /// storage), standalone nodes none.
    pub storage: String,
    /// Lines added to the `[wal]` section.
    pub wal: String,
    pub extra: String,
    /// `[security] cluster_secret`: by default [`test_cluster_secret`], the same for every
    /// node of the test process, so that its nodes form clusters; `None` writes none.
    pub cluster_secret: Option<String>,
    /// `[security] allow_insecure_peers`.
    pub allow_insecure_peers: bool,
    /// Variables set in the node process's environment, besides `STRATA_LOG` (e.g. to run it
    /// under an `LD_PRELOAD` library).
    pub environment: Vec<(String, String)>,
    /// `[security] requirepass`: the client port's password (`None`: none).
    pub requirepass: Option<String>,
    /// `[security] admin_token`: the admin API's bearer token (`None`: none).
    pub admin_token: Option<String>,
    /// Lines added to the `[security]` section (e.g. TLS files).
    pub security: String,
    /// `[network] shard_port_base`: a client port per shard, on consecutive free ports.
    pub shard_ports: bool,
}

impl NodeSettings {
    /// A node that starts in admin mode, ready to take a cluster role: `shards` shard threads,
    /// heartbeats every 200 ms, members timed out after 2 s.
    #[must_use]
    pub fn cluster(shards: u32) -> NodeSettings {
        NodeSettings {
            shards,
            server_mode: "admin",
            heartbeat_interval: 200,
            heartbeat_timeout: 2000,
            ..NodeSettings::default()
        }
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            shards: 2,
            partitions: 8,
            wal_flush: "FlushAtOnce",
            segment_size: "4MB",
            snapshot_size: "64MB",
            snapshot_interval: 300,
            io_driver: "auto",
            server_mode: "standalone",
            cpu_affinity: "none",
            heartbeat_interval: 1000,
            heartbeat_timeout: 4000,
            min_insync_replicas: 1,
            failover: "manual",
            storage: String::new(),
            wal: String::new(),
            extra: String::new(),
            cluster_secret: Some(test_cluster_secret()),
            allow_insecure_peers: false,
            environment: Vec::new(),
            requirepass: None,
            admin_token: None,
            security: String::new(),
            shard_ports: false,
        }
    }
}

/// A node process with its own data directory.
pub struct TestNode {
    pub directory: tempfile::TempDir,
    pub port: u16,
    pub http_port: u16,
    pub peer_port: u16,
    /// The first shard's own client port, with [`NodeSettings::shard_ports`].
    pub shard_port_base: Option<u16>,
    pub settings: NodeSettings,
    child: Option<Child>,
    log_path: PathBuf,
}

impl TestNode {
    /// Writes a config and starts a node; waits until it answers PING.
    pub fn start(settings: NodeSettings) -> TestNode {
        let mut node = TestNode::create(settings);
        node.restart();
        node
    }

    /// Writes a config in a new temporary directory without starting the process.
    pub fn create(settings: NodeSettings) -> TestNode {
        let directory = tempfile::Builder::new().prefix("strata-test-").tempdir().expect("tempdir");
        let port = free_port();
        let http_port = free_port();
        let peer_port = free_port();
        let shard_port_base = settings.shard_ports.then(|| free_ports(settings.shards));
        let log_path = directory.path().join("node.log");
        let node = TestNode {
            log_path,
            directory,
            port,
            http_port,
            peer_port,
            shard_port_base,
            settings,
            child: None,
        };
        node.write_config();
        node
    }

    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.directory.path().join("data")
    }

    #[must_use]
    pub fn config_path(&self) -> PathBuf {
        self.directory.path().join("strata.toml")
    }

    fn write_config(&self) {
        let settings = &self.settings;
        let text = format!(
            "[general]\nshards = {}\nio_driver = \"{}\"\nserver_mode = \"{}\"\n\
             cpu_affinity = \"{}\"\n\
             [network]\nserver_address = \"127.0.0.1\"\nclient_port = {}\n\
             http_port = {}\npeer_ip = \"127.0.0.1\"\npeer_port = {}\nshard_port_base = {}\n\
             [storage]\ndata_dir = \"{}\"\n{}\n\
             [wal]\nwal_flush = \"{}\"\nsegment_size = \"{}\"\nsnapshot_size = \"{}\"\n\
             snapshot_interval = {}\n{}\n[cluster]\npartitions = {}\nheartbeat_interval = {}\n\
             heartbeat_timeout = {}\nmin_insync_replicas = {}\nfailover = \"{}\"\n{}\n\
             [security]\n{}",
            settings.shards,
            settings.io_driver,
            settings.server_mode,
            settings.cpu_affinity,
            self.port,
            self.http_port,
            self.peer_port,
            self.shard_port_base.unwrap_or(0),
            self.data_dir().display(),
            self.storage_lines(),
            settings.wal_flush,
            settings.segment_size,
            settings.snapshot_size,
            settings.snapshot_interval,
            settings.wal,
            settings.partitions,
            settings.heartbeat_interval,
            settings.heartbeat_timeout,
            settings.min_insync_replicas,
            settings.failover,
            settings.extra,
            self.security_lines(),
        );
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// The `[security]` section's lines.
    fn security_lines(&self) -> String {
        let settings = &self.settings;
        let mut lines = format!("allow_insecure_peers = {}\n", settings.allow_insecure_peers);
        for (key, value) in [
            ("cluster_secret", &settings.cluster_secret),
            ("requirepass", &settings.requirepass),
            ("admin_token", &settings.admin_token),
        ] {
            if let Some(value) = value {
                lines.push_str(&format!("{key} = {value:?}\n"));
            }
        }
        lines.push_str(&settings.security);
        lines
    }

    fn storage_lines(&self) -> String {
        if !self.settings.storage.is_empty() || self.settings.server_mode != "admin" {
            return self.settings.storage.clone();
        }
        format!("shared_dir = \"{}\"\nupload_interval = 200", shared_dir().display())
    }

    /// Starts the process (again) without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = Command::new(strata_binary())
            .args(["node", "--config"])
            .arg(self.config_path())
            .env("STRATA_LOG", "info")
            .envs(self.settings.environment.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start strata");
        self.child = Some(child);
    }

    /// Starts the process and waits until it serves.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Waits until PING answers PONG; panics with the node's log on timeout or exit.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                panic!("node exited with {status} during start-up:\n{}", self.log());
            }
            if self.answers_ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node did not start within {START_TIMEOUT:?}:\n{}", self.log());
    }

    /// Whether the node answers PING, after AUTH when it has a password.
    fn answers_ping(&self) -> bool {
        match &self.settings.requirepass {
            None => ping(self.port),
            Some(password) => ping_with_password(self.port, password),
        }
    }

    /// The exit status, if the process has ended.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait().expect("try_wait") {
            Some(status) => {
                self.child = None;
                Some(status)
            }
            None => None,
        }
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL: the process dies at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the node printed so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A connection of the `redis` crate.
    pub fn client(&self) -> redis::Connection {
        connect(self.port)
    }

    /// This node's peer address, as a follower names its leader.
    #[must_use]
    pub fn peer_address(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    /// One admin API request; the status and the parsed JSON body.
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> admin::AdminReply {
        admin::request(self.http_port, method, path, body)
    }

    /// A raw RESP connection.
    #[must_use]
    pub fn raw(&self) -> raw::RawConnection {
        raw::RawConnection::connect(self.port)
    }

    /// The directory of one partition's WAL.
    #[must_use]
    pub fn partition_dir(&self, partition: u32) -> PathBuf {
        wal_files::partition_dir(&self.data_dir(), partition)
    }
}

/// How long a `redis` crate call may wait for a reply before the test counts the node as hung.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection of the `redis` crate to 127.0.0.1:`port`, with [`CLIENT_TIMEOUT`].
///
/// # Panics
/// If the connection cannot be made.
#[must_use]
pub fn connect(port: u16) -> redis::Connection {
    try_connect(port).unwrap_or_else(|error| panic!("cannot connect to port {port}: {error}"))
}

/// [`connect`] that reports failure instead of panicking.
///
/// # Errors
/// When the connection or its set-up commands fail.
pub fn try_connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let connection = client.get_connection_with_timeout(CLIENT_TIMEOUT)?;
    connection.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    connection.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(connection)
}

/// The value of `field` in an INFO text (`field:value` lines).
#[must_use]
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
}

/// The seed of a randomized test: `STRATA_TEST_SEED` if set, else one from the clock. Printed,
/// so a failure can be replayed.
#[must_use]
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("STRATA_TEST_SEED").ok().and_then(|text| text.parse().ok());
    let seed = seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |elapsed| elapsed.as_nanos() as u64)
    });
    println!("{test}: seed {seed} (replay with STRATA_TEST_SEED={seed})");
    seed
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a RESP server on `port` answers PING with PONG.
#[must_use]
pub fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// Whether a RESP server on `port` accepts `password` (AUTH) and then answers PING.
#[must_use]
pub fn ping_with_password(port: u16, password: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = raw::encode_command(&[b"AUTH", password.as_bytes()]);
    request.extend_from_slice(b"PING\r\n");
    if stream.write_all(&request).is_err() {
        return false;
    }
    let mut reply = [0u8; 12];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+OK\r\n+PONG\r\n"
}

/// Runs a command-line tool and returns (success, stdout, stderr).
pub fn run_tool(program: &str, arguments: &[&str]) -> (bool, String, String) {
    let output = Command::new(program).args(arguments).output().unwrap_or_else(|error| {
        panic!("{program} cannot run ({error}); scripts/setup.sh installs it")
    });
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What a tool run with [`run_tool_with`] did.
#[derive(Debug)]
pub struct ToolOutput {
    /// `None` when the tool was killed after the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    #[must_use]
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }
}

/// Runs a tool with `input` on its standard input; kills it if it runs longer than `timeout`.
///
/// # Panics
/// If the tool cannot be started.
pub fn run_tool_with(
    program: &str,
    arguments: &[&str],
    input: &[u8],
    timeout: Duration,
) -> ToolOutput {
    let mut child = Command::new(program)
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("{program} cannot run ({error}); scripts/setup.sh installs it")
        });
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = read_in_background(child.stdout.take().expect("stdout"));
    let stderr = read_in_background(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let text = |handle: std::thread::JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&handle.join().expect("reader thread")).into_owned()
    };
    ToolOutput { status, stdout: text(stdout), stderr: text(stderr) }
}

fn read_in_background(mut source: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = source.read_to_end(&mut bytes);
        bytes
    })
}
