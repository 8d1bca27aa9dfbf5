//! Every command the node knows, through the `redis` crate (and a raw connection where the
//! exact reply bytes matter), against a real node with 2 shards and 8 partitions. Expected
//! values are Redis's.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use redis::Value;
use strata_tests::keys::key_partition;
use strata_tests::raw::{End, Reply};
use strata_tests::{info_field, NodeSettings, TestNode};

const PARTITIONS: u32 = 8;

fn start_node() -> TestNode {
    TestNode::start(NodeSettings { shards: 2, partitions: PARTITIONS, ..NodeSettings::default() })
}

fn command(words: &[&str]) -> redis::Cmd {
    let mut command = redis::cmd(words[0]);
    for word in &words[1..] {
        command.arg(*word);
    }
    command
}

/// Runs a command and converts its reply; panics with the command on failure.
fn run<T: redis::FromRedisValue>(connection: &mut redis::Connection, words: &[&str]) -> T {
    command(words).query(connection).unwrap_or_else(|error| panic!("{words:?} failed: {error}"))
}

fn value(connection: &mut redis::Connection, words: &[&str]) -> Value {
    run(connection, words)
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

#[test]
fn connection_commands() {
    let node = start_node();
    let mut connection = node.client();
    assert_eq!(value(&mut connection, &["PING"]), Value::SimpleString("PONG".into()));
    assert_eq!(value(&mut connection, &["PING", "hello world"]), bulk("hello world"));
    assert_eq!(value(&mut connection, &["ECHO", "echo me"]), bulk("echo me"));
    assert_eq!(value(&mut connection, &["ECHO", ""]), bulk(""));
    assert_eq!(value(&mut connection, &["SELECT", "0"]), Value::Okay);

    assert_eq!(value(&mut connection, &["CLIENT", "GETNAME"]), Value::Nil);
    assert_eq!(value(&mut connection, &["CLIENT", "SETNAME", "worker-7"]), Value::Okay);
    assert_eq!(value(&mut connection, &["CLIENT", "GETNAME"]), bulk("worker-7"));
    assert_eq!(
        value(&mut connection, &["CLIENT", "SETINFO", "LIB-NAME", "strata-tests"]),
        Value::Okay
    );
    assert_eq!(value(&mut connection, &["CLIENT", "SETINFO", "LIB-VER", "1.0"]), Value::Okay);
    let id: i64 = run(&mut connection, &["CLIENT", "ID"]);
    assert!(id > 0, "CLIENT ID {id}");
    let other_id: i64 = run(&mut node.client(), &["CLIENT", "ID"]);
    assert_ne!(id, other_id, "two connections share a client id");

    let hello = value(&mut connection, &["HELLO", "2"]);
    let Value::Array(items) = hello else { panic!("HELLO 2 answered {hello:?}") };
    assert_eq!(items.len(), 14, "HELLO 2 answered {items:?}");
    let field = |name: &str| {
        let position = items.iter().position(|item| *item == bulk(name));
        let position = position.unwrap_or_else(|| panic!("HELLO lacks {name}: {items:?}"));
        items[position + 1].clone()
    };
    assert_eq!(field("server"), bulk("redis"));
    assert_eq!(field("proto"), Value::Int(2));
    assert_eq!(field("id"), Value::Int(id));
    assert_eq!(field("mode"), bulk("standalone"));
    assert_eq!(field("role"), bulk("master"));

    let mut raw = node.raw();
    assert_eq!(raw.command_words(&["SELECT", "1"]), Reply::error("ERR DB index is out of range"));
    assert_eq!(
        raw.command_words(&["HELLO", "3"]),
        Reply::error("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        raw.command_words(&["CLIENT", "SETNAME", "has space"]),
        Reply::error("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(raw.command_words(&["CLIENT", "SETNAME", ""]), Reply::Simple("OK".into()));
    assert_eq!(raw.command_words(&["CLIENT", "GETNAME"]), Reply::Bulk(None));
    assert_eq!(raw.command_words(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn quit_answers_ok_closes_and_runs_nothing_after_it() {
    let node = start_node();
    let mut raw = node.raw();
    raw.send(b"*1\r\n$4\r\nQUIT\r\n*3\r\n$3\r\nSET\r\n$10\r\nafter-quit\r\n$1\r\n1\r\n").unwrap();
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("OK".into()));
    let (rest, end) = raw.read_until_end(Duration::from_secs(10));
    assert_eq!(end, End::Closed, "the connection stays open after QUIT");
    assert!(rest.is_empty(), "bytes after QUIT's reply: {:?}", String::from_utf8_lossy(&rest));
    let exists: i64 = run(&mut node.client(), &["EXISTS", "after-quit"]);
    assert_eq!(exists, 0, "a command pipelined after QUIT ran");
}

#[test]
fn set_options_and_string_commands() {
    let node = start_node();
    let mut c = node.client();
    assert_eq!(value(&mut c, &["GET", "s"]), Value::Nil);
    assert_eq!(value(&mut c, &["SET", "s", "one"]), Value::Okay);
    assert_eq!(value(&mut c, &["GET", "s"]), bulk("one"));
    assert_eq!(value(&mut c, &["SET", "s", "two", "NX"]), Value::Nil);
    assert_eq!(value(&mut c, &["GET", "s"]), bulk("one"));
    assert_eq!(value(&mut c, &["SET", "s", "two", "XX"]), Value::Okay);
    assert_eq!(value(&mut c, &["GET", "s"]), bulk("two"));
    assert_eq!(value(&mut c, &["SET", "absent", "x", "XX"]), Value::Nil);
    assert_eq!(value(&mut c, &["EXISTS", "absent"]), Value::Int(0));
    assert_eq!(value(&mut c, &["SET", "fresh", "x", "NX"]), Value::Okay);
    assert_eq!(value(&mut c, &["SET", "s", "three", "GET"]), bulk("two"));
    assert_eq!(value(&mut c, &["SET", "new", "v", "GET"]), Value::Nil);
    assert_eq!(value(&mut c, &["GET", "new"]), bulk("v"));
    assert_eq!(value(&mut c, &["SET", "s", "four", "NX", "GET"]), bulk("three"));
    assert_eq!(value(&mut c, &["GET", "s"]), bulk("three"));
    assert_eq!(value(&mut c, &["set", "s", "lower", "xx", "get"]), bulk("three"));

    assert_eq!(value(&mut c, &["GETSET", "s", "five"]), bulk("lower"));
    assert_eq!(value(&mut c, &["GETSET", "gs-new", "1"]), Value::Nil);
    assert_eq!(value(&mut c, &["GET", "gs-new"]), bulk("1"));
    assert_eq!(value(&mut c, &["SETNX", "snx", "a"]), Value::Int(1));
    assert_eq!(value(&mut c, &["SETNX", "snx", "b"]), Value::Int(0));
    assert_eq!(value(&mut c, &["GET", "snx"]), bulk("a"));

    assert_eq!(value(&mut c, &["APPEND", "ap", "Hello"]), Value::Int(5));
    assert_eq!(value(&mut c, &["APPEND", "ap", " World"]), Value::Int(11));
    assert_eq!(value(&mut c, &["GET", "ap"]), bulk("Hello World"));
    assert_eq!(value(&mut c, &["STRLEN", "ap"]), Value::Int(11));
    assert_eq!(value(&mut c, &["STRLEN", "nothing"]), Value::Int(0));

    assert_eq!(value(&mut c, &["INCR", "n"]), Value::Int(1));
    assert_eq!(value(&mut c, &["INCRBY", "n", "10"]), Value::Int(11));
    assert_eq!(value(&mut c, &["DECR", "n"]), Value::Int(10));
    assert_eq!(value(&mut c, &["DECRBY", "n", "20"]), Value::Int(-10));
    assert_eq!(value(&mut c, &["INCRBY", "n", "-5"]), Value::Int(-15));
    assert_eq!(value(&mut c, &["DECR", "m"]), Value::Int(-1));
    assert_eq!(value(&mut c, &["GET", "n"]), bulk("-15"));
    assert_eq!(value(&mut c, &["APPEND", "n", "0"]), Value::Int(4));
    assert_eq!(value(&mut c, &["INCR", "n"]), Value::Int(-149));
    assert_eq!(value(&mut c, &["SET", "max", "9223372036854775806"]), Value::Okay);
    assert_eq!(value(&mut c, &["INCR", "max"]), Value::Int(i64::MAX));

    assert_eq!(value(&mut c, &["MSET", "ma", "1", "mb", "2", "mc", "3"]), Value::Okay);
    assert_eq!(
        value(&mut c, &["MGET", "ma", "missing", "mc", "mb", "ma"]),
        Value::Array(vec![bulk("1"), Value::Nil, bulk("3"), bulk("2"), bulk("1")])
    );
    assert_eq!(value(&mut c, &["MSET", "ma", "10"]), Value::Okay);
    assert_eq!(value(&mut c, &["GET", "ma"]), bulk("10"));
    assert_eq!(value(&mut c, &["EXISTS", "ma", "mb", "missing", "ma"]), Value::Int(3));
    assert_eq!(value(&mut c, &["DEL", "ma", "missing", "ma"]), Value::Int(1));
    assert_eq!(value(&mut c, &["DEL", "ma"]), Value::Int(0));
    assert_eq!(value(&mut c, &["UNLINK", "mb"]), Value::Int(1));
    assert_eq!(value(&mut c, &["EXISTS", "ma", "mb", "mc"]), Value::Int(1));

    let keys = ["s", "fresh", "new", "gs-new", "snx", "ap", "n", "m", "max", "mc"];
    assert_eq!(value(&mut c, &["DBSIZE"]), Value::Int(keys.len() as i64));
    assert_eq!(value(&mut c, &["FLUSHALL"]), Value::Okay);
    assert_eq!(value(&mut c, &["DBSIZE"]), Value::Int(0));
    for key in keys {
        assert_eq!(value(&mut c, &["GET", key]), Value::Nil, "{key} survived FLUSHALL");
    }
    assert_eq!(value(&mut c, &["SET", "after-flush", "x"]), Value::Okay);
    assert_eq!(value(&mut c, &["DBSIZE"]), Value::Int(1));
}

#[test]
fn expiry_commands_and_keys_that_expire() {
    let node = start_node();
    let mut c = node.client();
    assert_eq!(value(&mut c, &["TTL", "none"]), Value::Int(-2));
    assert_eq!(value(&mut c, &["PTTL", "none"]), Value::Int(-2));
    assert_eq!(value(&mut c, &["EXPIRE", "none", "100"]), Value::Int(0));
    assert_eq!(value(&mut c, &["PERSIST", "none"]), Value::Int(0));

    assert_eq!(value(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(value(&mut c, &["TTL", "k"]), Value::Int(-1));
    assert_eq!(value(&mut c, &["PTTL", "k"]), Value::Int(-1));
    // Without an expiry, GT never holds and LT always does (an infinite TTL).
    assert_eq!(value(&mut c, &["EXPIRE", "k", "100", "XX"]), Value::Int(0));
    assert_eq!(value(&mut c, &["EXPIRE", "k", "100", "GT"]), Value::Int(0));
    assert_eq!(value(&mut c, &["TTL", "k"]), Value::Int(-1));
    assert_eq!(value(&mut c, &["EXPIRE", "k", "100", "NX"]), Value::Int(1));
    assert_ttl(&mut c, "k", 100);
    assert_eq!(value(&mut c, &["EXPIRE", "k", "50", "NX"]), Value::Int(0));
    assert_eq!(value(&mut c, &["EXPIRE", "k", "200", "XX"]), Value::Int(1));
    assert_ttl(&mut c, "k", 200);
    assert_eq!(value(&mut c, &["EXPIRE", "k", "100", "GT"]), Value::Int(0));
    assert_eq!(value(&mut c, &["EXPIRE", "k", "300", "GT"]), Value::Int(1));
    assert_eq!(value(&mut c, &["EXPIRE", "k", "400", "LT"]), Value::Int(0));
    assert_eq!(value(&mut c, &["EXPIRE", "k", "50", "lt"]), Value::Int(1));
    assert_ttl(&mut c, "k", 50);
    assert_eq!(value(&mut c, &["PERSIST", "k"]), Value::Int(1));
    assert_eq!(value(&mut c, &["TTL", "k"]), Value::Int(-1));
    assert_eq!(value(&mut c, &["PERSIST", "k"]), Value::Int(0));
    assert_eq!(value(&mut c, &["EXPIRE", "k", "100", "LT"]), Value::Int(1));
    assert_ttl(&mut c, "k", 100);

    assert_eq!(value(&mut c, &["PEXPIRE", "k", "50000"]), Value::Int(1));
    let pttl: i64 = run(&mut c, &["PTTL", "k"]);
    assert!((40_000..=50_000).contains(&pttl), "PTTL {pttl} after PEXPIRE 50000");
    assert_ttl(&mut c, "k", 50);

    assert_eq!(value(&mut c, &["SET", "ex", "v", "EX", "100"]), Value::Okay);
    assert_ttl(&mut c, "ex", 100);
    assert_eq!(value(&mut c, &["SET", "ex", "w", "KEEPTTL"]), Value::Okay);
    assert_ttl(&mut c, "ex", 100);
    assert_eq!(value(&mut c, &["GET", "ex"]), bulk("w"));
    assert_eq!(value(&mut c, &["INCR", "counter-ttl"]), Value::Int(1));
    assert_eq!(value(&mut c, &["EXPIRE", "counter-ttl", "100"]), Value::Int(1));
    assert_eq!(value(&mut c, &["INCR", "counter-ttl"]), Value::Int(2));
    assert_ttl(&mut c, "counter-ttl", 100);
    assert_eq!(value(&mut c, &["SET", "ex", "x"]), Value::Okay);
    assert_eq!(value(&mut c, &["TTL", "ex"]), Value::Int(-1), "SET without KEEPTTL keeps a TTL");

    let in_100_s = (now_ms() / 1000 + 100).to_string();
    assert_eq!(value(&mut c, &["SET", "exat", "v", "EXAT", &in_100_s]), Value::Okay);
    assert_ttl(&mut c, "exat", 100);
    let in_50_s_ms = (now_ms() + 50_000).to_string();
    assert_eq!(value(&mut c, &["SET", "pxat", "v", "PXAT", &in_50_s_ms]), Value::Okay);
    let pttl: i64 = run(&mut c, &["PTTL", "pxat"]);
    assert!((40_000..=50_000).contains(&pttl), "PTTL {pttl} after PXAT now + 50 s");
    assert_eq!(value(&mut c, &["SET", "past", "v", "EXAT", "1"]), Value::Okay);
    assert_eq!(value(&mut c, &["GET", "past"]), Value::Nil, "EXAT in the past left the key");
    assert_eq!(value(&mut c, &["SET", "neg", "v"]), Value::Okay);
    assert_eq!(value(&mut c, &["EXPIRE", "neg", "-1"]), Value::Int(1));
    assert_eq!(value(&mut c, &["EXISTS", "neg"]), Value::Int(0), "EXPIRE -1 left the key");

    // Keys that really expire: correctness only needs the sleep to outlast the TTL.
    assert_eq!(value(&mut c, &["SET", "px", "v", "PX", "100"]), Value::Okay);
    assert_eq!(value(&mut c, &["SET", "pe", "v"]), Value::Okay);
    assert_eq!(value(&mut c, &["PEXPIRE", "pe", "100"]), Value::Int(1));
    assert_eq!(value(&mut c, &["SET", "kept", "v", "PX", "100000"]), Value::Okay);
    std::thread::sleep(Duration::from_millis(300));
    for key in ["px", "pe"] {
        assert_eq!(value(&mut c, &["GET", key]), Value::Nil, "{key} did not expire");
        assert_eq!(value(&mut c, &["EXISTS", key]), Value::Int(0), "{key} did not expire");
        assert_eq!(value(&mut c, &["TTL", key]), Value::Int(-2));
        assert_eq!(
            value(&mut c, &["MGET", key, "kept"]),
            Value::Array(vec![Value::Nil, bulk("v")])
        );
    }
    assert_eq!(
        value(&mut c, &["SET", "px", "again", "NX"]),
        Value::Okay,
        "an expired key blocks NX"
    );
    assert_eq!(value(&mut c, &["GET", "px"]), bulk("again"));
    assert_eq!(value(&mut c, &["TTL", "px"]), Value::Int(-1));
}

/// TTL is `expected` seconds, or a little less on a slow machine.
fn assert_ttl(connection: &mut redis::Connection, key: &str, expected: i64) {
    let ttl: i64 = run(connection, &["TTL", key]);
    assert!((expected - 10..=expected).contains(&ttl), "TTL {key} = {ttl}, expected {expected}");
}

#[test]
fn info_config_and_command() {
    let node = start_node();
    let mut c = node.client();
    let info: String = run(&mut c, &["INFO"]);
    for section in ["# Server", "# Persistence", "# Replication", "# Keyspace"] {
        assert!(info.contains(section), "INFO lacks {section}:\n{info}");
    }
    assert!(info_field(&info, "redis_version").is_some(), "INFO lacks redis_version:\n{info}");
    assert_eq!(info_field(&info, "role").as_deref(), Some("master"));
    assert_eq!(info_field(&info, "tcp_port"), Some(node.port.to_string()));
    assert_eq!(info_field(&info, "db0"), None, "an empty node reports keys:\n{info}");

    assert_eq!(value(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"]), Value::Okay);
    let keyspace: String = run(&mut c, &["INFO", "keyspace"]);
    let db0 = info_field(&keyspace, "db0").unwrap_or_else(|| panic!("no db0 line:\n{keyspace}"));
    assert!(db0.starts_with("keys=3,"), "db0:{db0}");
    assert!(!keyspace.contains("# Server"), "INFO keyspace printed other sections:\n{keyspace}");
    for section in ["server", "persistence", "replication"] {
        let text: String = run(&mut c, &["INFO", section]);
        let title = format!("# {}{}", section[..1].to_uppercase(), &section[1..]);
        assert!(text.starts_with(&title), "INFO {section} answered:\n{text}");
    }
    let persistence: String = run(&mut c, &["INFO", "persistence"]);
    assert_eq!(info_field(&persistence, "wal_flush").as_deref(), Some("FlushAtOnce"));

    let config =
        |c: &mut redis::Connection, name: &str| -> Vec<String> { run(c, &["CONFIG", "GET", name]) };
    assert_eq!(config(&mut c, "save"), ["save", ""]);
    assert_eq!(config(&mut c, "appendonly"), ["appendonly", "yes"]);
    assert_eq!(config(&mut c, "appendfsync"), ["appendfsync", "always"]);
    assert_eq!(config(&mut c, "no-such-parameter"), Vec::<String>::new());

    let count: i64 = run(&mut c, &["COMMAND", "COUNT"]);
    let table = value(&mut c, &["COMMAND"]);
    let Value::Array(entries) = table else { panic!("COMMAND answered {table:?}") };
    assert_eq!(count, entries.len() as i64, "COMMAND COUNT differs from COMMAND's length");
    let names: HashSet<String> = entries
        .iter()
        .map(|entry| match entry {
            Value::Array(fields) => match &fields[0] {
                Value::BulkString(name) => String::from_utf8_lossy(name).to_lowercase(),
                other => panic!("command name {other:?}"),
            },
            other => panic!("COMMAND entry {other:?}"),
        })
        .collect();
    let tested = [
        "ping", "echo", "set", "get", "getset", "setnx", "del", "exists", "mset", "mget", "incr",
        "incrby", "decr", "decrby", "append", "strlen", "expire", "pexpire", "ttl", "pttl",
        "persist", "dbsize", "flushall", "info", "select", "command", "config", "client", "hello",
        "quit",
    ];
    for name in tested {
        assert!(names.contains(name), "COMMAND does not list {name}");
    }
    let docs = value(&mut c, &["COMMAND", "DOCS"]);
    assert!(matches!(docs, Value::Array(_) | Value::Map(_)), "COMMAND DOCS answered {docs:?}");
}

#[test]
fn error_replies_match_redis() {
    let node = start_node();
    let mut raw = node.raw();
    let cases: &[(&[&str], &str)] = &[
        (&["GET"], "ERR wrong number of arguments for 'get' command"),
        (&["get", "a", "b"], "ERR wrong number of arguments for 'get' command"),
        (&["SET", "k"], "ERR wrong number of arguments for 'set' command"),
        (&["MSET", "a", "1", "b"], "ERR wrong number of arguments for 'mset' command"),
        (&["FOO", "a", "b"], "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "),
        (&["nosuchcommand"], "ERR unknown command 'nosuchcommand', with args beginning with: "),
        (&["SET", "k", "v", "NX", "XX"], "ERR syntax error"),
        (&["SET", "k", "v", "EX"], "ERR syntax error"),
        (&["SET", "k", "v", "BOGUS"], "ERR syntax error"),
        (&["SET", "k", "v", "EX", "10", "PX", "10"], "ERR syntax error"),
        (&["SET", "k", "v", "EX", "ten"], "ERR value is not an integer or out of range"),
        (&["SET", "k", "v", "EX", "0"], "ERR invalid expire time in 'set' command"),
        (&["INCRBY", "k", "1.5"], "ERR value is not an integer or out of range"),
        (&["DECRBY", "k", "-9223372036854775808"], "ERR decrement would overflow"),
    ];
    for (words, expected) in cases {
        assert_eq!(raw.command_words(words), Reply::error(expected), "{words:?}");
    }
    assert_eq!(raw.command_words(&["EXISTS", "k"]), Reply::Integer(0), "a refused SET wrote");

    assert_eq!(raw.command_words(&["SET", "text", "abc"]), Reply::Simple("OK".into()));
    let not_integer = Reply::error("ERR value is not an integer or out of range");
    assert_eq!(raw.command_words(&["INCR", "text"]), not_integer);
    assert_eq!(raw.command_words(&["INCRBY", "text", "5"]), not_integer);
    assert_eq!(raw.command_words(&["SET", "spaced", " 1"]), Reply::Simple("OK".into()));
    assert_eq!(raw.command_words(&["INCR", "spaced"]), not_integer);
    assert_eq!(raw.command_words(&["GET", "text"]), Reply::bulk("abc"), "a failed INCR wrote");

    let overflow = Reply::error("ERR increment or decrement would overflow");
    assert_eq!(
        raw.command_words(&["SET", "big", "9223372036854775807"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(raw.command_words(&["INCR", "big"]), overflow);
    assert_eq!(
        raw.command_words(&["SET", "small", "-9223372036854775808"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(raw.command_words(&["DECR", "small"]), overflow);
    assert_eq!(raw.command_words(&["INCRBY", "small", "-1"]), overflow);
    assert_eq!(raw.command_words(&["GET", "big"]), Reply::bulk("9223372036854775807"));

    // An error in the middle of a pipeline takes its place; the commands around it run.
    raw.send(b"SET piped 1\r\nINCR piped extra\r\nINCR piped\r\nGET piped\r\n").unwrap();
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("OK".into()));
    assert_eq!(
        raw.read_reply().unwrap(),
        Reply::error("ERR wrong number of arguments for 'incr' command")
    );
    assert_eq!(raw.read_reply().unwrap(), Reply::Integer(2));
    assert_eq!(raw.read_reply().unwrap(), Reply::bulk("2"));
}

#[test]
fn expire_option_errors_match_redis() {
    let node = start_node();
    let mut raw = node.raw();
    assert_eq!(raw.command_words(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    assert_eq!(
        raw.command_words(&["EXPIRE", "k", "10", "FOO"]),
        Reply::error("ERR Unsupported option FOO")
    );
    assert_eq!(
        raw.command_words(&["EXPIRE", "k", "ten"]),
        Reply::error("ERR value is not an integer or out of range")
    );
    assert_eq!(raw.command_words(&["TTL", "k"]), Reply::Integer(-1));
}

#[test]
fn pipeline_of_1000_mixed_commands() {
    let node = start_node();
    let mut c = node.client();
    let mut pipe = redis::pipe();
    let mut expected = Vec::new();
    let mut counter = 0;
    let mut log_length = 0;
    for i in 0..1000 {
        match i % 5 {
            0 => {
                pipe.cmd("SET").arg(format!("pipe:{i}")).arg(format!("value-{i}"));
                expected.push(Value::Okay);
            }
            1 => {
                pipe.cmd("GET").arg(format!("pipe:{}", i - 1));
                expected.push(bulk(&format!("value-{}", i - 1)));
            }
            2 => {
                counter += 1;
                pipe.cmd("INCR").arg("pipe:counter");
                expected.push(Value::Int(counter));
            }
            3 => {
                log_length += 2;
                pipe.cmd("APPEND").arg("pipe:log").arg("ab");
                expected.push(Value::Int(log_length));
            }
            _ => {
                pipe.cmd("EXISTS").arg(format!("pipe:{}", i - 4)).arg("pipe:missing");
                expected.push(Value::Int(1));
            }
        }
    }
    let replies: Vec<Value> = pipe.query(&mut c).expect("pipeline");
    assert_eq!(replies.len(), expected.len());
    for (index, (reply, expected)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(reply, expected, "reply {index} of the pipeline");
    }
    assert_eq!(value(&mut c, &["DBSIZE"]), Value::Int(200 + 2));
    assert_eq!(value(&mut c, &["GET", "pipe:counter"]), bulk("200"));
    assert_eq!(value(&mut c, &["STRLEN", "pipe:log"]), Value::Int(400));
}

#[test]
fn multi_key_commands_across_all_partitions() {
    let node = start_node();
    let mut c = node.client();
    let keys: Vec<String> = (0..200).map(|i| format!("cross:{i}")).collect();
    let partitions: HashSet<u32> =
        keys.iter().map(|key| key_partition(key.as_bytes(), PARTITIONS)).collect();
    assert_eq!(partitions.len(), PARTITIONS as usize, "the keys do not cover every partition");

    let mut mset = redis::cmd("MSET");
    for (i, key) in keys.iter().enumerate() {
        mset.arg(key).arg(format!("v{i}"));
    }
    assert_eq!(mset.query::<Value>(&mut c).unwrap(), Value::Okay);

    let mut mget = redis::cmd("MGET");
    let mut expected = Vec::new();
    for (i, key) in keys.iter().enumerate().rev() {
        mget.arg(key);
        expected.push(bulk(&format!("v{i}")));
        if i % 20 == 0 {
            mget.arg(format!("absent:{i}"));
            expected.push(Value::Nil);
        }
    }
    assert_eq!(mget.query::<Value>(&mut c).unwrap(), Value::Array(expected));

    let mut exists = redis::cmd("EXISTS");
    exists.arg(&keys).arg("absent:1").arg("absent:2").arg(&keys[7]);
    assert_eq!(exists.query::<i64>(&mut c).unwrap(), 201);
    assert_eq!(value(&mut c, &["DBSIZE"]), Value::Int(200));

    let mut del = redis::cmd("DEL");
    del.arg(&keys[..100]).arg("absent:3").arg(&keys[0]);
    assert_eq!(del.query::<i64>(&mut c).unwrap(), 100);
    let mut exists = redis::cmd("EXISTS");
    exists.arg(&keys);
    assert_eq!(exists.query::<i64>(&mut c).unwrap(), 100);
    assert_eq!(value(&mut c, &["DBSIZE"]), Value::Int(100));
    let mut mget = redis::cmd("MGET");
    mget.arg(&keys);
    let values: Vec<Option<String>> = mget.query(&mut c).unwrap();
    for (i, found) in values.iter().enumerate() {
        let expected = (i >= 100).then(|| format!("v{i}"));
        assert_eq!(*found, expected, "{}", keys[i]);
    }

    let tagged: Vec<String> = (0..50).map(|i| format!("{{user42}}:field{i}")).collect();
    let tag_partition = key_partition(b"user42", PARTITIONS);
    assert!(tagged.iter().all(|key| key_partition(key.as_bytes(), PARTITIONS) == tag_partition));
    let mut mset = redis::cmd("MSET");
    for key in &tagged {
        mset.arg(key).arg(key.to_uppercase());
    }
    assert_eq!(mset.query::<Value>(&mut c).unwrap(), Value::Okay);
    let mut mget = redis::cmd("MGET");
    mget.arg(&tagged);
    let values: Vec<String> = mget.query(&mut c).unwrap();
    assert_eq!(values, tagged.iter().map(|key| key.to_uppercase()).collect::<Vec<_>>());
    assert_eq!(value(&mut c, &["INCR", "{user42}:visits"]), Value::Int(1));
    let mut del = redis::cmd("DEL");
    del.arg(&tagged[..25]).arg("{user42}:visits");
    assert_eq!(del.query::<i64>(&mut c).unwrap(), 26);
    let mut exists = redis::cmd("EXISTS");
    exists.arg(&tagged);
    assert_eq!(exists.query::<i64>(&mut c).unwrap(), 25);
    assert_eq!(value(&mut c, &["DBSIZE"]), Value::Int(125));
}

#[test]
fn binary_values_and_a_1_mib_value_round_trip() {
    let mut node = TestNode::start(NodeSettings {
        shards: 2,
        partitions: PARTITIONS,
        segment_size: "4MB",
        snapshot_size: "64MB",
        ..NodeSettings::default()
    });
    let mut c = node.client();
    let all_bytes: Vec<u8> = (0..=255u8).chain(*b"\r\n\0\r\n$3\r\n").collect();
    let binary_key: &[u8] = b"bin\x00key\r\nwith*2\r\n";
    redis::cmd("SET").arg(binary_key).arg(&all_bytes).query::<()>(&mut c).unwrap();
    let read: Vec<u8> = redis::cmd("GET").arg(binary_key).query(&mut c).unwrap();
    assert_eq!(read, all_bytes);
    redis::cmd("SET").arg("empty").arg(b"").query::<()>(&mut c).unwrap();
    assert_eq!(value(&mut c, &["GET", "empty"]), bulk(""));
    assert_eq!(value(&mut c, &["STRLEN", "empty"]), Value::Int(0));
    assert_eq!(value(&mut c, &["EXISTS", "empty"]), Value::Int(1));
    let appended: i64 =
        redis::cmd("APPEND").arg(binary_key).arg(b"\x00\r\n").query(&mut c).unwrap();
    assert_eq!(appended, all_bytes.len() as i64 + 3);

    let seed = strata_tests::test_seed("binary_values_and_a_1_mib_value_round_trip");
    let mut large = vec![0u8; 1 << 20];
    rand::rngs::StdRng::seed_from_u64(seed).fill(&mut large[..]);
    redis::cmd("SET").arg("large").arg(&large).query::<()>(&mut c).unwrap();
    let read: Vec<u8> = redis::cmd("GET").arg("large").query(&mut c).unwrap();
    assert!(read == large, "the 1 MiB value came back different ({} bytes)", read.len());
    assert_eq!(value(&mut c, &["STRLEN", "large"]), Value::Int(1 << 20));

    // The same bytes come back from the WAL after a crash.
    node.kill();
    node.restart();
    let mut c = node.client();
    let read: Vec<u8> = redis::cmd("GET").arg("large").query(&mut c).unwrap();
    assert!(read == large, "the 1 MiB value changed across a restart ({} bytes)", read.len());
    let read: Vec<u8> = redis::cmd("GET").arg(binary_key).query(&mut c).unwrap();
    assert_eq!(read, [&all_bytes[..], b"\x00\r\n"].concat());
    assert_eq!(value(&mut c, &["DBSIZE"]), Value::Int(3));
}

#[test]
fn a_value_too_large_for_the_wal_is_refused_and_the_node_serves_on() {
    // 1 MB segments cannot hold a 900 KB record; the node must refuse it with an error.
    let node = TestNode::start(NodeSettings { segment_size: "1MB", ..NodeSettings::default() });
    let mut raw = node.raw();
    let value = vec![b'x'; 900 * 1024];
    let reply = raw.command(&[b"SET", b"too-large", &value]);
    let Reply::Error(text) = &reply else { panic!("SET of 900 KB answered {reply:?}") };
    assert!(text.starts_with("ERR "), "{text}");
    assert_eq!(raw.command_words(&["EXISTS", "too-large"]), Reply::Integer(0));
    assert_eq!(raw.command_words(&["SET", "small", "ok"]), Reply::Simple("OK".into()));
    let small: String = run(&mut node.client(), &["GET", "small"]);
    assert_eq!(small, "ok");
}

/// The server answers at most a round of pipelined commands before reading again; the rest of
/// a long pipeline is already in its buffer and must be answered without waiting for more input
/// (the client sends everything first and only then reads).
#[test]
fn a_pipeline_longer_than_one_round_is_answered_in_full() {
    let node = start_node();
    let mut client = node.client();
    // Small commands, so that more than a round's worth arrives in one read.
    let mut pipe = redis::pipe();
    for _ in 0..1500 {
        pipe.cmd("INCR").arg("n");
    }
    let replies: Vec<i64> = pipe.query(&mut client).unwrap();
    assert_eq!(replies, (1..=1500).collect::<Vec<i64>>());
}
