//! The commands that walk the keyspace (KEYS, SCAN, RANDOMKEY), OBJECT, and active expiry,
//! against the real `redis-server` where replies can be compared, and against Redis's rules
//! where the order of keys differs by design.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use strata_tests::admin::{leader_follower_and_learner, wait_until};
use strata_tests::compare::assert_same;
use strata_tests::raw::{encode_command, RawConnection, Reply};
use strata_tests::redis_server::RedisServer;
use strata_tests::{NodeSettings, TestNode};

/// Keys with the bytes glob patterns treat specially, and a crowd of ordinary ones.
fn sample_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = [
        "",
        "a",
        "ab",
        "abc",
        "a*b",
        "a?c",
        "a[b]c",
        "a\\b",
        "h[a]llo",
        "hallo",
        "hello",
        "hxllo",
        "hllo",
        "heeeello",
        "]",
        "[",
        "^",
        "-",
        "user:1:name",
        "user:22:name",
        "user:1:age",
    ]
    .iter()
    .map(|key| key.as_bytes().to_vec())
    .collect();
    keys.push(vec![0xff, b'x']);
    keys.push(vec![b'a', 0x80]);
    keys.extend((0..300).map(|number| format!("crowd:{number}").into_bytes()));
    keys
}

fn set_all(connection: &mut RawConnection, keys: &[Vec<u8>]) {
    for key in keys {
        assert_eq!(connection.command(&[b"SET", key, b"v"]), Reply::Simple("OK".into()));
    }
}

/// The keys of an array reply, sorted.
fn sorted_keys(reply: &Reply) -> BTreeSet<Vec<u8>> {
    let Reply::Array(Some(items)) = reply else { panic!("not an array: {reply:?}") };
    items
        .iter()
        .map(|item| match item {
            Reply::Bulk(Some(key)) => key.clone(),
            other => panic!("not a key: {other:?}"),
        })
        .collect()
}

/// Every key a whole SCAN returns (with `options` after the cursor), and the number of calls.
fn scan_all(connection: &mut RawConnection, options: &[&[u8]]) -> (BTreeSet<Vec<u8>>, usize) {
    let mut cursor = b"0".to_vec();
    let mut keys = BTreeSet::new();
    for calls in 1..=100_000 {
        let mut arguments: Vec<&[u8]> = vec![b"SCAN", &cursor];
        arguments.extend_from_slice(options);
        let reply = connection.command(&arguments);
        let Reply::Array(Some(parts)) = &reply else { panic!("SCAN answered {reply:?}") };
        let Reply::Bulk(Some(next)) = &parts[0] else { panic!("SCAN answered {reply:?}") };
        keys.extend(sorted_keys(&parts[1]));
        if next == b"0" {
            return (keys, calls);
        }
        cursor = next.clone();
    }
    panic!("SCAN did not finish in 100000 calls");
}

const PATTERNS: &[&str] = &[
    "*",
    "a*",
    "*b",
    "a?c",
    "a\\*b",
    "a[*]b",
    "h[ae]llo",
    "h[^e]llo",
    "h[a-e]llo",
    "h[e-a]llo",
    "h*llo",
    "h\\[a\\]llo",
    "h[\\[]a*",
    "[",
    "[abc",
    "[^",
    "]",
    "^",
    "-",
    "user:*:name",
    "user:?:*",
    "crowd:1*",
    "crowd:[1-3]?",
    "*:*:*",
    "**",
    "",
    "a\\",
    "*[",
    "\\",
    "[a-]",
];

#[test]
fn keys_and_scan_match_the_keys_redis_matches() {
    let redis = RedisServer::start();
    let node = TestNode::start(NodeSettings::default());
    let (mut theirs, mut ours) = (RawConnection::connect(redis.port), node.raw());
    let keys = sample_keys();
    set_all(&mut theirs, &keys);
    set_all(&mut ours, &keys);
    for pattern in PATTERNS {
        let expected = sorted_keys(&theirs.command_words(&["KEYS", pattern]));
        let got = sorted_keys(&ours.command_words(&["KEYS", pattern]));
        assert_eq!(got, expected, "KEYS {pattern:?}");
        let (scanned, _) = scan_all(&mut ours, &[b"MATCH", pattern.as_bytes(), b"COUNT", b"7"]);
        assert_eq!(scanned, expected, "SCAN MATCH {pattern:?}");
    }
    let (everything, calls) = scan_all(&mut ours, &[]);
    assert_eq!(everything, keys.iter().cloned().collect());
    assert!(calls > 1, "the default COUNT of 10 took {calls} calls for {} keys", keys.len());
    let (strings, _) = scan_all(&mut ours, &[b"TYPE", b"STRING", b"COUNT", b"1000"]);
    assert_eq!(strings, everything);
    let (hashes, _) = scan_all(&mut ours, &[b"TYPE", b"hash"]);
    assert!(hashes.is_empty());
}

#[test]
fn scan_and_keys_errors_as_in_redis() {
    assert_same(&[
        &[&["SCAN"], &["SCAN", "x"], &["SCAN", "1x"], &["SCAN", " 1"], &["SCAN", "+"]],
        &[&["SCAN", "18446744073709551616"], &["SCAN", "0", "COUNT"], &["SCAN", "0", "MATCH"]],
        &[
            &["SCAN", "0", "COUNT", "0"],
            &["SCAN", "0", "COUNT", "-1"],
            &["SCAN", "0", "COUNT", "x"],
        ],
        &[&["SCAN", "0", "BAD", "1"], &["SCAN", "0", "COUNT", "10", "TYPE"]],
        &[&["SCAN", "0", "COUNT", "x", "BAD"], &["SCAN", "0", "BAD", "x", "COUNT", "x"]],
        &[&["KEYS"], &["KEYS", "a", "b"], &["RANDOMKEY", "x"]],
        // An empty keyspace, whatever the cursor's form.
        &[&["SCAN", "0"], &["SCAN", ""], &["SCAN", "+0"], &["SCAN", "0", "MATCH", "*"]],
        &[&["KEYS", "*"], &["RANDOMKEY"]],
        // One key: every walk finds it.
        &[&["SET", "{k}", "v"], &["KEYS", "*"], &["RANDOMKEY"], &["SCAN", "0", "COUNT", "1000"]],
        &[&["SCAN", "0", "TYPE", "list", "COUNT", "1000"], &["KEYS", "{k}"], &["KEYS", "k"]],
    ]);
}

#[test]
fn object_answers_as_redis_answers_for_a_value_set_whole() {
    let long = "x".repeat(45);
    let embedded = "x".repeat(44);
    assert_same(&[
        &[&["SET", "{k}", "12345"], &["OBJECT", "ENCODING", "{k}"], &["OBJECT", "REFCOUNT", "{k}"]],
        &[&["SET", "{k}", "-9223372036854775808"], &["OBJECT", "ENCODING", "{k}"]],
        &[&["SET", "{k}", "9223372036854775808"], &["OBJECT", "ENCODING", "{k}"]],
        &[&["SET", "{k}", "0123"], &["OBJECT", "encoding", "{k}"]],
        &[&["SET", "{k}", "-0"], &["OBJECT", "ENCODING", "{k}"]],
        &[&["SET", "{k}", ""], &["OBJECT", "ENCODING", "{k}"]],
        &[&["SET", "{k}", &embedded], &["OBJECT", "ENCODING", "{k}"]],
        &[&["SET", "{k}", &long], &["OBJECT", "ENCODING", "{k}"], &["OBJECT", "REFCOUNT", "{k}"]],
        &[&["SET", "{k}", "v"], &["OBJECT", "IDLETIME", "{k}"], &["OBJECT", "FREQ", "{k}"]],
        &[
            &["OBJECT", "ENCODING", "{k}"],
            &["OBJECT", "FREQ", "{k}"],
            &["OBJECT", "IDLETIME", "{k}"],
        ],
        &[&["OBJECT", "REFCOUNT", "{k}"], &["OBJECT"], &["OBJECT", "ENCODING"]],
        &[&["OBJECT", "ENCODING", "{k}", "x"], &["OBJECT", "FOO"], &["OBJECT", "FOO", "{k}"]],
        &[&["OBJECT", "HELP", "x"], &["OBJECT", "idletime"]],
    ]);
}

#[test]
fn object_idletime_counts_seconds_since_the_last_access() {
    let node = TestNode::start(NodeSettings::default());
    let mut connection = node.raw();
    connection.command_words(&["SET", "idle", "v"]);
    connection.command_words(&["SET", "busy", "v"]);
    std::thread::sleep(Duration::from_millis(2100));
    connection.command_words(&["GET", "busy"]);
    let idle = connection.command_words(&["OBJECT", "IDLETIME", "idle"]);
    assert!(matches!(idle, Reply::Integer(2..=3)), "{idle:?}");
    // OBJECT itself is no access.
    let again = connection.command_words(&["OBJECT", "IDLETIME", "idle"]);
    assert!(matches!(again, Reply::Integer(2..=3)), "{again:?}");
    assert_eq!(connection.command_words(&["OBJECT", "IDLETIME", "busy"]), Reply::Integer(0));
    let Reply::Array(Some(help)) = connection.command_words(&["OBJECT", "HELP"]) else {
        panic!("OBJECT HELP is an array")
    };
    assert!(help.len() > 8, "{help:?}");
}

#[test]
fn randomkey_returns_keys_that_exist_and_not_always_the_same() {
    let node = TestNode::start(NodeSettings::default());
    let mut connection = node.raw();
    let keys: Vec<Vec<u8>> = (0..50).map(|number| format!("r:{number}").into_bytes()).collect();
    set_all(&mut connection, &keys);
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let Reply::Bulk(Some(key)) = connection.command_words(&["RANDOMKEY"]) else {
            panic!("RANDOMKEY gave no key")
        };
        assert!(keys.contains(&key), "{key:?}");
        seen.insert(key);
    }
    assert!(seen.len() > 10, "200 draws over 50 keys saw {} of them", seen.len());
    connection.command_words(&["FLUSHALL"]);
    assert_eq!(connection.command_words(&["RANDOMKEY"]), Reply::Bulk(None));
}

/// SCAN's promise: every key present from the start of a scan to its end is returned, even
/// when the tables grow (and move their entries) in the middle of it.
#[test]
fn scan_returns_every_key_present_for_the_whole_scan_while_tables_grow() {
    let node = TestNode::start(NodeSettings::default());
    let mut connection = node.raw();
    let lasting: Vec<Vec<u8>> =
        (0..2000).map(|number| format!("l:{number}").into_bytes()).collect();
    set_all(&mut connection, &lasting);
    let doomed: Vec<Vec<u8>> = (0..500).map(|number| format!("d:{number}").into_bytes()).collect();
    set_all(&mut connection, &doomed);
    let mut writer = node.raw();
    let mut cursor = b"0".to_vec();
    let mut returned = BTreeSet::new();
    let mut added = 0;
    for calls in 0..100_000 {
        let reply = connection.command(&[b"SCAN", &cursor, b"COUNT", b"5"]);
        let Reply::Array(Some(parts)) = &reply else { panic!("SCAN answered {reply:?}") };
        let Reply::Bulk(Some(next)) = &parts[0] else { panic!("SCAN answered {reply:?}") };
        returned.extend(sorted_keys(&parts[1]));
        // Between calls: new keys (the tables grow several times over) and deletes.
        if calls % 4 == 0 && added < 20_000 {
            let batch: Vec<Vec<u8>> =
                (added..added + 200).map(|number| format!("n:{number}").into_bytes()).collect();
            let mut arguments: Vec<&[u8]> = vec![b"MSET"];
            for key in &batch {
                arguments.extend_from_slice(&[key, b"v"]);
            }
            assert_eq!(writer.command(&arguments), Reply::Simple("OK".into()));
            added += 200;
        }
        if calls < doomed.len() {
            writer.command(&[b"DEL", &doomed[calls]]);
        }
        if next == b"0" {
            break;
        }
        cursor = next.clone();
    }
    assert!(added >= 2000, "the scan ended after {added} new keys: the tables barely grew");
    let missing: Vec<&Vec<u8>> = lasting.iter().filter(|key| !returned.contains(*key)).collect();
    assert!(missing.is_empty(), "{} keys present throughout were not returned", missing.len());
}

fn info_field(connection: &mut RawConnection, section: &str, name: &str) -> String {
    let Reply::Bulk(Some(text)) = connection.command_words(&["INFO", section]) else {
        panic!("INFO {section} is a bulk string")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let prefix = format!("{name}:");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} in INFO {section}: {text}"))
}

#[test]
fn expired_keys_are_deleted_actively_as_redis_deletes_them() {
    let redis = RedisServer::start();
    let node = TestNode::start(NodeSettings::default());
    let (mut theirs, mut connection) = (RawConnection::connect(redis.port), node.raw());
    for server in [&mut theirs, &mut connection] {
        server.command_words(&["SET", "a", "v", "PX", "50"]);
        server.command_words(&["SET", "b", "v", "PX", "60"]);
        server.command_words(&["SET", "c", "v"]);
    }
    // Nobody reads the keys: only an active cycle removes them from the count.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(theirs.command_words(&["DBSIZE"]), Reply::Integer(1));
    assert_eq!(connection.command_words(&["DBSIZE"]), Reply::Integer(1));
    connection.command_words(&["FLUSHALL"]);
    // One pipeline, so that every key is there before the first expires, however slow the disk.
    let mut pipeline = Vec::new();
    for number in 0..300 {
        let (expiring, lasting) = (format!("e:{number}"), format!("p:{number}"));
        pipeline.extend(encode_command(&[b"SET", expiring.as_bytes(), b"v", b"PX", b"3000"]));
        pipeline.extend(encode_command(&[b"SET", lasting.as_bytes(), b"v"]));
    }
    pipeline.extend(encode_command(&[b"SET", b"later", b"v", b"EX", b"1000"]));
    connection.send(&pipeline).expect("the pipeline is sent");
    for _ in 0..601 {
        assert_eq!(connection.read_reply().expect("a reply"), Reply::Simple("OK".into()));
    }
    assert_eq!(info_field(&mut connection, "keyspace", "db0"), "keys=601,expires=301,avg_ttl=0");
    let started = Instant::now();
    let gone = wait_until(Duration::from_secs(10), || {
        connection.command_words(&["DBSIZE"]) == Reply::Integer(301)
    });
    assert!(gone, "expired keys still counted after {:?}", started.elapsed());
    assert_eq!(info_field(&mut connection, "keyspace", "db0"), "keys=301,expires=1,avg_ttl=0");
    assert_eq!(info_field(&mut connection, "stats", "expired_keys"), "302");
}

#[test]
fn active_expiry_reaches_followers_and_learners_as_deletes() {
    let (leader, follower, learner) = leader_follower_and_learner();
    let mut client = leader.raw();
    for number in 0..100 {
        client.command_words(&["SET", &format!("e:{number}"), "v", "PX", "300"]);
        client.command_words(&["SET", &format!("p:{number}"), "v"]);
    }
    for node in [&leader, &follower, &learner] {
        let mut connection = node.raw();
        let gone = wait_until(Duration::from_secs(20), || {
            connection.command_words(&["DBSIZE"]) == Reply::Integer(100)
        });
        let size = connection.command_words(&["DBSIZE"]);
        assert!(gone, "node on port {} holds {size:?} keys", node.port);
        assert_eq!(info_field(&mut connection, "keyspace", "db0"), "keys=100,expires=0,avg_ttl=0");
    }
    // Replicas delete nothing on their own: what they removed came from the leader's log.
    assert_eq!(info_field(&mut follower.raw(), "stats", "expired_keys"), "0");
    assert_eq!(info_field(&mut client, "stats", "expired_keys"), "100");
}
