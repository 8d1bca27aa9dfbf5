//! Tests that need no server: options, budget, report shape, and a refused connection.

use std::sync::atomic::{AtomicBool, AtomicU64};

use clap::Parser;

use super::connection::ThreadStats;
use super::*;

#[derive(Parser, Debug)]
struct Command {
    #[command(flatten)]
    options: LoadOptions,
}

fn parse(arguments: &[&str]) -> LoadOptions {
    let arguments = std::iter::once("bench").chain(arguments.iter().copied());
    Command::try_parse_from(arguments).expect("arguments parse").options
}

#[test]
fn command_line_defaults_match_default() {
    assert_eq!(parse(&[]), LoadOptions::default());
    LoadOptions::default().validate().expect("defaults are valid");
}

#[test]
fn command_line_flags_set_every_option() {
    let arguments = "--host localhost --port 6379 --connections 8 --pipeline 16 --value-bytes 32 \
                     --keyspace 10 --read-ratio 0.25 --duration-seconds 1.5 --requests 1000 \
                     --threads 2 --seed 7 --after-batch PING -a secret --timeline \
                     --events-from 127.0.0.1:23827 --events-from node-b:23828 \
                     --admin-token token --json --quiet";
    let options = parse(&arguments.split_whitespace().collect::<Vec<_>>());
    let expected = LoadOptions {
        host: "localhost".to_owned(),
        port: 6379,
        connections: 8,
        pipeline: 16,
        value_bytes: 32,
        keyspace: 10,
        read_ratio: 0.25,
        duration_seconds: 1.5,
        requests: Some(1000),
        threads: 2,
        seed: Some(7),
        after_batch: Some("PING".to_owned()),
        password: Some("secret".to_owned()),
        timeline: true,
        events_from: vec!["127.0.0.1:23827".to_owned(), "node-b:23828".to_owned()],
        admin_token: Some("token".to_owned()),
        json: true,
        quiet: true,
    };
    assert_eq!(options, expected);
    options.validate().expect("valid");
}

fn rejected_option(options: &LoadOptions) -> &'static str {
    match options.validate() {
        Err(LoadError::InvalidOption { option, .. }) => option,
        other => panic!("expected an invalid option, got {other:?}"),
    }
}

#[test]
fn validation_rejects_out_of_range_options() {
    let base = LoadOptions::default();
    let node = "127.0.0.1:23827".to_owned();
    let cases: Vec<(LoadOptions, &str)> = vec![
        (LoadOptions { connections: 0, ..base.clone() }, "connections"),
        (LoadOptions { connections: CONNECTIONS_MAX + 1, ..base.clone() }, "connections"),
        (LoadOptions { pipeline: 0, ..base.clone() }, "pipeline"),
        (LoadOptions { pipeline: PIPELINE_MAX + 1, ..base.clone() }, "pipeline"),
        (LoadOptions { threads: 0, ..base.clone() }, "threads"),
        (LoadOptions { threads: 3, connections: 2, ..base.clone() }, "threads"),
        (LoadOptions { value_bytes: 0, ..base.clone() }, "value-bytes"),
        (LoadOptions { value_bytes: VALUE_BYTES_MAX + 1, ..base.clone() }, "value-bytes"),
        (LoadOptions { keyspace: 0, ..base.clone() }, "keyspace"),
        (LoadOptions { requests: Some(0), ..base.clone() }, "requests"),
        (LoadOptions { read_ratio: -0.1, ..base.clone() }, "read-ratio"),
        (LoadOptions { read_ratio: 1.1, ..base.clone() }, "read-ratio"),
        (LoadOptions { read_ratio: f64::NAN, ..base.clone() }, "read-ratio"),
        (LoadOptions { duration_seconds: 0.0, ..base.clone() }, "duration-seconds"),
        (LoadOptions { duration_seconds: f64::INFINITY, ..base.clone() }, "duration-seconds"),
        (
            LoadOptions { duration_seconds: DURATION_SECONDS_MAX * 2.0, ..base.clone() },
            "duration-seconds",
        ),
        (
            LoadOptions { timeline: true, duration_seconds: 3_600.5, ..base.clone() },
            "duration-seconds",
        ),
        (
            LoadOptions {
                events_from: vec![node.clone()],
                duration_seconds: 7_200.0,
                ..base.clone()
            },
            "duration-seconds",
        ),
        (
            LoadOptions { events_from: vec![node.clone(); EVENTS_NODES_MAX + 1], ..base.clone() },
            "events-from",
        ),
        (LoadOptions { events_from: vec!["127.0.0.1".to_owned()], ..base.clone() }, "events-from"),
        (LoadOptions { events_from: vec![":23827".to_owned()], ..base.clone() }, "events-from"),
        (LoadOptions { events_from: vec!["host:0".to_owned()], ..base.clone() }, "events-from"),
        (LoadOptions { events_from: vec!["host:port".to_owned()], ..base.clone() }, "events-from"),
        (LoadOptions { admin_token: Some("a\r\nX: y".to_owned()), ..base.clone() }, "admin-token"),
    ];
    for (options, expected) in cases {
        assert_eq!(rejected_option(&options), expected, "{options:?}");
    }
    let edges = [
        LoadOptions { read_ratio: 0.0, ..base.clone() },
        LoadOptions { read_ratio: 1.0, ..base.clone() },
        LoadOptions { threads: 50, ..base.clone() },
        LoadOptions { pipeline: PIPELINE_MAX, ..base.clone() },
        LoadOptions { timeline: true, duration_seconds: 3_600.0, ..base.clone() },
        LoadOptions { duration_seconds: 7_200.0, ..base.clone() },
        LoadOptions { events_from: vec![node.clone(); EVENTS_NODES_MAX], ..base.clone() },
        LoadOptions {
            events_from: vec!["[::1]:23827".to_owned(), "localhost:1".to_owned()],
            ..base.clone()
        },
    ];
    for options in edges {
        options.validate().expect("edge values are valid");
    }
}

#[test]
fn connections_spread_evenly_over_threads() {
    let shares = |connections, threads| {
        thread_shares(&LoadOptions { connections, threads, ..LoadOptions::default() })
    };
    assert_eq!(shares(50, 1), vec![50]);
    assert_eq!(shares(50, 3), vec![17, 17, 16]);
    assert_eq!(shares(4, 4), vec![1, 1, 1, 1]);
}

fn shared_with_budget(budget: u64) -> Shared {
    Shared {
        budget: AtomicU64::new(budget),
        completed: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    }
}

#[test]
fn budget_grants_whole_batches_then_the_rest_then_nothing() {
    let shared = shared_with_budget(35);
    assert_eq!(shared.claim(16), 16);
    assert_eq!(shared.claim(16), 16);
    assert_eq!(shared.claim(16), 3);
    assert_eq!(shared.claim(16), 0);
    assert_eq!(shared.claim(1), 0);
    let unlimited = shared_with_budget(u64::MAX);
    assert_eq!(unlimited.claim(16), 16);
}

fn sample_report() -> LoadReport {
    let mut stats = ThreadStats::new();
    for latency_us in [100, 200, 300, 400, 5_000] {
        stats.histogram.record(latency_us).expect("in range");
    }
    stats.requests = 5;
    stats.errors = 1;
    stats.first_error = Some("ERR wrong".to_owned());
    let options = LoadOptions { pipeline: 16, ..LoadOptions::default() };
    LoadReport::new(&options, &stats, Duration::from_millis(500))
}

#[test]
fn report_computes_rate_and_percentiles_in_milliseconds() {
    let report = sample_report();
    assert_eq!(report.requests, 5);
    assert_eq!(report.errors, 1);
    assert!((report.ops_per_second - 10.0).abs() < 1e-9);
    assert!((report.latency_ms.p50 - 0.3).abs() < 0.001, "{:?}", report.latency_ms);
    assert!((report.latency_ms.max - 5.0).abs() < 0.01, "{:?}", report.latency_ms);
    let text = report.to_text();
    assert!(text.contains("first error  ERR wrong"), "{text}");
    assert!(text.contains("throughput   10 ops/s"), "{text}");
}

#[test]
fn report_json_is_one_object_with_every_field() {
    let json = sample_report().to_json();
    assert!(!json.contains('\n'));
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let object = value.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let expected = [
        "connections",
        "errors",
        "first_error",
        "keyspace",
        "latency_ms",
        "ops_per_second",
        "pipeline",
        "read_ratio",
        "requests",
        "seconds",
        "threads",
        "value_bytes",
    ];
    assert_eq!(keys, expected);
    let latency = object["latency_ms"].as_object().expect("latency object");
    let mut latency_keys: Vec<&str> = latency.keys().map(String::as_str).collect();
    latency_keys.sort_unstable();
    assert_eq!(latency_keys, ["max", "p50", "p90", "p99", "p999"]);
    assert_eq!(object["requests"], 5);
    assert_eq!(object["pipeline"], 16);
    assert_eq!(object["first_error"], "ERR wrong");
}

#[test]
fn empty_report_has_zero_latency() {
    let report = LoadReport::new(&LoadOptions::default(), &ThreadStats::new(), Duration::ZERO);
    assert_eq!(report.latency_ms, LatencySummary::default());
    assert_eq!(report.ops_per_second, 0.0);
}

#[test]
fn refused_connection_is_a_clear_error() {
    // A port that was just free on loopback: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let options = LoadOptions {
        port,
        connections: 4,
        threads: 2,
        duration_seconds: 1.0,
        quiet: true,
        ..LoadOptions::default()
    };
    let error = run(&options).expect_err("nothing listens");
    assert!(matches!(error, LoadError::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
}

#[test]
fn unresolvable_host_is_a_clear_error() {
    let options =
        LoadOptions { host: "no such host".to_owned(), quiet: true, ..LoadOptions::default() };
    let error = run(&options).expect_err("bad host");
    assert!(matches!(error, LoadError::Resolve { .. }), "{error:?}");
}
