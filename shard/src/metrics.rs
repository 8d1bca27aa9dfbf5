//! What the shards measure for `GET /metrics`: per shard, commands by kind, error replies by
//! kind, and histograms of reply, WAL append and WAL sync latency and of group-commit batch
//! sizes; per partition, the committed and durable LSN and the key count.
//!
//! Each [`ShardMetrics`] is written by its own shard's thread only, on memory no other shard
//! writes: no lock, no locked instruction and no shared cache line on the data path. A value
//! with one writer needs no read-modify-write: [`add`] is a relaxed load and store, as cheap
//! as a plain add, and readers on other threads still never see a torn value. The control
//! thread reads them at scrape time and sums the shards. A reader may see a histogram between
//! two of its adds; the count it reports is the sum of its buckets, so the `+Inf` bucket and
//! the count always agree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use strata_core::command::table::{self, CommandId};
use strata_core::command::{Command, CommandError, KeyCommand, NodeCommand};
use strata_core::PartitionId;

use crate::shard::Counters;

/// Upper bounds of the latency buckets, in microseconds (a 1-2.5-5 series from 10 µs to 5 s).
pub const LATENCY_BOUNDS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Upper bounds of the batch-size buckets, in records per frame.
pub const BATCH_BOUNDS_RECORDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

const _: () = assert!(LATENCY_BOUNDS_US.len() < BUCKETS_MAX);
const _: () = assert!(BATCH_BOUNDS_RECORDS.len() < BUCKETS_MAX);

/// Buckets of a histogram at most, the `+Inf` bucket included.
const BUCKETS_MAX: usize = 24;

/// A fixed-bucket histogram of `u64` observations written by one thread and read by any:
/// records from two threads at once would lose some (see [`add`]).
#[derive(Debug)]
pub struct Histogram {
    /// Ascending upper bounds; observations above the last fall in the `+Inf` bucket.
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative); index `bounds.len()` is `+Inf`.
    buckets: [AtomicU64; BUCKETS_MAX],
    sum: AtomicU64,
}

/// What a [`Histogram`] held when read, or the sum of several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    /// Observations per bucket, not cumulative, `+Inf` last (`bounds.len() + 1` entries).
    pub buckets: Vec<u64>,
    pub sum: u64,
}

impl Histogram {
    #[must_use]
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(bounds.len() < BUCKETS_MAX);
        assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "bounds ascend");
        Histogram { bounds, buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum: 0.into() }
    }

    /// Records `times` observations of `value`.
    pub fn record(&self, value: u64, times: u64) {
        let index = self.bounds.partition_point(|bound| *bound < value);
        add(&self.buckets[index], times);
        add(&self.sum, value.saturating_mul(times));
    }

    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = self.buckets[..=self.bounds.len()]
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot { bounds: self.bounds, buckets, sum: self.sum.load(Ordering::Relaxed) }
    }
}

impl HistogramSnapshot {
    /// Observations in all buckets.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another snapshot of a histogram with the same bounds.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        assert_eq!(self.bounds, other.bounds, "only histograms with the same buckets add up");
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }
}

/// Adds `amount` to a counter that only the calling thread writes. A relaxed load and store
/// instead of `fetch_add`: no locked instruction on the data path. With two writers, adds
/// would be lost; the shards never share a [`ShardMetrics`].
pub fn add(counter: &AtomicU64, amount: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(amount), Ordering::Relaxed);
}

/// Microseconds in `elapsed`, saturating.
#[must_use]
pub fn micros(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// A kind of command, a label of `strata_commands_total`: a fixed set, so that the metric
/// keeps a handful of series whatever clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Get,
    Set,
    GetSet,
    SetNx,
    Del,
    Exists,
    MSet,
    MGet,
    IncrBy,
    Append,
    Strlen,
    Expire,
    Ttl,
    Persist,
    DbSize,
    FlushAll,
    GetDel,
    GetEx,
    GetRange,
    SetRange,
    IncrByFloat,
    Type,
    Touch,
    ExpireTime,
    Rename,
    Copy,
    MSetNx,
    Keys,
    Scan,
    RandomKey,
    Object,
    SetBit,
    GetBit,
    BitCount,
    BitPos,
    BitOp,
    BitField,
    BitFieldRo,
    Lcs,
    Ping,
    Echo,
    Info,
    Select,
    Command,
    Config,
    Client,
    Hello,
    Auth,
    WaitAof,
    Quit,
    Time,
    Cluster,
    ReadOnly,
    ReadWrite,
    /// Unknown commands and commands with wrong arguments.
    Invalid,
}

impl CommandKind {
    pub const ALL: [CommandKind; 55] = [
        CommandKind::Get,
        CommandKind::Set,
        CommandKind::GetSet,
        CommandKind::SetNx,
        CommandKind::Del,
        CommandKind::Exists,
        CommandKind::MSet,
        CommandKind::MGet,
        CommandKind::IncrBy,
        CommandKind::Append,
        CommandKind::Strlen,
        CommandKind::Expire,
        CommandKind::Ttl,
        CommandKind::Persist,
        CommandKind::DbSize,
        CommandKind::FlushAll,
        CommandKind::GetDel,
        CommandKind::GetEx,
        CommandKind::GetRange,
        CommandKind::SetRange,
        CommandKind::IncrByFloat,
        CommandKind::Type,
        CommandKind::Touch,
        CommandKind::ExpireTime,
        CommandKind::Rename,
        CommandKind::Copy,
        CommandKind::MSetNx,
        CommandKind::Keys,
        CommandKind::Scan,
        CommandKind::RandomKey,
        CommandKind::Object,
        CommandKind::SetBit,
        CommandKind::GetBit,
        CommandKind::BitCount,
        CommandKind::BitPos,
        CommandKind::BitOp,
        CommandKind::BitField,
        CommandKind::BitFieldRo,
        CommandKind::Lcs,
        CommandKind::Ping,
        CommandKind::Echo,
        CommandKind::Info,
        CommandKind::Select,
        CommandKind::Command,
        CommandKind::Config,
        CommandKind::Client,
        CommandKind::Hello,
        CommandKind::Auth,
        CommandKind::WaitAof,
        CommandKind::Quit,
        CommandKind::Time,
        CommandKind::Cluster,
        CommandKind::ReadOnly,
        CommandKind::ReadWrite,
        CommandKind::Invalid,
    ];

    /// The kind of a parsed command (INCR, DECR, INCRBY and DECRBY are all `incrby`; the
    /// expiry setters all `expire`; TTL and PTTL `ttl`).
    #[must_use]
    pub fn of(parsed: &Result<Command, CommandError>) -> CommandKind {
        match parsed {
            Err(_) => CommandKind::Invalid,
            Ok(Command::Key(command)) => CommandKind::of_key(command),
            Ok(Command::Node(command)) => CommandKind::of_node(command),
        }
    }

    fn of_key(command: &KeyCommand) -> CommandKind {
        match command {
            KeyCommand::Get { .. } => CommandKind::Get,
            KeyCommand::Set { .. } => CommandKind::Set,
            KeyCommand::GetSet { .. } => CommandKind::GetSet,
            KeyCommand::SetNx { .. } => CommandKind::SetNx,
            KeyCommand::Delete { .. } => CommandKind::Del,
            KeyCommand::Exists { .. } => CommandKind::Exists,
            KeyCommand::MultiSet { .. } => CommandKind::MSet,
            KeyCommand::MultiGet { .. } => CommandKind::MGet,
            KeyCommand::IncrementBy { .. } => CommandKind::IncrBy,
            KeyCommand::Append { .. } => CommandKind::Append,
            KeyCommand::Strlen { .. } => CommandKind::Strlen,
            KeyCommand::Expire { .. } => CommandKind::Expire,
            KeyCommand::Ttl { .. } => CommandKind::Ttl,
            KeyCommand::Persist { .. } => CommandKind::Persist,
            KeyCommand::DbSize | KeyCommand::Status => CommandKind::DbSize,
            KeyCommand::FlushAll => CommandKind::FlushAll,
            KeyCommand::GetDelete { .. } => CommandKind::GetDel,
            KeyCommand::GetExpire { .. } => CommandKind::GetEx,
            KeyCommand::GetRange { .. } => CommandKind::GetRange,
            KeyCommand::SetRange { .. } => CommandKind::SetRange,
            KeyCommand::IncrementByFloat { .. } => CommandKind::IncrByFloat,
            KeyCommand::Type { .. } => CommandKind::Type,
            KeyCommand::Touch { .. } => CommandKind::Touch,
            KeyCommand::ExpireTime { .. } => CommandKind::ExpireTime,
            KeyCommand::Rename { .. } => CommandKind::Rename,
            KeyCommand::Copy { .. } => CommandKind::Copy,
            KeyCommand::MultiSetIfAbsent { .. } => CommandKind::MSetNx,
            KeyCommand::Keys { .. } => CommandKind::Keys,
            KeyCommand::Scan { .. } => CommandKind::Scan,
            KeyCommand::RandomKey { .. } => CommandKind::RandomKey,
            KeyCommand::Object { .. } => CommandKind::Object,
            KeyCommand::SetBit { .. } => CommandKind::SetBit,
            KeyCommand::GetBit { .. } => CommandKind::GetBit,
            KeyCommand::BitCount { .. } => CommandKind::BitCount,
            KeyCommand::BitPosition { .. } => CommandKind::BitPos,
            KeyCommand::BitOperation { .. } => CommandKind::BitOp,
            KeyCommand::BitField { read_only: false, .. } => CommandKind::BitField,
            KeyCommand::BitField { read_only: true, .. } => CommandKind::BitFieldRo,
            KeyCommand::Lcs { .. } => CommandKind::Lcs,
        }
    }

    fn of_node(command: &NodeCommand) -> CommandKind {
        match command {
            NodeCommand::Ping { .. } => CommandKind::Ping,
            NodeCommand::Echo { .. } => CommandKind::Echo,
            NodeCommand::Info { .. } => CommandKind::Info,
            NodeCommand::Select { .. } | NodeCommand::SwapDb { .. } | NodeCommand::Move { .. } => {
                CommandKind::Select
            }
            NodeCommand::Command(_) => CommandKind::Command,
            NodeCommand::ConfigGet { .. }
            | NodeCommand::ConfigSet { .. }
            | NodeCommand::ConfigResetStat
            | NodeCommand::ConfigRewrite => CommandKind::Config,
            NodeCommand::ClientSetName { .. }
            | NodeCommand::ClientGetName
            | NodeCommand::ClientSetInfo
            | NodeCommand::ClientId => CommandKind::Client,
            NodeCommand::Hello { .. } => CommandKind::Hello,
            NodeCommand::Auth { .. } => CommandKind::Auth,
            NodeCommand::WaitAof { .. } => CommandKind::WaitAof,
            NodeCommand::Quit => CommandKind::Quit,
            NodeCommand::Time => CommandKind::Time,
            NodeCommand::Cluster(_) => CommandKind::Cluster,
            NodeCommand::ReadOnly => CommandKind::ReadOnly,
            NodeCommand::ReadWrite => CommandKind::ReadWrite,
            NodeCommand::ObjectHelp => CommandKind::Object,
        }
    }

    /// The label value: the command's name in lower case.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Get => "get",
            CommandKind::Set => "set",
            CommandKind::GetSet => "getset",
            CommandKind::SetNx => "setnx",
            CommandKind::Del => "del",
            CommandKind::Exists => "exists",
            CommandKind::MSet => "mset",
            CommandKind::MGet => "mget",
            CommandKind::IncrBy => "incrby",
            CommandKind::Append => "append",
            CommandKind::Strlen => "strlen",
            CommandKind::Expire => "expire",
            CommandKind::Ttl => "ttl",
            CommandKind::Persist => "persist",
            CommandKind::DbSize => "dbsize",
            CommandKind::FlushAll => "flushall",
            CommandKind::GetDel => "getdel",
            CommandKind::GetEx => "getex",
            CommandKind::GetRange => "getrange",
            CommandKind::SetRange => "setrange",
            CommandKind::IncrByFloat => "incrbyfloat",
            CommandKind::Type => "type",
            CommandKind::Touch => "touch",
            CommandKind::ExpireTime => "expiretime",
            CommandKind::Rename => "rename",
            CommandKind::Copy => "copy",
            CommandKind::MSetNx => "msetnx",
            CommandKind::Keys => "keys",
            CommandKind::Scan => "scan",
            CommandKind::RandomKey => "randomkey",
            CommandKind::Object => "object",
            CommandKind::SetBit => "setbit",
            CommandKind::GetBit => "getbit",
            CommandKind::BitCount => "bitcount",
            CommandKind::BitPos => "bitpos",
            CommandKind::BitOp => "bitop",
            CommandKind::BitField => "bitfield",
            CommandKind::BitFieldRo => "bitfield_ro",
            CommandKind::Lcs => "lcs",
            CommandKind::Time => "time",
            CommandKind::Cluster => "cluster",
            CommandKind::ReadOnly => "readonly",
            CommandKind::ReadWrite => "readwrite",
            CommandKind::Ping => "ping",
            CommandKind::Echo => "echo",
            CommandKind::Info => "info",
            CommandKind::Select => "select",
            CommandKind::Command => "command",
            CommandKind::Config => "config",
            CommandKind::Client => "client",
            CommandKind::Hello => "hello",
            CommandKind::Auth => "auth",
            CommandKind::WaitAof => "waitaof",
            CommandKind::Quit => "quit",
            CommandKind::Invalid => "invalid",
        }
    }
}

/// The first word of an error reply, a label of `strata_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `-ERR`: wrong arguments, unknown commands, a failed partition.
    Err,
    WrongType,
    ReadOnly,
    Loading,
    NoReplicas,
    TryAgain,
    NoAuth,
    WrongPass,
    CrossSlot,
    /// Any other first word.
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Err,
        ErrorKind::WrongType,
        ErrorKind::ReadOnly,
        ErrorKind::Loading,
        ErrorKind::NoReplicas,
        ErrorKind::TryAgain,
        ErrorKind::NoAuth,
        ErrorKind::WrongPass,
        ErrorKind::CrossSlot,
        ErrorKind::Other,
    ];

    /// The kind of an encoded error reply (`-WORD message\r\n`).
    #[must_use]
    pub fn of_reply(reply: &[u8]) -> ErrorKind {
        let text = reply.strip_prefix(b"-").unwrap_or(reply);
        let word_end = text.iter().position(|byte| *byte == b' ' || *byte == b'\r');
        match &text[..word_end.unwrap_or(text.len())] {
            b"ERR" => ErrorKind::Err,
            b"WRONGTYPE" => ErrorKind::WrongType,
            b"READONLY" => ErrorKind::ReadOnly,
            b"LOADING" => ErrorKind::Loading,
            b"NOREPLICAS" => ErrorKind::NoReplicas,
            b"TRYAGAIN" => ErrorKind::TryAgain,
            b"NOAUTH" => ErrorKind::NoAuth,
            b"WRONGPASS" => ErrorKind::WrongPass,
            b"CROSSSLOT" => ErrorKind::CrossSlot,
            _ => ErrorKind::Other,
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Err => "err",
            ErrorKind::WrongType => "wrongtype",
            ErrorKind::ReadOnly => "readonly",
            ErrorKind::Loading => "loading",
            ErrorKind::NoReplicas => "noreplicas",
            ErrorKind::TryAgain => "tryagain",
            ErrorKind::NoAuth => "noauth",
            ErrorKind::WrongPass => "wrongpass",
            ErrorKind::CrossSlot => "crossslot",
            ErrorKind::Other => "other",
        }
    }
}

/// One command's counts for INFO commandstats, on one shard.
#[derive(Debug, Default)]
struct CommandStat {
    /// Times the command ran (its reply an error or not).
    calls: AtomicU64,
    /// Nanoseconds of the shards' threads spent on it (see [`ShardMetrics::add_command_time`]).
    nanos: AtomicU64,
    /// Times it was refused before running: wrong arity, CROSSSLOT, NOAUTH, READONLY, ...
    rejected: AtomicU64,
    /// Times it ran and answered an error.
    failed: AtomicU64,
}

/// One command's counts for INFO commandstats, summed over the shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandStatValues {
    pub calls: u64,
    pub nanos: u64,
    pub rejected: u64,
    pub failed: u64,
}

impl CommandStatValues {
    /// These counts less `baseline`'s (values read at CONFIG RESETSTAT).
    #[must_use]
    pub fn since(self, baseline: CommandStatValues) -> CommandStatValues {
        CommandStatValues {
            calls: self.calls.saturating_sub(baseline.calls),
            nanos: self.nanos.saturating_sub(baseline.nanos),
            rejected: self.rejected.saturating_sub(baseline.rejected),
            failed: self.failed.saturating_sub(baseline.failed),
        }
    }

    fn add(&mut self, other: CommandStatValues) {
        self.calls += other.calls;
        self.nanos += other.nanos;
        self.rejected += other.rejected;
        self.failed += other.failed;
    }
}

/// What INFO counts from: the counts read at the last CONFIG RESETSTAT (zero before any), so
/// that INFO starts again from zero while `GET /metrics` counters never go back.
#[derive(Clone, Debug, Default)]
pub struct StatsBaseline {
    /// Per [`CommandId`].
    pub commands: Vec<CommandStatValues>,
    /// Per [`ErrorKind`].
    pub errors: [u64; ErrorKind::ALL.len()],
    pub counters: CounterValues,
}

/// One shard's measurements. Aligned to its own cache lines, so that shards writing their
/// own never contend.
#[derive(Debug)]
#[repr(align(128))]
pub struct ShardMetrics {
    commands: [AtomicU64; CommandKind::ALL.len()],
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// From the moment a connection round starts parsing to its replies being ready to
    /// write, once per command of the round.
    pub reply_latency_us: Histogram,
    /// One WAL append (with O_DSYNC or a shared sync, until durable).
    pub wal_append_us: Histogram,
    /// One explicit WAL sync (fdatasync in buffered modes).
    pub wal_sync_us: Histogram,
    /// Records per frame a partition's group commit cut.
    pub batch_records: Histogram,
    /// As leader: from the log being durable up to a point to that point's commit, the wait
    /// for the in-sync followers' acknowledgements (0 when they came first).
    pub replication_wait_us: Histogram,
    /// Bytes of frames appended to the WAL.
    wal_bytes_written: AtomicU64,
    /// Requests and replies this shard sent to other shards.
    hops: AtomicU64,
    /// Publications to other shards' rings (one per destination per turn with hops).
    hop_messages: AtomicU64,
    /// Other shards this one woke because they slept.
    hop_wakeups: AtomicU64,
    /// Per [`CommandId`], for INFO commandstats.
    command_stats: Box<[CommandStat]>,
}

impl ShardMetrics {
    fn new() -> ShardMetrics {
        ShardMetrics {
            commands: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            reply_latency_us: Histogram::new(&LATENCY_BOUNDS_US),
            wal_append_us: Histogram::new(&LATENCY_BOUNDS_US),
            wal_sync_us: Histogram::new(&LATENCY_BOUNDS_US),
            batch_records: Histogram::new(&BATCH_BOUNDS_RECORDS),
            replication_wait_us: Histogram::new(&LATENCY_BOUNDS_US),
            wal_bytes_written: AtomicU64::new(0),
            hops: AtomicU64::new(0),
            hop_messages: AtomicU64::new(0),
            hop_wakeups: AtomicU64::new(0),
            command_stats: (0..table::count()).map(|_| CommandStat::default()).collect(),
        }
    }

    /// Counts a run of the command `id` (whatever its reply).
    pub fn count_call(&self, id: CommandId) {
        add(&self.command_stats[usize::from(id.0)].calls, 1);
    }

    /// Counts a refusal of the command `id` before it ran.
    pub fn count_rejected(&self, id: CommandId) {
        add(&self.command_stats[usize::from(id.0)].rejected, 1);
    }

    /// Counts a run of the command `id` that answered an error.
    pub fn count_failed(&self, id: CommandId) {
        add(&self.command_stats[usize::from(id.0)].failed, 1);
    }

    /// Adds time this shard's thread spent on the command `id`: its share of a round of
    /// parsing and executing (see `connection::process` and `Shard::serve_requests`).
    pub fn add_command_time(&self, id: CommandId, nanos: u64) {
        add(&self.command_stats[usize::from(id.0)].nanos, nanos);
    }

    #[must_use]
    pub fn command_stat(&self, id: CommandId) -> CommandStatValues {
        let stat = &self.command_stats[usize::from(id.0)];
        CommandStatValues {
            calls: stat.calls.load(Ordering::Relaxed),
            nanos: stat.nanos.load(Ordering::Relaxed),
            rejected: stat.rejected.load(Ordering::Relaxed),
            failed: stat.failed.load(Ordering::Relaxed),
        }
    }

    pub fn count_command(&self, kind: CommandKind) {
        add(&self.commands[kind as usize], 1);
    }

    /// Counts `reply` if it is an error reply.
    pub fn count_if_error(&self, reply: &[u8]) {
        if reply.first() == Some(&b'-') {
            add(&self.errors[ErrorKind::of_reply(reply) as usize], 1);
        }
    }

    pub fn count_wal_bytes(&self, bytes: u64) {
        add(&self.wal_bytes_written, bytes);
    }

    /// One publication's counts: hops sent, rings published to, receivers woken.
    pub fn count_hops(&self, hops: u64, messages: u64, wakeups: u64) {
        if hops > 0 {
            add(&self.hops, hops);
            add(&self.hop_messages, messages);
            add(&self.hop_wakeups, wakeups);
        }
    }

    #[must_use]
    pub fn wal_bytes_written(&self) -> u64 {
        self.wal_bytes_written.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn commands(&self, kind: CommandKind) -> u64 {
        self.commands[kind as usize].load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }
}

/// A partition's progress, published by its shard once a second.
#[derive(Debug, Default)]
pub struct PartitionGauges {
    pub committed_lsn: AtomicU64,
    pub durable_lsn: AtomicU64,
    pub keys: AtomicU64,
}

/// The node-wide counters, as read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub connections_current: u64,
    pub connections_received: u64,
    pub connections_rejected: u64,
    pub commands_processed: u64,
    pub frames_written: u64,
    pub syncs: u64,
    pub fdatasyncs: u64,
    pub snapshots_written: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub records_discarded: u64,
    pub authentication_failures: u64,
    pub expired_keys: u64,
    /// Requests and replies sent between the shards, the ring publications that carried them,
    /// and the sleeping shards they woke (INFO's `shard_hops`, `shard_messages`,
    /// `shard_wakeups`).
    pub shard_hops: u64,
    pub shard_messages: u64,
    pub shard_wakeups: u64,
}

/// Everything the shards measure, shared with the control thread.
pub struct NodeMetrics {
    pub(crate) counters: Arc<Counters>,
    shards: Vec<ShardMetrics>,
    partitions: Vec<PartitionGauges>,
    /// Taken by CONFIG RESETSTAT and INFO only, never on the data path.
    baseline: std::sync::Mutex<StatsBaseline>,
    /// Rare, timestamped moments (slow syncs, rolls, snapshots, replica streams).
    pub events: crate::events::EventLog,
}

impl NodeMetrics {
    pub(crate) fn new(counters: Arc<Counters>, shards: u32, partitions: u32) -> NodeMetrics {
        NodeMetrics {
            counters,
            shards: (0..shards).map(|_| ShardMetrics::new()).collect(),
            partitions: (0..partitions).map(|_| PartitionGauges::default()).collect(),
            baseline: std::sync::Mutex::new(StatsBaseline {
                commands: vec![CommandStatValues::default(); table::count()],
                ..StatsBaseline::default()
            }),
            events: crate::events::EventLog::default(),
        }
    }

    /// The command `id`'s counts, summed over the shards.
    #[must_use]
    pub fn command_stat(&self, id: CommandId) -> CommandStatValues {
        let mut total = CommandStatValues::default();
        for shard in &self.shards {
            total.add(shard.command_stat(id));
        }
        total
    }

    /// Error replies of `kind`, summed over the shards.
    #[must_use]
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.shards.iter().map(|shard| shard.errors(kind)).sum()
    }

    /// What INFO subtracts: the counts at the last CONFIG RESETSTAT.
    #[must_use]
    pub fn baseline(&self) -> StatsBaseline {
        self.baseline.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// CONFIG RESETSTAT: INFO's stats, commandstats and errorstats count from now on.
    pub fn reset_info_stats(&self) {
        let commands = table::ids().map(|id| self.command_stat(id)).collect();
        let errors = ErrorKind::ALL.map(|kind| self.errors(kind));
        let baseline = StatsBaseline { commands, errors, counters: self.counters() };
        *self.baseline.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = baseline;
    }

    /// Shard `index`'s measurements; only that shard's thread writes them.
    #[must_use]
    pub fn shard(&self, index: usize) -> &ShardMetrics {
        &self.shards[index]
    }

    #[must_use]
    pub fn shards(&self) -> &[ShardMetrics] {
        &self.shards
    }

    #[must_use]
    pub fn partition(&self, partition: PartitionId) -> &PartitionGauges {
        &self.partitions[partition.0 as usize]
    }

    #[must_use]
    pub fn partitions(&self) -> &[PartitionGauges] {
        &self.partitions
    }

    /// One histogram of every shard, summed.
    #[must_use]
    pub fn histogram(&self, pick: impl Fn(&ShardMetrics) -> &Histogram) -> HistogramSnapshot {
        let mut shards = self.shards.iter();
        let first = shards.next().expect("a node has a shard");
        let mut total = pick(first).snapshot();
        for shard in shards {
            total.merge(&pick(shard).snapshot());
        }
        total
    }

    #[must_use]
    pub fn counters(&self) -> CounterValues {
        let counters = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CounterValues {
            connections_current: u64::from(counters.connections_current.load(Ordering::Relaxed)),
            connections_received: load(&counters.connections_received),
            connections_rejected: load(&counters.connections_rejected),
            commands_processed: load(&counters.commands_processed),
            frames_written: load(&counters.frames_written),
            syncs: load(&counters.syncs),
            fdatasyncs: load(&counters.fdatasyncs),
            snapshots_written: load(&counters.snapshots_written),
            snapshots_sent: load(&counters.snapshots_sent),
            snapshots_installed: load(&counters.snapshots_installed),
            records_discarded: load(&counters.records_discarded),
            authentication_failures: load(&counters.authentication_failures),
            expired_keys: load(&counters.expired_keys),
            shard_hops: self.shards.iter().map(|shard| load(&shard.hops)).sum(),
            shard_messages: self.shards.iter().map(|shard| load(&shard.hop_messages)).sum(),
            shard_wakeups: self.shards.iter().map(|shard| load(&shard.hop_wakeups)).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CommandKind, ErrorKind, Histogram, LATENCY_BOUNDS_US};
    use strata_core::command;

    #[test]
    fn observations_fall_in_the_first_bucket_whose_bound_holds_them() {
        let histogram = Histogram::new(&LATENCY_BOUNDS_US);
        histogram.record(0, 1);
        histogram.record(10, 2);
        histogram.record(11, 1);
        histogram.record(u64::MAX / 4, 1);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets.len(), LATENCY_BOUNDS_US.len() + 1);
        assert_eq!(snapshot.buckets[0], 3, "0 and twice 10 are at most 10");
        assert_eq!(snapshot.buckets[1], 1, "11 is at most 25");
        assert_eq!(snapshot.buckets[LATENCY_BOUNDS_US.len()], 1, "beyond the last bound: +Inf");
        assert_eq!(snapshot.count(), 5);
        assert_eq!(snapshot.sum, 20 + 11 + u64::MAX / 4);
    }

    #[test]
    fn snapshots_of_several_shards_add_up() {
        let (one, two) = (Histogram::new(&LATENCY_BOUNDS_US), Histogram::new(&LATENCY_BOUNDS_US));
        one.record(100, 3);
        two.record(100, 1);
        two.record(1_000, 1);
        let mut total = one.snapshot();
        total.merge(&two.snapshot());
        assert_eq!((total.count(), total.sum), (5, 400 + 1_000));
        assert_eq!(total.buckets[3], 4);
        assert_eq!(total.buckets[6], 1);
    }

    #[test]
    fn commands_are_counted_by_kind_and_unknown_ones_as_invalid() {
        let kind = |arguments: &[&[u8]]| CommandKind::of(&command::parse(arguments));
        assert_eq!(kind(&[b"GET", b"k"]), CommandKind::Get);
        assert_eq!(kind(&[b"decr", b"k"]), CommandKind::IncrBy);
        assert_eq!(kind(&[b"pttl", b"k"]), CommandKind::Ttl);
        assert_eq!(kind(&[b"ping"]), CommandKind::Ping);
        assert_eq!(kind(&[b"nosuchcommand"]), CommandKind::Invalid);
        assert_eq!(kind(&[b"get"]), CommandKind::Invalid, "wrong arity");
        let names: std::collections::BTreeSet<&str> =
            CommandKind::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(names.len(), CommandKind::ALL.len(), "every kind has its own label");
        for (index, kind) in CommandKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index, "ALL is in declaration order");
        }
    }

    #[test]
    fn error_replies_are_counted_by_their_first_word() {
        assert_eq!(ErrorKind::of_reply(b"-ERR unknown command\r\n"), ErrorKind::Err);
        assert_eq!(ErrorKind::of_reply(b"-READONLY You can't\r\n"), ErrorKind::ReadOnly);
        assert_eq!(ErrorKind::of_reply(b"-NOREPLICAS\r\n"), ErrorKind::NoReplicas);
        assert_eq!(ErrorKind::of_reply(b"-MOVED 1 a\r\n"), ErrorKind::Other);
        for (index, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index, "ALL is in declaration order");
        }
    }
}
