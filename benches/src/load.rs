//! A RESP load generator: many connections sending pipelined `SET`/`GET` commands for random
//! keys, with per-request latency in an HDR histogram.
//!
//! Each of `--threads` OS threads owns one monoio runtime and runs its share of the connections
//! as tasks. A connection works in rounds: it sends `--pipeline` commands in one write, then reads
//! exactly that many replies. A request's latency is the time from sending its round's batch to
//! receiving its reply, so pipelining shows up as latency, as it does for the server's clients.
//!
//! The run ends at `--duration-seconds` or after `--requests` requests, whichever comes first:
//! requests are claimed from a shared budget one batch at a time, and every connection checks the
//! deadline before each batch. Rounds already sent when the run ends are still completed.
//! The clock starts once every connection is established, so connecting is not measured.
//!
//! With `--timeline` every reply is also counted in the 100 ms interval in which it arrived, and
//! with `--events-from` the nodes' counters and events are polled into the same intervals (see
//! the `timeline` and `events` modules).

mod connection;
mod events;
mod gate;
mod report;
mod timeline;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use self::connection::{ThreadStats, Workload};
pub use self::events::{
    EventsError, NodeEvent, EVENTS_NODES_MAX, EVENTS_PER_NODE_MAX, EVENTS_POLL_INTERVAL,
    EVENTS_RESPONSE_BYTES_MAX, EVENTS_TIMEOUT,
};
use self::events::{NodeRecord, Pollers};
use self::gate::StartGate;
pub use self::report::{print_report, LatencySummary, LoadReport};
pub use self::timeline::{
    IntervalNode, Timeline, TimelineInterval, TimelineNode, TIMELINE_INTERVAL,
    TIMELINE_INTERVALS_MAX, TIMELINE_SECONDS_MAX,
};

pub const HOST_DEFAULT: &str = "127.0.0.1";
pub const PORT_DEFAULT: u16 = 23817;
pub const CONNECTIONS_DEFAULT: u32 = 50;
pub const CONNECTIONS_MAX: u32 = 10_000;
pub const PIPELINE_DEFAULT: u32 = 1;
pub const PIPELINE_MAX: u32 = 10_000;
pub const VALUE_BYTES_DEFAULT: usize = 128;
/// Values up to what the RESP parser accepts by default, so GET replies parse too.
pub const VALUE_BYTES_MAX: usize = strata_core::resp::BULK_BYTES_MAX_DEFAULT;
pub const KEYSPACE_DEFAULT: u64 = 100_000;
pub const DURATION_SECONDS_DEFAULT: f64 = 10.0;
pub const DURATION_SECONDS_MAX: f64 = 24.0 * 3600.0;
pub const THREADS_DEFAULT: u32 = 1;
pub const THREADS_MAX: u32 = 256;
/// How long establishing all of one thread's connections may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection waits for all replies of one batch before the run fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest latency the histogram tells apart; longer ones are recorded as this.
pub const LATENCY_US_MAX: u64 = 60_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

const _: () = assert!(PIPELINE_DEFAULT <= PIPELINE_MAX);
const _: () = assert!(CONNECTIONS_DEFAULT <= CONNECTIONS_MAX);
const _: () = assert!(THREADS_DEFAULT <= THREADS_MAX);
const _: () = assert!(VALUE_BYTES_DEFAULT <= VALUE_BYTES_MAX);
const _: () = assert!(REPLY_TIMEOUT.as_micros() < LATENCY_US_MAX as u128);

/// Options of a load run; `strata bench` takes them as its command-line flags.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Server host name or IP address.
    #[arg(long, default_value = HOST_DEFAULT)]
    pub host: String,
    /// Server RESP port.
    #[arg(long, default_value_t = PORT_DEFAULT)]
    pub port: u16,
    /// Client connections, spread evenly over the threads.
    #[arg(long, default_value_t = CONNECTIONS_DEFAULT)]
    pub connections: u32,
    /// Commands each connection sends per round trip.
    #[arg(long, default_value_t = PIPELINE_DEFAULT)]
    pub pipeline: u32,
    /// Bytes of each SET value.
    #[arg(long, default_value_t = VALUE_BYTES_DEFAULT)]
    pub value_bytes: usize,
    /// Number of distinct keys (`key:0` ..), each request picks one uniformly at random.
    #[arg(long, default_value_t = KEYSPACE_DEFAULT)]
    pub keyspace: u64,
    /// Fraction of requests that are GETs (0.0 ..= 1.0); the rest are SETs.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Stop after this many seconds (also when --requests is reached first).
    #[arg(long, default_value_t = DURATION_SECONDS_DEFAULT)]
    pub duration_seconds: f64,
    /// Stop after this many requests (also when --duration-seconds passes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Client threads, each with its own I/O runtime.
    #[arg(long, default_value_t = THREADS_DEFAULT)]
    pub threads: u32,
    /// Seed of the key and command choice; random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// A command sent after every pipeline batch, e.g. "WAITAOF 1 2 0": each request's latency
    /// then runs until its answer arrives; it is not counted as a request.
    #[arg(long)]
    pub after_batch: Option<String>,
    /// Password sent with AUTH on every connection before the run (as redis-benchmark's -a).
    #[arg(long, short = 'a')]
    pub password: Option<String>,
    /// Also report latency per 100 ms interval: replies, p50, p99 and max of the replies that
    /// arrived in each, and the intervals that stand out. Runs of at most one hour.
    #[arg(long)]
    pub timeline: bool,
    /// Admin HTTP address (host:port) of a Strata node whose counters and events
    /// (`/debug/events`) are polled every 100 ms into the timeline. Repeatable; implies
    /// --timeline. A node that does not answer is reported, and the run goes on.
    #[arg(long, value_name = "HOST:PORT")]
    pub events_from: Vec<String>,
    /// The nodes' `[security] admin_token`, sent as a bearer token with --events-from.
    #[arg(long, env = "STRATA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No live progress on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            host: HOST_DEFAULT.to_owned(),
            port: PORT_DEFAULT,
            connections: CONNECTIONS_DEFAULT,
            pipeline: PIPELINE_DEFAULT,
            value_bytes: VALUE_BYTES_DEFAULT,
            keyspace: KEYSPACE_DEFAULT,
            read_ratio: 0.0,
            duration_seconds: DURATION_SECONDS_DEFAULT,
            requests: None,
            threads: THREADS_DEFAULT,
            seed: None,
            after_batch: None,
            password: None,
            timeline: false,
            events_from: Vec::new(),
            admin_token: None,
            json: false,
            quiet: false,
        }
    }
}

impl LoadOptions {
    /// Checks every option against its bounds; [`run`] calls this first.
    pub fn validate(&self) -> Result<(), LoadError> {
        check_range("connections", self.connections.into(), 1, CONNECTIONS_MAX.into())?;
        check_range("pipeline", self.pipeline.into(), 1, PIPELINE_MAX.into())?;
        check_range("threads", self.threads.into(), 1, THREADS_MAX.into())?;
        check_range("value-bytes", self.value_bytes as u64, 1, VALUE_BYTES_MAX as u64)?;
        check_range("keyspace", self.keyspace, 1, u64::MAX)?;
        check_range("requests", self.requests.unwrap_or(1), 1, u64::MAX)?;
        if self.threads > self.connections {
            return Err(invalid("threads", "must not exceed --connections".to_owned()));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(invalid("read-ratio", "must be between 0.0 and 1.0".to_owned()));
        }
        let duration_valid = self.duration_seconds.is_finite()
            && self.duration_seconds > 0.0
            && self.duration_seconds <= DURATION_SECONDS_MAX;
        if !duration_valid {
            let reason = format!("must be above 0 and at most {DURATION_SECONDS_MAX}");
            return Err(invalid("duration-seconds", reason));
        }
        self.validate_timeline()
    }

    /// Whether the run keeps a timeline: `--timeline`, or any `--events-from`.
    #[must_use]
    pub fn timeline_enabled(&self) -> bool {
        self.timeline || !self.events_from.is_empty()
    }

    fn validate_timeline(&self) -> Result<(), LoadError> {
        if self.timeline_enabled() && self.duration_seconds > TIMELINE_SECONDS_MAX as f64 {
            let reason = format!("must be at most {TIMELINE_SECONDS_MAX} with a timeline");
            return Err(invalid("duration-seconds", reason));
        }
        if self.events_from.len() > EVENTS_NODES_MAX {
            let reason = format!("at most {EVENTS_NODES_MAX} nodes");
            return Err(invalid("events-from", reason));
        }
        for address in &self.events_from {
            check_node_address(address)?;
        }
        let token_breaks_lines =
            self.admin_token.as_deref().is_some_and(|token| token.contains(['\r', '\n']));
        if token_breaks_lines {
            return Err(invalid("admin-token", "must be one line".to_owned()));
        }
        Ok(())
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_seconds)
    }

    fn resolve(&self) -> Result<SocketAddr, LoadError> {
        let address = format!("{}:{}", self.host, self.port);
        let resolved = (self.host.as_str(), self.port).to_socket_addrs();
        let mut addresses =
            resolved.map_err(|source| LoadError::Resolve { address: address.clone(), source })?;
        addresses.next().ok_or_else(|| LoadError::Resolve {
            address,
            source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
        })
    }
}

fn check_range(option: &'static str, value: u64, min: u64, max: u64) -> Result<(), LoadError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(option, format!("{value} is outside {min}..={max}")))
    }
}

/// An admin address is `host:port`, the port a number above 0.
fn check_node_address(address: &str) -> Result<(), LoadError> {
    let port = match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => port.parse::<u16>().ok(),
        _ => None,
    };
    match port {
        Some(port) if port > 0 => Ok(()),
        _ => Err(invalid("events-from", format!("{address:?} is not host:port"))),
    }
}

fn invalid(option: &'static str, reason: String) -> LoadError {
    LoadError::InvalidOption { option, reason }
}

/// Why a load run failed. Error replies from the server are not failures: they are counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("invalid option --{option}: {reason}")]
    InvalidOption { option: &'static str, reason: String },
    #[error("cannot resolve {address}: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("cannot connect to {address}: {source} (is the server running?)")]
    Connect { address: SocketAddr, source: io::Error },
    #[error("connecting to {address} took longer than {:?}", CONNECT_TIMEOUT)]
    ConnectTimeout { address: SocketAddr },
    #[error("I/O error on a connection to {address}: {source}")]
    Io { address: SocketAddr, source: io::Error },
    #[error("{address} closed a connection with {pending} replies outstanding")]
    Closed { address: SocketAddr, pending: u64 },
    #[error("no reply from {address} within {:?}", REPLY_TIMEOUT)]
    ReplyTimeout { address: SocketAddr },
    #[error("{address} refused the password: {reply}")]
    Authentication { address: SocketAddr, reply: String },
    #[error("malformed reply from {address}: {reason}")]
    Protocol { address: SocketAddr, reason: String },
    #[error("cannot start a load thread: {source}")]
    Thread { source: io::Error },
    #[error("cannot start an I/O runtime: {source}")]
    Runtime { source: io::Error },
    #[error("load threads did not finish connecting within {:?}", CONNECT_TIMEOUT * 2)]
    StartTimeout,
}

/// State every thread and connection of one run shares.
struct Shared {
    /// Requests not yet claimed by a connection.
    budget: AtomicU64,
    /// Replies received so far, for the progress line.
    completed: AtomicU64,
    /// Set when any connection fails, so the others stop at their next batch.
    failed: AtomicBool,
}

impl Shared {
    /// Claims up to `wanted` requests from the budget; returns how many were granted (0: done).
    fn claim(&self, wanted: u64) -> u64 {
        let taken = self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |remaining| {
            (remaining > 0).then(|| remaining - remaining.min(wanted))
        });
        taken.map_or(0, |remaining| remaining.min(wanted))
    }
}

/// Runs the load described by `options` and returns the measurements.
///
/// Blocks for about `--duration-seconds` (less if `--requests` is reached first), plus the
/// time to connect. Prints live progress on stderr unless `--quiet`.
pub fn run(options: &LoadOptions) -> Result<LoadReport, LoadError> {
    options.validate()?;
    let address = options.resolve()?;
    let shared = Arc::new(Shared {
        budget: AtomicU64::new(options.requests.unwrap_or(u64::MAX)),
        completed: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    });
    let workload = Workload::new(options);
    let gate = StartGate::new();
    let seed = options.seed.unwrap_or_else(rand::random);
    let measured = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(options.threads as usize);
        for (thread_index, connections) in thread_shares(options).into_iter().enumerate() {
            let plan = ThreadPlan {
                address,
                connections,
                thread_index: thread_index as u64,
                seed,
                duration: options.duration(),
                timeline: options.timeline_enabled(),
            };
            let (workload, shared, gate) = (workload.clone(), Arc::clone(&shared), &gate);
            let spawned = thread::Builder::new()
                .name(format!("load-{thread_index}"))
                .spawn_scoped(scope, move || run_thread(&plan, &workload, &shared, gate));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(source) => {
                    gate.open(false);
                    return Measured::failed(LoadError::Thread { source });
                }
            }
        }
        measure(handles, &gate, &shared, options)
    });
    let mut total = ThreadStats::new();
    for result in measured.results {
        total.merge(&result?);
    }
    let mut report = LoadReport::new(options, &total, measured.elapsed);
    if options.timeline_enabled() {
        report.timeline = Some(timeline::build(
            total.timeline.as_ref(),
            measured.nodes,
            measured.elapsed,
            measured.start_unix_us,
            report.latency_ms.p99,
        ));
    }
    Ok(report)
}

/// What [`measure`] gives back.
struct Measured {
    /// Each thread's statistics or failure.
    results: Vec<Result<ThreadStats, LoadError>>,
    /// The measured time of the run.
    elapsed: Duration,
    /// The start of the run in Unix time (microseconds), for the nodes' events.
    start_unix_us: u64,
    /// What polling each node of `--events-from` gave.
    nodes: Vec<NodeRecord>,
}

impl Measured {
    fn failed(error: LoadError) -> Self {
        Measured {
            results: vec![Err(error)],
            elapsed: Duration::ZERO,
            start_unix_us: 0,
            nodes: Vec::new(),
        }
    }
}

/// Waits for every thread to connect, starts them together, and times them until they finish.
/// Polls the nodes of `--events-from` meanwhile.
fn measure(
    handles: Vec<thread::ScopedJoinHandle<'_, Result<ThreadStats, LoadError>>>,
    gate: &StartGate,
    shared: &Arc<Shared>,
    options: &LoadOptions,
) -> Measured {
    let all_ready = gate.wait_ready(handles.len(), CONNECT_TIMEOUT * 2);
    let starting = all_ready && !shared.failed.load(Ordering::Relaxed);
    let start = gate.open(starting);
    let start_unix_us = unix_micros(SystemTime::now());
    let polling = starting && !options.events_from.is_empty();
    let pollers = polling.then(|| start_pollers(options, start));
    let (stop, stopped) = mpsc::channel::<()>();
    let progress = (!options.quiet && all_ready).then(|| {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name("load-progress".to_owned())
            .spawn(move || print_progress(start, &shared.completed, &stopped))
    });
    let mut results: Vec<_> = handles
        .into_iter()
        .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        .collect();
    let elapsed = start.elapsed();
    drop(stop);
    if let Some(Ok(progress)) = progress {
        progress.join().expect("progress thread");
    }
    let nodes = pollers.map(Pollers::finish).unwrap_or_default();
    if !all_ready {
        results.insert(0, Err(LoadError::StartTimeout));
    }
    Measured { results, elapsed, start_unix_us, nodes }
}

/// Starts polling the nodes of `--events-from`, until the run ends or could have ended at the
/// latest: its deadline plus the wait for the last replies.
fn start_pollers(options: &LoadOptions, start: Instant) -> Pollers {
    let deadline = start + options.duration() + REPLY_TIMEOUT;
    let token = options.admin_token.as_deref();
    events::start_pollers(&options.events_from, token, start, deadline)
}

fn unix_micros(time: SystemTime) -> u64 {
    let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
}

/// Prints the request rate once per interval until `stopped` disconnects.
fn print_progress(start: Instant, completed: &AtomicU64, stopped: &mpsc::Receiver<()>) {
    let seconds_max = DURATION_SECONDS_MAX as u64 + REPLY_TIMEOUT.as_secs() + 1;
    let mut previous = 0;
    for _ in 0..seconds_max {
        match stopped.recv_timeout(PROGRESS_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = completed.load(Ordering::Relaxed);
        let interval_rate = (now - previous) as f64 / PROGRESS_INTERVAL.as_secs_f64();
        let seconds = start.elapsed().as_secs_f64();
        eprintln!("{seconds:6.1} s  {interval_rate:>10.0} ops/s  {now:>12} requests");
        previous = now;
    }
}

/// How many connections each thread runs: as even as possible.
fn thread_shares(options: &LoadOptions) -> Vec<u32> {
    let (quotient, remainder) =
        (options.connections / options.threads, options.connections % options.threads);
    (0..options.threads).map(|index| quotient + u32::from(index < remainder)).collect()
}

/// What one load thread does.
struct ThreadPlan {
    address: SocketAddr,
    connections: u32,
    /// Distinguishes the threads' random streams.
    thread_index: u64,
    seed: u64,
    duration: Duration,
    /// Whether to keep latency per interval (`--timeline`).
    timeline: bool,
}

/// One load thread: connect, wait at the gate, drive the connections until the deadline.
fn run_thread(
    plan: &ThreadPlan,
    workload: &Workload,
    shared: &Arc<Shared>,
    gate: &StartGate,
) -> Result<ThreadStats, LoadError> {
    let built = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build();
    let mut runtime = match built {
        Ok(runtime) => runtime,
        Err(source) => {
            shared.failed.store(true, Ordering::Relaxed);
            gate.arrive();
            return Err(LoadError::Runtime { source });
        }
    };
    let connecting = connection::connect_all(plan.address, plan.connections, workload);
    let connected = runtime.block_on(connecting);
    if connected.is_err() {
        shared.failed.store(true, Ordering::Relaxed);
    }
    let started = gate.arrive();
    let streams = connected?;
    let Some(start) = started else {
        return Ok(ThreadStats::new());
    };
    let deadline = Instant::now() + plan.duration;
    let stats = if plan.timeline { ThreadStats::with_timeline(start) } else { ThreadStats::new() };
    runtime.block_on(connection::drive_all(streams, plan, workload, shared, deadline, stats))
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("histogram bounds are valid")
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod timeline_tests;
