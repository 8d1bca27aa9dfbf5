//! One load connection: rounds of `pipeline` commands, each followed by exactly that many
//! replies, on a monoio task. All connections of a thread share the thread's [`ThreadStats`].

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use monoio::buf::IoBufMut as _;
use monoio::io::{AsyncReadRent as _, AsyncWriteRentExt as _};
use monoio::net::TcpStream;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use strata_core::resp::{self, Reply, RespLimits};

use super::timeline::ThreadTimeline;
use super::{LoadError, LoadOptions, Shared, ThreadPlan, CONNECT_TIMEOUT, REPLY_TIMEOUT};

/// Initial size of a connection's reply buffer; it grows when one reply does not fit.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Longest decimal key suffix: `u64::MAX` has 20 digits.
const KEY_BYTES_MAX: usize = "key:".len() + 20;

/// What the connections send: the same for every connection of a run.
#[derive(Clone, Debug)]
pub(super) struct Workload {
    value: Arc<[u8]>,
    keyspace: u64,
    read_ratio: f64,
    pipeline: u64,
    /// The encoded command sent after each batch, if any.
    after_batch: Option<Arc<[u8]>>,
    /// The encoded AUTH command each connection sends once, if a password is given.
    authentication: Option<Arc<[u8]>>,
}

impl Workload {
    pub(super) fn new(options: &LoadOptions) -> Self {
        Workload {
            value: vec![b'x'; options.value_bytes].into(),
            keyspace: options.keyspace,
            read_ratio: options.read_ratio,
            pipeline: options.pipeline.into(),
            after_batch: options.after_batch.as_deref().map(|text| {
                let words: Vec<&[u8]> = text.split_whitespace().map(str::as_bytes).collect();
                let mut encoded = Vec::new();
                resp::encode_command(&mut encoded, &words);
                encoded.into()
            }),
            authentication: options.password.as_deref().map(|password| {
                let mut encoded = Vec::new();
                resp::encode_command(&mut encoded, &[b"AUTH", password.as_bytes()]);
                encoded.into()
            }),
        }
    }

    /// Appends `count` commands, each a GET or SET of a uniformly random key, to `output`.
    pub(super) fn encode_batch(&self, output: &mut Vec<u8>, count: u64, rng: &mut StdRng) {
        assert!(count <= self.pipeline);
        let mut key = Vec::with_capacity(KEY_BYTES_MAX);
        for _ in 0..count {
            key.clear();
            write!(key, "key:{}", rng.gen_range(0..self.keyspace)).expect("writing to a Vec");
            if rng.gen::<f64>() < self.read_ratio {
                resp::encode_command(output, &[b"GET", &key]);
            } else {
                resp::encode_command(output, &[b"SET", &key, &self.value]);
            }
        }
    }
}

/// Measurements of one thread's connections, later merged across threads.
pub(super) struct ThreadStats {
    /// Per-request latency in microseconds.
    pub(super) histogram: Histogram<u64>,
    /// Replies received, error replies included.
    pub(super) requests: u64,
    /// Error replies received.
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    /// Latency per interval, with `--timeline` only.
    pub(super) timeline: Option<ThreadTimeline>,
}

impl ThreadStats {
    pub(super) fn new() -> Self {
        ThreadStats {
            histogram: super::new_histogram(),
            requests: 0,
            errors: 0,
            first_error: None,
            timeline: None,
        }
    }

    /// Empty stats that also keep latency per interval of the run started at `start`.
    pub(super) fn with_timeline(start: Instant) -> Self {
        ThreadStats { timeline: Some(ThreadTimeline::new(start)), ..ThreadStats::new() }
    }

    pub(super) fn merge(&mut self, other: &ThreadStats) {
        self.histogram.add(&other.histogram).expect("histograms share their bounds");
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        if let Some(timeline) = &other.timeline {
            self.timeline
                .get_or_insert_with(|| ThreadTimeline::new(timeline.start()))
                .merge(timeline);
        }
    }

    /// Records one reply to a request sent at `sent_at`, received at `received_at`.
    pub(super) fn record_reply(
        &mut self,
        sent_at: Instant,
        received_at: Instant,
        error: Option<String>,
    ) {
        let latency = received_at.saturating_duration_since(sent_at);
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(latency_us);
        if let Some(timeline) = &mut self.timeline {
            timeline.record(received_at, latency_us);
        }
        self.requests += 1;
        if let Some(text) = error {
            self.errors += 1;
            self.first_error.get_or_insert(text);
        }
    }
}

/// Opens `count` connections to `address`, each authenticated when the workload has a
/// password, all within [`CONNECT_TIMEOUT`].
pub(super) async fn connect_all(
    address: SocketAddr,
    count: u32,
    workload: &Workload,
) -> Result<Vec<TcpStream>, LoadError> {
    let connecting = async {
        let mut streams = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let mut stream = TcpStream::connect_addr(address)
                .await
                .map_err(|source| LoadError::Connect { address, source })?;
            stream.set_nodelay(true).map_err(|source| LoadError::Io { address, source })?;
            if let Some(command) = &workload.authentication {
                authenticate(&mut stream, address, command).await?;
            }
            streams.push(stream);
        }
        Ok(streams)
    };
    monoio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| LoadError::ConnectTimeout { address })?
}

/// Sends the encoded AUTH `command` and waits for its reply, which must be `+OK`.
async fn authenticate(
    stream: &mut TcpStream,
    address: SocketAddr,
    command: &[u8],
) -> Result<(), LoadError> {
    let (written, _) = stream.write_all(command.to_vec()).await;
    written.map_err(|source| LoadError::Io { address, source })?;
    let limits = RespLimits::default();
    let mut input = Vec::with_capacity(READ_BUFFER_BYTES);
    loop {
        let parsed = resp::parse_reply(&input, &limits)
            .map_err(|error| LoadError::Protocol { address, reason: error.to_string() })?;
        match parsed {
            Some((Reply::Simple(text), _)) if text == "OK" => return Ok(()),
            Some((Reply::Error(reply), _)) => {
                return Err(LoadError::Authentication { address, reply })
            }
            Some((other, _)) => {
                let reply = format!("{other:?}");
                return Err(LoadError::Authentication { address, reply });
            }
            None => {}
        }
        let filled = input.len();
        input.reserve(READ_BUFFER_BYTES);
        let (result, buffer) = stream.read(input.slice_mut(filled..)).await;
        input = buffer.into_inner();
        if result.map_err(|source| LoadError::Io { address, source })? == 0 {
            return Err(LoadError::Closed { address, pending: 1 });
        }
    }
}

/// Drives every connection of one thread until the deadline or the request budget ends.
pub(super) async fn drive_all(
    streams: Vec<TcpStream>,
    plan: &ThreadPlan,
    workload: &Workload,
    shared: &Arc<Shared>,
    deadline: Instant,
    stats: ThreadStats,
) -> Result<ThreadStats, LoadError> {
    let stats = Rc::new(RefCell::new(stats));
    let mut tasks = Vec::with_capacity(streams.len());
    for (index, stream) in streams.into_iter().enumerate() {
        let seed = connection_seed(plan.seed, plan.thread_index, index as u64);
        let connection = Connection {
            stream,
            address: plan.address,
            workload: workload.clone(),
            shared: Arc::clone(shared),
            stats: Rc::clone(&stats),
            rng: StdRng::seed_from_u64(seed),
            limits: RespLimits::default(),
        };
        tasks.push(monoio::spawn(connection.drive(deadline)));
    }
    let mut failure = None;
    for task in tasks {
        if let Err(error) = task.await {
            failure.get_or_insert(error);
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let stats = Rc::try_unwrap(stats).ok().expect("every connection task has finished");
    Ok(stats.into_inner())
}

/// A distinct, well-mixed seed for each connection of a run (splitmix64 finalizer).
fn connection_seed(seed: u64, thread_index: u64, connection_index: u64) -> u64 {
    let mut mixed = seed ^ (thread_index << 32) ^ connection_index;
    mixed = mixed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^ (mixed >> 31)
}

struct Connection {
    stream: TcpStream,
    address: SocketAddr,
    workload: Workload,
    shared: Arc<Shared>,
    stats: Rc<RefCell<ThreadStats>>,
    rng: StdRng,
    limits: RespLimits,
}

impl Connection {
    /// Runs rounds until the deadline, the end of the budget, or another connection's failure;
    /// a failure here stops the others too.
    async fn drive(mut self, deadline: Instant) -> Result<(), LoadError> {
        let result = self.rounds(deadline).await;
        if result.is_err() {
            self.shared.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    async fn rounds(&mut self, deadline: Instant) -> Result<(), LoadError> {
        let pipeline = self.workload.pipeline;
        let mut output = Vec::with_capacity(pipeline as usize * (self.workload.value.len() + 64));
        let mut input = Vec::with_capacity(READ_BUFFER_BYTES);
        while Instant::now() < deadline && !self.shared.failed.load(Ordering::Relaxed) {
            let batch = self.shared.claim(pipeline);
            if batch == 0 {
                break;
            }
            output.clear();
            self.workload.encode_batch(&mut output, batch, &mut self.rng);
            let extra = match &self.workload.after_batch {
                Some(command) => {
                    output.extend_from_slice(command);
                    1
                }
                None => 0,
            };
            let sent_at = Instant::now();
            let (written, returned) = self.stream.write_all(output).await;
            output = returned;
            written.map_err(|source| LoadError::Io { address: self.address, source })?;
            let receiving = self.receive(&mut input, batch, extra, sent_at);
            monoio::time::timeout(REPLY_TIMEOUT, receiving)
                .await
                .map_err(|_| LoadError::ReplyTimeout { address: self.address })??;
            self.shared.completed.fetch_add(batch, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reads exactly `batch` replies into the stats, then `extra` replies to the after-batch
    /// command (whose arrival ends every request's latency). `input` is empty before and after.
    async fn receive(
        &mut self,
        input: &mut Vec<u8>,
        batch: u64,
        extra: u64,
        sent_at: Instant,
    ) -> Result<(), LoadError> {
        assert!(input.is_empty());
        let mut pending = batch + extra;
        let mut start = 0;
        let mut received_at = sent_at;
        let mut waiting: Vec<Option<String>> = Vec::new();
        // Each pass parses at least one reply or reads at least one byte; the caller's timeout
        // bounds the reads.
        loop {
            while pending > 0 {
                let Some((consumed, error)) = self.next_reply(&input[start..])? else { break };
                start += consumed;
                pending -= 1;
                if extra == 0 {
                    self.stats.borrow_mut().record_reply(sent_at, received_at, error);
                } else if pending >= extra {
                    waiting.push(error);
                } else if let Some(error) = error {
                    waiting.push(Some(format!("after-batch command: {error}")));
                }
            }
            if pending == 0 {
                break;
            }
            input.drain(..start);
            start = 0;
            self.read_more(input, pending).await?;
            received_at = Instant::now();
        }
        let mut stats = self.stats.borrow_mut();
        for error in waiting {
            stats.record_reply(sent_at, received_at, error);
        }
        drop(stats);
        if start != input.len() {
            let reason = format!("{} bytes after the last expected reply", input.len() - start);
            return Err(LoadError::Protocol { address: self.address, reason });
        }
        input.clear();
        Ok(())
    }

    /// Appends at least one byte from the socket to `input`, growing it when full.
    async fn read_more(&mut self, input: &mut Vec<u8>, pending: u64) -> Result<(), LoadError> {
        if input.len() == input.capacity() {
            input.reserve(input.capacity().max(READ_BUFFER_BYTES));
        }
        let buffer = std::mem::take(input);
        let filled = buffer.len();
        let (result, buffer) = self.stream.read(buffer.slice_mut(filled..)).await;
        *input = buffer.into_inner();
        let address = self.address;
        match result.map_err(|source| LoadError::Io { address, source })? {
            0 => Err(LoadError::Closed { address, pending }),
            _ => Ok(()),
        }
    }

    /// The byte length of the first complete reply in `input` and its error text if it is an
    /// error reply; `None` if the reply is not complete yet.
    fn next_reply(&self, input: &[u8]) -> Result<Option<(usize, Option<String>)>, LoadError> {
        let protocol = |error: resp::RespError| LoadError::Protocol {
            address: self.address,
            reason: error.to_string(),
        };
        match input.first() {
            None => Ok(None),
            Some(b'-') => match resp::parse_reply(input, &self.limits).map_err(protocol)? {
                Some((Reply::Error(text), consumed)) => Ok(Some((consumed, Some(text)))),
                Some((_, consumed)) => Ok(Some((consumed, None))),
                None => Ok(None),
            },
            Some(_) => {
                let consumed = resp::skip_reply(input, &self.limits).map_err(protocol)?;
                Ok(consumed.map(|consumed| (consumed, None)))
            }
        }
    }
}
