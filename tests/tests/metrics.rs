//! `GET /metrics` against real node processes: the text passes `promtool check metrics`, the
//! counters move when clients write, and a leader's member gauges follow a follower that joins
//! and is then killed.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Commands;
use strata_tests::admin::{set_role, wait_until};
use strata_tests::{run_tool_with, NodeSettings, TestNode};

/// Every sample of a scrape: the series (name and labels, as written) → value.
type Samples = BTreeMap<String, f64>;

/// Scrapes `node`'s `/metrics`; asserts it answers 200 in text format 0.0.4.
fn scrape_text(node: &TestNode) -> String {
    let reply = node.admin("GET", "/metrics", None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.text
}

fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            let value = value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line}"));
            (series.to_string(), value)
        })
        .collect()
}

fn scrape(node: &TestNode) -> Samples {
    parse(&scrape_text(node))
}

/// The value of `series`, or a panic listing what the scrape had.
#[track_caller]
fn value(samples: &Samples, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// Whether promtool can run here: the test fails without it under CI, and otherwise says
/// loudly that it skipped the check.
fn promtool_present() -> bool {
    let present = std::process::Command::new("promtool").arg("--version").output().is_ok();
    if !present {
        let ci = std::env::var("CI").is_ok_and(|value| value == "true");
        assert!(!ci, "promtool is missing: scripts/setup.sh installs it (Debian's prometheus)");
        eprintln!("!!!! promtool is missing: the metrics text is NOT checked by promtool !!!!");
        eprintln!("!!!! run scripts/setup.sh (it installs Debian's prometheus package)   !!!!");
    }
    present
}

/// Fails the test with promtool's complaints unless `promtool check metrics` accepts `text`.
fn assert_promtool_accepts(text: &str) {
    if !promtool_present() {
        return;
    }
    let checked =
        run_tool_with("promtool", &["check", "metrics"], text.as_bytes(), Duration::from_secs(60));
    assert!(
        checked.success() && checked.stdout.trim().is_empty() && checked.stderr.trim().is_empty(),
        "promtool check metrics refused the text:\n{}{}\n--- text ---\n{text}",
        checked.stdout,
        checked.stderr
    );
}

#[test]
fn promtool_refuses_what_it_should() {
    if !promtool_present() {
        return;
    }
    let untyped = "strata_commands_total{command=\"get\"} 1\n";
    let checked = run_tool_with(
        "promtool",
        &["check", "metrics"],
        untyped.as_bytes(),
        Duration::from_secs(60),
    );
    assert!(!checked.success(), "a counter without help or type must not pass: {checked:?}");
}

#[test]
fn a_standalone_node_serves_metrics_that_move_with_writes() {
    let node = TestNode::start(NodeSettings::default());
    let first = scrape_text(&node);
    assert_promtool_accepts(&first);
    let before = parse(&first);
    assert_eq!(value(&before, "strata_role{role=\"standalone\"}"), 1.0);
    assert_eq!(value(&before, "strata_role{role=\"leader\"}"), 0.0);

    let mut client = node.client();
    for index in 0..20 {
        let () = client.set(format!("metrics:{index}"), index).expect("SET");
    }
    let _: Option<String> = client.get("metrics:0").expect("GET");
    let unknown: redis::RedisResult<()> = redis::cmd("NOSUCHCOMMAND").query(&mut client);
    assert!(unknown.is_err());

    let text = scrape_text(&node);
    assert_promtool_accepts(&text);
    let after = parse(&text);
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(moved("strata_commands_total{command=\"set\"}"), 20.0);
    assert_eq!(moved("strata_commands_total{command=\"get\"}"), 1.0);
    assert_eq!(moved("strata_commands_total{command=\"invalid\"}"), 1.0);
    assert_eq!(moved("strata_errors_total{kind=\"err\"}"), 1.0);
    assert!(moved("strata_wal_frames_written_total") >= 20.0, "one frame per awaited SET");
    assert!(moved("strata_wal_bytes_written_total") > 20.0 * 10.0);
    assert!(moved("strata_wal_append_seconds_count") >= 20.0);
    assert!(moved("strata_group_commit_batch_records_count") >= 20.0);
    assert!(moved("strata_group_commit_batch_records_sum") >= 20.0, "20 records framed");
    assert!(moved("strata_reply_latency_seconds_count") >= 22.0);
    assert!(moved("strata_reply_latency_seconds_sum") > 0.0);
    assert_eq!(
        value(&after, "strata_reply_latency_seconds_bucket{le=\"+Inf\"}"),
        value(&after, "strata_reply_latency_seconds_count")
    );
    assert!(value(&after, "strata_connected_clients") >= 1.0);
    assert!(value(&after, "strata_resident_memory_bytes") > 1e6);
    // Two shards: about half of the 21 keys' commands cross to the other shard and back.
    let hops = moved("strata_shard_hops_total");
    assert!(hops >= 2.0, "{hops} hops");
    assert!((1.0..=hops).contains(&moved("strata_shard_messages_total")));
    assert!(moved("strata_shard_wakeups_total") <= moved("strata_shard_messages_total"));

    // Keys and LSNs are published once a second.
    let published = wait_until(Duration::from_secs(10), || {
        let samples = scrape(&node);
        let committed: f64 = (0..8)
            .map(|partition| {
                value(
                    &samples,
                    &format!("strata_partition_committed_lsn{{partition=\"{partition}\"}}"),
                )
            })
            .sum();
        value(&samples, "strata_keys") == 20.0 && committed >= 20.0
    });
    assert!(published, "keys and committed LSNs never reached the writes: {:#?}", scrape(&node));
}

/// The LSNs `member` acknowledged, summed over partitions: the records it holds durably.
fn acknowledged(samples: &Samples, member: &str) -> f64 {
    let prefix = format!("strata_member_acknowledged_lsn{{member=\"{member}\"");
    samples.iter().filter(|(series, _)| series.starts_with(&prefix)).map(|(_, value)| value).sum()
}

#[test]
fn a_killed_follower_shows_in_the_lag_and_in_sync_gauges() {
    let leader = TestNode::start(NodeSettings::cluster(2));
    set_role(&leader, "leader", "boss", None);
    let mut follower = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    let mut client = leader.client();
    for index in 0..50 {
        let () = client.set(format!("replicated:{index}"), index).expect("SET");
    }

    // Replication progress is published once a second per shard: wait until it covers every
    // write, not only until some publication showed no lag.
    let caught_up = wait_until(Duration::from_secs(30), || {
        let samples = scrape(&leader);
        samples.get("strata_insync_members") == Some(&2.0)
            && samples.get("strata_member_in_sync{member=\"f1\"}") == Some(&1.0)
            && samples.get("strata_member_lag_records{member=\"f1\"}") == Some(&0.0)
            && acknowledged(&samples, "f1") >= 50.0
    });
    assert!(caught_up, "the follower never showed in sync with no lag: {:#?}", scrape(&leader));
    let text = scrape_text(&leader);
    assert_promtool_accepts(&text);
    let on_leader = parse(&text);
    assert_eq!(value(&on_leader, "strata_role{role=\"leader\"}"), 1.0);
    assert_eq!(value(&on_leader, "strata_member_alive{member=\"f1\"}"), 1.0);
    let on_follower = scrape(&follower);
    assert_eq!(value(&on_follower, "strata_role{role=\"follower\"}"), 1.0);
    assert_eq!(value(&on_follower, "strata_epoch"), value(&on_leader, "strata_epoch"));
    assert_eq!(value(&on_follower, "strata_insync_members"), 0.0, "counted on the leader only");

    follower.kill();
    let gone = wait_until(Duration::from_secs(20), || {
        let samples = scrape(&leader);
        samples.get("strata_insync_members") == Some(&1.0)
            && samples.get("strata_member_in_sync{member=\"f1\"}") == Some(&0.0)
            && samples.get("strata_member_alive{member=\"f1\"}") == Some(&0.0)
    });
    assert!(gone, "the killed follower still showed in sync or alive: {:#?}", scrape(&leader));
    let after = scrape(&leader);
    assert!(value(&after, "strata_member_heartbeat_age_seconds{member=\"f1\"}") >= 1.0);
    assert!(
        !after.contains_key("strata_member_lag_records{member=\"f1\"}"),
        "with no stream the lag is unknown, not zero: {after:#?}"
    );
    let () = client.set("after-the-kill", 1).expect("writes go on without the follower");
}
