//! The `strata` binary: `strata node`, `strata demo`, `strata bench`. Wiring only.

mod affinity;
mod archive;
mod config;
mod ctl;
mod demo;
mod meta;
mod tls;

/// Shards allocate and free on every command, and a buffer made on one shard is often freed on
/// another: mimalloc's per-thread heaps avoid the arena lock contention of the system
/// allocator there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc.h's `mi_option_e`
/// (the same positions in its v2 and v3); libmimalloc-sys does not name them.
const MIMALLOC_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MIMALLOC_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Gives freed memory back to the OS at once and commits arenas only as they fill: by default
/// mimalloc keeps pages of the transient buffers that every command makes, which cost about
/// 15% more resident memory on a loaded node here. An `MIMALLOC_*` environment variable still
/// overrides these.
fn tune_allocator() {
    for (option, value, variable) in [
        (MIMALLOC_ARENA_EAGER_COMMIT, 0, "MIMALLOC_ARENA_EAGER_COMMIT"),
        (MIMALLOC_PURGE_DELAY, 0, "MIMALLOC_PURGE_DELAY"),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mi_option_set only stores an integer option; it has no preconditions.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

/// What mimalloc has committed for the heap, now and at most, for INFO memory's
/// `used_memory` and `used_memory_peak` (mimalloc counts these itself, at no cost per call).
fn allocator_memory() -> strata_shard::memory::AllocatorMemory {
    let (mut current_commit, mut peak_commit) = (0usize, 0usize);
    let none = std::ptr::null_mut();
    // SAFETY: mi_process_info writes each out-parameter that is not null, and reads nothing.
    unsafe {
        libmimalloc_sys::mi_process_info(
            none,
            none,
            none,
            none,
            none,
            &raw mut current_commit,
            &raw mut peak_commit,
            none,
        );
    }
    strata_shard::memory::AllocatorMemory {
        committed_bytes: current_commit as u64,
        committed_peak_bytes: peak_commit as u64,
    }
}

/// Lets INFO memory read the global allocator, which the shard crate cannot see.
fn install_allocator_probe() {
    // SAFETY: mi_version has no preconditions.
    let version = unsafe { libmimalloc_sys::mi_version() };
    let name = format!("mimalloc-{}.{}.{}", version / 100, version / 10 % 10, version % 10);
    strata_shard::memory::install_allocator_probe(strata_shard::memory::AllocatorProbe {
        // Once per process: the name lives as long as the probe.
        name: Box::leak(name.into_boxed_str()),
        read: allocator_memory,
    });
}

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use config::{Config, Secrets, ServerMode, WalFlush};
use strata_core::cluster::Role;
use strata_core::replication::mutations::Mutations;
use strata_core::Epoch;
use strata_shard::{ClusterShared, Durability, NodeOptions, ServingMode};

#[derive(Parser)]
#[command(name = "strata", version, about = "A replicated storage node that speaks RESP")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a node from a config file.
    Node {
        /// TOML config file (see examples/).
        #[arg(long, env = "STRATA_CONFIG")]
        config: PathBuf,
        /// Check the config file (and read the secret files it names), print what is wrong
        /// or that it is valid, and exit: 0 valid, 2 not.
        #[arg(long)]
        check_config: bool,
    },
    /// Run a local cluster on loopback (a leader, two followers and a learner, each a
    /// process with a temporary data directory) until Ctrl-C.
    Demo(demo::DemoOptions),
    /// Talk to a node's admin API.
    Ctl(ctl::CtlOptions),
    /// Drive a RESP server with load and report throughput and latency.
    Bench(strata_benches::load::LoadOptions),
    /// Build a node's data directory from the archive alone (segments and snapshots).
    Restore(archive::RestoreOptions),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff) of `strata`.
    Man,
}

/// A panic is a bug: a shard that died would leave the node half alive, so the whole process
/// stops (SIGABRT) after the panic is printed, and the supervisor restarts it into recovery.
fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        std::process::abort();
    }));
}

fn main() -> ExitCode {
    tune_allocator();
    install_allocator_probe();
    abort_on_panic();
    let cli = Cli::parse();
    match cli.command {
        Commands::Node { config, check_config: true } => check_config(&config),
        Commands::Node { config, check_config: false } => run_node(&config),
        Commands::Demo(options) => demo::run(&options),
        Commands::Ctl(options) => ctl::run(&options),
        Commands::Bench(options) => run_bench(&options),
        Commands::Restore(options) => archive::run_restore(&options),
        Commands::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut script);
            print_bytes(&script)
        }
        Commands::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => print_bytes(&page),
                Err(error) => {
                    eprintln!("strata man: {error}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Writes generated text to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

/// `strata node --check-config`: 0 when the config and the secret files it names are good.
fn check_config(config_file: &Path) -> ExitCode {
    match Config::load(config_file) {
        Ok(config) => {
            println!(
                "{}: valid (data_dir {}, client port {}, admin port {}, peer port {})",
                config_file.display(),
                config.storage.data_dir.display(),
                config.network.client_port,
                config.network.http_port,
                config.network.peer_port,
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("strata: {error}");
            ExitCode::from(2)
        }
    }
}

/// Logs at `level`, or as `STRATA_LOG` says. The controller's Raft library logs every
/// heartbeat to an unreachable member: only its errors are shown unless `STRATA_LOG` names it.
/// Lines are coloured only when stderr is a terminal (a journal or a file gets plain text);
/// with `json`, each line is one JSON object.
pub(crate) fn init_logging(level: &str, format: config::LogFormat) {
    use std::io::IsTerminal;
    let mut directives = std::env::var("STRATA_LOG").unwrap_or_else(|_| level.to_string());
    if !directives.contains("openraft") {
        directives.push_str(",openraft=error");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        config::LogFormat::Text => builder.try_init(),
        config::LogFormat::Json => builder.json().try_init(),
    };
}

/// The cluster secret in force, as the handshake takes it.
fn cluster_secret(secrets: &Secrets) -> Option<strata_core::handshake::ClusterSecret> {
    secrets.cluster_secret.as_deref().and_then(strata_core::handshake::ClusterSecret::new)
}

/// The value the example configs carry, to be replaced.
const EXAMPLE_CLUSTER_SECRET: &str = "example-only-replace-with-openssl-rand-hex-32";
/// A secret shorter than this is guessable by anyone who can try handshakes for long enough.
const CLUSTER_SECRET_BYTES_MIN: usize = 16;

fn warn_about_a_weak_cluster_secret(secrets: &Secrets) {
    let Some(secret) = &secrets.cluster_secret else { return };
    if secret == EXAMPLE_CLUSTER_SECRET {
        tracing::warn!("[security] cluster_secret is the example configs' value: replace it");
    } else if secret.len() < CLUSTER_SECRET_BYTES_MIN {
        tracing::warn!(
            bytes = secret.len(),
            "[security] cluster_secret is short: use {CLUSTER_SECRET_BYTES_MIN} bytes or more \
             (openssl rand -hex 32)"
        );
    }
}

/// Warns when another node's shard threads are pinned to the cores this node's shards are.
fn warn_of_shared_cores(cores: Option<&[usize]>, shards: u32) {
    let Some(cores) = cores else { return };
    let ours: Vec<usize> = cores.iter().copied().cycle().take(shards as usize).collect();
    let others = affinity::shards_pinned_elsewhere(Path::new("/proc"), std::process::id(), &ours);
    for (pid, thread, core) in others {
        tracing::warn!(
            pid,
            thread,
            core,
            "another node's shard thread is pinned to a core this node's shards are pinned to: \
             they will take turns on it; give co-located nodes different cores \
             ([general] cpu_affinity) or \"none\""
        );
    }
}

fn node_options(config: &Config, secrets: &Secrets, config_file: &Path) -> NodeOptions {
    NodeOptions {
        shard_count: config.shard_count(),
        shard_cores: config.shard_cores().unwrap_or_default(),
        partition_count: config.cluster.partitions,
        client_address: std::net::SocketAddr::new(
            config.network.server_address,
            config.network.client_port,
        ),
        shard_port_base: Some(config.network.shard_port_base).filter(|base| *base != 0),
        data_dir: config.storage.data_dir.clone(),
        durability: match config.wal.wal_flush {
            WalFlush::FlushAtOnce => Durability::SyncEachBatch,
            WalFlush::OnlyWrite => Durability::WriteOnly,
            WalFlush::FlushPerSecond => Durability::SyncEverySecond,
        },
        segment_bytes: config.wal.segment_size.0,
        direct_io: config.wal.direct_io && config.wal.wal_flush == WalFlush::FlushAtOnce,
        shared_sync: config.wal.shared_sync,
        snapshot_bytes: config.wal.snapshot_size.0,
        replica_window: usize::try_from(config.cluster.replica_window.0).unwrap_or(usize::MAX),
        snapshot_interval: Duration::from_secs(config.wal.snapshot_interval),
        connections_max: config.network.connections_max,
        force_epoll: config.general.io_driver == config::IoDriver::Epoll,
        resp_limits: strata_core::resp::RespLimits::default(),
        config_file: config_file.display().to_string(),
        archive: None,
        requirepass: secrets.requirepass.clone(),
        client_tls: None,
        peer_tls: None,
        cluster_secret: cluster_secret(secrets),
    }
}

/// The environment variable naming known replication bugs to put back, for the chaos
/// harness's proof that it finds them (`scripts/chaos.sh --mutation`).
const MUTATIONS_VARIABLE: &str = "STRATA_MUTATIONS";

/// Puts in force the mutations `STRATA_MUTATIONS` names. Refused in a build without the
/// `mutations` feature (a release build), so that no production node runs with one.
fn put_mutations_in_force() -> Result<(), String> {
    let Some(text) = std::env::var(MUTATIONS_VARIABLE).ok().filter(|text| !text.trim().is_empty())
    else {
        return Ok(());
    };
    if !Mutations::AVAILABLE {
        return Err(format!(
            "{MUTATIONS_VARIABLE}={text} needs a build with the `mutations` feature"
        ));
    }
    let mutations = Mutations::parse_list(&text)?;
    mutations.put_in_force();
    tracing::warn!(mutations = %mutations.names(), "KNOWN REPLICATION BUGS PUT BACK ON PURPOSE");
    Ok(())
}

/// Exit codes: 2 bad config or data directory, 3 cannot listen, 4 cannot start threads,
/// 5 recovery found damage.
fn run_node(config_file: &Path) -> ExitCode {
    let config = match Config::load(config_file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("strata: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log.log_level, config.log.log_format);
    if let Err(error) = put_mutations_in_force() {
        tracing::error!(%error, "cannot start");
        return ExitCode::from(2);
    }
    let cluster_id =
        match meta::prepare_data_dir(&config.storage.data_dir, config.cluster.partitions, None) {
            Ok(cluster_id) => cluster_id,
            Err(error) => {
                tracing::error!(%error, "cannot use the data directory");
                return ExitCode::from(2);
            }
        };
    let _lock = match meta::lock_data_dir(&config.storage.data_dir) {
        Ok(lock) => lock,
        Err(error) => {
            tracing::error!(%error, "cannot use the data directory");
            return ExitCode::from(2);
        }
    };
    let secrets = match config.secrets() {
        Ok(secrets) => secrets,
        Err((key, message)) => {
            tracing::error!(key, %message, "cannot read a secret");
            return ExitCode::from(2);
        }
    };
    warn_about_a_weak_cluster_secret(&secrets);
    let mut options = node_options(&config, &secrets, config_file);
    if config.security.client_tls {
        match tls::server_config(&config.security) {
            Ok(tls) => options.client_tls = Some(tls),
            Err((key, message)) => {
                tracing::error!(key, %message, "cannot serve the client port over TLS");
                return ExitCode::from(2);
            }
        }
    }
    if config.security.peer_tls {
        match tls::peer_config(&config.security) {
            Ok(tls) => options.peer_tls = Some(tls),
            Err((key, message)) => {
                tracing::error!(key, %message, "cannot use TLS on the peer port");
                return ExitCode::from(2);
            }
        }
    }
    let archive = config.archive_location();
    if let Some(location) = &archive {
        if let Err(error) = archive::complete_local_logs(&config, location, &cluster_id) {
            tracing::error!(%error, "cannot complete the local log from the archive");
            return ExitCode::from(5);
        }
    }
    if archive.is_some() {
        options.archive = Some(Arc::new(strata_wal::ArchiveMarks::new(config.cluster.partitions)));
    }
    let shard_ports = config.shard_ports().into_iter().flatten();
    let shard_addresses = shard_ports
        .filter_map(|port| u16::try_from(port).ok())
        .map(|port| std::net::SocketAddr::new(options.client_address.ip(), port));
    for address in std::iter::once(options.client_address).chain(shard_addresses) {
        if let Err(error) = meta::check_port_free(address) {
            tracing::error!(%error, "node failed to start");
            return ExitCode::from(3);
        }
    }
    let listeners = match ControlListeners::bind(&config) {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!(%error, "node failed to start");
            return ExitCode::from(3);
        }
    };
    let archive = archive.map(|location| (location, cluster_id));
    serve(options, &config, &secrets, listeners, archive)
}

/// The admin HTTP and peer listeners, bound before anything starts so that a taken port stops
/// the node at once.
struct ControlListeners {
    http: TcpListener,
    peer: TcpListener,
}

impl ControlListeners {
    fn bind(config: &Config) -> Result<ControlListeners, String> {
        let bind = |address: SocketAddr, what: &str| {
            meta::bind_listener(address)
                .map_err(|error| format!("cannot listen for {what} on {address}: {error}"))
        };
        let network = &config.network;
        Ok(ControlListeners {
            http: bind(config.admin_listen_address(), "admin HTTP")?,
            peer: bind(SocketAddr::new(network.peer_ip, network.peer_port), "peers")?,
        })
    }
}

/// The data epoch stored by the last time this node became leader, or 1.
fn stored_epoch(data_dir: &Path) -> Epoch {
    let stored = std::fs::read_to_string(data_dir.join("strata.epoch"))
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Epoch(stored.max(1))
}

fn serve(
    options: NodeOptions,
    config: &Config,
    secrets: &Secrets,
    listeners: ControlListeners,
    archive: Option<(strata_archive::StoreLocation, String)>,
) -> ExitCode {
    let marks = options.archive.clone();
    let peer_tls = options.peer_tls.clone();
    let address = options.client_address;
    let (shards, partitions, mode) =
        (options.shard_count, options.partition_count, options.durability.name());
    let (role, serving) = match config.general.server_mode {
        ServerMode::Admin => (Role::Admin, ServingMode::Admin),
        ServerMode::Standalone => (Role::Standalone, ServingMode::Standalone),
    };
    let shared = Arc::new(ClusterShared::new(serving, stored_epoch(&config.storage.data_dir)));
    let pinned = options.shard_cores.clone();
    let node = match strata_shard::start(options, shared) {
        Ok(node) => node,
        Err(error) => {
            tracing::error!(%error, "node failed to start");
            return ExitCode::from(error.exit_code() as u8);
        }
    };
    warn_of_shared_cores(pinned.as_deref(), shards);
    let (mut storage_status, mut archive_access) = (None, None);
    if let (Some((location, cluster_id)), Some(marks)) = (&archive, marks) {
        match archive::start_uploader(config, location, cluster_id, &node.handle().shared, marks) {
            Ok((access, status)) => {
                storage_status = Some(status);
                archive_access = Some(access);
            }
            Err(error) => {
                tracing::error!(%error, "cannot start the uploader");
                return ExitCode::from(2);
            }
        }
    }
    let control = strata_control::ControlConfig {
        advertised_address: format!("{}:{}", config.network.peer_ip, config.network.peer_port),
        initial_role: role,
        heartbeat_interval: Duration::from_millis(config.cluster.heartbeat_interval),
        heartbeat_timeout: Duration::from_millis(config.cluster.heartbeat_timeout),
        min_insync_replicas: config.cluster.min_insync_replicas as usize,
        configs: config.listing(),
        data_dir: config.storage.data_dir.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        storage_status,
        archive: archive_access,
        failover: if config.cluster.failover == "automatic" {
            strata_control::Failover::Automatic
        } else {
            strata_control::Failover::Manual
        },
        failover_timeout: Duration::from_millis(config.cluster.failover_timeout),
        cluster_name: config.cluster.name.clone(),
        admin_token: secrets.admin_token.clone(),
        admin_tls: match config.security.admin_tls {
            true => match tls::server_config(&config.security) {
                Ok(tls) => Some(tls),
                Err((key, message)) => {
                    tracing::error!(key, %message, "cannot serve the admin API over TLS");
                    return ExitCode::from(2);
                }
            },
            false => None,
        },
        admin_ca: match (&config.security.tls_ca_file, config.security.admin_tls) {
            (Some(path), true) => match ctl::trusted_certificates(path) {
                Ok(trusted) => Some(trusted),
                Err(message) => {
                    tracing::error!(key = "security.tls_ca_file", %message, "cannot read the CA");
                    return ExitCode::from(2);
                }
            },
            _ => None,
        },
        cluster_secret: cluster_secret(secrets),
        allow_insecure_peers: config.security.allow_insecure_peers,
        peer_tls,
    };
    let control =
        match strata_control::start(control, node.handle(), listeners.http, listeners.peer) {
            Ok(control) => control,
            Err(error) => {
                tracing::error!(%error, "cannot start the control thread");
                return ExitCode::from(4);
            }
        };
    install_stop_handler(control);
    tracing::info!(%address, shards, partitions, wal_flush = mode, role = role.name(),
        http = config.network.http_port, peer = config.network.peer_port,
        recovery_ms = node.recovery_time.as_millis() as u64, "ready to serve");
    // Under systemd (`Type=notify`), `systemctl start` returns now; elsewhere nothing happens.
    if let Err(error) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(%error, "cannot tell systemd the node is ready");
    }
    node.wait();
    ExitCode::SUCCESS
}

/// Ctrl-C and SIGTERM end the process at once, after a follower or learner has told its
/// leader it leaves (at most 2 s): every acknowledged write is already durable.
fn install_stop_handler(control: strata_control::ControlHandle) {
    let result = ctrlc::set_handler(move || {
        tracing::info!("stopping");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        control.leave(Duration::from_secs(2));
        std::process::exit(0);
    });
    if let Err(error) = result {
        tracing::warn!(%error, "cannot install the Ctrl-C handler");
    }
}

fn run_bench(options: &strata_benches::load::LoadOptions) -> ExitCode {
    match strata_benches::load::run(options) {
        Ok(report) => {
            strata_benches::load::print_report(&report, options);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("strata bench: {error}");
            ExitCode::from(1)
        }
    }
}
