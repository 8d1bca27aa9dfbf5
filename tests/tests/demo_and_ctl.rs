//! `strata demo` (a four-node cluster of real processes) and `strata ctl` (the admin client).

use std::net::TcpListener;
use std::time::Duration;

use strata_tests::{run_tool_with, strata_binary, NodeSettings, TestNode};

fn strata() -> String {
    strata_binary().to_str().expect("UTF-8 path").to_string()
}

/// A base port whose demo ports (base..+3, +10..+13, +20..+23) are all free right now.
fn demo_base_port() -> u16 {
    for attempt in 0..200u16 {
        let base = 21_000 + (std::process::id() as u16 % 500) * 17 + attempt * 31;
        let offsets = (0..4).chain(10..14).chain(20..24);
        let listeners: Vec<_> =
            offsets.map(|offset| TcpListener::bind(("127.0.0.1", base + offset))).collect();
        if listeners.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free range of demo ports");
}

/// The leader's admin port of a demo started at `base`.
fn demo_http_port(base: &str) -> u16 {
    base.parse::<u16>().expect("a port") + 10
}

#[test]
fn demo_runs_a_cluster_writes_to_it_and_cleans_up() {
    let base = demo_base_port().to_string();
    let output = run_tool_with(
        &strata(),
        &["demo", "--bench", "--port", &base],
        b"",
        Duration::from_secs(180),
    );
    assert!(output.success(), "{}\n{}", output.stdout, output.stderr);
    let text = &output.stdout;
    for (name, role) in
        [("harry", "leader"), ("hermione", "follower"), ("ginny", "follower"), ("ron", "learner")]
    {
        let row = text.lines().find(|line| line.starts_with(name)).unwrap_or_default();
        assert!(row.contains(role) && row.contains("alive"), "{name}: {text}");
    }
    assert!(text.contains("throughput") && text.contains("(0 errors)"), "{text}");
    let console = text.lines().find_map(|line| line.trim().strip_prefix("console:"));
    let console = console.map(str::trim).unwrap_or_default();
    let expected = format!("http://127.0.0.1:{}/?token=", demo_http_port(&base));
    assert!(console.starts_with(&expected), "the demo prints its console's address: {text}");
    assert!(console.len() > expected.len() + 32, "with the admin token: {text}");
    let directory = text
        .lines()
        .find_map(|line| line.split("data and logs in ").nth(1))
        .expect("the demo names its directory");
    assert!(!std::path::Path::new(directory.trim()).exists(), "the demo removed {directory}");
}

#[test]
fn ctl_prints_tables_and_json_and_reports_errors() {
    let node = TestNode::start(NodeSettings {
        shards: 1,
        server_mode: "admin",
        ..NodeSettings::default()
    });
    let http = format!("127.0.0.1:{}", node.http_port);
    let ctl = |arguments: &[&str]| {
        let mut all = vec!["ctl", "--http", http.as_str()];
        all.extend_from_slice(arguments);
        run_tool_with(&strata(), &all, b"", Duration::from_secs(30))
    };
    let variables = ctl(&["variables"]);
    assert!(variables.success() && variables.stdout.contains("role"), "{variables:?}");
    assert!(variables.stdout.contains("admin"), "{variables:?}");
    assert!(ctl(&["set-role", "leader", "--name", "Boss"]).success());
    let nodes = ctl(&["nodes"]);
    assert!(nodes.success(), "{nodes:?}");
    let row = nodes.stdout.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("boss") && row.contains("leader") && row.contains("alive"), "{row}");
    let json = ctl(&["--json", "node", "boss"]);
    let value: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(
        (value["error_code"].as_i64(), value["node"]["role"].as_str()),
        (Some(0), Some("leader"))
    );
    let refused = ctl(&["remove", "boss"]);
    assert_eq!(refused.status.and_then(|status| status.code()), Some(1));
    assert!(refused.stderr.contains("Can't remove current node: boss"), "{refused:?}");
    let unreachable = run_tool_with(
        &strata(),
        &["ctl", "--http", "127.0.0.1:1", "nodes"],
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(unreachable.status.and_then(|status| status.code()), Some(2));
}
