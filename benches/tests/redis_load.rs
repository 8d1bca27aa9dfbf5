//! The load generator against a real `redis-server` on a free loopback port.
//!
//! Skipped, with a message, when `redis-server` is not on PATH (`scripts/setup.sh` installs it).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use strata_benches::load::{self, LoadOptions};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A `redis-server` child process, killed when dropped (also when a test fails).
struct RedisServer {
    child: Child,
    port: u16,
    _directory: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|directory| directory.join(program).is_file())
    })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

impl RedisServer {
    fn start() -> RedisServer {
        let directory = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(directory.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = RedisServer { child, port, _directory: directory };
        server.wait_until_ready();
        server
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.cli(&["ping"]).as_deref() == Some("PONG") {
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
        panic!("redis-server on port {} did not answer PING within {START_TIMEOUT:?}", self.port);
    }

    /// Runs one `redis-cli` command; its trimmed stdout, or `None` if it failed.
    fn cli(&self, arguments: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(arguments)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        output.status.success().then(|| text.trim().to_owned())
    }
}

fn redis_available() -> bool {
    let available = on_path("redis-server") && on_path("redis-cli");
    if !available {
        // In CI the setup script installs them: missing there is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "redis-server or redis-cli missing in CI");
        eprintln!("skipped: redis-server or redis-cli not on PATH (run scripts/setup.sh)");
    }
    available
}

fn options_for(server: &RedisServer) -> LoadOptions {
    LoadOptions {
        port: server.port,
        connections: 8,
        pipeline: 4,
        value_bytes: 100,
        keyspace: 10,
        duration_seconds: 30.0,
        threads: 2,
        seed: Some(1),
        quiet: true,
        ..LoadOptions::default()
    }
}

#[test]
fn sets_reach_redis_and_every_key_exists_afterwards() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::start();
    // 2000 uniform SETs over 10 keys miss one key with probability ~10 * 0.9^2000: never.
    let options = LoadOptions { requests: Some(2_000), read_ratio: 0.0, ..options_for(&server) };
    let report = load::run(&options).expect("load run");
    assert_eq!(report.requests, 2_000, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.latency_ms.max > 0.0, "{report:?}");
    assert!(report.seconds < 30.0, "the request limit ends the run: {report:?}");
    assert!(report.timeline.is_none(), "no timeline unless asked");
    assert!(!report.to_json().contains("timeline"));
    assert_eq!(server.cli(&["dbsize"]).as_deref(), Some("10"));
    assert_eq!(server.cli(&["strlen", "key:0"]).as_deref(), Some("100"));
    assert_eq!(server.cli(&["strlen", "key:9"]).as_deref(), Some("100"));
    assert_eq!(server.cli(&["exists", "key:10"]).as_deref(), Some("0"));
}

#[test]
fn mixed_reads_and_writes_run_until_the_deadline() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::start();
    let options =
        LoadOptions { read_ratio: 0.5, duration_seconds: 0.5, pipeline: 1, ..options_for(&server) };
    let report = load::run(&options).expect("load run");
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.seconds >= 0.5 && report.seconds < 10.0, "{report:?}");
    let keys: u64 = server.cli(&["dbsize"]).expect("dbsize").parse().expect("a number");
    assert!((1..=10).contains(&keys), "{keys} keys");
}

#[test]
fn error_replies_are_counted_not_fatal() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::start();
    // Out of memory and not allowed to evict, Redis answers every SET with an OOM error.
    let policy = server.cli(&["config", "set", "maxmemory-policy", "noeviction"]);
    assert_eq!(policy.as_deref(), Some("OK"));
    assert_eq!(server.cli(&["config", "set", "maxmemory", "1"]).as_deref(), Some("OK"));
    let options = LoadOptions { requests: Some(100), ..options_for(&server) };
    let report = load::run(&options).expect("load run");
    assert_eq!(report.requests, 100, "{report:?}");
    assert_eq!(report.errors, 100, "{report:?}");
    let first_error = report.first_error.expect("an error text");
    assert!(first_error.starts_with("OOM"), "{first_error}");
}

#[test]
fn the_password_is_sent_on_every_connection() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::start();
    let password = server.cli(&["config", "set", "requirepass", "load-secret"]);
    assert_eq!(password.as_deref(), Some("OK"));
    let options = LoadOptions {
        requests: Some(200),
        password: Some("load-secret".to_owned()),
        ..options_for(&server)
    };
    let report = load::run(&options).expect("load run with the password");
    assert_eq!(report.requests, 200, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    let wrong = LoadOptions { password: Some("wrong".to_owned()), ..options.clone() };
    match load::run(&wrong) {
        Err(load::LoadError::Authentication { reply, .. }) => {
            assert!(reply.starts_with("WRONGPASS"), "{reply}");
        }
        other => panic!("a wrong password ran: {other:?}"),
    }
    let none = LoadOptions { password: None, ..options };
    let report = load::run(&none).expect("a run without the password still runs");
    assert_eq!(report.errors, report.requests, "{report:?}");
    let first_error = report.first_error.expect("an error text");
    assert!(first_error.starts_with("NOAUTH"), "{first_error}");
    let keys = server.cli(&["-a", "load-secret", "--no-auth-warning", "dbsize"]);
    assert_eq!(keys.as_deref(), Some("10"), "the authenticated SETs reached every key");
}

#[test]
fn the_timeline_counts_every_reply_once_and_survives_a_silent_node() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::start();
    // An admin address where nothing listens: the poller reports it, the run goes on.
    let silent_node = format!("127.0.0.1:{}", free_port());
    let options = LoadOptions {
        duration_seconds: 0.6,
        pipeline: 16,
        events_from: vec![silent_node.clone()],
        ..options_for(&server)
    };
    let report = load::run(&options).expect("the poller never fails the run");
    assert!(report.requests > 0 && report.errors == 0, "{report:?}");
    let timeline = report.timeline.as_ref().expect("--events-from implies --timeline");
    assert_eq!(timeline.interval_ms, 100);
    let replies: u64 = timeline.intervals.iter().map(|interval| interval.replies).sum();
    assert_eq!(replies, report.requests, "every reply counts in exactly one interval");
    // One interval per 100 ms of the measured time (give or take the rounding of `seconds`).
    let covering = (report.seconds * 10.0).ceil() as usize;
    assert!(timeline.intervals.len().abs_diff(covering) <= 1, "{report:?}");
    for (index, interval) in timeline.intervals.iter().enumerate() {
        assert_eq!(interval.start_ms, index as u64 * 100);
        assert!(interval.p50 <= interval.p99 && interval.p99 <= interval.max, "{interval:?}");
        assert_eq!(interval.nodes.len(), 1);
        assert!(interval.nodes[0].counters.is_empty() && interval.nodes[0].events.is_empty());
    }
    assert!(timeline.intervals[0].replies > 0, "the load starts in the first interval");
    assert!(timeline.stalls.iter().all(|&index| index < timeline.intervals.len()));
    assert_eq!(timeline.nodes.len(), 1);
    assert_eq!(timeline.nodes[0].address, silent_node);
    let error = timeline.nodes[0].events_error.as_deref().expect("the node's error");
    assert!(error.starts_with("cannot connect"), "{error}");

    let text = report.to_text();
    assert!(text.contains("\n  t(s)   replies   p50 ms   p99 ms   max ms   n0 rounds/syncs"));
    assert!(text.contains(&format!("n0={silent_node} (error: cannot connect")), "{text}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    let intervals = json["timeline"]["intervals"].as_array().map(Vec::len);
    assert_eq!(intervals, Some(timeline.intervals.len()));
    assert_eq!(json["requests"], report.requests);
}
