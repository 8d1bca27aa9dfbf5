//! Strata against the real `redis-server`: the same commands sent to both, on fresh keys, and
//! every reply compared whole (values, types and error texts). Each case is a short sequence,
//! so a write's effect is compared through the reads that follow it.

use strata_tests::compare::{assert_same, assert_same_owned, differences, differences_with};
use strata_tests::raw::{RawConnection, Reply};
use strata_tests::redis_server::RedisServer;
use strata_tests::{NodeSettings, TestNode};

/// A command of words, owned.
fn owned(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_string()).collect()
}

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
    use strata_tests::admin::leader_follower_and_learner;
    let (leader, follower, learner) = leader_follower_and_learner();
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
        &["SETBIT", "bits", "7", "1"],
        &["SETBIT", "bits", "100", "1"],
        &["SET", "kept", "v", "PXAT", "33177117420123"],
        &["SETBIT", "kept", "0", "1"],
        &["MSET", "{b}a", "foobar", "{b}b", "abcdef", "{b}gone", "v"],
        &["BITOP", "XOR", "{b}c", "{b}a", "{b}b"],
        &["BITOP", "AND", "{b}gone", "{b}missing"],
        &["BITFIELD", "field", "SET", "i8", "0", "-100", "INCRBY", "u4", "#3", "7"],
        &["BITFIELD", "field", "OVERFLOW", "SAT", "INCRBY", "i8", "0", "-100"],
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
        &["GET", "bits"],
        &["GET", "kept"],
        &["PEXPIRETIME", "kept"],
        &["GET", "{b}c"],
        &["EXISTS", "{b}gone"],
        &["GET", "field"],
        &["BITFIELD_RO", "field", "GET", "i8", "0", "GET", "u4", "#3"],
        &["BITCOUNT", "bits"],
        &["LCS", "{b}a", "{b}b", "IDX"],
    ];
    let expected: Vec<Reply> = reads.iter().map(|words| run(&mut client, words)).collect();
    assert_eq!(expected[0], Reply::bulk("-0.1"));
    assert_eq!(expected[1], Reply::bulk("12345678.8999999999996362"));
    assert_eq!(expected[2], Reply::Bulk(Some(b"\0\0\0abc".to_vec())));
    assert_eq!(expected[3], Reply::bulk("Hello Redis"));
    let mut bits = vec![0u8; 13];
    (bits[0], bits[12]) = (0x01, 0x08);
    assert_eq!(expected[12], Reply::Bulk(Some(bits)), "SETBIT's whole new value");
    assert_eq!(expected[14], Reply::Integer(33_177_117_420_123), "SETBIT keeps the expiry");
    assert_eq!(expected[15], Reply::Bulk(Some(b"\x07\x0d\x0c\x06\x04\x14".to_vec())));
    assert_eq!(expected[16], Reply::Integer(0), "an empty BITOP result deletes");
    let field = Reply::Array(Some(vec![Reply::Integer(-128), Reply::Integer(7)]));
    assert_eq!(expected[18], field);
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
    // BITFIELD is a write even with GETs only, as in Redis; BITFIELD_RO is not.
    let refused = run(&mut follower.raw(), &["BITFIELD", "field", "GET", "i8", "0"]);
    assert!(matches!(&refused, Reply::Error(text) if text.starts_with("READONLY")), "{refused:?}");
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
        &["BITOP", "AND", "a", "b"],
        &["BITOP", "OR", "{t}a", "{t}b", "c"],
        &["BITOP", "FOO", "a", "b"],
        &["BITOP", "NOT", "a", "b", "c"],
        &["LCS", "a", "b"],
        &["LCS", "a", "b", "LEN", "IDX"],
        &["LCS", "a", "b", "FOO"],
    ] {
        assert_eq!(raw.command_words(words), crossslot, "{words:?}");
    }
    // BITOP's keys are the destination and the sources; the operation is not a key.
    assert_eq!(
        raw.command_words(&["BITOP", "{a}", "{a}x", "{a}y"]),
        Reply::error("ERR syntax error")
    );
    assert_eq!(
        raw.command_words(&["BITOP", "AND", "a"]),
        Reply::error("ERR wrong number of arguments for 'bitop' command")
    );
    assert_eq!(
        raw.command_words(&["LCS", "a"]),
        Reply::error("ERR wrong number of arguments for 'lcs' command")
    );
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

#[test]
fn setbit_and_getbit_as_in_redis() {
    assert_same(&[
        &[&["SETBIT", "{k}", "7", "1"], &["GET", "{k}"], &["GETBIT", "{k}", "7"]],
        &[&["SETBIT", "{k}", "0", "1"], &["SETBIT", "{k}", "0", "1"], &["SETBIT", "{k}", "0", "0"]],
        &[&["SETBIT", "{k}", "100", "0"], &["STRLEN", "{k}"], &["GETBIT", "{k}", "100"]],
        &[&["SETBIT", "{k}", "0", "0"], &["EXISTS", "{k}"], &["GET", "{k}"]],
        &[&["SETBIT", "{k}", "-1", "1"], &["SETBIT", "{k}", "x", "1"], &["EXISTS", "{k}"]],
        &[
            &["SETBIT", "{k}", "1", "2"],
            &["SETBIT", "{k}", "1", "-1"],
            &["SETBIT", "{k}", "1", "x"],
        ],
        &[
            &["SETBIT", "{k}", "1", "01"],
            &["SETBIT", "{k}", "1", " 1"],
            &["SETBIT", "{k}", "1", ""],
        ],
        &[&["SETBIT", "{k}", "-1", "2"], &["SETBIT", "{k}", "4294967296", "x"], &["EXISTS", "{k}"]],
        &[&["SETBIT", "{k}", "9223372036854775808", "1"], &["SETBIT", "{k}", "01", "1"]],
        &[&["SETBIT", "{k}", "1"], &["SETBIT", "{k}", "1", "1", "1"], &["SETBIT"]],
        &[&["GETBIT", "{k}", "0"], &["GETBIT", "{k}", "4294967295"], &["EXISTS", "{k}"]],
        &[&["GETBIT", "{k}", "4294967296"], &["GETBIT", "{k}", "-1"], &["GETBIT", "{k}", "a"]],
        &[&["GETBIT", "{k}"], &["GETBIT", "{k}", "1", "2"]],
        &[&["SET", "{k}", "v", "EX", "100"], &["SETBIT", "{k}", "3", "1"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "v", "EX", "100"], &["SETBIT", "{k}", "100", "1"], &["TTL", "{k}"]],
        &[&["SET", "{k}", "12345"], &["GETBIT", "{k}", "2"], &["SETBIT", "{k}", "2", "1"]],
        &[&["SET", "{k}", "12345"], &["SETBIT", "{k}", "6", "0"], &["GET", "{k}"]],
        &[
            &["SET", "{k}", ""],
            &["GETBIT", "{k}", "0"],
            &["SETBIT", "{k}", "9", "1"],
            &["GET", "{k}"],
        ],
        &[&["SETBIT", "{k}", "0", "1"], &["SETBIT", "{k}", "9", "1"], &["GETBIT", "{k}", "9"]],
    ]);
}

/// A value with every kind of byte: zeros, ones, mixed, near-empty and near-full.
const BITS_VALUE: &str = "a\u{0}\u{ff}\u{7f}\u{1}z";

#[test]
fn bitcount_and_bitpos_ranges_as_in_redis() {
    let offsets = ["0", "1", "3", "7", "-1", "-3", "-9", "-60", "13", "100"];
    let mut cases = Vec::new();
    for start in offsets {
        for end in offsets {
            let mut case = vec![owned(&["SET", "{k}", BITS_VALUE])];
            for unit in ["BYTE", "BIT"] {
                case.push(owned(&["BITCOUNT", "{k}", start, end, unit]));
                case.push(owned(&["BITPOS", "{k}", "0", start, end, unit]));
                case.push(owned(&["BITPOS", "{k}", "1", start, end, unit]));
            }
            case.push(owned(&["BITCOUNT", "{k}", start, end]));
            case.push(owned(&["BITPOS", "{k}", "1", start, end]));
            cases.push(case);
        }
        cases.push(vec![
            owned(&["SET", "{k}", BITS_VALUE]),
            owned(&["BITPOS", "{k}", "0", start]),
            owned(&["BITPOS", "{k}", "1", start]),
            // Four bytes of ones: a 0 is found past their end when no end is given.
            owned(&["DEL", "{k}"]),
            owned(&["BITFIELD", "{k}", "SET", "u32", "0", "4294967295"]),
            owned(&["BITPOS", "{k}", "0", start]),
            owned(&["BITPOS", "{k}", "0", start, "-1"]),
            owned(&["BITPOS", "{k}", "0", start, "-1", "BIT"]),
            owned(&["BITPOS", "{k}", "1", start, "-1", "BIT"]),
        ]);
    }
    assert_same_owned(&cases);
}

#[test]
fn bitcount_and_bitpos_arguments_as_in_redis() {
    assert_same(&[
        &[&["SET", "{k}", "foobar"], &["BITCOUNT", "{k}"], &["BITCOUNT", "{k}", "1", "1", "byte"]],
        &[
            &["SET", "{k}", "foobar"],
            &["BITCOUNT", "{k}", "5", "30", "bit"],
            &["BITPOS", "{k}", "1"],
        ],
        &[
            &["SET", "{k}", "foobar"],
            &["BITCOUNT", "{k}", "0"],
            &["BITCOUNT", "{k}", "0", "1", "x"],
        ],
        &[
            &["SET", "{k}", "foobar"],
            &["BITCOUNT", "{k}", "-1", "-5", "x"],
            &["BITCOUNT", "{k}", "a", "1"],
        ],
        &[
            &["SET", "{k}", "foobar"],
            &["BITCOUNT", "{k}", "1", "b"],
            &["BITCOUNT", "{k}", "0", "1", "BIT", "x"],
        ],
        // A missing key counts 0 before its arguments are read.
        &[
            &["BITCOUNT", "{k}", "a", "b"],
            &["BITCOUNT", "{k}", "0"],
            &["BITCOUNT", "{k}", "0", "1", "x"],
        ],
        &[&["BITCOUNT"], &["BITPOS", "{k}"], &["BITPOS"]],
        &[&["SET", "{k}", ""], &["BITCOUNT", "{k}"], &["BITCOUNT", "{k}", "0", "-1", "BIT"]],
        &[
            &["SET", "{k}", ""],
            &["BITPOS", "{k}", "0"],
            &["BITPOS", "{k}", "1"],
            &["BITPOS", "{k}", "0", "0"],
        ],
        &[
            &["BITPOS", "{k}", "2"],
            &["BITPOS", "{k}", "x"],
            &["BITPOS", "{k}", "-1"],
            &["BITPOS", "{k}", "01"],
        ],
        &[
            &["BITPOS", "{k}", "0"],
            &["BITPOS", "{k}", "1"],
            &["BITPOS", "{k}", "0", "a", "b", "c", "d"],
        ],
        &[&["BITPOS", "{k}", "2", "a"], &["EXISTS", "{k}"]],
        &[
            &["SET", "{k}", "foobar"],
            &["BITPOS", "{k}", "1", "a"],
            &["BITPOS", "{k}", "1", "0", "b"],
        ],
        // The unit is read before the end, the start before both.
        &[
            &["SET", "{k}", "foobar"],
            &["BITPOS", "{k}", "1", "0", "b", "x"],
            &["BITPOS", "{k}", "1", "a", "b", "x"],
        ],
        &[
            &["SET", "{k}", "foobar"],
            &["BITPOS", "{k}", "1", "0", "1", "BIT", "x"],
            &["BITPOS", "{k}", "0", "0", "1", "bit"],
        ],
        &[
            &["BITFIELD", "{k}", "SET", "u16", "0", "65535"],
            &["BITPOS", "{k}", "0"],
            &["BITPOS", "{k}", "0", "1"],
            &["BITPOS", "{k}", "0", "0", "-1"],
            &["BITPOS", "{k}", "0", "3"],
        ],
        &[
            &["SETBIT", "{k}", "23", "0"],
            &["BITPOS", "{k}", "1"],
            &["BITPOS", "{k}", "0"],
            &["BITPOS", "{k}", "0", "-3", "-3"],
        ],
        &[
            &["SETBIT", "{k}", "0", "1"],
            &["BITPOS", "{k}", "0", "-2", "-1", "BYTE"],
            &["BITPOS", "{k}", "1", "-9", "-1", "BIT"],
        ],
    ]);
}

#[test]
fn bitop_as_in_redis() {
    let long_a = "the quick brown fox jumps over the lazy dog, twice over";
    let long_b = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG";
    assert_same(&[
        &[
            &["MSET", "{{k}}:a", "foobar", "{{k}}:b", "abcdef"],
            &["BITOP", "AND", "{{k}}:d", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:d"],
            &["BITOP", "or", "{{k}}:d", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:d"],
            &["BITOP", "Xor", "{{k}}:d", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:d"],
            &["BITOP", "NOT", "{{k}}:d", "{{k}}:a"],
            &["GET", "{{k}}:d"],
        ],
        &[
            &["MSET", "{{k}}:a", "abc", "{{k}}:b", "abcdefgh", "{{k}}:c", "\u{7f}"],
            &["BITOP", "AND", "{{k}}:d", "{{k}}:a", "{{k}}:b", "{{k}}:c"],
            &["GET", "{{k}}:d"],
            &["BITOP", "OR", "{{k}}:d", "{{k}}:a", "{{k}}:b", "{{k}}:c", "{{k}}:missing"],
            &["GET", "{{k}}:d"],
            &["BITOP", "XOR", "{{k}}:d", "{{k}}:c", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:d"],
        ],
        &[
            &["MSET", "{{k}}:a", long_a, "{{k}}:b", long_b],
            &["BITOP", "AND", "{{k}}:d", "{{k}}:a", "{{k}}:b"],
            &["GET", "{{k}}:d"],
            &["BITOP", "XOR", "{{k}}:d", "{{k}}:a", "{{k}}:b", "{{k}}:a"],
            &["GET", "{{k}}:d"],
            &["BITOP", "NOT", "{{k}}:d", "{{k}}:a"],
            &["GET", "{{k}}:d"],
        ],
        // An empty result deletes the destination; a result replaces it, expiry and all.
        &[
            &["SET", "{{k}}:d", "v"],
            &["BITOP", "OR", "{{k}}:d", "{{k}}:x", "{{k}}:y"],
            &["EXISTS", "{{k}}:d"],
            &["BITOP", "NOT", "{{k}}:d", "{{k}}:x"],
            &["EXISTS", "{{k}}:d"],
        ],
        &[
            &["SET", "{{k}}:a", ""],
            &["SET", "{{k}}:d", "v"],
            &["BITOP", "NOT", "{{k}}:d", "{{k}}:a"],
            &["EXISTS", "{{k}}:d"],
        ],
        &[
            &["SET", "{{k}}:a", "abc"],
            &["SET", "{{k}}:d", "v", "EX", "100"],
            &["BITOP", "AND", "{{k}}:d", "{{k}}:a", "{{k}}:missing"],
            &["GET", "{{k}}:d"],
            &["TTL", "{{k}}:d"],
        ],
        &[
            &["SET", "{{k}}:a", "abc", "EX", "100"],
            &["BITOP", "NOT", "{{k}}:a", "{{k}}:a"],
            &["GET", "{{k}}:a"],
            &["TTL", "{{k}}:a"],
        ],
        &[
            &["BITOP", "NOT", "{{k}}:d", "{{k}}:a", "{{k}}:b"],
            &["BITOP", "FOO", "{{k}}:d", "{{k}}:a"],
            &["BITOP", "NOT", "{{k}}:d"],
        ],
        &[&["BITOP", "AND", "{{k}}:d"], &["BITOP", "AND"], &["BITOP"], &["EXISTS", "{{k}}:d"]],
        &[&["BITOP", "", "{{k}}:d", "{{k}}:a"], &["BITOP", "ANDX", "{{k}}:d", "{{k}}:a"]],
    ]);
}

#[test]
fn bitfield_as_in_redis() {
    assert_same(&[
        &[
            &[
                "BITFIELD", "{k}", "SET", "i8", "0", "100", "GET", "i8", "0", "INCRBY", "i8", "0",
                "100",
            ],
            &["BITFIELD", "{k}", "GET", "u8", "0", "GET", "i4", "0", "GET", "u4", "4"],
            &["GET", "{k}"],
        ],
        &[
            &[
                "BITFIELD", "{k}", "SET", "i8", "0", "100", "OVERFLOW", "SAT", "INCRBY", "i8", "0",
                "100",
            ],
            &["BITFIELD", "{k}", "OVERFLOW", "FAIL", "INCRBY", "i8", "0", "1", "GET", "i8", "0"],
            &["BITFIELD", "{k}", "overflow", "sat", "incrby", "i8", "0", "-300", "get", "i8", "0"],
            &["BITFIELD", "{k}", "OVERFLOW", "FAIL", "INCRBY", "i8", "0", "-1"],
            &["BITFIELD", "{k}", "OVERFLOW", "WRAP", "INCRBY", "i8", "0", "-1"],
        ],
        &[
            &[
                "BITFIELD", "{k}", "INCRBY", "u2", "100", "1", "OVERFLOW", "SAT", "INCRBY", "u2",
                "102", "1",
            ],
            &[
                "BITFIELD", "{k}", "INCRBY", "u2", "100", "3", "OVERFLOW", "FAIL", "INCRBY", "u2",
                "102", "3",
            ],
            &[
                "BITFIELD", "{k}", "INCRBY", "u2", "100", "-5", "OVERFLOW", "SAT", "INCRBY", "u2",
                "102", "-9",
            ],
            &[
                "BITFIELD", "{k}", "OVERFLOW", "FAIL", "INCRBY", "u2", "100", "-5", "GET", "u4",
                "100",
            ],
            &["GET", "{k}"],
        ],
        &[
            &["BITFIELD", "{k}", "SET", "u8", "#1", "255", "GET", "u8", "#1", "GET", "u4", "#3"],
            &["BITFIELD", "{k}", "SET", "i5", "#2", "-3", "GET", "u16", "#0", "GET", "i5", "#2"],
            &["GET", "{k}"],
        ],
        &[
            &[
                "BITFIELD", "{k}", "SET", "u5", "7", "23", "GET", "u16", "0", "SET", "i64", "9",
                "-2",
            ],
            &["BITFIELD", "{k}", "GET", "i64", "9", "GET", "u63", "9", "GET", "i1", "9"],
            &["GET", "{k}"],
        ],
        &[
            &[
                "BITFIELD",
                "{k}",
                "SET",
                "i64",
                "0",
                "-9223372036854775808",
                "INCRBY",
                "i64",
                "0",
                "-1",
            ],
            &[
                "BITFIELD",
                "{k}",
                "OVERFLOW",
                "SAT",
                "INCRBY",
                "i64",
                "0",
                "1",
                "INCRBY",
                "i64",
                "0",
                "-9223372036854775808",
            ],
            &[
                "BITFIELD",
                "{k}",
                "OVERFLOW",
                "FAIL",
                "INCRBY",
                "i64",
                "0",
                "-9223372036854775808",
                "GET",
                "i64",
                "0",
            ],
            &[
                "BITFIELD",
                "{k}",
                "SET",
                "u63",
                "0",
                "9223372036854775807",
                "INCRBY",
                "u63",
                "0",
                "1",
            ],
            &[
                "BITFIELD", "{k}", "OVERFLOW", "SAT", "SET", "u63", "0", "-1", "INCRBY", "u63",
                "0", "1",
            ],
        ],
        &[
            &[
                "BITFIELD", "{k}", "SET", "u8", "0", "-1", "SET", "u8", "8", "256", "GET", "u16",
                "0",
            ],
            &[
                "BITFIELD",
                "{k}",
                "OVERFLOW",
                "SAT",
                "SET",
                "u8",
                "0",
                "-1",
                "SET",
                "i8",
                "8",
                "-9223372036854775808",
            ],
            &[
                "BITFIELD", "{k}", "OVERFLOW", "SAT", "SET", "i8", "0", "200", "SET", "i8", "8",
                "-200",
            ],
            &[
                "BITFIELD", "{k}", "OVERFLOW", "FAIL", "SET", "i8", "0", "128", "SET", "u1", "0",
                "2",
            ],
            &["BITFIELD", "{k}", "SET", "i1", "0", "1", "GET", "i1", "0", "SET", "u1", "1", "3"],
            &["GET", "{k}"],
        ],
        // A failed SET still creates the key, as Redis does.
        &[&["BITFIELD", "{k}", "OVERFLOW", "FAIL", "SET", "u2", "0", "5"], &["GET", "{k}"]],
        &[&["BITFIELD", "{k}"], &["BITFIELD", "{k}", "OVERFLOW", "SAT"], &["EXISTS", "{k}"]],
        &[&["BITFIELD", "{k}", "GET", "u8", "0", "GET", "i64", "4294967295"], &["EXISTS", "{k}"]],
        &[
            &["SET", "{k}", "abcdefghij"],
            &["BITFIELD", "{k}", "GET", "i64", "3", "GET", "u63", "70", "GET", "i64", "#1"],
            &["BITFIELD", "{k}", "GET", "u8", "80", "GET", "i16", "76", "GET", "u1", "#79"],
        ],
        &[
            &["SET", "{k}", "v", "EX", "100"],
            &["BITFIELD", "{k}", "SET", "u8", "0", "65"],
            &["TTL", "{k}"],
        ],
        &[
            &["SET", "{k}", "v", "EX", "100"],
            &["BITFIELD", "{k}", "SET", "u8", "80", "65"],
            &["GET", "{k}"],
        ],
        &[
            &["BITFIELD", "{k}", "SET", "u8", "100000", "1"],
            &["STRLEN", "{k}"],
            &["BITCOUNT", "{k}"],
        ],
    ]);
}

#[test]
fn bitfield_errors_come_in_redis_order() {
    let mut cases: Vec<Vec<Vec<String>>> = Vec::new();
    let types = [
        "i64", "u63", "u64", "i65", "i0", "u0", "I8", "U8", "x8", "i", "", "i08", "i-1", "u 8",
        "i8x",
    ];
    for field in types {
        cases.push(vec![
            owned(&["BITFIELD", "{k}", "GET", field, "0"]),
            owned(&["BITFIELD", "{k}", "SET", field, "0", "1"]),
            owned(&["EXISTS", "{k}"]),
        ]);
    }
    let offsets = [
        "-1",
        "#-1",
        "#",
        "#x",
        "x",
        "",
        "4294967295",
        "4294967296",
        "#536870911",
        "#536870912",
        "##1",
        "01",
        "#01",
    ];
    for offset in offsets {
        cases.push(vec![
            owned(&["BITFIELD", "{k}", "GET", "u8", offset]),
            owned(&["BITFIELD", "{k}", "GET", "u1", offset]),
            owned(&["BITFIELD_RO", "{k}", "GET", "i8", offset]),
        ]);
    }
    let more: &[&[&str]] = &[
        &["BITFIELD", "{k}", "FOO"],
        &["BITFIELD", "{k}", "GET", "i8"],
        &["BITFIELD", "{k}", "SET", "i8", "0"],
        &["BITFIELD", "{k}", "INCRBY", "i8", "0"],
        &["BITFIELD", "{k}", "SET", "i8", "0", "x"],
        &["BITFIELD", "{k}", "SET", "i8", "0", "9223372036854775808"],
        &["BITFIELD", "{k}", "OVERFLOW"],
        &["BITFIELD", "{k}", "OVERFLOW", "BAD", "GET", "x8", "0"],
        &["BITFIELD", "{k}", "GET", "x8", "-1"],
        &["BITFIELD", "{k}", "SET", "i8", "-1", "x"],
        &["BITFIELD", "{k}", "GET", "i8", "0", "FOO"],
        &["BITFIELD", "{k}", "SET", "i8", "0", "1", "GET", "x8", "0"],
        &["BITFIELD", "{k}", "SET", "i8", "0", "1", "OVERFLOW", "NOPE"],
        &["BITFIELD_RO", "{k}", "SET", "i8", "0", "1"],
        &["BITFIELD_RO", "{k}", "INCRBY", "x8", "0", "1"],
        &["BITFIELD_RO", "{k}", "GET", "i8", "0", "SET", "i8", "0", "1"],
        &["BITFIELD_RO", "{k}", "OVERFLOW", "SAT", "GET", "u8", "0"],
        &["BITFIELD_RO", "{k}"],
        &["BITFIELD_RO"],
        &["BITFIELD"],
        &["EXISTS", "{k}"],
        &["SET", "{k}", "A"],
        &["BITFIELD_RO", "{k}", "get", "u8", "0", "GET", "i4", "#1"],
    ];
    cases.push(more.iter().map(|words| owned(words)).collect());
    assert_same_owned(&cases);
}

#[test]
fn lcs_as_in_redis() {
    let text_a = "ohmytext";
    let text_b = "mynewtext";
    let options: &[&[&str]] = &[
        &[],
        &["LEN"],
        &["IDX"],
        &["idx", "withmatchlen"],
        &["IDX", "MINMATCHLEN", "4"],
        &["IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
        &["MINMATCHLEN", "-5", "IDX"],
        &["IDX", "MINMATCHLEN", "2", "MINMATCHLEN", "1"],
        &["WITHMATCHLEN"],
        &["LEN", "MINMATCHLEN", "3"],
        &["LEN", "LEN"],
        &["LEN", "IDX"],
        &["IDX", "LEN"],
        &["LEN", "IDX", "FOO"],
        &["MINMATCHLEN", "x", "LEN", "IDX"],
        &["IDX", "MINMATCHLEN"],
        &["IDX", "MINMATCHLEN", "1.5"],
        &["FOO"],
    ];
    let pairs = [
        (text_a, text_b),
        ("abcabcabc", "cbacbacba"),
        ("aaaa", "aa"),
        ("", "abc"),
        ("same", "same"),
        ("the quick brown fox", "a quick brown dog jumps"),
        ("ACCGGTCGAGTGCGCGGAAGCCGGCCGAA", "GTCGTTCGGAATGCCGTTGCTCTGTAAA"),
    ];
    let mut cases = Vec::new();
    for (first, second) in pairs {
        let mut case = vec![owned(&["MSET", "{{k}}:a", first, "{{k}}:b", second])];
        for option in options {
            let mut command = owned(&["LCS", "{{k}}:a", "{{k}}:b"]);
            command.extend(owned(option));
            case.push(command);
        }
        case.push(owned(&["LCS", "{{k}}:b", "{{k}}:a", "IDX", "WITHMATCHLEN"]));
        cases.push(case);
    }
    let long = "x".repeat(12_000);
    cases.push(vec![
        owned(&["LCS", "{{k}}:a", "{{k}}:missing"]),
        owned(&["LCS", "{{k}}:missing", "{{k}}:other", "IDX"]),
        owned(&["LCS", "{{k}}:missing", "{{k}}:other", "LEN"]),
        owned(&["LCS", "{{k}}:a"]),
        owned(&["LCS"]),
        owned(&["SET", "{{k}}:a", "same"]),
        owned(&["LCS", "{{k}}:a", "{{k}}:a", "IDX", "WITHMATCHLEN"]),
        owned(&["MSET", "{{k}}:a", &long, "{{k}}:b", &long]),
        owned(&["LCS", "{{k}}:a", "{{k}}:b", "LEN"]),
        owned(&["LCS", "{{k}}:a", "{{k}}:b", "FOO"]),
    ]);
    assert_same_owned(&cases);
}

#[test]
fn bit_writes_past_the_record_limit_are_refused_as_setrange_refuses_them() {
    let node = TestNode::start(NodeSettings::default());
    let mut raw = node.raw();
    let refused = Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    // Redis takes offsets up to 2^32 - 1 bits (512 MiB); a record here holds less.
    assert_eq!(raw.command_words(&["SETBIT", "k", "4294967295", "1"]), refused);
    assert_eq!(raw.command_words(&["BITFIELD", "k", "SET", "u8", "4294967280", "1"]), refused);
    assert_eq!(raw.command_words(&["BITFIELD", "k", "INCRBY", "i8", "#536870911", "1"]), refused);
    assert_eq!(raw.command_words(&["EXISTS", "k"]), Reply::Integer(0));
    // Reads that far are fine, and so are writes within the limit.
    assert_eq!(raw.command_words(&["GETBIT", "k", "4294967295"]), Reply::Integer(0));
    let read = raw.command_words(&["BITFIELD", "k", "GET", "u8", "4294967280"]);
    assert_eq!(read, Reply::Array(Some(vec![Reply::Integer(0)])));
    assert_eq!(raw.command_words(&["SETBIT", "k", "8000000", "1"]), Reply::Integer(0));
    assert_eq!(raw.command_words(&["STRLEN", "k"]), Reply::Integer(1_000_001));
    // Out of Redis's own range, the offset is refused as Redis refuses it.
    let out_of_range = Reply::error("ERR bit offset is not an integer or out of range");
    assert_eq!(raw.command_words(&["SETBIT", "k", "4294967296", "1"]), out_of_range);
}
