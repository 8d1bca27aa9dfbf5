//! `--events-from`: during a run, polls Strata nodes' admin API (`GET /debug/events`) for their
//! counters and events, so the timeline shows what each node did in each interval.
//!
//! One thread per node polls at the start of the run, then in the middle of every interval,
//! then once more after the run. It speaks just enough HTTP/1.1 over a plain `TcpStream`: one
//! request per connection (`Connection: close`), a body of `Content-Length` bytes or up to the
//! close. A node that fails to answer never fails the run: its first error is recorded, and
//! polling goes on.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};

use super::timeline::TIMELINE_INTERVAL;

/// The most nodes `--events-from` takes.
pub const EVENTS_NODES_MAX: usize = 16;
/// How often each node is polled during the run.
pub const EVENTS_POLL_INTERVAL: Duration = TIMELINE_INTERVAL;
/// How long connecting, and each read or write, may take.
pub const EVENTS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one whole request may take.
pub const EVENTS_REQUEST_TIME_MAX: Duration = Duration::from_secs(2);
/// The largest answer read from a node.
pub const EVENTS_RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most events kept per node for one run; later ones are counted as dropped.
pub const EVENTS_PER_NODE_MAX: usize = 100_000;
/// The most counters kept from one answer.
const COUNTERS_MAX: usize = 64;
/// The node's endpoint of counters and events.
const EVENTS_PATH: &str = "/debug/events";
/// Longest `kind` and `detail` kept from an event; the rest is cut.
const EVENT_KIND_CHARS_MAX: usize = 64;
const EVENT_DETAIL_CHARS_MAX: usize = 256;
/// Longest part of an error answer's body quoted in the error.
const ERROR_BODY_CHARS_MAX: usize = 200;
/// The bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The most header bytes accepted before the blank line that ends them.
const HEAD_BYTES_MAX: usize = 64 * 1024;

/// Why one poll of a node failed; recorded for the node, never fatal to the run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    #[error("cannot resolve the address: {source}")]
    Resolve { source: io::Error },
    #[error("cannot connect: {source}")]
    Connect { source: io::Error },
    #[error("I/O error: {source}")]
    Io { source: io::Error },
    #[error("no complete answer within {:?}", EVENTS_REQUEST_TIME_MAX)]
    Timeout,
    #[error("the answer is larger than {} bytes", EVENTS_RESPONSE_BYTES_MAX)]
    TooLarge,
    #[error("malformed HTTP answer: {reason}")]
    Http { reason: String },
    #[error("HTTP status {status}{}", status_detail(*.status, .body))]
    Status { status: u16, body: String },
    #[error("malformed JSON: {source}")]
    Json { source: serde_json::Error },
}

/// What follows the status code in an error: the answer's body, or a hint for 404.
fn status_detail(status: u16, body: &str) -> String {
    match (status, body.is_empty()) {
        (_, false) => format!(": {body}"),
        (404, true) => format!(" (does this node serve {EVENTS_PATH}?)"),
        (_, true) => String::new(),
    }
}

fn malformed(reason: impl Into<String>) -> EventsError {
    EventsError::Http { reason: reason.into() }
}

/// One event of a node, as its `/debug/events` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// The node's number of the event; consecutive.
    pub sequence: u64,
    /// When it happened, in Unix time (microseconds), by the node's clock.
    pub unix_us: u64,
    /// What happened: `slow_sync`, `slow_append`, `segment_roll`, `snapshot`, ... (open ended).
    pub kind: String,
    /// The partition concerned, if any.
    #[serde(default)]
    pub partition: Option<u64>,
    /// How long it took, in microseconds (0 when it has no duration).
    #[serde(default)]
    pub micros: u64,
    /// More about it; often empty.
    #[serde(default)]
    pub detail: String,
}

/// One answer of `/debug/events`; fields not named here are ignored.
#[derive(Debug, Deserialize)]
pub(super) struct EventsAnswer {
    /// The sequence to ask from next time.
    pub(super) next_sequence: u64,
    /// The node's counters since it started.
    #[serde(default, deserialize_with = "integer_counters")]
    pub(super) counters: BTreeMap<String, u64>,
    #[serde(default)]
    pub(super) events: Vec<NodeEvent>,
}

/// Counters as a map of name to count; a value that is not a count is left out.
fn integer_counters<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, u64>, D::Error> {
    let values = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
    Ok(values
        .into_iter()
        .filter_map(|(name, value)| value.as_u64().map(|count| (name, count)))
        .take(COUNTERS_MAX)
        .collect())
}

/// Parses the JSON body of an answer.
pub(super) fn parse_answer(body: &[u8]) -> Result<EventsAnswer, EventsError> {
    serde_json::from_slice(body).map_err(|source| EventsError::Json { source })
}

/// What polling one node gave over a run.
#[derive(Debug, Default)]
pub(super) struct NodeRecord {
    /// The admin HTTP address, as given.
    pub(super) address: String,
    /// The first error, if any.
    pub(super) error: Option<String>,
    /// Events of the run that were never seen (see [`super::timeline::TimelineNode::dropped`]).
    pub(super) dropped: u64,
    /// How much each counter grew since the previous answer, with when (since the start of
    /// the run) the poll that saw it was sent.
    pub(super) deltas: Vec<(Duration, BTreeMap<String, u64>)>,
    /// The events received, oldest first.
    pub(super) events: Vec<NodeEvent>,
}

/// How much each counter of `current` grew since `previous`. A counter that went down (the
/// node restarted) grew by its whole current value; a new one too.
pub(super) fn counter_deltas(
    previous: &BTreeMap<String, u64>,
    current: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    current
        .iter()
        .map(|(name, &count)| {
            let before = previous.get(name).copied().unwrap_or(0);
            let delta = if count >= before { count - before } else { count };
            (name.clone(), delta)
        })
        .collect()
}

/// The polling state of one node.
pub(super) struct NodePoller {
    record: NodeRecord,
    token: Option<String>,
    /// The node's addresses, resolved once.
    resolved: Vec<SocketAddr>,
    /// The sequence to ask from; 0 until the first answer.
    next_sequence: u64,
    /// The counters of the last answer; `None` before the first, which is only a baseline.
    previous: Option<BTreeMap<String, u64>>,
}

impl NodePoller {
    pub(super) fn new(address: &str, token: Option<&str>) -> Self {
        NodePoller {
            record: NodeRecord { address: address.to_owned(), ..NodeRecord::default() },
            token: token.map(str::to_owned),
            resolved: Vec::new(),
            next_sequence: 0,
            previous: None,
        }
    }

    /// Asks the node once, `taken_at` after the start of the run, and records what it says.
    pub(super) fn poll(&mut self, taken_at: Duration) {
        match self.fetch() {
            Ok(answer) => self.absorb(taken_at, answer),
            Err(error) => self.fail(&error),
        }
    }

    fn fetch(&mut self) -> Result<EventsAnswer, EventsError> {
        if self.resolved.is_empty() {
            let resolved = self.record.address.to_socket_addrs();
            self.resolved = resolved.map_err(|source| EventsError::Resolve { source })?.collect();
        }
        let request =
            events_request(&self.record.address, self.token.as_deref(), self.next_sequence);
        let response = exchange(&self.resolved, request.as_bytes())?;
        parse_answer(response_body(&response)?)
    }

    /// Records one answer: the counter increases since the previous one (none for the first,
    /// a baseline) and the new events.
    pub(super) fn absorb(&mut self, taken_at: Duration, answer: EventsAnswer) {
        let since = self.next_sequence;
        let fresh: Vec<NodeEvent> =
            answer.events.into_iter().filter(|event| event.sequence >= since).collect();
        if let Some(previous) = &self.previous {
            self.record.deltas.push((taken_at, counter_deltas(previous, &answer.counters)));
            let skipped =
                answer.next_sequence.saturating_sub(since).saturating_sub(fresh.len() as u64);
            self.record.dropped = self.record.dropped.saturating_add(skipped);
        }
        for event in fresh {
            self.keep(event);
        }
        self.previous = Some(answer.counters);
        self.next_sequence = self.next_sequence.max(answer.next_sequence);
    }

    fn keep(&mut self, mut event: NodeEvent) {
        if self.record.events.len() >= EVENTS_PER_NODE_MAX {
            self.record.dropped = self.record.dropped.saturating_add(1);
            return;
        }
        truncate_chars(&mut event.kind, EVENT_KIND_CHARS_MAX);
        truncate_chars(&mut event.detail, EVENT_DETAIL_CHARS_MAX);
        self.record.events.push(event);
    }

    /// Records the node's first error, and says it on stderr once.
    fn fail(&mut self, error: &EventsError) {
        if self.record.error.is_none() {
            eprintln!(
                "strata bench: --events-from {}: {error} (polling goes on)",
                self.record.address
            );
            self.record.error = Some(error.to_string());
        }
    }

    pub(super) fn into_record(self) -> NodeRecord {
        self.record
    }
}

fn truncate_chars(text: &mut String, chars_max: usize) {
    if let Some((cut, _)) = text.char_indices().nth(chars_max) {
        text.truncate(cut);
    }
}

/// The request for events from `since` on.
pub(super) fn events_request(address: &str, token: Option<&str>, since: u64) -> String {
    let mut request = format!(
        "GET {EVENTS_PATH}?since={since} HTTP/1.1\r\nHost: {address}\r\n\
         Accept: application/json\r\nConnection: close\r\n"
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Connects to the first of `addresses` that answers, sends `request`, and reads the answer.
fn exchange(addresses: &[SocketAddr], request: &[u8]) -> Result<Vec<u8>, EventsError> {
    let deadline = Instant::now() + EVENTS_REQUEST_TIME_MAX;
    let mut stream = connect(addresses)?;
    let io = |source| EventsError::Io { source };
    stream.set_write_timeout(Some(EVENTS_TIMEOUT)).map_err(io)?;
    stream.write_all(request).map_err(|source| timeout_or(source, io))?;
    read_response(&mut stream, deadline)
}

fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, EventsError> {
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for address in addresses {
        match TcpStream::connect_timeout(address, EVENTS_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = error,
        }
    }
    Err(EventsError::Connect { source: last_error })
}

fn timeout_or(source: io::Error, other: impl Fn(io::Error) -> EventsError) -> EventsError {
    match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => EventsError::Timeout,
        _ => other(source),
    }
}

/// Reads until the body is complete (`Content-Length` bytes) or the node closes, within
/// `deadline` and [`EVENTS_RESPONSE_BYTES_MAX`].
fn read_response(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, EventsError> {
    let mut response = Vec::new();
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    while !is_complete(&response) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(EventsError::Timeout);
        }
        let timeout = Some(remaining.min(EVENTS_TIMEOUT));
        stream.set_read_timeout(timeout).map_err(|source| EventsError::Io { source })?;
        let read = match stream.read(&mut chunk) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(timeout_or(error, |source| EventsError::Io { source })),
        };
        if read == 0 {
            break;
        }
        if response.len() + read > EVENTS_RESPONSE_BYTES_MAX {
            return Err(EventsError::TooLarge);
        }
        response.extend_from_slice(&chunk[..read]);
    }
    Ok(response)
}

/// Whether `response` holds the whole answer by its `Content-Length`. Without one (or with a
/// head that does not parse) the answer ends when the node closes.
fn is_complete(response: &[u8]) -> bool {
    let Some(body_start) = head_end(response) else { return false };
    match parse_head(&response[..body_start]) {
        Ok(Head { content_length: Some(length), .. }) => response.len() - body_start >= length,
        _ => false,
    }
}

/// The index just after the blank line that ends the head, if it has arrived.
fn head_end(response: &[u8]) -> Option<usize> {
    response.windows(4).position(|window| window == b"\r\n\r\n").map(|position| position + 4)
}

/// The status line and headers of an answer, as far as they matter here.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<usize>,
}

fn parse_head(head: &[u8]) -> Result<Head, EventsError> {
    let head = std::str::from_utf8(head).map_err(|_| malformed("the head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let mut content_length = None;
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) =
            line.split_once(':').ok_or_else(|| malformed(format!("header line {line:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<usize>()
                .map_err(|_| malformed(format!("Content-Length {value:?}")))?;
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err(malformed(format!("Transfer-Encoding {value} is not supported")));
        }
    }
    Ok(Head { status, content_length })
}

/// The status code of `HTTP/1.x <code> <reason>`.
fn parse_status_line(line: &str) -> Result<u16, EventsError> {
    let mut words = line.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    let code = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(malformed(format!("status line {line:?}")));
    }
    code.parse().map_err(|_| malformed(format!("status line {line:?}")))
}

/// The body of a complete answer, which must have status 200.
pub(super) fn response_body(response: &[u8]) -> Result<&[u8], EventsError> {
    let Some(body_start) = head_end(response) else {
        if response.is_empty() {
            return Err(malformed("the node closed without answering"));
        }
        if response.len() > HEAD_BYTES_MAX {
            return Err(malformed(format!("no end of the headers in {HEAD_BYTES_MAX} bytes")));
        }
        return Err(malformed("the answer ended within its headers"));
    };
    let head = parse_head(&response[..body_start])?;
    let mut body = &response[body_start..];
    if let Some(length) = head.content_length {
        if body.len() < length {
            return Err(malformed(format!(
                "the body ended after {} of {length} bytes",
                body.len()
            )));
        }
        body = &body[..length];
    }
    if head.status != 200 {
        let mut text = String::from_utf8_lossy(body).trim().to_owned();
        truncate_chars(&mut text, ERROR_BODY_CHARS_MAX);
        return Err(EventsError::Status { status: head.status, body: text });
    }
    Ok(body)
}

/// The pollers of a run, one thread per node.
pub(super) struct Pollers {
    /// Dropped to stop the pollers.
    stops: Vec<mpsc::Sender<()>>,
    /// Each node's address and its thread, or the error starting it.
    threads: Vec<(String, io::Result<thread::JoinHandle<NodeRecord>>)>,
}

/// Starts polling every node of `addresses`: at once, then every [`EVENTS_POLL_INTERVAL`]
/// until [`Pollers::finish`] or `deadline`, whichever comes first.
pub(super) fn start_pollers(
    addresses: &[String],
    token: Option<&str>,
    start: Instant,
    deadline: Instant,
) -> Pollers {
    let mut pollers = Pollers { stops: Vec::new(), threads: Vec::new() };
    for (index, address) in addresses.iter().enumerate() {
        let (stop, stopped) = mpsc::channel();
        let poller = NodePoller::new(address, token);
        let spawned = thread::Builder::new()
            .name(format!("load-events-{index}"))
            .spawn(move || poll_until_stopped(poller, start, deadline, &stopped));
        pollers.stops.push(stop);
        pollers.threads.push((address.clone(), spawned));
    }
    pollers
}

impl Pollers {
    /// Stops the pollers (each polls one last time) and returns what each node gave, in the
    /// order of the addresses.
    pub(super) fn finish(self) -> Vec<NodeRecord> {
        drop(self.stops);
        self.threads
            .into_iter()
            .map(|(address, thread)| {
                let error = match thread.map(thread::JoinHandle::join) {
                    Ok(Ok(record)) => return record,
                    Ok(Err(_)) => "the polling thread panicked".to_owned(),
                    Err(error) => format!("cannot start the polling thread: {error}"),
                };
                NodeRecord { address, error: Some(error), ..NodeRecord::default() }
            })
            .collect()
    }
}

/// Polls at `start`, then in the middle of every interval, until `stopped` disconnects or
/// `deadline` passes; then once more.
fn poll_until_stopped(
    mut poller: NodePoller,
    start: Instant,
    deadline: Instant,
    stopped: &mpsc::Receiver<()>,
) -> NodeRecord {
    poller.poll(start.elapsed());
    let mut tick: u32 = 0;
    loop {
        let due = start + EVENTS_POLL_INTERVAL * tick + EVENTS_POLL_INTERVAL / 2;
        if due > deadline {
            break;
        }
        match stopped.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Err(mpsc::RecvTimeoutError::Timeout) => poller.poll(start.elapsed()),
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // A slow answer skips the ticks it overran rather than polling in a burst.
        let elapsed_ticks = start.elapsed().as_millis() / EVENTS_POLL_INTERVAL.as_millis();
        tick = (tick + 1).max(u32::try_from(elapsed_ticks).unwrap_or(u32::MAX));
    }
    poller.poll(start.elapsed());
    poller.into_record()
}
