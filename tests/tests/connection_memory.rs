//! What client connections cost the node: an idle connection holds no read or write buffer
//! (it waits for readability with none and its shard's pool lends one when bytes come), so
//! a thousand idle connections grow the node's RSS by a few megabytes, not the 130 KB each
//! they cost when every connection kept two 64 KiB buffers. And buffers that were given back
//! or freed after a large request serve the next large request just as well.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use strata_tests::raw::{encode_command, RawConnection, Reply, READ_TIMEOUT};
use strata_tests::{NodeSettings, TestNode};

/// Idle connections the memory test opens.
const IDLE_CONNECTIONS: usize = 1000;
/// Most RSS growth per idle connection the test accepts: generous (the node needs about 2 KB),
/// and far below the 130 KB of buffers that idle connections used to hold.
const IDLE_CONNECTION_BYTES_MAX: u64 = 32 * 1024;

/// The node's resident memory, from `/proc/<pid>/status`.
fn resident_bytes(node: &TestNode) -> u64 {
    let pid = node.pid().expect("the node runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("a VmRSS line");
    let kibibytes: u64 =
        line.split_whitespace().nth(1).and_then(|field| field.parse().ok()).expect("VmRSS in kB");
    kibibytes * 1024
}

/// Raises this process's soft limit on open files (the node inherits it) so that both ends of
/// every test connection fit.
fn raise_open_files_limit(wanted: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the limit into the struct it is given, and setrlimit reads it.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit), 0);
        }
    }
}

/// Opens `count` connections, each answered one PING, and leaves them open.
fn open_idle_connections(node: &TestNode, count: usize) -> Vec<TcpStream> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let mut connection = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
        connection.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
        connection.write_all(b"PING\r\n").expect("send PING");
        connections.push(connection);
    }
    for connection in &mut connections {
        let mut reply = [0u8; 7];
        connection.read_exact(&mut reply).expect("read PONG");
        assert_eq!(&reply, b"+PONG\r\n");
    }
    connections
}

#[test]
fn idle_connections_hold_no_buffers() {
    raise_open_files_limit(4 * IDLE_CONNECTIONS as u64);
    let node = TestNode::start(NodeSettings::default());
    // Warm up: the first connections of each shard make what every connection shares.
    drop(open_idle_connections(&node, 16));
    std::thread::sleep(Duration::from_millis(200));
    let before = resident_bytes(&node);
    let connections = open_idle_connections(&node, IDLE_CONNECTIONS);
    std::thread::sleep(Duration::from_millis(200));
    let after = resident_bytes(&node);
    let per_connection = after.saturating_sub(before) / IDLE_CONNECTIONS as u64;
    eprintln!("RSS {before} -> {after} bytes: {per_connection} per idle connection");
    assert!(
        per_connection <= IDLE_CONNECTION_BYTES_MAX,
        "{IDLE_CONNECTIONS} idle connections cost {per_connection} bytes each \
         (RSS {before} -> {after}), more than {IDLE_CONNECTION_BYTES_MAX}"
    );
    // They still work after waiting.
    for mut connection in connections.into_iter().step_by(100) {
        connection.write_all(b"PING\r\n").expect("send PING");
        let mut reply = [0u8; 7];
        connection.read_exact(&mut reply).expect("read PONG");
        assert_eq!(&reply, b"+PONG\r\n");
    }
}

/// A value that differs per key and per round, so that a mixed-up reply shows.
fn value_of(round: usize, key: usize, length: usize) -> Vec<u8> {
    let seed = format!("round {round} key {key};");
    seed.bytes().cycle().take(length).collect()
}

/// Sends `count` SETs of `length`-byte values as one pipelined write, then one MSET of as many
/// more keys, and checks every reply and every value read back.
fn large_pipelined_round(raw: &mut RawConnection, round: usize, count: usize, length: usize) {
    let mut request = Vec::new();
    for key in 0..count {
        let name = format!("set:{key}");
        request.extend(encode_command(&[b"SET", name.as_bytes(), &value_of(round, key, length)]));
    }
    raw.send(&request).expect("send the SETs");
    for _ in 0..count {
        assert_eq!(raw.read_reply().expect("SET reply"), Reply::Simple("OK".into()));
    }
    let names: Vec<String> = (0..count).map(|key| format!("mset:{key}")).collect();
    let values: Vec<Vec<u8>> = (0..count).map(|key| value_of(round, count + key, length)).collect();
    let mut arguments: Vec<&[u8]> = vec![b"MSET"];
    for (name, value) in names.iter().zip(&values) {
        arguments.extend([name.as_bytes(), value.as_slice()]);
    }
    assert_eq!(raw.command(&arguments), Reply::Simple("OK".into()));
    let mut gets = Vec::new();
    for key in 0..count {
        gets.extend(encode_command(&[b"GET", format!("set:{key}").as_bytes()]));
    }
    raw.send(&gets).expect("send the GETs");
    for key in 0..count {
        let expected = Reply::Bulk(Some(value_of(round, key, length)));
        assert_eq!(raw.read_reply().expect("GET reply"), expected, "set:{key}");
    }
    let mut arguments: Vec<&[u8]> = vec![b"MGET"];
    arguments.extend(names.iter().map(String::as_bytes));
    let expected = Reply::Array(Some(values.into_iter().map(|v| Reply::Bulk(Some(v))).collect()));
    assert_eq!(raw.command(&arguments), expected);
}

#[test]
fn large_pipelined_requests_work_after_the_buffers_are_given_back() {
    let node = TestNode::start(NodeSettings::default());
    let mut raw = node.raw();
    // Each round sends 4 MiB of SETs at once and a 4 MiB MSET; between rounds the connection
    // goes idle and gives its buffers back.
    for round in 0..3 {
        large_pipelined_round(&mut raw, round, 256, 16 * 1024);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(raw.command(&[b"PING"]), Reply::Simple("PONG".into()));
    }
}

#[test]
fn a_command_split_across_idle_waits_is_put_together() {
    split_command_is_put_together("auto");
}

#[test]
fn a_command_split_across_idle_waits_is_put_together_on_epoll() {
    split_command_is_put_together("epoll");
}

/// Sends one 200 KiB SET in five pieces with pauses, on a node with `io_driver`.
fn split_command_is_put_together(io_driver: &'static str) {
    let node = TestNode::start(NodeSettings { io_driver, ..NodeSettings::default() });
    let mut raw = node.raw();
    let value = value_of(0, 0, 200 * 1024);
    let request = encode_command(&[b"SET", b"split", &value]);
    // Pieces with pauses: the connection waits with a partial request several times.
    for piece in request.chunks(request.len() / 5 + 1) {
        raw.send(piece).expect("send a piece");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(raw.read_reply().expect("SET reply"), Reply::Simple("OK".into()));
    assert_eq!(raw.command(&[b"GET", b"split"]), Reply::Bulk(Some(value)));
}

/// A command that stays incomplete past 256 KiB is taken out of the input argument by
/// argument as it arrives. Sent in pieces with pauses, between small commands in the same
/// stream: a 3 MB SET (its value filled across many reads), a 2 MB MSET over both shards
/// whose pairs straddle the pieces, and a 1 MB MSETNX in one slot; every reply comes in order
/// and every value reads back.
#[test]
fn large_commands_taken_as_they_arrive_answer_in_order() {
    let node = TestNode::start(NodeSettings::default());
    let mut raw = node.raw();
    let big = value_of(0, 0, 3_000_000);
    let pairs: Vec<(String, Vec<u8>)> =
        (0..128).map(|key| (format!("large:{key}"), value_of(1, key, 16 * 1024))).collect();
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    for (name, value) in &pairs {
        mset.extend([name.as_bytes(), value.as_slice()]);
    }
    let tagged: Vec<(String, Vec<u8>)> =
        (0..64).map(|key| (format!("{{tag}}:{key}"), value_of(2, key, 16 * 1024))).collect();
    let mut msetnx: Vec<&[u8]> = vec![b"MSETNX"];
    for (name, value) in &tagged {
        msetnx.extend([name.as_bytes(), value.as_slice()]);
    }
    let mut stream = encode_command(&[b"SET", b"before", b"1"]);
    stream.extend(encode_command(&[b"SET", b"big", &big]));
    stream.extend(encode_command(&[b"GET", b"before"]));
    stream.extend(encode_command(&mset));
    stream.extend(encode_command(&msetnx));
    stream.extend(encode_command(&[b"STRLEN", b"big"]));
    for piece in stream.chunks(700_001) {
        raw.send(piece).expect("send a piece");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ok = || Reply::Simple("OK".into());
    assert_eq!(raw.read_reply().expect("SET before"), ok());
    assert_eq!(raw.read_reply().expect("SET big"), ok());
    assert_eq!(raw.read_reply().expect("GET before"), Reply::Bulk(Some(b"1".to_vec())));
    assert_eq!(raw.read_reply().expect("MSET"), ok());
    assert_eq!(raw.read_reply().expect("MSETNX"), Reply::Integer(1));
    assert_eq!(raw.read_reply().expect("STRLEN"), Reply::Integer(3_000_000));
    assert_eq!(raw.command(&[b"GET", b"big"]), Reply::Bulk(Some(big)));
    for (name, value) in pairs.iter().chain(&tagged) {
        let reply = raw.command(&[b"GET", name.as_bytes()]);
        assert_eq!(reply, Reply::Bulk(Some(value.clone())), "{name}");
    }
}
