//! A client port per shard (`shard_port_base`) and the slot map over them (CLUSTER SLOTS,
//! NODES, SHARDS, MYID, INFO, KEYSLOT): cluster-aware clients (redis-cli -c,
//! redis-benchmark --cluster, redis-py's RedisCluster) send each command to the shard that
//! executes it, so nothing crosses shards, while a client on the node's port or the wrong
//! shard's port is still answered (its commands hop). Without shard ports, the cluster
//! commands are refused as Redis refuses them without cluster support.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use strata_tests::{info_field, run_tool_with, NodeSettings, TestNode};

fn node_with_shard_ports(shards: u32) -> TestNode {
    TestNode::start(NodeSettings { shards, shard_ports: true, ..NodeSettings::default() })
}

fn connect(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("a client");
    client.get_connection().expect("a connection")
}

/// The node's `shard_hops` as INFO shows it now.
fn hops(connection: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(connection).expect("INFO");
    info_field(&info, "shard_hops").and_then(|value| value.trim().parse().ok()).expect("hops")
}

/// Hops INFO reads before and after `work`. Each INFO asks every shard, which costs hops of
/// its own: with 2 shards of 8 partitions, 4 requests and 4 replies, of which the reading may
/// or may not include the replies (a shard counts them once published); so INFO alone
/// accounts for up to [`INFO_HOPS`] of the difference.
fn hops_during(connection: &mut redis::Connection, work: impl FnOnce()) -> u64 {
    let before = hops(connection);
    work();
    hops(connection).saturating_sub(before)
}

/// The most hops two INFO calls add to [`hops_during`]'s count on 2 shards of 8 partitions.
const INFO_HOPS: u64 = 12;

/// CLUSTER SLOTS as (first, last, port) triples.
fn slot_map(connection: &mut redis::Connection) -> Vec<(u16, u16, u16)> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(connection).unwrap();
    slots
        .into_iter()
        .map(|range| {
            let (first, last, master): (u16, u16, (String, u16, String, redis::Value)) =
                redis::from_redis_value(&range).expect("a slot range");
            assert_eq!(master.0, "127.0.0.1");
            assert_eq!(master.2.len(), 40, "a node id of 40 hex digits");
            (first, last, master.1)
        })
        .collect()
}

#[test]
fn the_slot_map_sends_every_key_to_the_shard_that_owns_it() {
    let node = node_with_shard_ports(2);
    let base = node.shard_port_base.expect("shard ports");
    let mut main = node.client();
    let map = slot_map(&mut main);
    // Every slot once, over the two shard ports.
    let mut next = 0u32;
    for (first, last, port) in &map {
        assert_eq!(u32::from(*first), next, "{map:?}");
        assert!([base, base + 1].contains(port), "{map:?}");
        next = u32::from(*last) + 1;
    }
    assert_eq!(next, 16384, "{map:?}");
    let port_of = |slot: u16| {
        map.iter().find(|(first, last, _)| (*first..=*last).contains(&slot)).expect("mapped").2
    };
    let mut shards: BTreeMap<u16, redis::Connection> =
        [base, base + 1].into_iter().map(|port| (port, connect(port))).collect();
    let keys: Vec<String> = (0..300).map(|index| format!("slot-map:{index}")).collect();
    let slots: Vec<u16> = keys
        .iter()
        .map(|key| redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut main).unwrap())
        .collect();
    let routed = hops_during(&mut main, || {
        for (key, slot) in keys.iter().zip(slots.iter().copied()) {
            let connection = shards.get_mut(&port_of(slot)).expect("a shard port");
            let _: () = redis::cmd("SET").arg(key).arg(key.len()).query(connection).unwrap();
            let value: String = redis::cmd("GET").arg(key).query(connection).unwrap();
            assert_eq!(value, key.len().to_string());
        }
    });
    assert!(routed <= INFO_HOPS, "{routed} hops: a command sent where the slot map says crossed");
    // The node's own port, and the wrong shard's, still answer every key: by hopping.
    let unrouted = hops_during(&mut main, || {
        let wrong = shards.get_mut(&base).expect("the first shard port");
        for key in &keys {
            let value: String = redis::cmd("GET").arg(key).query(wrong).unwrap();
            assert_eq!(value, key.len().to_string());
        }
    });
    assert!(unrouted >= 200, "{unrouted} hops for 300 GETs on one shard's port");
}

#[test]
fn nodes_shards_myid_and_info_describe_one_master_per_shard() {
    let node = node_with_shard_ports(2);
    let base = node.shard_port_base.expect("shard ports");
    let mut first = connect(base);
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut first).unwrap();
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(lines.len(), 2, "{nodes}");
    assert!(nodes.ends_with('\n'), "every line ends with a newline: {nodes:?}");
    let myself: Vec<&&str> = lines.iter().filter(|line| line.contains("myself")).collect();
    assert_eq!(myself.len(), 1, "{nodes}");
    let fields: Vec<&str> = myself[0].split(' ').collect();
    assert_eq!(fields[1], format!("127.0.0.1:{base}@0"), "{nodes}");
    assert_eq!(&fields[2..8], ["myself,master", "-", "0", "0", "0", "connected"], "{nodes}");
    let id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut first).unwrap();
    assert_eq!(fields[0], id);
    // On the node's own port no shard is `myself`.
    let main_nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut node.client()).unwrap();
    assert!(!main_nodes.contains("myself"), "{main_nodes}");
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut first).unwrap();
    for line in ["cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:2"] {
        assert!(info.contains(line), "{info}");
    }
    let shards: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SHARDS").query(&mut first).unwrap();
    assert_eq!(shards.len(), 2);
    let server: String = redis::cmd("INFO").arg("cluster").query(&mut first).unwrap();
    assert_eq!(info_field(&server, "cluster_enabled").as_deref().map(str::trim), Some("1"));
    let ok: String = redis::cmd("READONLY").query(&mut first).unwrap();
    assert_eq!(ok, "OK");
}

#[test]
fn without_shard_ports_cluster_commands_are_refused_as_redis_refuses_them() {
    let node = TestNode::start(NodeSettings::default());
    let mut connection = node.client();
    for words in [&["CLUSTER", "SLOTS"][..], &["CLUSTER", "KEYSLOT", "k"], &["READONLY"]] {
        let error = redis::cmd(words[0]).arg(&words[1..]).query::<redis::Value>(&mut connection);
        let text = error.expect_err("refused").to_string();
        assert!(text.contains("This instance has cluster support disabled"), "{text}");
    }
    let unknown = redis::cmd("CLUSTER").arg("FOO").query::<redis::Value>(&mut connection);
    let text = unknown.expect_err("refused").to_string();
    assert!(text.contains("unknown subcommand 'FOO'. Try CLUSTER HELP."), "{text}");
    let arity = redis::cmd("CLUSTER").arg("SLOTS").arg("x").query::<redis::Value>(&mut connection);
    let text = arity.expect_err("refused").to_string();
    assert!(text.contains("wrong number of arguments for 'cluster|slots'"), "{text}");
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut connection).unwrap();
    assert_eq!(info_field(&info, "cluster_enabled").as_deref().map(str::trim), Some("0"));
}

#[test]
fn redis_cli_c_and_redis_benchmark_cluster_never_cross_shards() {
    let node = node_with_shard_ports(2);
    let base = node.shard_port_base.expect("shard ports").to_string();
    let mut main = node.client();
    // redis-cli -c: no MOVED ever comes (a key of another shard hops), so it just works.
    for index in 0..20 {
        let key = format!("cli:{index}");
        let arguments = ["-c", "-p", base.as_str(), "SET", key.as_str(), "v"];
        let set = run_tool_with("redis-cli", &arguments, b"", Duration::from_secs(30));
        assert!(set.success() && set.stdout.trim() == "OK", "{set:?}");
    }
    let value: String = redis::cmd("GET").arg("cli:7").query(&mut main).unwrap();
    assert_eq!(value, "v");
    let crossed = hops_during(&mut main, || {
        let arguments =
            ["--cluster", "-p", &base, "-t", "set,get", "-n", "4000", "-P", "8", "-c", "8", "-q"];
        let output = run_tool_with("redis-benchmark", &arguments, b"", Duration::from_secs(120));
        assert!(output.success(), "redis-benchmark --cluster failed: {output:?}");
        assert!(output.stdout.contains("GET:"), "{}", output.stdout);
        assert!(!output.stdout.contains("ERR"), "{}", output.stdout);
    });
    assert!(crossed <= INFO_HOPS, "{crossed} hops: redis-benchmark --cluster's commands crossed");
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut main).unwrap();
    let sets = info_field(&info, "cmdstat_set").unwrap_or_default();
    assert!(sets.starts_with("calls=40"), "the benchmark's SETs were served: {sets}");
}

const REDIS_PY_CLUSTER: &str = r#"
import sys
from redis.cluster import RedisCluster

client = RedisCluster(host="127.0.0.1", port=int(sys.argv[1]))
nodes = sorted(node.port for node in client.get_nodes())
assert nodes == [int(sys.argv[2]), int(sys.argv[2]) + 1], nodes
for index in range(200):
    assert client.set(f"py-cluster:{index}", index) is True
values = [client.get(f"py-cluster:{index}") for index in range(200)]
assert values == [str(index).encode() for index in range(200)], values
client.mset({"{tag}a": "1", "{tag}b": "2"})
assert client.mget("{tag}a", "{tag}b") == [b"1", b"2"]
print("redis-py cluster ok")
"#;

#[test]
fn redis_py_redis_cluster_routes_by_the_slot_map() {
    let node = node_with_shard_ports(2);
    let base = node.shard_port_base.expect("shard ports");
    let mut main = node.client();
    let mut outcome = None;
    let crossed = hops_during(&mut main, || {
        let output = Command::new("/usr/bin/python3")
            .args(["-c", REDIS_PY_CLUSTER, &node.port.to_string(), &base.to_string()])
            .output()
            .expect("/usr/bin/python3 runs (scripts/setup.sh installs python3-redis)");
        outcome = Some(output);
    });
    let output = outcome.expect("ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "redis-py failed:\n{stdout}\n{stderr}\n{}", node.log());
    assert!(stdout.contains("redis-py cluster ok"), "{stdout}");
    // 402 keyed commands; the client's start-up asks the node's port a question that every
    // shard answers (8 hops), none of its commands cross.
    assert!(crossed <= INFO_HOPS + 8, "{crossed} hops for 402 commands routed by the slot map");
}
