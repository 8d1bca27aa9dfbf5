//! The node's configuration file: TOML with Infinity's section and key names.
//!
//! Unknown keys and bad values are refused with a message naming the key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Durability of a write before its reply, with Infinity's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum WalFlush {
    /// fdatasync before the reply (the default).
    #[default]
    FlushAtOnce,
    /// write(2) before the reply; the OS writes back when it likes.
    OnlyWrite,
    /// write(2) before the reply; fdatasync once a second.
    FlushPerSecond,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerMode {
    #[default]
    Standalone,
    Admin,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    #[default]
    Local,
    Minio,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring where it starts, epoll otherwise.
    #[default]
    Auto,
    /// Always epoll.
    Epoll,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    pub version: Option<String>,
    pub server_mode: ServerMode,
    /// Shard threads; default: the number of cores.
    pub shards: Option<u32>,
    pub io_driver: IoDriver,
    /// `auto` (shard i on the i-th core this process may use), `none`, or a list of cores
    /// (`"2,3"`, `"4-7"`): see `affinity`.
    pub cpu_affinity: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    pub server_address: IpAddr,
    pub client_port: u16,
    pub http_port: u16,
    /// Address the admin HTTP API binds to; default `server_address`. Keep it private (e.g.
    /// 127.0.0.1 or a management network): the admin API changes roles.
    pub http_address: Option<IpAddr>,
    pub peer_ip: IpAddr,
    pub peer_port: u16,
    /// Most client connections served at once, over all shards.
    pub connections_max: u32,
    /// 0 (the default): none. Otherwise shard `i` also serves clients on port
    /// `shard_port_base + i`, and CLUSTER SLOTS/NODES/SHARDS show cluster-aware clients which
    /// port serves which slots, so that their commands never cross shards.
    pub shard_port_base: u16,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub data_dir: PathBuf,
    pub storage_type: StorageType,
    /// With `storage_type = "local"`: a directory that serves as shared storage (where the
    /// archive of segments and snapshots lives), e.g. one directory for every node of one
    /// machine.
    /// Unset: nothing is archived.
    pub shared_dir: Option<PathBuf>,
    /// Milliseconds between the uploader's passes over the partitions.
    pub upload_interval: u64,
    /// Upload backlog above which the node logs a warning.
    pub upload_backlog_warning: ByteSize,
    /// Snapshots kept per partition in the archive; older ones and the segments only they
    /// need are deleted.
    pub archive_snapshots_kept: u32,
    /// With `storage_type = "minio"`: the S3-compatible server.
    pub object_storage: ObjectStorage,
}

/// Infinity's `[storage.object_storage]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStorage {
    /// `host:port`, or a whole `http(s)://host:port` URL.
    pub url: String,
    pub bucket_name: String,
    pub access_key: String,
    pub secret_key: String,
    pub enable_https: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wal {
    pub wal_flush: WalFlush,
    /// Bytes of one WAL segment file ("64MB", "1GB" or a number of bytes).
    pub segment_size: ByteSize,
    /// A partition takes a snapshot once this many WAL bytes were written since the last.
    /// Formerly `checkpoint_size`, which is still accepted.
    #[serde(alias = "checkpoint_size")]
    pub snapshot_size: ByteSize,
    /// ... or once this many seconds passed with any write. Formerly `checkpoint_interval`,
    /// which is still accepted.
    #[serde(alias = "checkpoint_interval")]
    pub snapshot_interval: u64,
    /// With FlushAtOnce: append with O_DIRECT, past the page cache; durable on completion
    /// (O_DSYNC) unless `shared_sync` applies. Falls back to buffered I/O (logged) where the
    /// file system refuses O_DIRECT.
    pub direct_io: bool,
    /// With direct_io on ext4 or XFS: appends are O_DIRECT alone and the partitions of a shard
    /// share one fdatasync per round (one device flush instead of one per partition).
    pub shared_sync: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// Name of the cluster: the first part of its prefix in the archive.
    pub name: String,
    /// Partitions of the keyspace; fixed once the data directory holds data.
    pub partitions: u32,
    /// Milliseconds between a replica's heartbeats to its leader.
    pub heartbeat_interval: u64,
    /// Bytes a leader queues for one replica connection (the partitions of one leader shard) at
    /// most; a replica further behind (a slow or stopped learner) is cut off and catches up
    /// again when it reconnects.
    pub replica_window: ByteSize,
    /// Milliseconds without a heartbeat after which the leader marks a member `timeout` and
    /// stops waiting for it.
    pub heartbeat_timeout: u64,
    /// Members of an in-sync set (the leader included) a leader keeps: with fewer in sync it
    /// refuses writes (`-NOREPLICAS`) rather than acknowledge with fewer copies; 1 lets a
    /// leader left alone acknowledge alone.
    pub min_insync_replicas: u32,
    /// `"manual"`: a person promotes a follower when the leader is lost (as in Infinity);
    /// `"automatic"`: the Raft controller of the leader and followers does it.
    pub failover: String,
    /// Milliseconds the data leader may go without confirming its lease with the controller
    /// before the controller replaces it (automatic failover; a leader whose process is gone
    /// is replaced at once). Its lease is two thirds of it.
    pub failover_timeout: u64,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// error, warn, info, debug or trace; the STRATA_LOG environment variable overrides it.
    pub log_level: String,
    pub log_format: LogFormat,
}

/// The `[security]` section: the secrets each port asks for. Each secret may instead be read
/// from a file (`<key>_file`, its content with the trailing newline cut) so that it stays out
/// of the config file; giving both is refused. An empty secret asks for nothing.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// Bearer token of the admin HTTP API (`Authorization: Bearer <token>`).
    pub admin_token: String,
    pub admin_token_file: Option<PathBuf>,
    /// Password of the client port (`AUTH`, `HELLO ... AUTH`), as Redis's `requirepass`.
    pub requirepass: String,
    pub requirepass_file: Option<PathBuf>,
    /// Secret the nodes of one cluster share; each peer connection proves it in both
    /// directions before anything else is read.
    pub cluster_secret: String,
    pub cluster_secret_file: Option<PathBuf>,
    /// Lets a node take a cluster role with an empty `cluster_secret` (any host that reaches
    /// the peer port can then take part in replication).
    pub allow_insecure_peers: bool,
    /// This node's certificate chain (PEM), for the ports served with TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of that certificate (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Serve the admin API over TLS (HTTPS) with `tls_cert_file` and `tls_key_file`.
    pub admin_tls: bool,
    /// Serve the client port over TLS (`redis-cli --tls`) with the same certificate.
    pub client_tls: bool,
    /// Peer connections over TLS, both ways: each node presents its certificate and checks
    /// the other's against `tls_ca_file` (for the IP address of the peer it dials).
    pub peer_tls: bool,
    /// The certificate(s) of the CA that signs every node's certificate (PEM), for `peer_tls`.
    pub tls_ca_file: Option<PathBuf>,
}

/// The secrets in force, read from the config or from their files. `None`: not asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets {
    pub admin_token: Option<String>,
    pub requirepass: Option<String>,
    pub cluster_secret: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub general: General,
    pub network: Network,
    pub storage: Storage,
    pub wal: Wal,
    pub cluster: Cluster,
    pub log: Log,
    pub security: Security,
}

/// A size in bytes, written as a number or a string with a unit (KB, MB, GB: powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(bytes) => Ok(ByteSize(bytes)),
            Raw::Text(text) => {
                parse_byte_size(&text).map(ByteSize).map_err(serde::de::Error::custom)
            }
        }
    }
}

fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split =
        trimmed.find(|character: char| !character.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("invalid size {text:?}"))?;
    let multiplier: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "KIB" | "K" => 1 << 10,
        "MB" | "MIB" | "M" => 1 << 20,
        "GB" | "GIB" | "G" => 1 << 30,
        _ => return Err(format!("invalid size unit in {text:?} (use B, KB, MB or GB)")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("size {text:?} is too large"))
}

impl Default for General {
    fn default() -> Self {
        General {
            version: None,
            server_mode: ServerMode::Standalone,
            shards: None,
            io_driver: IoDriver::Auto,
            cpu_affinity: "auto".into(),
        }
    }
}

impl Network {
    /// The admin API's address: `http_address`, or `server_address`.
    #[must_use]
    pub fn admin_address(&self) -> IpAddr {
        self.http_address.unwrap_or(self.server_address)
    }
}

impl Default for Network {
    fn default() -> Self {
        let any = IpAddr::from([0, 0, 0, 0]);
        Network {
            server_address: any,
            client_port: 23817,
            http_port: 23820,
            http_address: None,
            peer_ip: any,
            peer_port: 23850,
            connections_max: 10_000,
            shard_port_base: 0,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: PathBuf::from("/var/lib/strata"),
            storage_type: StorageType::Local,
            shared_dir: None,
            upload_interval: 1000,
            upload_backlog_warning: ByteSize(4 << 30),
            archive_snapshots_kept: 3,
            object_storage: ObjectStorage::default(),
        }
    }
}

impl Default for Wal {
    fn default() -> Self {
        Wal {
            wal_flush: WalFlush::FlushAtOnce,
            segment_size: ByteSize(64 << 20),
            snapshot_size: ByteSize(256 << 20),
            snapshot_interval: 300,
            direct_io: true,
            shared_sync: true,
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            name: "strata".into(),
            partitions: 8,
            heartbeat_interval: 1000,
            heartbeat_timeout: 4000,
            replica_window: ByteSize(64 << 20),
            min_insync_replicas: 1,
            failover: "automatic".into(),
            failover_timeout: 1500,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log { log_level: "info".into(), log_format: LogFormat::Text }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key}: {message}")]
    Invalid { path: PathBuf, key: &'static str, message: String },
}

/// A bad value: the key it belongs to, and what is wrong with it.
type Invalid = (&'static str, String);

pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
pub const SHARDS_MAX: u32 = 256;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.into(),
            message: error.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The secrets in force: each from its key, or read from its `_file`.
    pub fn secrets(&self) -> Result<Secrets, Invalid> {
        let security = &self.security;
        Ok(Secrets {
            admin_token: read_secret(
                ("security.admin_token", &security.admin_token),
                ("security.admin_token_file", &security.admin_token_file),
            )?,
            requirepass: read_secret(
                ("security.requirepass", &security.requirepass),
                ("security.requirepass_file", &security.requirepass_file),
            )?,
            cluster_secret: read_secret(
                ("security.cluster_secret", &security.cluster_secret),
                ("security.cluster_secret_file", &security.cluster_secret_file),
            )?,
        })
    }

    /// Every option as (name, value as text), for the admin API's `GET /admin/configs`.
    #[must_use]
    pub fn listing(&self) -> Vec<(String, String)> {
        let text = |value: &dyn std::fmt::Display| value.to_string();
        let secrets = self.secrets().unwrap_or_default();
        vec![
            ("server_mode".into(), format!("{:?}", self.general.server_mode).to_lowercase()),
            ("version".into(), env!("CARGO_PKG_VERSION").into()),
            ("shards".into(), text(&self.shard_count())),
            ("cpu_affinity".into(), self.general.cpu_affinity.clone()),
            ("server_address".into(), text(&self.network.server_address)),
            ("client_port".into(), text(&self.network.client_port)),
            ("http_port".into(), text(&self.network.http_port)),
            ("http_address".into(), text(&self.network.admin_address())),
            ("peer_ip".into(), text(&self.network.peer_ip)),
            ("peer_port".into(), text(&self.network.peer_port)),
            ("connections_max".into(), text(&self.network.connections_max)),
            ("shard_port_base".into(), text(&self.network.shard_port_base)),
            ("data_dir".into(), self.storage.data_dir.display().to_string()),
            ("storage_type".into(), format!("{:?}", self.storage.storage_type).to_lowercase()),
            (
                "shared_dir".into(),
                self.storage
                    .shared_dir
                    .as_ref()
                    .map(|dir| dir.display().to_string())
                    .unwrap_or_default(),
            ),
            ("object_storage_url".into(), self.storage.object_storage.url.clone()),
            ("object_storage_bucket".into(), self.storage.object_storage.bucket_name.clone()),
            ("upload_interval".into(), text(&self.storage.upload_interval)),
            ("archive_snapshots_kept".into(), text(&self.storage.archive_snapshots_kept)),
            ("cluster_name".into(), self.cluster.name.clone()),
            ("wal_flush".into(), format!("{:?}", self.wal.wal_flush)),
            ("segment_size".into(), text(&self.wal.segment_size.0)),
            ("snapshot_size".into(), text(&self.wal.snapshot_size.0)),
            ("snapshot_interval".into(), text(&self.wal.snapshot_interval)),
            ("direct_io".into(), text(&self.wal.direct_io)),
            ("shared_sync".into(), text(&self.wal.shared_sync)),
            ("partitions".into(), text(&self.cluster.partitions)),
            ("heartbeat_interval".into(), text(&self.cluster.heartbeat_interval)),
            ("heartbeat_timeout".into(), text(&self.cluster.heartbeat_timeout)),
            ("min_insync_replicas".into(), text(&self.cluster.min_insync_replicas)),
            ("failover".into(), self.cluster.failover.clone()),
            ("failover_timeout".into(), text(&self.cluster.failover_timeout)),
            ("replica_window".into(), text(&self.cluster.replica_window.0)),
            ("log_level".into(), self.log.log_level.clone()),
            ("log_format".into(), format!("{:?}", self.log.log_format).to_lowercase()),
            ("admin_token".into(), shown_secret(&secrets.admin_token)),
            ("requirepass".into(), shown_secret(&secrets.requirepass)),
            ("cluster_secret".into(), shown_secret(&secrets.cluster_secret)),
            ("allow_insecure_peers".into(), text(&self.security.allow_insecure_peers)),
            ("admin_tls".into(), text(&self.security.admin_tls)),
            ("client_tls".into(), text(&self.security.client_tls)),
            ("peer_tls".into(), text(&self.security.peer_tls)),
        ]
    }

    /// Where segments and snapshots are archived, if anywhere.
    #[must_use]
    pub fn archive_location(&self) -> Option<strata_archive::StoreLocation> {
        match self.storage.storage_type {
            StorageType::Local => {
                self.storage.shared_dir.clone().map(strata_archive::StoreLocation::Directory)
            }
            StorageType::Minio => {
                let object = &self.storage.object_storage;
                let scheme = if object.enable_https { "https" } else { "http" };
                let url = object.url.trim().trim_end_matches('/');
                let endpoint =
                    if url.contains("://") { url.to_string() } else { format!("{scheme}://{url}") };
                Some(strata_archive::StoreLocation::S3 {
                    endpoint,
                    bucket: object.bucket_name.clone(),
                    access_key: object.access_key.clone(),
                    secret_key: object.secret_key.clone(),
                })
            }
        }
    }

    /// Where the admin HTTP API listens.
    #[must_use]
    pub fn admin_listen_address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.network.admin_address(), self.network.http_port)
    }

    /// Shards to run: the configured count, or the number of cores.
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.general.shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |count| count.get() as u32)
        })
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check_general()
            .and_then(|()| self.check_network())
            .and_then(|()| self.check_storage())
            .and_then(|()| self.check_wal())
            .and_then(|()| self.check_cluster_and_log())
            .and_then(|()| self.secrets().map(drop))
            .and_then(|()| self.check_tls())
            .map_err(|(key, message)| ConfigError::Invalid { path: path.into(), key, message })
    }

    fn check_general(&self) -> Result<(), Invalid> {
        if let Some(shards) = self.general.shards {
            if shards == 0 || shards > SHARDS_MAX {
                return Err(("general.shards", format!("{shards} is not in 1..={SHARDS_MAX}")));
            }
        }
        self.shard_cores().map(drop).map_err(|message| ("general.cpu_affinity", message))
    }

    /// The cores shard `i` is pinned to in turn, from `cpu_affinity` (None: no pinning).
    pub fn shard_cores(&self) -> Result<Option<Vec<usize>>, String> {
        let affinity = crate::affinity::parse(&self.general.cpu_affinity)?;
        crate::affinity::shard_cores(
            &affinity,
            self.shard_count(),
            &crate::affinity::allowed_cores(),
        )
    }

    fn check_network(&self) -> Result<(), Invalid> {
        for (key, port) in [
            ("network.client_port", self.network.client_port),
            ("network.http_port", self.network.http_port),
        ] {
            if port == 0 {
                return Err((key, "port 0 is not allowed".into()));
            }
        }
        if self.network.peer_port < 1024 {
            let message = format!("{} is not in 1024..=65535", self.network.peer_port);
            return Err(("network.peer_port", message));
        }
        if self.network.connections_max == 0 {
            return Err(("network.connections_max", "must be at least 1".into()));
        }
        self.check_shard_ports()
    }

    /// Shard ports, when asked for, fit below 65536 and take none of the node's other ports.
    fn check_shard_ports(&self) -> Result<(), Invalid> {
        let network = &self.network;
        let Some(ports) = self.shard_ports() else { return Ok(()) };
        if *ports.end() > u32::from(u16::MAX) {
            let message = format!(
                "{} shards from port {} go past 65535",
                self.shard_count(),
                network.shard_port_base
            );
            return Err(("network.shard_port_base", message));
        }
        for (name, port) in [
            ("client_port", network.client_port),
            ("http_port", network.http_port),
            ("peer_port", network.peer_port),
        ] {
            if ports.contains(&u32::from(port)) {
                let message = format!(
                    "the shard ports {}..={} take {name} {port}",
                    ports.start(),
                    ports.end()
                );
                return Err(("network.shard_port_base", message));
            }
        }
        Ok(())
    }

    /// The ports of the shards' own client listeners, if any.
    pub fn shard_ports(&self) -> Option<std::ops::RangeInclusive<u32>> {
        let base = u32::from(self.network.shard_port_base);
        (base != 0).then(|| base..=base + self.shard_count() - 1)
    }

    fn check_storage(&self) -> Result<(), Invalid> {
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(("storage.data_dir", "must not be empty".into()));
        }
        if self.storage.storage_type == StorageType::Minio {
            let object = &self.storage.object_storage;
            for (key, value) in [
                ("storage.object_storage.url", &object.url),
                ("storage.object_storage.bucket_name", &object.bucket_name),
                ("storage.object_storage.access_key", &object.access_key),
                ("storage.object_storage.secret_key", &object.secret_key),
            ] {
                if value.trim().is_empty() {
                    return Err((key, "must be set when storage_type is \"minio\"".into()));
                }
            }
        }
        if self.storage.shared_dir.as_ref().is_some_and(|dir| dir.as_os_str().is_empty()) {
            return Err(("storage.shared_dir", "must not be empty".into()));
        }
        if !(10..=600_000).contains(&self.storage.upload_interval) {
            let message = format!("{} ms is not in 10..=600000", self.storage.upload_interval);
            return Err(("storage.upload_interval", message));
        }
        if !(1..=1000).contains(&self.storage.archive_snapshots_kept) {
            let message = format!("{} is not in 1..=1000", self.storage.archive_snapshots_kept);
            return Err(("storage.archive_snapshots_kept", message));
        }
        let name = &self.cluster.name;
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
            let message = format!("{name:?} must be 1 to 64 letters, digits, - or _");
            return Err(("cluster.name", message));
        }
        Ok(())
    }

    fn check_wal(&self) -> Result<(), Invalid> {
        let segment = self.wal.segment_size.0;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&segment)
            || !segment.is_multiple_of(4096)
        {
            let message = format!("{segment} bytes is not a multiple of 4096 in 64KB..=1GB");
            return Err(("wal.segment_size", message));
        }
        if self.wal.snapshot_size.0 < segment {
            return Err(("wal.snapshot_size", "must be at least wal.segment_size".into()));
        }
        if self.wal.snapshot_interval == 0 {
            return Err(("wal.snapshot_interval", "must be at least 1 second".into()));
        }
        Ok(())
    }

    fn check_cluster_and_log(&self) -> Result<(), Invalid> {
        let partitions = self.cluster.partitions;
        if partitions == 0 || partitions > 16384 {
            return Err(("cluster.partitions", format!("{partitions} is not in 1..=16384")));
        }
        let window = self.cluster.replica_window.0;
        if !(64 << 10..=4 << 30).contains(&window) {
            return Err(("cluster.replica_window", format!("{window} bytes is not in 64KB..=4GB")));
        }
        let interval = self.cluster.heartbeat_interval;
        if !(10..=60_000).contains(&interval) {
            return Err((
                "cluster.heartbeat_interval",
                format!("{interval} ms is not in 10..=60000"),
            ));
        }
        let timeout = self.cluster.heartbeat_timeout;
        if timeout <= interval || timeout > 600_000 {
            let message =
                format!("{timeout} ms must exceed heartbeat_interval and be at most 600000");
            return Err(("cluster.heartbeat_timeout", message));
        }
        let min_insync = self.cluster.min_insync_replicas;
        let members_max = strata_core::cluster::FOLLOWERS_MAX as u32 + 1;
        if !(1..=members_max).contains(&min_insync) {
            let message =
                format!("{min_insync} is not in 1..={members_max} (a leader and its followers)");
            return Err(("cluster.min_insync_replicas", message));
        }
        if !["manual", "automatic"].contains(&self.cluster.failover.as_str()) {
            let message =
                format!("{:?} is neither \"manual\" nor \"automatic\"", self.cluster.failover);
            return Err(("cluster.failover", message));
        }
        let failover_timeout = self.cluster.failover_timeout;
        if !(900..=600_000).contains(&failover_timeout) {
            let message = format!(
                "{failover_timeout} ms is not in 900..=600000 (it must exceed the controller's \
                 election time, 200 to 400 ms)"
            );
            return Err(("cluster.failover_timeout", message));
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.log_level.as_str()) {
            return Err(("log.log_level", format!("{:?} is not a log level", self.log.log_level)));
        }
        Ok(())
    }
}

impl Config {
    /// The TLS settings: a port served with TLS needs a certificate and key that load.
    fn check_tls(&self) -> Result<(), Invalid> {
        if self.security.admin_tls || self.security.client_tls {
            crate::tls::server_config(&self.security)?;
        }
        if self.security.peer_tls {
            crate::tls::peer_config(&self.security)?;
        }
        if let Some(file) = &self.security.tls_ca_file {
            crate::ctl::trusted_certificates(file)
                .map_err(|message| ("security.tls_ca_file", message))?;
        }
        Ok(())
    }
}

/// A secret from its key or its file; both given is refused, an empty one is `None`.
fn read_secret(
    (key, value): (&'static str, &String),
    (file_key, file): (&'static str, &Option<PathBuf>),
) -> Result<Option<String>, Invalid> {
    let secret = match file {
        None => value.clone(),
        Some(_) if !value.is_empty() => {
            return Err((file_key, format!("give {key} or {file_key}, not both")));
        }
        Some(path) => {
            let content = std::fs::read_to_string(path)
                .map_err(|error| (file_key, format!("cannot read {}: {error}", path.display())))?;
            content.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if secret.chars().any(char::is_control) {
        return Err((key, "must not hold control characters".into()));
    }
    Ok(Some(secret).filter(|secret| !secret.is_empty()))
}

/// How the admin API's config listing shows a secret: whether it is set, never its value.
fn shown_secret(secret: &Option<String>) -> String {
    if secret.is_some() { "(set)" } else { "" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults_match_infinity() {
        let config = parse("").unwrap();
        assert_eq!(config.network.client_port, 23817);
        assert_eq!(config.network.http_port, 23820);
        assert_eq!(config.network.peer_port, 23850);
        assert_eq!(config.wal.wal_flush, WalFlush::FlushAtOnce);
        assert_eq!(config.cluster.partitions, 8);
        assert_eq!(config.general.server_mode, ServerMode::Standalone);
    }

    #[test]
    fn every_example_config_loads() {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for role in ["standalone", "leader", "follower", "learner"] {
            let path = directory.join(format!("{role}.toml"));
            let config = Config::load(&path).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(config.archive_location().is_some(), role != "standalone", "{role}");
            // A cluster node without a secret would refuse its role; the node warns about
            // the examples' placeholder.
            let secret = config.secrets().unwrap().cluster_secret;
            let expected = (role != "standalone").then_some(crate::EXAMPLE_CLUSTER_SECRET);
            assert_eq!(secret.as_deref(), expected, "{role}");
        }
    }

    #[test]
    fn object_storage_reads_infinity_keys() {
        let text = "[storage]\nstorage_type = \"minio\"\n[storage.object_storage]\n\
            url = \"127.0.0.1:9000\"\nbucket_name = \"infinity\"\naccess_key = \"minioadmin\"\n\
            secret_key = \"minioadmin\"\nenable_https = false\n";
        let config = parse(text).unwrap();
        let Some(strata_archive::StoreLocation::S3 { endpoint, bucket, .. }) =
            config.archive_location()
        else {
            panic!("expected S3")
        };
        assert_eq!((endpoint.as_str(), bucket.as_str()), ("http://127.0.0.1:9000", "infinity"));
        assert!(parse("").unwrap().archive_location().is_none());
        let shared = parse("[storage]\nshared_dir = \"/srv/shared\"\n").unwrap();
        assert!(matches!(
            shared.archive_location(),
            Some(strata_archive::StoreLocation::Directory(_))
        ));
    }

    #[test]
    fn shard_ports_fit_below_65536_and_take_no_other_port() {
        let config = parse("[general]\nshards = 2\n[network]\nshard_port_base = 7400\n").unwrap();
        assert_eq!(config.shard_ports(), Some(7400..=7401));
        assert_eq!(parse("").unwrap().shard_ports(), None);
        let high = parse("[general]\nshards = 2\n[network]\nshard_port_base = 65535\n");
        assert!(high.unwrap_err().to_string().contains("past 65535"));
        let taken = "[general]\nshards = 2\n[network]\nshard_port_base = 23816\n";
        let error = parse(taken).unwrap_err().to_string();
        assert!(error.contains("client_port 23817"), "{error}");
    }

    #[test]
    fn sizes_take_units() {
        let config = parse("[wal]\nsegment_size = \"1MB\"\nsnapshot_size = 4194304\n").unwrap();
        assert_eq!(config.wal.segment_size, ByteSize(1 << 20));
        assert_eq!(config.wal.snapshot_size, ByteSize(4 << 20));
        assert!(parse("[wal]\nsegment_size = \"1XB\"\n").is_err());
    }

    #[test]
    fn the_keys_from_before_snapshots_had_their_name_are_still_accepted() {
        let old = "[wal]\nsegment_size = \"1MB\"\n\
                   checkpoint_size = \"8MB\"\ncheckpoint_interval = 7\n";
        let config = parse(old).unwrap();
        assert_eq!(config.wal.snapshot_size, ByteSize(8 << 20));
        assert_eq!(config.wal.snapshot_interval, 7);
        let both = "[wal]\nsnapshot_size = \"8MB\"\ncheckpoint_size = \"8MB\"\n";
        assert!(parse(both).is_err(), "one key, under one of its names");
    }

    #[test]
    fn errors_name_the_key() {
        let unknown = parse("[network]\nclient_prot = 1\n").unwrap_err().to_string();
        assert!(unknown.contains("client_prot"), "{unknown}");
        let mode = parse("[wal]\nwal_flush = \"Sometimes\"\n").unwrap_err().to_string();
        assert!(mode.contains("Sometimes") && mode.contains("FlushAtOnce"), "{mode}");
        let port = parse("[network]\nclient_port = 70000\n").unwrap_err().to_string();
        assert!(port.contains("client_port"), "{port}");
        let shards = parse("[general]\nshards = 0\n").unwrap_err().to_string();
        assert!(shards.contains("general.shards"), "{shards}");
        let segment = parse("[wal]\nsegment_size = 1000\n").unwrap_err().to_string();
        assert!(segment.contains("wal.segment_size"), "{segment}");
        let minio = parse("[storage]\nstorage_type = \"minio\"\n").unwrap_err().to_string();
        assert!(minio.contains("storage.object_storage.url"), "{minio}");
        let name = parse("[cluster]\nname = \"a b\"\n").unwrap_err().to_string();
        assert!(name.contains("cluster.name"), "{name}");
        let section = parse("[nonsense]\n").unwrap_err().to_string();
        assert!(section.contains("nonsense"), "{section}");
        let failover = parse("[cluster]\nfailover = \"sometimes\"\n").unwrap_err().to_string();
        assert!(failover.contains("cluster.failover"), "{failover}");
        let alone = "[cluster]\nfailover = \"automatic\"\nmin_insync_replicas = 1\n";
        assert_eq!(parse(alone).unwrap().cluster.min_insync_replicas, 1);
        let timeout = "[cluster]\nfailover_timeout = 100\n";
        assert!(parse(timeout).unwrap_err().to_string().contains("cluster.failover_timeout"));
        let automatic = "[cluster]\nfailover = \"automatic\"\nmin_insync_replicas = 2\n";
        assert_eq!(parse(automatic).unwrap().cluster.failover, "automatic");
    }

    #[test]
    fn secrets_come_from_the_config_or_from_files() {
        assert_eq!(parse("").unwrap().secrets().unwrap(), Secrets::default());
        let directory = tempfile::tempdir().unwrap();
        let token_file = directory.path().join("token");
        std::fs::write(&token_file, "from-a-file\n").unwrap();
        let text = format!(
            "[security]\nadmin_token_file = {:?}\nrequirepass = \"pass\"\n",
            token_file.display().to_string()
        );
        let secrets = parse(&text).unwrap().secrets().unwrap();
        assert_eq!(secrets.admin_token.as_deref(), Some("from-a-file"));
        assert_eq!(secrets.requirepass.as_deref(), Some("pass"));
        assert_eq!(secrets.cluster_secret, None);
        let listing = parse(&text).unwrap().listing();
        assert!(listing.contains(&("admin_token".into(), "(set)".into())), "{listing:?}");
        assert!(!listing.iter().any(|(_, value)| value.contains("from-a-file")));
        let both = format!("{text}admin_token = \"x\"\n");
        let error = parse(&both).unwrap_err().to_string();
        assert!(error.contains("security.admin_token_file"), "{error}");
        let missing = "[security]\ncluster_secret_file = \"/nonexistent/secret\"\n";
        let error = parse(missing).unwrap_err().to_string();
        assert!(error.contains("security.cluster_secret_file"), "{error}");
    }
}
