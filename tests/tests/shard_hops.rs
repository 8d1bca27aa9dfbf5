//! Commands that cross shards: random pipelines over keys of every partition, sent to nodes of
//! one, two and three shards, must get the same answers from all of them; several connections
//! at once each see their own commands answered in order; and INFO counts the hops, the ring
//! publications that carried them and the wake-ups. A failure names its seed:
//! `STRATA_PROPERTY_SEED=<n>` replays it.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use strata_tests::raw::{encode_command, RawConnection, Reply};
use strata_tests::{NodeSettings, TestNode};

/// Pipelines per seed and commands per pipeline at most.
const PIPELINES_PER_SEED: usize = 40;
const PIPELINE_COMMANDS_MAX: usize = 80;
/// Keys per connection: enough that every partition of every shard holds some.
const KEYS_PER_CONNECTION: usize = 24;
const VALUES: &[&str] = &["", "0", "1", "-7", "41", "abc", "hello world", "x"];

fn key(rng: &mut StdRng, prefix: &str) -> String {
    format!("{prefix}:k{}", rng.gen_range(0..KEYS_PER_CONNECTION))
}

fn value(rng: &mut StdRng) -> String {
    (*VALUES.choose(rng).expect("values are not empty")).to_string()
}

/// One random command on the connection's own keys (`prefix`), as words. Multi-key commands
/// name keys of several partitions, so they are split across shards.
fn command(rng: &mut StdRng, prefix: &str) -> Vec<String> {
    let first = key(rng, prefix);
    let second = key(rng, prefix);
    let third = key(rng, prefix);
    match rng.gen_range(0..14) {
        0 | 1 => vec!["SET".into(), first, value(rng)],
        2 | 3 => vec!["GET".into(), first],
        4 => vec!["INCR".into(), first],
        5 => vec!["APPEND".into(), first, value(rng)],
        6 => vec!["DEL".into(), first, second, third],
        7 => vec!["EXISTS".into(), first, second, third],
        8 => vec!["MSET".into(), first, value(rng), second, value(rng), third, value(rng)],
        9 => vec!["MGET".into(), first, second, third],
        10 => vec!["GETDEL".into(), first],
        11 => vec!["SETNX".into(), first, value(rng)],
        12 => vec!["STRLEN".into(), first],
        _ => vec!["GETSET".into(), first, value(rng)],
    }
}

/// Sends a whole pipeline at once and reads its replies.
fn pipeline(connection: &mut RawConnection, commands: &[Vec<String>]) -> Vec<Reply> {
    let mut bytes = Vec::new();
    for words in commands {
        let arguments: Vec<&[u8]> = words.iter().map(String::as_bytes).collect();
        bytes.extend(encode_command(&arguments));
    }
    connection.send(&bytes).expect("the pipeline is sent");
    commands.iter().map(|_| connection.read_reply().expect("a reply to each command")).collect()
}

/// One connection's random pipelines on `port`: every reply, in order.
fn run_connection(port: u16, seed: u64, prefix: &str) -> Vec<Reply> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut connection = RawConnection::connect(port);
    let mut replies = Vec::new();
    for _ in 0..PIPELINES_PER_SEED {
        let length = rng.gen_range(1..=PIPELINE_COMMANDS_MAX);
        let commands: Vec<Vec<String>> = (0..length).map(|_| command(&mut rng, prefix)).collect();
        replies.extend(pipeline(&mut connection, &commands));
    }
    replies
}

/// Several connections at once, each on its own keys: every connection's replies.
fn run_concurrently(port: u16, seed: u64, connections: usize) -> BTreeMap<usize, Vec<Reply>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|index| {
                let prefix = format!("c{index}");
                let seed = seed * 100 + index as u64;
                scope.spawn(move || (index, run_connection(port, seed, &prefix)))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("a connection finished")).collect()
    })
}

fn node(shards: u32) -> TestNode {
    TestNode::start(NodeSettings { shards, ..NodeSettings::default() })
}

fn seeds() -> Vec<u64> {
    match std::env::var("STRATA_PROPERTY_SEED") {
        Ok(seed) => vec![seed.parse().expect("STRATA_PROPERTY_SEED is a number")],
        Err(_) => vec![11, 12, 13],
    }
}

#[test]
fn random_pipelines_get_the_same_answers_from_one_two_and_three_shards() {
    let nodes: Vec<(u32, TestNode)> =
        [1, 2, 3].into_iter().map(|shards| (shards, node(shards))).collect();
    for seed in seeds() {
        let mut answers = Vec::new();
        for (shards, node) in &nodes {
            node.raw().command_words(&["FLUSHALL"]);
            answers.push((*shards, run_concurrently(node.port, seed, 4)));
        }
        let (_, reference) = &answers[0];
        for (shards, got) in &answers[1..] {
            for (connection, expected) in reference {
                let got = &got[connection];
                assert_eq!(got.len(), expected.len());
                if let Some(index) = (0..got.len()).find(|index| got[*index] != expected[*index]) {
                    panic!(
                        "seed {seed}, connection {connection}, reply {index}: one shard \
                         {:?}, {shards} shards {:?}",
                        expected[index], got[index]
                    );
                }
            }
        }
    }
}

/// `INFO stats` fields as numbers.
fn stats(connection: &mut RawConnection) -> BTreeMap<String, u64> {
    let Reply::Bulk(Some(text)) = connection.command_words(&["INFO", "stats"]) else {
        panic!("INFO answers with a bulk string");
    };
    String::from_utf8(text)
        .expect("INFO is text")
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter_map(|(name, value)| Some((name.to_string(), value.trim().parse().ok()?)))
        .collect()
}

#[test]
fn info_counts_hops_and_a_pipeline_crosses_in_few_messages() {
    let node = node(2);
    let mut connection = node.raw();
    let before = stats(&mut connection);
    let commands: Vec<Vec<String>> =
        (0..400).map(|index| vec!["GET".to_string(), format!("key:{index}")]).collect();
    let replies = pipeline(&mut connection, &commands);
    assert!(replies.iter().all(|reply| *reply == Reply::Bulk(None)));
    let after = stats(&mut connection);
    let delta = |name: &str| after[name] - before[name];
    let (hops, messages, wakeups) =
        (delta("shard_hops"), delta("shard_messages"), delta("shard_wakeups"));
    // About half of 400 keys live on the other shard: their requests and replies cross.
    assert!(hops >= 200, "{hops} hops for 400 GETs over two shards");
    assert!(messages >= 2, "requests and replies need a publication each way");
    assert!(
        messages * 8 <= hops,
        "{messages} ring publications for {hops} hops: a pipeline's hops go together"
    );
    assert!(wakeups <= messages, "{wakeups} wake-ups for {messages} publications");
    let one_shard = self::node(1);
    let mut alone = one_shard.raw();
    let before = stats(&mut alone);
    pipeline(&mut alone, &commands);
    let after = stats(&mut alone);
    assert_eq!(after["shard_hops"], before["shard_hops"], "one shard never hops");
}
