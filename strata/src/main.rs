//! The `strata` binary: `strata node`, `strata demo`, `strata bench`. Wiring only.

mod config;
mod meta;

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

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use config::{Config, WalFlush};
use strata_net::{Durability, NodeOptions};

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
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a local node on loopback with a temporary data directory, until Ctrl-C.
    Demo {
        /// RESP port on 127.0.0.1.
        #[arg(long, default_value_t = 23817)]
        port: u16,
        /// Keep the data directory instead of deleting it on exit.
        #[arg(long)]
        keep: bool,
    },
    /// Drive a RESP server with load and report throughput and latency.
    Bench(strata_benches::load::LoadOptions),
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
    abort_on_panic();
    let cli = Cli::parse();
    match cli.command {
        Commands::Node { config } => run_node(&config),
        Commands::Demo { port, keep } => run_demo(port, keep),
        Commands::Bench(options) => run_bench(&options),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn node_options(config: &Config, config_file: &Path) -> NodeOptions {
    NodeOptions {
        shard_count: config.shard_count(),
        partition_count: config.cluster.partitions,
        client_address: std::net::SocketAddr::new(
            config.network.server_address,
            config.network.client_port,
        ),
        data_dir: config.storage.data_dir.clone(),
        durability: match config.wal.wal_flush {
            WalFlush::FlushAtOnce => Durability::SyncEachBatch,
            WalFlush::OnlyWrite => Durability::WriteOnly,
            WalFlush::FlushPerSecond => Durability::SyncEverySecond,
        },
        segment_bytes: config.wal.segment_size.0,
        direct_io: config.wal.direct_io && config.wal.wal_flush == WalFlush::FlushAtOnce,
        checkpoint_bytes: config.wal.checkpoint_size.0,
        checkpoint_interval: Duration::from_secs(config.wal.checkpoint_interval),
        connections_max: config.network.connections_max,
        force_epoll: config.general.io_driver == config::IoDriver::Epoll,
        resp_limits: strata_core::resp::RespLimits::default(),
        config_file: config_file.display().to_string(),
    }
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
    init_logging(&config.log.log_level);
    if let Err(error) = meta::prepare_data_dir(&config.storage.data_dir, config.cluster.partitions)
    {
        tracing::error!(%error, "cannot use the data directory");
        return ExitCode::from(2);
    }
    let _lock = match meta::lock_data_dir(&config.storage.data_dir) {
        Ok(lock) => lock,
        Err(error) => {
            tracing::error!(%error, "cannot use the data directory");
            return ExitCode::from(2);
        }
    };
    let options = node_options(&config, config_file);
    if let Err(error) = meta::check_port_free(options.client_address) {
        tracing::error!(%error, "node failed to start");
        return ExitCode::from(3);
    }
    install_stop_handler(None);
    serve(options)
}

fn serve(options: NodeOptions) -> ExitCode {
    let address = options.client_address;
    let (shards, partitions, mode) =
        (options.shard_count, options.partition_count, options.durability.name());
    match strata_net::start(options) {
        Ok(node) => {
            tracing::info!(%address, shards, partitions, wal_flush = mode,
                recovery_ms = node.recovery_time.as_millis() as u64, "ready to serve");
            node.wait();
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "node failed to start");
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

/// Ctrl-C and SIGTERM end the process at once: every acknowledged write is already durable.
fn install_stop_handler(remove_on_exit: Option<PathBuf>) {
    let result = ctrlc::set_handler(move || {
        tracing::info!("stopping");
        if let Some(directory) = &remove_on_exit {
            let _ = std::fs::remove_dir_all(directory);
        }
        std::process::exit(0);
    });
    if let Err(error) = result {
        tracing::warn!(%error, "cannot install the Ctrl-C handler");
    }
}

fn run_demo(port: u16, keep: bool) -> ExitCode {
    init_logging("info");
    // Before anything is created, so that a taken port leaves nothing behind.
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    if let Err(error) = meta::check_port_free(address) {
        eprintln!("strata demo: {error} (choose another with --port)");
        return ExitCode::from(3);
    }
    let directory = match tempfile::Builder::new().prefix("strata-demo-").tempdir() {
        Ok(directory) => directory.keep(),
        Err(error) => {
            eprintln!("strata demo: cannot create a temporary directory: {error}");
            return ExitCode::from(2);
        }
    };
    let text = format!(
        "[network]\nserver_address = \"127.0.0.1\"\nclient_port = {port}\n\
         [storage]\ndata_dir = \"{}\"\n[wal]\nwal_flush = \"FlushAtOnce\"\n",
        directory.join("data").display()
    );
    let config_file = directory.join("strata.toml");
    let config = match std::fs::write(&config_file, &text)
        .map_err(|error| error.to_string())
        .and_then(|()| Config::parse(&text, &config_file).map_err(|error| error.to_string()))
    {
        Ok(config) => config,
        Err(error) => {
            eprintln!("strata demo: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = meta::prepare_data_dir(&config.storage.data_dir, config.cluster.partitions)
    {
        eprintln!("strata demo: {error}");
        return ExitCode::from(2);
    }
    let _lock = match meta::lock_data_dir(&config.storage.data_dir) {
        Ok(lock) => lock,
        Err(error) => {
            eprintln!("strata demo: {error}");
            return ExitCode::from(2);
        }
    };
    let options = node_options(&config, &config_file);
    println!("Strata demo: one standalone node, data in {}", directory.display());
    println!("  connect:   redis-cli -p {port}");
    println!("  benchmark: redis-benchmark -p {port} -t set,get -P 16 -q");
    println!("             strata bench --port {port} --pipeline 16");
    println!("  stop:      Ctrl-C{}", if keep { " (data kept)" } else { " (data deleted)" });
    install_stop_handler(if keep { None } else { Some(directory) });
    serve(options)
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
