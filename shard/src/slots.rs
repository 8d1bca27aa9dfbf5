//! CLUSTER, READONLY and READWRITE: the slot map over the shards' own client ports
//! (`shard_port_base`), in Redis Cluster's reply formats, so that cluster-aware clients
//! (`redis-cli -c`, `redis-benchmark --cluster`, redis-py's `RedisCluster`) send each command
//! to the shard that executes it. Without shard ports, every one of them is refused as Redis
//! refuses them without cluster support. The map itself is `strata_core::slot_map`.

use std::fmt::Write as _;
use std::net::IpAddr;

use strata_core::command::ClusterQuery;
use strata_core::ids::ShardId;
use strata_core::resp;
use strata_core::slot::{key_slot, SLOT_COUNT};
use strata_core::slot_map::{node_id, slot_ranges, SlotRange};

use crate::connection::Session;
use crate::shard::Shard;

/// Redis's answer to a cluster command when cluster support is off.
const DISABLED: &str = "ERR This instance has cluster support disabled";

const HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "HELP",
    "    Prints this help.",
];

/// The node as cluster clients see it: one master per shard, at the shard's own port.
struct Map {
    ip: String,
    base: u16,
    shard_count: u32,
    ranges: Vec<SlotRange>,
    /// The shard this connection is on, and whether it came in on that shard's own port.
    here: ShardId,
    own_port: bool,
    /// The address node ids are made from (the configured one, the same for every client).
    configured_ip: IpAddr,
}

impl Map {
    fn of(shard: &Shard, session: &Session) -> Option<Map> {
        let options = &shard.mesh.options;
        let base = options.shard_port_base?;
        let configured_ip = options.client_address.ip();
        // Listening on every interface, the node shows the address the client reached.
        let ip = if configured_ip.is_unspecified() {
            session.local_address.map(|address| address.ip().to_string()).unwrap_or_default()
        } else {
            configured_ip.to_string()
        };
        Some(Map {
            ip,
            base,
            shard_count: options.shard_count,
            ranges: slot_ranges(options.partition_count, options.shard_count),
            here: shard.id,
            own_port: session.own_port,
            configured_ip,
        })
    }

    fn port(&self, shard: ShardId) -> u16 {
        u16::try_from(u32::from(self.base) + shard.0).unwrap_or(u16::MAX)
    }

    fn id(&self, shard: ShardId) -> String {
        node_id(&format!("{}:{}", self.configured_ip, self.port(shard)))
    }

    fn shards(&self) -> impl Iterator<Item = ShardId> {
        (0..self.shard_count).map(ShardId)
    }

    fn ranges_of(&self, shard: ShardId) -> impl Iterator<Item = &SlotRange> {
        self.ranges.iter().filter(move |range| range.shard == shard)
    }
}

/// Answers READONLY and READWRITE: OK where cluster support is on.
pub(crate) fn read_mode(output: &mut Vec<u8>, shard: &Shard) {
    if shard.mesh.options.shard_port_base.is_some() {
        resp::encode_simple(output, "OK");
    } else {
        resp::encode_error(output, DISABLED);
    }
}

/// Answers a CLUSTER subcommand.
pub(crate) fn answer(output: &mut Vec<u8>, shard: &Shard, session: &Session, query: ClusterQuery) {
    let Some(map) = Map::of(shard, session) else {
        resp::encode_error(output, DISABLED);
        return;
    };
    match query {
        ClusterQuery::Help => {
            resp::encode_array_header(output, HELP.len());
            for line in HELP {
                resp::encode_simple(output, line);
            }
        }
        ClusterQuery::Info => resp::encode_bulk(output, info(&map).as_bytes()),
        ClusterQuery::MyId => resp::encode_bulk(output, map.id(map.here).as_bytes()),
        ClusterQuery::Nodes => resp::encode_bulk(output, nodes(&map).as_bytes()),
        ClusterQuery::Slots => slots(output, &map),
        ClusterQuery::Shards => shards(output, &map),
        ClusterQuery::KeySlot { key } => resp::encode_integer(output, i64::from(key_slot(&key).0)),
    }
}

fn info(map: &Map) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "cluster_state:ok\r\ncluster_slots_assigned:{SLOT_COUNT}\r\n\
         cluster_slots_ok:{SLOT_COUNT}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
         cluster_known_nodes:{count}\r\ncluster_size:{count}\r\ncluster_current_epoch:0\r\n\
         cluster_my_epoch:0\r\ncluster_stats_messages_sent:0\r\n\
         cluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
        count = map.shard_count,
    );
    text
}

/// One line per shard, as Redis writes `CLUSTER NODES`: id, `ip:port@bus-port`, flags
/// (`myself` for the shard whose own port the client is on), master (`-`), pings, pongs,
/// config epoch, link state, slot ranges. There is no cluster bus: its port is 0.
fn nodes(map: &Map) -> String {
    let mut text = String::new();
    for shard in map.shards() {
        let flags = if map.own_port && shard == map.here { "myself,master" } else { "master" };
        let _ = write!(
            text,
            "{} {}:{}@0 {flags} - 0 0 0 connected",
            map.id(shard),
            map.ip,
            map.port(shard)
        );
        for range in map.ranges_of(shard) {
            if range.first == range.last {
                let _ = write!(text, " {}", range.first);
            } else {
                let _ = write!(text, " {}-{}", range.first, range.last);
            }
        }
        text.push('\n');
    }
    text
}

/// `CLUSTER SLOTS`: each range with its master `[ip, port, id, metadata]`, no replicas.
fn slots(output: &mut Vec<u8>, map: &Map) {
    resp::encode_array_header(output, map.ranges.len());
    for range in &map.ranges {
        resp::encode_array_header(output, 3);
        resp::encode_integer(output, i64::from(range.first));
        resp::encode_integer(output, i64::from(range.last));
        resp::encode_array_header(output, 4);
        resp::encode_bulk(output, map.ip.as_bytes());
        resp::encode_integer(output, i64::from(map.port(range.shard)));
        resp::encode_bulk(output, map.id(range.shard).as_bytes());
        resp::encode_array_header(output, 0);
    }
}

/// `CLUSTER SHARDS`: per shard its slot ranges (first and last, flat) and its one node.
fn shards(output: &mut Vec<u8>, map: &Map) {
    resp::encode_array_header(output, map.shard_count as usize);
    for shard in map.shards() {
        resp::encode_array_header(output, 4);
        resp::encode_bulk(output, b"slots");
        let ranges: Vec<&SlotRange> = map.ranges_of(shard).collect();
        resp::encode_array_header(output, ranges.len() * 2);
        for range in ranges {
            resp::encode_integer(output, i64::from(range.first));
            resp::encode_integer(output, i64::from(range.last));
        }
        resp::encode_bulk(output, b"nodes");
        resp::encode_array_header(output, 1);
        resp::encode_array_header(output, 14);
        resp::encode_bulk(output, b"id");
        resp::encode_bulk(output, map.id(shard).as_bytes());
        resp::encode_bulk(output, b"port");
        resp::encode_integer(output, i64::from(map.port(shard)));
        for (name, value) in [("ip", map.ip.as_str()), ("endpoint", map.ip.as_str())] {
            resp::encode_bulk(output, name.as_bytes());
            resp::encode_bulk(output, value.as_bytes());
        }
        resp::encode_bulk(output, b"role");
        resp::encode_bulk(output, b"master");
        resp::encode_bulk(output, b"replication-offset");
        resp::encode_integer(output, 0);
        resp::encode_bulk(output, b"health");
        resp::encode_bulk(output, b"online");
    }
}
