//! Tests of `--timeline` and `--events-from` that need no RESP server: intervals, merging,
//! stalls, the HTTP and JSON of `/debug/events` (against canned answers on loopback), counter
//! deltas, and the report's text and JSON forms.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::connection::ThreadStats;
use super::events::{self, counter_deltas, parse_answer, response_body, NodePoller, NodeRecord};
use super::timeline::{self, find_stalls, interval_index, stall_window, ThreadTimeline};
use super::*;

const MS: Duration = Duration::from_millis(1);
/// The run's start in Unix time in the tests that place events.
const START_UNIX_US: u64 = 1_765_000_000_000_000;
/// How long the canned servers wait for a request.
const SERVER_TIMEOUT: Duration = Duration::from_secs(5);

fn close_to(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= expected.abs() * 0.02 + 1e-9
}

#[test]
fn a_reply_counts_in_the_interval_it_arrived_in() {
    assert_eq!(interval_index(Duration::ZERO), 0);
    assert_eq!(interval_index(99 * MS), 0);
    assert_eq!(interval_index(100 * MS), 1);
    assert_eq!(interval_index(250 * MS), 2);
    assert_eq!(
        interval_index(Duration::from_secs(TIMELINE_SECONDS_MAX)),
        TIMELINE_INTERVALS_MAX - 1
    );
    assert_eq!(interval_index(Duration::from_secs(u64::MAX)), TIMELINE_INTERVALS_MAX - 1);

    let start = Instant::now();
    let mut timeline = ThreadTimeline::new(start);
    timeline.record(start + 250 * MS, 1_500);
    let intervals = timeline.intervals();
    assert_eq!(intervals.len(), 3);
    assert_eq!(intervals[2].len(), 1);
    assert!(intervals[..2].iter().all(hdrhistogram::Histogram::is_empty));
    // Latency beyond the bound counts as the bound, as in the run's histogram.
    timeline.record(start + 250 * MS, u64::MAX);
    assert!(timeline.intervals()[2].max() >= LATENCY_US_MAX * 99 / 100);
}

#[test]
fn replies_are_recorded_at_receive_time_and_merged_across_threads() {
    let start = Instant::now();
    let mut first = ThreadStats::with_timeline(start);
    let mut second = ThreadStats::with_timeline(start);
    first.record_reply(start, start + 50 * MS, None);
    // Sent in interval 0, received in interval 1: it counts in 1.
    second.record_reply(start + 90 * MS, start + 120 * MS, None);
    second.record_reply(start + 10 * MS, start + 30 * MS, Some("ERR x".to_owned()));
    second.record_reply(start + 400 * MS, start + 450 * MS, None);
    let without = ThreadStats::new();

    let mut total = ThreadStats::new();
    for stats in [&without, &first, &second] {
        total.merge(stats);
    }
    assert_eq!(total.requests, 4);
    let merged = total.timeline.as_ref().expect("a merged timeline");
    let counts: Vec<u64> = merged.intervals().iter().map(hdrhistogram::Histogram::len).collect();
    assert_eq!(counts, [2, 1, 0, 0, 1]);

    let built = timeline::build(Some(merged), Vec::new(), 460 * MS, START_UNIX_US, 50.0);
    let replies: Vec<u64> = built.intervals.iter().map(|interval| interval.replies).collect();
    assert_eq!(replies, [2, 1, 0, 0, 1]);
    assert_eq!(built.intervals[2].start_ms, 200);
    assert!(close_to(built.intervals[0].max, 50.0), "{:?}", built.intervals[0]);
    assert!(close_to(built.intervals[0].p50, 20.0), "{:?}", built.intervals[0]);
    assert!(close_to(built.intervals[1].p99, 30.0), "{:?}", built.intervals[1]);
    assert_eq!(built.intervals[3].max, 0.0);
    assert_eq!(built.interval_ms, 100);
    assert_eq!(built.start_unix_us, START_UNIX_US);
    assert!(built.nodes.is_empty() && built.intervals[0].nodes.is_empty());

    // The timeline covers the whole run, also its quiet end, and always one interval.
    let longer = timeline::build(Some(merged), Vec::new(), Duration::from_secs(1), 0, 50.0);
    assert_eq!(longer.intervals.len(), 10);
    let empty = timeline::build(None, Vec::new(), Duration::ZERO, 0, 0.0);
    assert_eq!(empty.intervals.len(), 1);
    assert_eq!(empty.intervals[0].replies, 0);
}

fn interval(p99: f64, max: f64, replies: u64) -> TimelineInterval {
    TimelineInterval { start_ms: 0, replies, p50: p99 / 2.0, p99, max, nodes: Vec::new() }
}

#[test]
fn stalls_are_intervals_far_above_the_run_p99() {
    let intervals = [
        interval(1.0, 1.5, 10),
        interval(2.5, 2.6, 10),  // p99 above 2x
        interval(1.0, 3.5, 10),  // max above 3x
        interval(2.0, 3.0, 10),  // exactly at both bounds: not a stall
        interval(0.0, 0.0, 0),   // no replies
        interval(50.0, 60.0, 1), // one very slow reply
    ];
    assert_eq!(find_stalls(&intervals, 1.0), [1, 2, 5]);
    assert!(find_stalls(&intervals, 0.0).is_empty());
    assert!(find_stalls(&intervals, f64::NAN).is_empty());
    assert!(find_stalls(&intervals, 100.0).is_empty());
}

#[test]
fn a_stall_looks_back_as_far_as_its_slowest_request() {
    let mut intervals: Vec<TimelineInterval> = (0..30).map(|_| interval(1.0, 1.0, 1)).collect();
    intervals[2].max = 3.5;
    intervals[20].max = 450.0;
    intervals[25].max = 5_000.0;
    assert_eq!(stall_window(&intervals, 2), 1..3);
    assert_eq!(stall_window(&intervals, 20), 15..21);
    assert_eq!(stall_window(&intervals, 25), 15..26);
    assert_eq!(stall_window(&intervals, 0), 0..1);
}

#[test]
fn http_answers_give_their_body_by_content_length_or_to_the_close() {
    let with_length = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                        content-length: 2\r\n\r\n{}ignored";
    assert_eq!(response_body(with_length).expect("a body"), b"{}");
    let upper_case = b"HTTP/1.0 200 OK\r\nCONTENT-LENGTH:  3 \r\n\r\n[1]";
    assert_eq!(response_body(upper_case).expect("a body"), b"[1]");
    let to_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"a\": 1}\n";
    assert_eq!(response_body(to_close).expect("a body"), b"{\"a\": 1}\n");
    let empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(response_body(empty).expect("an empty body"), b"");
}

fn http_error(response: &[u8]) -> String {
    match response_body(response) {
        Err(error @ EventsError::Http { .. }) => error.to_string(),
        other => panic!("expected a malformed answer, got {other:?}"),
    }
}

#[test]
fn malformed_or_failed_http_answers_are_errors() {
    let unauthorized = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\n\r\nmissing token";
    match response_body(unauthorized) {
        Err(EventsError::Status { status: 401, body }) => assert_eq!(body, "missing token"),
        other => panic!("expected status 401, got {other:?}"),
    }
    let not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
    let error = response_body(not_found).expect_err("not found");
    assert!(matches!(error, EventsError::Status { status: 404, .. }), "{error:?}");
    assert_eq!(error.to_string(), "HTTP status 404 (does this node serve /debug/events?)");
    let failed = b"HTTP/1.1 500 Internal Server Error\r\n\r\n";
    assert_eq!(response_body(failed).expect_err("failed").to_string(), "HTTP status 500");

    let short = http_error(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    assert!(short.contains("3 of 10"), "{short}");
    let chunked =
        http_error(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
    assert!(chunked.contains("chunked"), "{chunked}");
    let length = http_error(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n{}");
    assert!(length.contains("Content-Length"), "{length}");
    for status_line in ["HTTX/1.1 200 OK", "HTTP/1.1 2000 OK", "HTTP/1.1", "HTTP/1.1 2x0 OK", ""] {
        let answer = format!("{status_line}\r\n\r\n{{}}");
        let error = http_error(answer.as_bytes());
        assert!(error.contains("status line"), "{status_line:?}: {error}");
    }
    assert!(http_error(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n{}").contains("header line"));
    assert!(http_error(b"HTTP/1.1 200 OK\r\nContent-Le").contains("within its headers"));
    assert!(http_error(b"").contains("closed without answering"));
    assert!(http_error(b"HTTP/1.1 200 \xff\r\n\r\n").contains("UTF-8"));
}

const SAMPLE_ANSWER: &str = r#"{"now_unix_us": 1765000000000000,
 "next_sequence": 57,
 "dropped": 0,
 "counters": {"commands_processed": 123, "frames_written": 45, "syncs": 40, "fdatasyncs": 38,
              "snapshots_written": 1, "wal_bytes_written": 999},
 "events": [{"sequence": 56, "unix_us": 1765000000000000, "kind": "slow_sync",
             "partition": 3, "micros": 4500, "detail": ""}]}"#;

#[test]
fn event_answers_parse_and_tolerate_unknown_fields() {
    let answer = parse_answer(SAMPLE_ANSWER.as_bytes()).expect("the documented answer");
    assert_eq!(answer.next_sequence, 57);
    assert_eq!(answer.counters.len(), 6);
    assert_eq!(answer.counters["frames_written"], 45);
    let expected = NodeEvent {
        sequence: 56,
        unix_us: 1_765_000_000_000_000,
        kind: "slow_sync".to_owned(),
        partition: Some(3),
        micros: 4_500,
        detail: String::new(),
    };
    assert_eq!(answer.events, [expected]);

    let grown = r#"{"next_sequence": 3, "version": 2, "shards": [1, 2],
        "counters": {"syncs": 1, "new_counter": 7, "ratio": 0.5, "label": "x", "negative": -1},
        "events": [{"sequence": 1, "unix_us": 5, "kind": "replica_connected", "partition": null,
                    "peer": "10.0.0.2"},
                   {"sequence": 2, "unix_us": 6, "kind": "a_new_kind", "micros": 10,
                    "detail": "more", "extra": {"nested": true}}]}"#;
    let answer = parse_answer(grown.as_bytes()).expect("unknown fields are ignored");
    let names: Vec<&str> = answer.counters.keys().map(String::as_str).collect();
    assert_eq!(names, ["new_counter", "syncs"], "values that are not counts are left out");
    assert_eq!(answer.events[0].partition, None);
    assert_eq!(answer.events[0].micros, 0);
    assert_eq!(answer.events[0].detail, "");
    assert_eq!(answer.events[1].kind, "a_new_kind");
    let minimal = parse_answer(br#"{"next_sequence": 0}"#).expect("counters and events optional");
    assert!(minimal.counters.is_empty() && minimal.events.is_empty());

    let broken: [&[u8]; 6] = [
        b"",
        b"not json",
        br#"{"counters": {}}"#,
        br#"{"next_sequence": -1}"#,
        br#"{"next_sequence": 1, "events": "none"}"#,
        br#"{"next_sequence": 1, "events": [{"sequence": 1}]}"#,
    ];
    for body in broken {
        let result = parse_answer(body);
        assert!(matches!(result, Err(EventsError::Json { .. })), "{body:?}: {result:?}");
    }
}

fn counters(pairs: &[(&str, u64)]) -> std::collections::BTreeMap<String, u64> {
    pairs.iter().map(|&(name, count)| (name.to_owned(), count)).collect()
}

#[test]
fn counter_deltas_are_growth_since_the_previous_answer() {
    let previous = counters(&[("frames_written", 100), ("syncs", 50), ("gone", 3)]);
    let current = counters(&[("frames_written", 130), ("syncs", 20), ("new", 4)]);
    let deltas = counter_deltas(&previous, &current);
    // `syncs` went down: the node restarted, and everything it counted since is new.
    assert_eq!(deltas, counters(&[("frames_written", 30), ("new", 4), ("syncs", 20)]));
}

fn answer_json(next_sequence: u64, frames: u64, syncs: u64, events: &[(u64, i64)]) -> String {
    let events: Vec<String> = events
        .iter()
        .map(|&(sequence, offset_ms)| {
            let unix_us = START_UNIX_US.saturating_add_signed(offset_ms * 1000);
            format!(
                r#"{{"sequence": {sequence}, "unix_us": {unix_us}, "kind": "slow_sync",
                    "partition": {sequence}, "micros": 4500, "detail": ""}}"#
            )
        })
        .collect();
    format!(
        r#"{{"next_sequence": {next_sequence}, "dropped": 0,
            "counters": {{"frames_written": {frames}, "syncs": {syncs}}},
            "events": [{}]}}"#,
        events.join(",")
    )
}

fn absorb(poller: &mut NodePoller, taken_at: Duration, json: &str) {
    poller.absorb(taken_at, parse_answer(json.as_bytes()).expect("valid JSON"));
}

#[test]
fn counter_deltas_and_events_land_in_their_intervals() {
    let mut poller = NodePoller::new("127.0.0.1:9", None);
    // The baseline: counters since the node started, and an event from before the run.
    absorb(&mut poller, Duration::ZERO, &answer_json(5, 100, 50, &[(3, -1_000), (4, 10)]));
    // Sequences 5 and 6 were skipped: the node no longer had them.
    absorb(&mut poller, 150 * MS, &answer_json(9, 130, 60, &[(7, 250), (8, 10_000)]));
    absorb(&mut poller, 160 * MS, &answer_json(9, 135, 61, &[]));
    absorb(&mut poller, 50 * MS, &answer_json(10, 136, 62, &[(7, 20), (9, 20)]));
    let record = poller.into_record();
    assert_eq!(record.deltas.len(), 3);
    assert_eq!(record.dropped, 2);
    let sequences: Vec<u64> = record.events.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, [3, 4, 7, 8, 9], "an event seen before is not taken again");

    let timeline = timeline::build(None, vec![record], 300 * MS, START_UNIX_US, 1.0);
    assert_eq!(timeline.intervals.len(), 3);
    let node = |index: usize| &timeline.intervals[index].nodes[0];
    assert_eq!(node(0).counters, counters(&[("frames_written", 1), ("syncs", 1)]));
    assert_eq!(node(1).counters, counters(&[("frames_written", 35), ("syncs", 11)]));
    assert!(node(2).counters.is_empty());
    let placed = |index: usize| -> Vec<u64> {
        node(index).events.iter().map(|event| event.sequence).collect()
    };
    // Event 3 came before the start; 8 after the last interval, so it counts in the last one.
    assert_eq!(placed(0), vec![4, 9]);
    assert_eq!(placed(1), Vec::<u64>::new());
    assert_eq!(placed(2), vec![7, 8]);
    assert_eq!(timeline.nodes[0].dropped, 2);
    assert_eq!(timeline.nodes[0].events_error, None);
}

/// A loopback server that answers each connection with `answer(request, index)`, after reading
/// the request's head, until `stop` is set (checked between connections).
struct CannedServer {
    address: String,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Vec<String>>>,
}

impl CannedServer {
    fn start(answer: impl Fn(&str, usize) -> Vec<u8> + Send + 'static) -> CannedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        listener.set_nonblocking(true).expect("non-blocking accept");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut requests = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let request = read_request(&stream);
                        let mut stream = stream;
                        let _ = stream.write_all(&answer(&request, requests.len()));
                        requests.push(request);
                    }
                    Err(_) => thread::sleep(MS),
                }
            }
            requests
        });
        CannedServer { address, stop, thread: Some(thread) }
    }

    /// Stops the server; the requests it read, in order.
    fn requests(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("running").join().expect("the server thread")
    }
}

impl Drop for CannedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(stream: &TcpStream) -> String {
    stream.set_nonblocking(false).expect("blocking");
    stream.set_read_timeout(Some(SERVER_TIMEOUT)).expect("timeout");
    let mut request = Vec::new();
    let mut byte = [0];
    let mut reader = stream;
    while !request.ends_with(b"\r\n\r\n") {
        match reader.read(&mut byte) {
            Ok(1) => request.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&request).into_owned()
}

fn with_content_length(body: &str) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body.as_bytes()].concat()
}

#[test]
fn the_poller_asks_from_the_next_sequence_and_reads_both_kinds_of_answers() {
    let server = CannedServer::start(|_, index| match index {
        0 => with_content_length(SAMPLE_ANSWER),
        // No Content-Length: the body ends when the server closes.
        _ => format!("HTTP/1.1 200 OK\r\n\r\n{}", answer_json(60, 52, 44, &[(57, 20)])).into(),
    });
    let mut poller = NodePoller::new(&server.address, Some("secret"));
    poller.poll(Duration::ZERO);
    poller.poll(120 * MS);
    let record_after_two = (poller.into_record(), server.address.clone());
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].starts_with("GET /debug/events?since=0 HTTP/1.1\r\n"), "{}", requests[0]);
    assert!(requests[1].starts_with("GET /debug/events?since=57 HTTP/1.1\r\n"), "{}", requests[1]);
    let (record, address) = record_after_two;
    for header in [&format!("Host: {address}"), "Connection: close", "Authorization: Bearer secret"]
    {
        assert!(requests[0].contains(&format!("{header}\r\n")), "{header}: {}", requests[0]);
    }
    assert_eq!(record.error, None);
    assert_eq!(record.deltas, vec![(120 * MS, counters(&[("frames_written", 7), ("syncs", 4)]))]);
    let sequences: Vec<u64> = record.events.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, [56, 57]);
    assert_eq!(record.dropped, 2, "58 and 59 were never seen");
}

#[test]
fn a_node_that_answers_badly_gets_its_first_error_recorded() {
    let server = CannedServer::start(|_, index| match index {
        0 => with_content_length("{not json"),
        1 => b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nwho?".to_vec(),
        2 => with_content_length(&"x".repeat(16)),
        _ => with_content_length(SAMPLE_ANSWER),
    });
    let mut poller = NodePoller::new(&server.address, None);
    for index in 0..4 {
        poller.poll(index * 100 * MS);
    }
    let record = poller.into_record();
    assert_eq!(server.requests().len(), 4);
    let error = record.error.expect("the first error");
    assert!(error.starts_with("malformed JSON"), "{error}");
    assert_eq!(record.events.len(), 1, "the answer after the errors still counts");
    assert!(record.deltas.is_empty(), "its first good answer is the baseline");

    let mut poller = NodePoller::new(&server_gone_address(), None);
    poller.poll(Duration::ZERO);
    poller.poll(100 * MS);
    let error = poller.into_record().error.expect("an error");
    assert!(error.starts_with("cannot connect"), "{error}");
    let mut poller = NodePoller::new("no such host:80", None);
    poller.poll(Duration::ZERO);
    assert!(poller.into_record().error.expect("an error").starts_with("cannot resolve"));
}

/// A loopback address where nothing listens.
fn server_gone_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    drop(listener);
    address
}

#[test]
fn pollers_poll_every_interval_until_finished_and_never_fail_the_run() {
    let server = CannedServer::start(|request, index| {
        let index = index as u64;
        let since = request.contains("since=0 ");
        let events: &[(u64, i64)] = if since { &[] } else { &[(index, 0)] };
        with_content_length(&answer_json(index + 1, 10 * index, 5 * index, events))
    });
    let nodes = [server.address.clone(), server_gone_address()];
    let start = Instant::now();
    let pollers = events::start_pollers(&nodes, None, start, start + Duration::from_secs(10));
    thread::sleep(350 * MS);
    let finishing = Instant::now();
    let records: Vec<NodeRecord> = pollers.finish();
    assert!(finishing.elapsed() < Duration::from_secs(3), "finish stops the pollers promptly");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].address, nodes[0]);
    assert_eq!(records[0].error, None);
    // Polls at 0, 50, 150, 250 ms and after the end; a busy machine may delay some.
    assert!(records[0].deltas.len() >= 2, "{:?}", records[0].deltas);
    let first_delta = &records[0].deltas[0].1;
    assert_eq!(first_delta, &counters(&[("frames_written", 10), ("syncs", 5)]));
    assert!(records[1].error.as_deref().is_some_and(|error| error.starts_with("cannot connect")));
    assert!(records[1].deltas.is_empty());

    // A deadline already passed: a baseline and one last poll only.
    let start = Instant::now();
    let pollers = events::start_pollers(&nodes[..1], None, start, start);
    thread::sleep(300 * MS);
    assert_eq!(pollers.finish()[0].deltas.len(), 1);
    assert!(server.requests().len() >= 5);
}

fn timeline_with_a_node() -> Timeline {
    let start = Instant::now();
    let mut latency = ThreadTimeline::new(start);
    for offset_ms in 0..300 {
        latency.record(start + offset_ms * MS, 1_000);
    }
    latency.record(start + 250 * MS, 40_000);
    let mut poller = NodePoller::new("127.0.0.1:9", None);
    absorb(&mut poller, Duration::ZERO, &answer_json(1, 0, 0, &[]));
    absorb(&mut poller, 50 * MS, &answer_json(1, 40, 38, &[]));
    let snapshot = format!(
        r#"{{"next_sequence": 3, "counters": {{"frames_written": 41, "syncs": 39}}, "events": [
            {{"sequence": 1, "unix_us": {}, "kind": "slow_sync", "partition": 3, "micros": 4500}},
            {{"sequence": 2, "unix_us": {}, "kind": "snapshot", "partition": null,
              "micros": 12100}}]}}"#,
        START_UNIX_US + 150_000,
        START_UNIX_US + 260_000,
    );
    absorb(&mut poller, 250 * MS, &snapshot);
    let nodes = vec![
        poller.into_record(),
        NodeRecord {
            address: "127.0.0.1:10".to_owned(),
            error: Some("cannot connect: refused".to_owned()),
            ..NodeRecord::default()
        },
    ];
    timeline::build(Some(&latency), nodes, 300 * MS, START_UNIX_US, 1.0)
}

#[test]
fn the_text_timeline_has_a_line_per_interval_the_nodes_and_the_stalls() {
    let timeline = timeline_with_a_node();
    assert_eq!(timeline.stalls, [2]);
    let text = timeline.to_text(1.0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "timeline     100 ms intervals");
    assert_eq!(
        lines[1],
        "nodes        n0=127.0.0.1:9  n1=127.0.0.1:10 (error: cannot connect: refused)"
    );
    assert_eq!(
        lines[2],
        concat!(
            "  t(s)   replies   p50 ms   p99 ms   max ms",
            "   n0 rounds/syncs/wait   n1 rounds/syncs/wait   events"
        )
    );
    // Two significant digits: 1 ms reads as the top of its bucket.
    let one_ms = timeline.intervals[0].p50;
    assert!(close_to(one_ms, 1.0), "{one_ms}");
    let expected =
        format!("   0.0       100{one_ms:>9.3}{one_ms:>9.3}{one_ms:>9.3}                40/38/-");
    assert_eq!(lines[3], format!("{expected}                      -"));
    assert!(lines[4].ends_with("   n0 slow_sync p3 4.5ms"), "{:?}", lines[4]);
    assert!(lines[5].starts_with("   0.2       101"), "{:?}", lines[5]);
    assert!(lines[5].contains("                 1/1/-"), "{:?}", lines[5]);
    assert!(lines[5].ends_with("   n0 snapshot 12.1ms"), "{:?}", lines[5]);
    assert!(
        lines[6].starts_with("stalls       1 intervals with p99 above 2.000 ms"),
        "{}",
        lines[6]
    );
    let slowest = timeline.intervals[2].max;
    assert!(close_to(slowest, 40.0), "{slowest}");
    assert_eq!(
        lines[7],
        format!(
            "   0.2 s  replies 101  p99 {one_ms:.3} ms  max {slowest:.3} ms: \
             n0 slow_sync p3 4.5ms at 0.1 s, n0 snapshot 12.1ms at 0.2 s"
        )
    );
    assert_eq!(lines.len(), 8);

    let quiet = timeline::build(None, Vec::new(), 100 * MS, 0, 1.0);
    let text = quiet.to_text(1.0);
    assert!(text.contains("\n  t(s)   replies   p50 ms   p99 ms   max ms\n"), "{text}");
    assert!(text.contains("\n   0.0         0        -        -        -\n"), "{text}");
    assert!(text.contains("\nstalls       none"), "{text}");
}

#[test]
fn the_json_report_carries_the_timeline_only_when_asked() {
    let mut stats = ThreadStats::new();
    stats.record_reply(Instant::now(), Instant::now(), None);
    let mut report = LoadReport::new(&LoadOptions::default(), &stats, Duration::from_secs(1));
    let without: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert!(without.get("timeline").is_none());

    report.timeline = Some(timeline_with_a_node());
    let value: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert_eq!(value["requests"], 1, "the other fields stay");
    let timeline = value["timeline"].as_object().expect("a timeline object");
    let keys = |object: &serde_json::Map<String, serde_json::Value>| {
        let mut keys: Vec<String> = object.keys().cloned().collect();
        keys.sort_unstable();
        keys
    };
    assert_eq!(keys(timeline), ["interval_ms", "intervals", "nodes", "stalls", "start_unix_us"]);
    assert_eq!(timeline["interval_ms"], 100);
    assert_eq!(timeline["stalls"], serde_json::json!([2]));
    let interval = timeline["intervals"][2].as_object().expect("an interval");
    assert_eq!(keys(interval), ["max", "nodes", "p50", "p99", "replies", "start_ms"]);
    assert_eq!(interval["start_ms"], 200);
    assert_eq!(interval["replies"], 101);
    let node = &interval["nodes"][0];
    assert_eq!(node["counters"], serde_json::json!({"frames_written": 1, "syncs": 1}));
    assert_eq!(node["events"][0]["kind"], "snapshot");
    assert_eq!(node["events"][0]["partition"], serde_json::Value::Null);
    assert_eq!(interval["nodes"][1], serde_json::json!({"counters": {}, "events": []}));
    let nodes = &timeline["nodes"];
    assert_eq!(
        nodes[0],
        serde_json::json!({"address": "127.0.0.1:9", "events_error": null, "dropped": 0})
    );
    assert_eq!(nodes[1]["events_error"], "cannot connect: refused");
}

#[test]
fn a_nodes_column_shows_its_rounds_syncs_and_mean_wait_for_followers() {
    let counters = |pairs: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), *value)).collect()
    };
    let leader = counters(&[
        ("frames_written", 12),
        ("syncs", 10),
        ("replication_waits", 4),
        ("replication_wait_us", 6000),
    ]);
    assert_eq!(timeline::node_rounds(&leader), "12/10/1.5");
    let follower = counters(&[("frames_written", 12), ("syncs", 10), ("replication_waits", 0)]);
    assert_eq!(timeline::node_rounds(&follower), "12/10/-");
    assert_eq!(timeline::node_rounds(&counters(&[])), "-");
}
