//! Strata against the real `redis-server`: the same commands sent to both, on fresh keys, and
//! every reply compared whole (values, types and error texts). Each case is a short sequence,
//! so a write's effect is compared through the reads that follow it.

use strata_tests::compare::{assert_same, differences, differences_with};
use strata_tests::raw::{RawConnection, Reply};
use strata_tests::redis_server::RedisServer;
use strata_tests::{NodeSettings, TestNode};

#[test]
fn expiry_overflow_is_refused_as_redis_refuses_it() {
    assert_same(&[
        &[&["SET", "{k}", "v", "EX", "10000000000000000"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "EX", "9223372036854775"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "EX", "9223372036854776"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "PX", "9223372036854775807"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "PX", "9223372036854775808"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "EXAT", "9223372036854775"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "EXAT", "9223372036854776"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "PXAT", "9223372036854775807"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "EX", "-1"], &["SET", "{k}", "v", "PX", "0"]],
        // The expiry is checked even when NX keeps the key as it is.
        &[&["SET", "{k}", "v"], &["SET", "{k}", "w", "NX", "EX", "0"], &["GET", "{k}"]],
        &[&["SET", "{k}", "v"], &["EXPIRE", "{k}", "9223372036854775807"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["EXPIRE", "{k}", "-9223372036854775808"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["PEXPIRE", "{k}", "9223372036854775807"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["EXPIREAT", "{k}", "9223372036854775807"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["PEXPIREAT", "{k}", "9223372036854775807"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v"], &["PEXPIREAT", "{k}", "-1"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v"], &["EXPIREAT", "{k}", "0"], &["EXISTS", "{k}"]],
    ]);
}

#[test]
fn set_options_repeat_and_conflict_as_in_redis() {
    assert_same(&[
        &[&["SET", "{k}", "v", "EX", "10", "EX", "20"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v", "PX", "10000", "PX", "20000"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "NX", "NX"], &["SET", "{k}", "w", "NX", "NX"], &["GET", "{k}"]],
        &[&["SET", "{k}", "v", "XX", "XX"], &["GET", "{k}"]],
        &[&["SET", "{k}", "v", "GET", "GET"], &["SET", "{k}", "w", "GET"]],
        &[&["SET", "{k}", "v", "EX", "100"], &["SET", "{k}", "w", "KEEPTTL", "KEEPTTL"]],
        &[&["SET", "{k}", "v", "KEEPTTL", "EX", "10"], &["SET", "{k}", "v", "EX", "10", "KEEPTTL"]],
        &[&["SET", "{k}", "v", "NX", "XX"], &["SET", "{k}", "v", "XX", "NX"]],
        &[
            &["SET", "{k}", "v", "EX", "10", "PX", "10"],
            &["SET", "{k}", "v", "EXAT", "1", "PXAT", "1"],
        ],
        // Options are read before the expiry's number.
        &[&["SET", "{k}", "v", "PX", "XX", "PXAT", "5"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v", "EX", "ten", "NX", "XX"], &["SET", "{k}", "v", "EX", "ten"]],
        &[&["SET", "{k}", "v", "EX"], &["SET", "{k}", "v", "EX", "10", "BOGUS"]],
    ]);
}

#[test]
fn expire_errors_name_the_command_and_come_in_redis_order() {
    assert_same(&[
        &[
            &["SET", "{k}", "v"],
            &["EXPIRE", "{k}", "abc", "NX", "GT"],
            &["EXPIRE", "{k}", "abc", "BAD"],
        ],
        &[&["SET", "{k}", "v"], &["PEXPIRE", "{k}", "abc", "XX", "NX"], &["EXPIRE", "{k}", "abc"]],
        &[&["SET", "{k}", "v"], &["EXPIRE", "{k}", "10", "GT", "LT"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["EXPIREAT", "{k}", "99999999999999999"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["PEXPIREAT", "{k}", "abc"], &["PEXPIRE", "{k}"]],
        &[&["EXPIRE", "{k}", "10"], &["EXPIRE", "{k}", "10", "NX"], &["PERSIST", "{k}"]],
    ]);
}

#[test]
fn the_comparison_sees_a_difference() {
    // Lists are out of scope: Redis pushes, Strata answers an unknown command.
    let found = differences(&[&[&["LPUSH", "{k}", "a"]]]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("unknown command"), "{found:?}");
}

#[test]
fn setex_getdel_getex_as_in_redis() {
    assert_same(&[
        &[&["SETEX", "{k}", "100", "v"], &["GET", "{k}"], &["TTL", "{k}"]],
        &[&["PSETEX", "{k}", "100000", "v"], &["TTL", "{k}"]],
        &[&["SETEX", "{k}", "0", "v"], &["PSETEX", "{k}", "-5", "v"], &["EXISTS", "{k}"]],
        &[&["SETEX", "{k}", "abc", "v"], &["SETEX", "{k}", "10"], &["PSETEX", "{k}"]],
        &[
            &["SETEX", "{k}", "9223372036854775", "v"],
            &["PSETEX", "{k}", "9223372036854775807", "v"],
        ],
        &[&["SET", "{k}", "v"], &["GETDEL", "{k}"], &["GETDEL", "{k}"], &["EXISTS", "{k}"]],
        &[&["GETDEL"], &["GETDEL", "{k}", "extra"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "EX", "100"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "PX", "100000"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v", "EX", "100"], &["GETEX", "{k}", "PERSIST"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "EXAT", "1"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "PXAT", "1"], &["EXISTS", "{k}"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "EX", "10", "EX", "100"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "EX", "0"], &["GETEX", "{k}", "PX", "abc"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "EX", "10", "PERSIST"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "PERSIST", "EX", "10"], &["GETEX", "{k}", "NX"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "EX"], &["GETEX", "{k}", "KEEPTTL"]],
        &[&["GETEX", "{k}", "EX", "10"], &["GETEX", "{k}", "EX", "0"], &["GETEX"]],
        &[&["SET", "{k}", "v"], &["GETEX", "{k}", "EX", "9223372036854775"], &["TTL", "{k}"]],
    ]);
}

#[test]
fn ranges_of_strings_as_in_redis() {
    let mut cases: Vec<Vec<Vec<String>>> = Vec::new();
    let offsets = ["0", "1", "3", "-1", "-3", "-20", "20", "100", "-9223372036854775808"];
    for start in offsets {
        for end in offsets {
            cases.push(vec![
                vec!["SET".into(), "{k}".into(), "Hello World".into()],
                vec!["GETRANGE".into(), "{k}".into(), start.into(), end.into()],
                vec!["SUBSTR".into(), "{k}".into(), start.into(), end.into()],
            ]);
        }
    }
    let owned: Vec<Vec<Vec<&str>>> = cases
        .iter()
        .map(|case| {
            case.iter().map(|command| command.iter().map(String::as_str).collect()).collect()
        })
        .collect();
    let commands: Vec<Vec<&[&str]>> =
        owned.iter().map(|case| case.iter().map(Vec::as_slice).collect()).collect();
    let mut all: Vec<&[&[&str]]> = commands.iter().map(Vec::as_slice).collect();
    let more: &[&[&[&str]]] = &[
        &[&["GETRANGE", "{k}", "0", "-1"], &["SET", "{k}", ""], &["GETRANGE", "{k}", "0", "-1"]],
        &[&["GETRANGE", "{k}", "a", "1"], &["GETRANGE", "{k}", "0"], &["SUBSTR", "{k}", "0", "b"]],
        &[&["SETRANGE", "{k}", "0", ""], &["EXISTS", "{k}"], &["SETRANGE", "{k}", "5", "abc"]],
        &[&["SETRANGE", "{k}", "2", "xyz"], &["GET", "{k}"], &["STRLEN", "{k}"]],
        &[&["SET", "{k}", "Hello World"], &["SETRANGE", "{k}", "6", "Redis"], &["GET", "{k}"]],
        &[&["SET", "{k}", "Hello"], &["SETRANGE", "{k}", "10", "!"], &["GET", "{k}"]],
        &[&["SET", "{k}", "Hello"], &["SETRANGE", "{k}", "1", ""], &["GET", "{k}"]],
        &[&["SET", "{k}", "v", "EX", "100"], &["SETRANGE", "{k}", "1", "w"], &["TTL", "{k}"]],
        &[&["SETRANGE", "{k}", "-1", "x"], &["SETRANGE", "{k}", "x", "x"], &["EXISTS", "{k}"]],
        &[&["SETRANGE", "{k}", "600000000", "x"], &["SETRANGE", "{k}", "1"], &["EXISTS", "{k}"]],
    ];
    all.extend_from_slice(more);
    let found = differences(&all);
    assert!(found.is_empty(), "{} differences:\n{}", found.len(), found.join("\n"));
}

#[test]
fn incrbyfloat_counts_in_redis_long_double() {
    assert_same(&[
        &[&["INCRBYFLOAT", "{k}", "10.5"], &["GET", "{k}"], &["INCRBYFLOAT", "{k}", "0.1"]],
        &[&["SET", "{k}", "1"], &["INCRBYFLOAT", "{k}", "-1.1"], &["INCRBYFLOAT", "{k}", "1.1"]],
        &[
            &["SET", "{k}", "0.1"],
            &["INCRBYFLOAT", "{k}", "0.2"],
            &["INCRBYFLOAT", "{k}", "12345678.9"],
        ],
        &[
            &["INCRBYFLOAT", "{k}", "5.0e3"],
            &["INCRBYFLOAT", "{k}", "3.0e-5"],
            &["INCRBYFLOAT", "{k}", "-5000.00003"],
        ],
        &[&["INCRBYFLOAT", "{k}", "123456789012.123"], &["INCRBYFLOAT", "{k}", "1e300"]],
        &[&["SET", "{k}", "abc"], &["INCRBYFLOAT", "{k}", "1"], &["GET", "{k}"]],
        &[
            &["INCRBYFLOAT", "{k}", "abc"],
            &["INCRBYFLOAT", "{k}", ""],
            &["INCRBYFLOAT", "{k}", " 1"],
        ],
        &[
            &["INCRBYFLOAT", "{k}", "1e5000"],
            &["INCRBYFLOAT", "{k}", "inf"],
            &["INCRBYFLOAT", "{k}", "nan"],
        ],
        &[&["SET", "{k}", "1e4932"], &["INCRBYFLOAT", "{k}", "1e4932"], &["GET", "{k}"]],
        &[&["SET", "{k}", "5", "EX", "100"], &["INCRBYFLOAT", "{k}", "1.5"], &["TTL", "{k}"]],
        &[&["INCRBYFLOAT", "{k}"], &["INCRBYFLOAT", "{k}", "1", "2"]],
        &[&["INCRBYFLOAT", "{k}", "0x10"], &["INCRBYFLOAT", "{k}", "-0"], &["GET", "{k}"]],
    ]);
}

#[test]
fn type_touch_expiretime_and_time_as_in_redis() {
    assert_same(&[
        &[&["TYPE", "{k}"], &["SET", "{k}", "v"], &["TYPE", "{k}"], &["TYPE"]],
        &[&["SET", "{k}", "v"], &["TOUCH", "{k}", "{k}", "missing:{k}"], &["TOUCH"]],
        &[
            &["EXPIRETIME", "{k}"],
            &["PEXPIRETIME", "{k}"],
            &["SET", "{k}", "v"],
            &["EXPIRETIME", "{k}"],
        ],
        &[
            &["SET", "{k}", "v", "PXAT", "33177117420123"],
            &["PEXPIRETIME", "{k}"],
            &["EXPIRETIME", "{k}"],
        ],
        &[
            &["SET", "{k}", "v", "EXAT", "33177117420"],
            &["PEXPIRETIME", "{k}"],
            &["EXPIRETIME", "{k}", "x"],
        ],
        &[&["TIME", "now"], &["PING"]],
    ]);
}

/// Runs `words` on `connection` and answers the reply.
fn run(connection: &mut RawConnection, words: &[&str]) -> Reply {
    connection.command_words(words)
}

#[test]
fn the_new_writes_reach_replicas_and_survive_a_crash_with_the_same_values() {
    use strata_tests::admin::set_role;
    let leader = TestNode::start(NodeSettings::cluster(2));
    set_role(&leader, "leader", "boss", None);
    let follower = TestNode::start(NodeSettings::cluster(1));
    let learner = TestNode::start(NodeSettings::cluster(1));
    set_role(&follower, "follower", "f1", Some(&leader));
    set_role(&learner, "learner", "l1", Some(&leader));
    let mut client = leader.raw();
    let writes: &[&[&str]] = &[
        &["SET", "float", "1"],
        &["INCRBYFLOAT", "float", "-1.1"],
        &["INCRBYFLOAT", "sum", "12345678.9"],
        &["SETRANGE", "ranged", "3", "abc"],
        &["SET", "patched", "Hello World"],
        &["SETRANGE", "patched", "6", "Redis"],
        &["SETEX", "timed", "1000", "v"],
        &["SET", "lasting", "v", "EX", "1000"],
        &["GETEX", "lasting", "PERSIST"],
        &["SET", "doomed", "v"],
        &["GETDEL", "doomed"],
        &["SET", "later", "v"],
        &["GETEX", "later", "PXAT", "33177117420123"],
        &["SET", "{r}a", "moved"],
        &["RENAME", "{r}a", "{r}b"],
        &["COPY", "{r}b", "{r}c"],
        &["MSETNX", "{m}a", "1", "{m}b", "2"],
    ];
    for words in writes {
        let reply = run(&mut client, words);
        assert!(!matches!(reply, Reply::Error(_)), "{words:?}: {reply:?}");
    }
    let reads: &[&[&str]] = &[
        &["GET", "float"],
        &["GET", "sum"],
        &["GET", "ranged"],
        &["GET", "patched"],
        &["TTL", "lasting"],
        &["EXISTS", "doomed"],
        &["PEXPIRETIME", "later"],
        &["TYPE", "timed"],
        &["EXISTS", "{r}a"],
        &["GET", "{r}b"],
        &["GET", "{r}c"],
        &["MGET", "{m}a", "{m}b"],
    ];
    let expected: Vec<Reply> = reads.iter().map(|words| run(&mut client, words)).collect();
    assert_eq!(expected[0], Reply::bulk("-0.1"));
    assert_eq!(expected[1], Reply::bulk("12345678.8999999999996362"));
    assert_eq!(expected[2], Reply::Bulk(Some(b"\0\0\0abc".to_vec())));
    assert_eq!(expected[3], Reply::bulk("Hello Redis"));
    let same_everywhere = |node: &TestNode, what: &str| {
        let mut connection = node.raw();
        let held = strata_tests::admin::wait_until(std::time::Duration::from_secs(20), || {
            reads.iter().zip(&expected).all(|(words, reply)| run(&mut connection, words) == *reply)
        });
        let got: Vec<Reply> = reads.iter().map(|words| run(&mut connection, words)).collect();
        assert!(held, "{what}: {got:?}, leader {expected:?}");
    };
    same_everywhere(&follower, "follower");
    same_everywhere(&learner, "learner");
    assert_eq!(run(&mut follower.raw(), &["TTL", "timed"]), run(&mut client, &["TTL", "timed"]));
    // A standalone node's log holds the same effects over kill -9.
    let mut standalone = TestNode::start(NodeSettings::default());
    let mut connection = standalone.raw();
    for words in writes {
        run(&mut connection, words);
    }
    drop(connection);
    standalone.kill();
    standalone.restart();
    same_everywhere(&standalone, "a standalone node after kill -9");
}

#[test]
fn rename_copy_and_msetnx_within_one_slot_as_in_redis() {
    // `{{k}}` becomes the hash tag `{k:<case>}`: every key of a case shares its slot.
    assert_same(&[
        &[
            &["SET", "{{k}}:a", "v", "EX", "100"],
            &["RENAME", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:a"],
        ],
        &[
            &["SET", "{{k}}:a", "v", "EX", "100"],
            &["RENAME", "{{k}}:a", "{{k}}:b"],
            &["TTL", "{{k}}:b"],
        ],
        &[
            &["SET", "{{k}}:a", "1"],
            &["SET", "{{k}}:b", "2", "EX", "100"],
            &["RENAME", "{{k}}:a", "{{k}}:b"],
            &["TTL", "{{k}}:b"],
        ],
        &[
            &["RENAME", "{{k}}:a", "{{k}}:b"],
            &["RENAMENX", "{{k}}:a", "{{k}}:b"],
            &["RENAME", "{{k}}:a"],
        ],
        &[
            &["SET", "{{k}}:a", "v"],
            &["RENAME", "{{k}}:a", "{{k}}:a"],
            &["RENAMENX", "{{k}}:a", "{{k}}:a"],
        ],
        &[
            &["SET", "{{k}}:a", "1"],
            &["SET", "{{k}}:b", "2"],
            &["RENAMENX", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:b"],
        ],
        &[
            &["SET", "{{k}}:a", "1"],
            &["RENAMENX", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:b"],
            &["EXISTS", "{{k}}:a"],
        ],
        &[
            &["SET", "{{k}}:a", "v", "EX", "100"],
            &["COPY", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:b"],
            &["TTL", "{{k}}:b"],
        ],
        &[
            &["SET", "{{k}}:a", "1"],
            &["SET", "{{k}}:b", "2"],
            &["COPY", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:b"],
        ],
        &[
            &["SET", "{{k}}:a", "1"],
            &["SET", "{{k}}:b", "2"],
            &["COPY", "{{k}}:a", "{{k}}:b", "REPLACE"],
            &["GET", "{{k}}:b"],
        ],
        &[
            &["SET", "{{k}}:a", "1"],
            &["COPY", "{{k}}:a", "{{k}}:a"],
            &["COPY", "{{k}}:x", "{{k}}:y"],
        ],
        &[
            &["SET", "{{k}}:a", "1"],
            &["COPY", "{{k}}:a", "{{k}}:b", "DB", "0"],
            &["GET", "{{k}}:b"],
        ],
        &[
            &["COPY", "{{k}}:a", "{{k}}:b", "BOGUS"],
            &["COPY", "{{k}}:a", "{{k}}:b", "DB"],
            &["COPY", "{{k}}:a", "{{k}}:b", "DB", "x"],
        ],
        &[&["COPY", "{{k}}:a"], &["COPY"]],
        &[
            &["MSETNX", "{{k}}:a", "1", "{{k}}:b", "2"],
            &["MGET", "{{k}}:a", "{{k}}:b"],
            &["MSETNX", "{{k}}:a", "3", "{{k}}:c", "4"],
        ],
        &[&["MSETNX", "{{k}}:c", "1"], &["EXISTS", "{{k}}:c"], &["MSETNX", "{{k}}:a"], &["MSETNX"]],
    ]);
}

#[test]
fn keys_of_several_slots_are_refused_as_redis_cluster_refuses_them() {
    let node = TestNode::start(NodeSettings::default());
    let mut raw = node.raw();
    let crossslot = Reply::error("CROSSSLOT Keys in request don't hash to the same slot");
    assert_eq!(raw.command_words(&["SET", "a", "1"]), Reply::Simple("OK".into()));
    for words in [
        &["RENAME", "a", "b"][..],
        &["RENAMENX", "a", "b"],
        &["COPY", "a", "b"],
        &["COPY", "a", "b", "BOGUS"],
        &["MSETNX", "a", "1", "b", "2"],
    ] {
        assert_eq!(raw.command_words(words), crossslot, "{words:?}");
    }
    // Arity comes first, as in Redis Cluster; one database only.
    assert_eq!(
        raw.command_words(&["RENAME", "a"]),
        Reply::error("ERR wrong number of arguments for 'rename' command")
    );
    assert_eq!(
        raw.command_words(&["COPY", "{t}a", "{t}b", "DB", "1"]),
        Reply::error("ERR DB index is out of range")
    );
    assert_eq!(raw.command_words(&["GET", "a"]), Reply::bulk("1"), "nothing moved");
    assert_eq!(raw.command_words(&["EXISTS", "b"]), Reply::Integer(0));
}

/// Sends `bytes` to a connection and reads one reply, or how the connection ended.
fn raw_exchange(connection: &mut RawConnection, bytes: &[u8]) -> Result<Reply, std::io::ErrorKind> {
    connection.send(bytes).map_err(|error| error.kind())?;
    connection.read_reply().map_err(|error| error.kind())
}

#[test]
fn negative_multibulk_lengths_are_skipped_as_redis_skips_them() {
    let redis = RedisServer::start();
    let node = TestNode::start(NodeSettings::default());
    let mut theirs = RawConnection::connect(redis.port);
    let mut ours = node.raw();
    let inputs: [&[u8]; 4] = [
        b"*-10\r\n*1\r\n$4\r\nPING\r\n",
        b"*-1\r\n*0\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n",
        b"*-9223372036854775808\r\n*1\r\n$4\r\nPING\r\n",
        b"*1\r\n$-1\r\n",
    ];
    for input in inputs {
        let (expected, got) = (raw_exchange(&mut theirs, input), raw_exchange(&mut ours, input));
        assert_eq!(expected, got, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn a_value_of_8_mib_is_taken_with_the_default_segments() {
    let settings =
        NodeSettings { segment_size: "64MB", partitions: 1, shards: 1, ..NodeSettings::default() };
    let node = TestNode::start(settings);
    let mut raw = node.raw();
    let value = vec![b'v'; 8 * 1024 * 1024];
    assert_eq!(raw.command(&[b"SET", b"big", &value]), Reply::Simple("OK".into()));
    assert_eq!(raw.command(&[b"STRLEN", b"big"]), Reply::Integer(8 * 1024 * 1024));
    // Beyond the record's limit (the value and a 64 KiB key allowance), growing is refused.
    let more = vec![b'w'; 100 * 1024];
    let refused = Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    assert_eq!(raw.command(&[b"APPEND", b"big", &more]), refused);
    assert_eq!(raw.command(&[b"STRLEN", b"big"]), Reply::Integer(8 * 1024 * 1024));
}

/// The field names of an INFO section's reply, in order.
fn info_fields(reply: &Reply) -> Vec<String> {
    let Reply::Bulk(Some(text)) = reply else { panic!("INFO answered {reply:?}") };
    String::from_utf8_lossy(text)
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split(':').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn info_cpu_and_errorstats_read_as_redis_writes_them() {
    let redis = RedisServer::start();
    let node = TestNode::start(NodeSettings::default());
    let mut theirs = RawConnection::connect(redis.port);
    let mut ours = node.raw();
    for connection in [&mut theirs, &mut ours] {
        connection.command_words(&["GET"]);
        connection.command_words(&["INCR"]);
        connection.command_words(&["SET", "{a}1", "x"]);
        connection.command_words(&["INCR", "{a}1"]);
    }
    let cpu =
        |connection: &mut RawConnection| info_fields(&connection.command_words(&["INFO", "cpu"]));
    assert_eq!(cpu(&mut ours), cpu(&mut theirs));
    let errors = |connection: &mut RawConnection| connection.command_words(&["INFO", "errorstats"]);
    assert_eq!(errors(&mut ours), errors(&mut theirs));
    let Reply::Bulk(Some(text)) = errors(&mut ours) else { panic!("no errorstats") };
    assert!(String::from_utf8_lossy(&text).contains("errorstat_ERR:count=3"));
}

#[test]
fn one_database_as_a_redis_with_databases_1() {
    let found = differences_with(
        &["--databases", "1"],
        &[
            &[&["SELECT", "0"], &["SELECT", "1"], &["SELECT", "x"]],
            &[&["SWAPDB", "0", "0"], &["SWAPDB", "0", "1"], &["SWAPDB", "x", "0"]],
            &[&["SWAPDB", "0", "y"], &["SWAPDB", "0"], &["SWAPDB", "99999999999", "0"]],
            &[&["SET", "{k}", "v"], &["MOVE", "{k}", "0"], &["MOVE", "{k}", "1"]],
            &[&["MOVE", "{k}", "x"], &["MOVE", "{k}"], &["MOVE", "missing:{k}", "1"]],
            &[&["MOVE", "{k}", "-1"], &["GET", "{k}"]],
        ],
    );
    assert!(found.is_empty(), "{} differences:\n{}", found.len(), found.join("\n"));
}

/// The words of an array reply of bulk strings.
fn bulk_words(reply: &Reply) -> Vec<String> {
    let Reply::Array(Some(items)) = reply else { panic!("not an array: {reply:?}") };
    items
        .iter()
        .map(|item| match item {
            Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            other => panic!("not a bulk string: {other:?}"),
        })
        .collect()
}

/// Commands Redis 7.0 does not have (7.2 brought them), and containers whose subcommands
/// here are fewer than Redis's: their entries are compared without the subcommands.
const NEWER_THAN_REDIS: [&str; 2] = ["waitaof", "client|setinfo"];

#[test]
fn command_info_matches_redis_for_every_command_served() {
    let redis = RedisServer::start();
    let node = TestNode::start(NodeSettings::default());
    let mut theirs = RawConnection::connect(redis.port);
    let mut ours = node.raw();
    let names = bulk_words(&ours.command_words(&["COMMAND", "LIST"]));
    let top_level = names.iter().filter(|name| !name.contains('|')).count();
    assert_eq!(ours.command_words(&["COMMAND", "COUNT"]), Reply::Integer(top_level as i64));
    let Reply::Array(Some(all)) = ours.command_words(&["COMMAND"]) else { panic!("COMMAND") };
    assert_eq!(all.len(), top_level);
    let mut found = Vec::new();
    for name in names.iter().filter(|name| !NEWER_THAN_REDIS.contains(&name.as_str())) {
        let info = |connection: &mut RawConnection| {
            let reply = connection.command_words(&["COMMAND", "INFO", name]);
            let Reply::Array(Some(mut entries)) = reply else { panic!("{name}: {reply:?}") };
            let Some(Reply::Array(Some(mut fields))) = entries.pop() else { panic!("{name}") };
            // A container's subcommands: only some are served here; compared one by one.
            fields.truncate(9);
            fields
        };
        let (expected, got) = (info(&mut theirs), info(&mut ours));
        if expected != got {
            found.push(format!("{name}: redis {expected:?}\n  strata {got:?}"));
        }
    }
    assert!(found.is_empty(), "{} differences:\n{}", found.len(), found.join("\n"));
    assert_eq!(
        ours.command_words(&["COMMAND", "INFO", "get", "nosuch"]),
        theirs.command_words(&["COMMAND", "INFO", "get", "nosuch"])
    );
}

#[test]
fn command_getkeys_count_and_docs_as_in_redis() {
    assert_same(&[
        &[&["COMMAND", "GETKEYS", "GET", "a"], &["COMMAND", "GETKEYS", "SET", "a", "b", "EX", "1"]],
        &[
            &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"],
            &["COMMAND", "GETKEYS", "MSET", "a"],
        ],
        &[&["COMMAND", "GETKEYS", "mset", "a", "1", "b"], &["COMMAND", "GETKEYS", "DEL", "a", "b"]],
        &[&["COMMAND", "GETKEYS", "RENAME", "a", "b"], &["COMMAND", "GETKEYS", "COPY", "a", "b"]],
        &[&["COMMAND", "GETKEYS", "MSETNX", "a", "1"], &["COMMAND", "GETKEYS", "GETEX", "a"]],
        &[&["COMMAND", "GETKEYS", "EXPIRE", "a", "1"], &["COMMAND", "GETKEYS", "MOVE", "a", "1"]],
        &[&["COMMAND", "GETKEYS", "TOUCH", "a", "b"], &["COMMAND", "GETKEYS", "MGET", "a", "b"]],
        &[&["COMMAND", "GETKEYS", "ECHO", "a", "b"], &["COMMAND", "GETKEYS", "PING", "x"]],
        &[&["COMMAND", "GETKEYS", "NOSUCH", "a"], &["COMMAND", "GETKEYS", "CONFIG", "x", "y"]],
        &[&["COMMAND", "GETKEYS", "GET", "a", "b"], &["COMMAND", "GETKEYS", "GET"]],
        &[&["COMMAND", "GETKEYS"], &["COMMAND", "COUNT", "x"], &["COMMAND", "NOSUCH"]],
        &[&["COMMAND", "LIST", "x"], &["COMMAND", "LIST", "FILTERBY", "MODULE", "x"]],
        &[&["COMMAND", "DOCS", "nosuch"], &["COMMAND", "INFO", "config|get"]],
        &[&["COMMAND", "LIST", "FILTERBY", "ACLCAT", "nosuch"]],
    ]);
    let redis = RedisServer::start();
    let node = TestNode::start(NodeSettings::default());
    let mut theirs = RawConnection::connect(redis.port);
    let mut ours = node.raw();
    // Redis lists its own order; it also has `config|help`, not served here.
    let pattern = ["COMMAND", "LIST", "FILTERBY", "PATTERN", "config|*"];
    let (mut listed, redis_listed) =
        (bulk_words(&ours.command_words(&pattern)), bulk_words(&theirs.command_words(&pattern)));
    listed.sort();
    assert_eq!(listed, ["config|get", "config|resetstat", "config|rewrite", "config|set"]);
    assert!(listed.iter().all(|name| redis_listed.contains(name)), "{redis_listed:?}");
    // Docs as Redis's, without its `arguments` and `history`.
    for name in ["get", "getset", "client|setname", "set", "substr"] {
        let docs = |connection: &mut RawConnection| {
            let reply = connection.command_words(&["COMMAND", "DOCS", name]);
            let Reply::Array(Some(mut map)) = reply else { panic!("{name}: {reply:?}") };
            let Some(Reply::Array(Some(fields))) = map.pop() else { panic!("{name}") };
            let kept = fields.chunks(2).filter(|pair| {
                pair[0] != Reply::bulk("arguments") && pair[0] != Reply::bulk("history")
            });
            kept.flat_map(|pair| pair.to_vec()).collect::<Vec<_>>()
        };
        assert_eq!(docs(&mut ours), docs(&mut theirs), "{name}");
    }
}

#[test]
fn config_get_names_and_values_as_in_redis() {
    let redis = RedisServer::start();
    let node = TestNode::start(NodeSettings::default());
    let mut theirs = RawConnection::connect(redis.port);
    let mut ours = node.raw();
    let pairs = |reply: &Reply| -> std::collections::BTreeMap<String, String> {
        let words = bulk_words(reply);
        words.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect()
    };
    let all_ours = pairs(&ours.command_words(&["CONFIG", "GET", "*"]));
    let all_theirs = pairs(&theirs.command_words(&["CONFIG", "GET", "*"]));
    for name in all_ours.keys() {
        assert!(all_theirs.contains_key(name), "redis has no setting {name}");
    }
    let asked = [
        "maxmemory",
        "maxclients",
        "databases",
        "save",
        "appendonly",
        "appendfsync",
        "timeout",
        "maxmemory-policy",
        "io-threads",
        "cluster-enabled",
        "port",
        "requirepass",
    ];
    for name in asked {
        assert!(all_ours.contains_key(name), "CONFIG GET * lacks {name}");
    }
    // Values true of a node as of a Redis like it.
    for name in [
        "maxmemory",
        "save",
        "timeout",
        "maxmemory-policy",
        "cluster-enabled",
        "requirepass",
        "replica-read-only",
        "notify-keyspace-events",
        "tls-port",
    ] {
        assert_eq!(all_ours[name], all_theirs[name], "{name}");
    }
    assert_eq!(all_ours["port"], node.port.to_string());
    assert_eq!(all_ours["databases"], "1");
    assert_eq!(all_ours["appendonly"], "yes");
    assert_eq!(all_ours["appendfsync"], "always");
    let max = pairs(&ours.command_words(&["CONFIG", "GET", "max*"]));
    let expected = ["maxclients", "maxmemory", "maxmemory-policy"];
    assert_eq!(max.keys().collect::<Vec<_>>(), expected);
    let several = pairs(&ours.command_words(&["CONFIG", "GET", "port", "save", "port", "x*"]));
    assert_eq!(several.keys().collect::<Vec<_>>(), ["port", "save"]);
    assert_same(&[
        &[&["CONFIG", "GET"], &["CONFIG", "GET", "nosuch"], &["CONFIG", "GET", "maxmemory"]],
        &[&["CONFIG", "SET", "nosuch", "1"], &["CONFIG", "SET", "databases", "1"]],
        &[
            &["CONFIG", "SET", "io-threads", "2", "x", "1"],
            &["CONFIG", "SET", "x", "1", "port", "1"],
        ],
        &[&["CONFIG", "SET", "cluster-enabled", "yes"], &["CONFIG", "SET", "a"]],
        &[&["CONFIG", "SET", "a", "b", "c"], &["CONFIG", "RESETSTAT", "x"], &["CONFIG", "NOSUCH"]],
        &[&["CONFIG", "REWRITE", "x"], &["CONFIG", "RESETSTAT"]],
    ]);
}

/// The field names of `reply`'s INFO lines, in order, and the section titles.
fn info_titles(reply: &Reply) -> Vec<String> {
    let Reply::Bulk(Some(text)) = reply else { panic!("INFO answered {reply:?}") };
    let text = String::from_utf8_lossy(text);
    text.lines().filter(|line| line.starts_with('#')).map(str::to_string).collect()
}

/// Whether `ours` appear in `theirs` in the same order.
fn in_order(ours: &[String], theirs: &[String]) -> bool {
    let mut rest = theirs.iter();
    ours.iter().all(|name| rest.any(|theirs| theirs == name))
}

#[test]
fn info_memory_commandstats_and_sections_read_as_redis_writes_them() {
    let redis = RedisServer::start();
    let node = TestNode::start(NodeSettings::default());
    let mut theirs = RawConnection::connect(redis.port);
    let mut ours = node.raw();
    let memory = |connection: &mut RawConnection| {
        info_fields(&connection.command_words(&["INFO", "memory"]))
    };
    let (memory_ours, memory_theirs) = (memory(&mut ours), memory(&mut theirs));
    assert!(in_order(&memory_ours, &memory_theirs), "{memory_ours:?} not in {memory_theirs:?}");
    for name in ["used_memory", "used_memory_rss", "used_memory_peak", "mem_allocator"] {
        assert!(memory_ours.iter().any(|field| field == name), "INFO memory lacks {name}");
    }
    let Reply::Bulk(Some(text)) = ours.command_words(&["INFO", "memory"]) else { panic!() };
    let text = String::from_utf8_lossy(&text).into_owned();
    let used: u64 = strata_tests::info_field(&text, "used_memory").unwrap().parse().unwrap();
    assert!(used > 1 << 20, "used_memory {used}:\n{text}");
    assert!(strata_tests::info_field(&text, "mem_allocator").unwrap().starts_with("mimalloc-"));
    for section in [&["INFO"][..], &["INFO", "default"], &["INFO", "all"], &["INFO", "everything"]]
    {
        let (titles_ours, titles_theirs) = (
            info_titles(&ours.command_words(section)),
            info_titles(&theirs.command_words(section)),
        );
        assert!(in_order(&titles_ours, &titles_theirs), "{section:?}: {titles_ours:?}");
    }
    let several = info_titles(&ours.command_words(&["INFO", "cpu", "CLUSTER", "nosuch"]));
    assert_eq!(several, ["# CPU", "# Cluster"]);
    for connection in [&mut theirs, &mut ours] {
        connection.command_words(&["CONFIG", "RESETSTAT"]);
        connection.command_words(&["SET", "{a}1", "x"]);
        connection.command_words(&["GET", "{a}1"]);
        connection.command_words(&["GET"]);
        connection.command_words(&["INCR", "{a}1"]);
        connection.command_words(&["SET", "{a}1", "x", "NX", "XX"]);
        connection.command_words(&["CONFIG", "GET", "maxmemory"]);
        connection.command_words(&["NOSUCH"]);
    }
    // Everything but the times.
    let stats = |connection: &mut RawConnection| {
        let Reply::Bulk(Some(text)) = connection.command_words(&["INFO", "commandstats"]) else {
            panic!("no commandstats")
        };
        let mut lines: Vec<String> = String::from_utf8_lossy(&text)
            .lines()
            .map(|line| {
                let fields = line.split(',').filter(|field| !field.contains("usec"));
                fields.collect::<Vec<_>>().join(",")
            })
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(stats(&mut ours), stats(&mut theirs));
    let Reply::Bulk(Some(text)) = ours.command_words(&["INFO", "commandstats"]) else { panic!() };
    let text = String::from_utf8_lossy(&text).into_owned();
    let line = text.lines().find(|line| line.starts_with("cmdstat_set:")).unwrap();
    let shape = line.split(',').map(|field| field.split('=').next().unwrap()).collect::<Vec<_>>();
    let expected = ["cmdstat_set:calls", "usec", "usec_per_call", "rejected_calls", "failed_calls"];
    assert_eq!(shape, expected, "{line}");
    let per_call = line.split("usec_per_call=").nth(1).unwrap().split(',').next().unwrap();
    assert!(per_call.split_once('.').is_some_and(|(_, decimals)| decimals.len() == 2), "{line}");
}

#[test]
fn redis_cli_and_redis_benchmark_work_against_a_node() {
    let node = TestNode::start(NodeSettings::default());
    let port = node.port.to_string();
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port, "INFO", "memory"])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("used_memory_human:"), "{text}");
    let output = std::process::Command::new("redis-benchmark")
        .args(["-p", &port, "-t", "set", "-n", "100", "-q"])
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && text.contains("SET"), "{text}");
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port, "INFO", "commandstats"])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("cmdstat_set:calls=100,"), "{text}");
}
