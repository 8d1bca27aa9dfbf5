//! Redis's own tools against a node: redis-cli (one-shot commands, `--pipe`, INFO) and
//! redis-benchmark. Each run is bounded by a timeout, so a hang fails instead of stalling.

use std::time::Duration;

use strata_tests::{info_field, run_tool_with, NodeSettings, TestNode, ToolOutput};

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn redis_cli(node: &TestNode, arguments: &[&str], input: &[u8]) -> ToolOutput {
    let port = node.port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", port.as_str()];
    all.extend_from_slice(arguments);
    let output = run_tool_with("redis-cli", &all, input, TOOL_TIMEOUT);
    assert!(output.status.is_some(), "redis-cli {arguments:?} did not finish: {output:?}");
    output
}

/// Runs one redis-cli command and returns its standard output without the final newline.
fn cli(node: &TestNode, arguments: &[&str]) -> String {
    let output = redis_cli(node, arguments, b"");
    assert!(output.success(), "redis-cli {arguments:?} failed: {output:?}");
    output.stdout.trim_end_matches('\n').to_string()
}

#[test]
fn redis_cli_commands() {
    let node = TestNode::start(NodeSettings::default());
    assert_eq!(cli(&node, &["PING"]), "PONG");
    assert_eq!(cli(&node, &["SET", "k", "v"]), "OK");
    assert_eq!(cli(&node, &["GET", "k"]), "v");
    assert_eq!(cli(&node, &["GET", "missing"]), "");
    assert_eq!(cli(&node, &["INCR", "counter"]), "1");
    assert_eq!(cli(&node, &["INCR", "counter"]), "2");
    assert_eq!(cli(&node, &["INCRBY", "counter", "40"]), "42");
    assert_eq!(cli(&node, &["SET", "spaced key", "a value with spaces"]), "OK");
    assert_eq!(cli(&node, &["GET", "spaced key"]), "a value with spaces");
    assert_eq!(cli(&node, &["MGET", "k", "missing", "counter"]), "v\n\n42");
    assert_eq!(cli(&node, &["DBSIZE"]), "3");
    let error = cli(&node, &["INCR", "k"]);
    assert!(error.contains("ERR value is not an integer or out of range"), "INCR of text: {error}");
    let keyspace = cli(&node, &["INFO", "keyspace"]);
    assert!(keyspace.starts_with("# Keyspace"), "INFO keyspace:\n{keyspace}");
    let db0 = info_field(&keyspace, "db0").unwrap_or_else(|| panic!("no db0:\n{keyspace}"));
    assert!(db0.starts_with("keys=3,"), "db0:{db0}");
    let mut connection = node.client();
    let value: String = redis::cmd("GET").arg("spaced key").query(&mut connection).unwrap();
    assert_eq!(value, "a value with spaces");
}

#[test]
fn redis_cli_pipe_mode() {
    let node = TestNode::start(NodeSettings::default());
    let mut input = Vec::new();
    for i in 0..300 {
        input.extend_from_slice(&strata_tests::raw::encode_command(&[
            b"SET",
            format!("piped:{i}").as_bytes(),
            format!("value {i}").as_bytes(),
        ]));
    }
    for _ in 0..100 {
        input.extend_from_slice(b"INCR piped:counter\r\n");
    }
    input.extend_from_slice(b"APPEND piped:0 \" and more\"\r\n");
    let output = redis_cli(&node, &["--pipe"], &input);
    assert!(output.success(), "redis-cli --pipe failed: {output:?}");
    assert!(
        output.stdout.contains("errors: 0, replies: 401"),
        "redis-cli --pipe reported: {}",
        output.stdout
    );
    let mut connection = node.client();
    let size: i64 = redis::cmd("DBSIZE").query(&mut connection).unwrap();
    assert_eq!(size, 301);
    let mut mget = redis::cmd("MGET");
    for i in 0..300 {
        mget.arg(format!("piped:{i}"));
    }
    let values: Vec<String> = mget.query(&mut connection).unwrap();
    for (i, value) in values.iter().enumerate() {
        let expected = if i == 0 { "value 0 and more".to_string() } else { format!("value {i}") };
        assert_eq!(*value, expected, "piped:{i}");
    }
    let counter: i64 = redis::cmd("GET").arg("piped:counter").query(&mut connection).unwrap();
    assert_eq!(counter, 100);
    let keyspace = cli(&node, &["INFO", "keyspace"]);
    assert_eq!(
        info_field(&keyspace, "db0").as_deref().map(str::trim_end),
        Some("keys=301,expires=0,avg_ttl=0")
    );
}

#[test]
fn redis_benchmark_set_get() {
    let node = TestNode::start(NodeSettings::default());
    let port = node.port.to_string();
    let arguments = [
        "-h",
        "127.0.0.1",
        "-p",
        port.as_str(),
        "-t",
        "set,get",
        "-n",
        "2000",
        "-c",
        "10",
        "-P",
        "4",
        "-q",
    ];
    let output = run_tool_with("redis-benchmark", &arguments, b"", Duration::from_secs(120));
    assert!(output.success(), "redis-benchmark failed: {output:?}");
    for test in ["SET:", "GET:"] {
        let line = output.stdout.lines().find(|line| line.trim_start().starts_with(test));
        let line = line.unwrap_or_else(|| panic!("no {test} result in:\n{}", output.stdout));
        assert!(line.contains("requests per second"), "{line}");
    }
    assert!(!output.stdout.contains("ERR"), "redis-benchmark saw errors:\n{}", output.stdout);
    let mut connection = node.client();
    let size: i64 = redis::cmd("DBSIZE").query(&mut connection).unwrap();
    assert!(size > 0, "DBSIZE {size} after redis-benchmark's SETs");
    let value: Vec<u8> = redis::cmd("GET").arg("key:__rand_int__").query(&mut connection).unwrap();
    assert_eq!(value.len(), 3, "redis-benchmark's SET value is 3 bytes by default");
}
