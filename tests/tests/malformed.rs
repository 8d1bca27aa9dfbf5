//! Bad and rude clients on raw sockets: malformed RESP, oversized lengths, endless inline
//! lines, binary junk, clients that vanish mid-pipeline, many connections at once, commands
//! split byte by byte. Each must get an error and/or a closed connection, never a hang, and the
//! node must serve everyone else with its data intact.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use strata_tests::raw::{encode_command, End, RawConnection, Reply};
use strata_tests::{NodeSettings, TestNode};

/// How long the node may take to answer or close after bad input.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(10);

fn start_node() -> TestNode {
    TestNode::start(NodeSettings::default())
}

/// Writes data that later checks expect to find unchanged.
fn write_reference_data(node: &TestNode) {
    let mut raw = node.raw();
    for i in 0..50 {
        let reply =
            raw.command(&[b"SET", format!("keep:{i}").as_bytes(), format!("v{i}").as_bytes()]);
        assert_eq!(reply, Reply::Simple("OK".into()));
    }
}

fn assert_node_healthy(node: &TestNode, after: &str) {
    let mut raw = node.raw();
    assert_eq!(raw.command_words(&["PING"]), Reply::Simple("PONG".into()), "after {after}");
    for i in 0..50 {
        let expected = Reply::bulk(&format!("v{i}"));
        assert_eq!(raw.command_words(&["GET", &format!("keep:{i}")]), expected, "after {after}");
    }
}

/// Sends `input` on a new connection and reads until the node closes it or goes quiet.
fn send_and_read(node: &TestNode, input: &[u8]) -> (Vec<u8>, End) {
    let mut raw = node.raw();
    // The node may close before reading everything; a failed write is then expected.
    let _ = raw.send(input);
    raw.read_until_end(VERDICT_TIMEOUT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

/// Checks that `input` gets an `-ERR Protocol error` reply and then a closed connection, as
/// Redis answers it; describes what happened instead.
fn check_protocol_error(node: &TestNode, name: &str, input: &[u8]) -> Result<(), String> {
    let (reply, end) = send_and_read(node, input);
    let mut problems = Vec::new();
    if !reply.starts_with(b"-ERR Protocol error") {
        problems.push(format!("answered {:?}", text(&reply)));
    }
    if end != End::Closed {
        problems.push("left the connection open".to_string());
    }
    assert_node_healthy(node, name);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}: the node {}", problems.join(" and ")))
    }
}

#[test]
fn malformed_requests_are_protocol_errors() {
    let node = start_node();
    write_reference_data(&node);
    let nine_mib = 9 * 1024 * 1024;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a multibulk length that is not a number", b"*abc\r\n".to_vec()),
        ("a bulk length that is not a number", b"*2\r\n$3\r\nGET\r\n$x\r\n".to_vec()),
        ("a negative bulk length", b"*2\r\n$3\r\nGET\r\n$-5\r\n".to_vec()),
        ("a bulk length of 999999999999", b"*2\r\n$3\r\nGET\r\n$999999999999\r\n".to_vec()),
        (
            "a bulk length above the 8 MiB limit",
            format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${nine_mib}\r\n").into_bytes(),
        ),
        ("an integer where a bulk string belongs", b"*2\r\n$3\r\nGET\r\n:5\r\n".to_vec()),
        ("an inline line with unbalanced quotes", b"SET a \"b\r\n".to_vec()),
        ("an inline line of 100 KB without newline", vec![b'a'; 100 * 1024]),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, input)| check_protocol_error(&node, name, input).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Whatever the node answers to a line it cannot take, it must not wait for more.
#[test]
fn an_inline_line_of_100_kb_without_newline_is_not_awaited() {
    let node = start_node();
    write_reference_data(&node);
    let (reply, end) = send_and_read(&node, &vec![b'a'; 100 * 1024]);
    assert_eq!(end, End::Closed, "the node waits for the end of a 100 KB inline line");
    assert!(reply.starts_with(b"-"), "the node answered {:?}", text(&reply));
    assert_node_healthy(&node, "a 100 KB inline line");
}

#[test]
fn odd_inputs_get_an_error_or_a_close_never_a_hang() {
    let node = start_node();
    write_reference_data(&node);
    let seed = strata_tests::test_seed("odd_inputs_get_an_error_or_a_close_never_a_hang");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut junk = vec![0u8; 4096];
    rng.fill(&mut junk[..]);
    // Not '*', so the node reads it as inline lines.
    junk[0] = b'x';
    junk.extend_from_slice(b"\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a bulk header with no array", b"$-5\r\n".to_vec()),
        ("binary junk", junk),
        ("control bytes", b"\x01\x02\xff\xfe\r\n".to_vec()),
    ];
    for (name, input) in &cases {
        let mut raw = node.raw();
        let _ = raw.send(input);
        let first = raw.read_reply();
        match first {
            Ok(Reply::Error(_)) => {}
            Ok(other) => panic!("{name}: the node answered {other:?}"),
            Err(error) if strata_tests::raw::is_reset(&error) => {}
            Err(error) => panic!("{name}: no error reply and no close ({error})"),
        }
        assert_node_healthy(&node, name);
    }
}

#[test]
fn a_huge_declared_array_does_not_hurt_the_node() {
    let node = start_node();
    write_reference_data(&node);
    // Whether the node refuses the count or waits for the items, it must not reserve memory
    // for them nor stop serving others.
    for count in ["2147483647", "99999999999999999999", "-2147483648"] {
        let mut raw = node.raw();
        let _ = raw.send(format!("*{count}\r\n$4\r\nPING\r\n").as_bytes());
        let _ = raw.read_until_end(Duration::from_millis(300));
        drop(raw);
        assert_node_healthy(&node, &format!("an array of {count} items"));
    }
}

#[test]
fn a_client_that_disconnects_mid_pipeline() {
    let node = start_node();
    write_reference_data(&node);
    for round in 0..5 {
        let mut stream = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        let mut input = Vec::new();
        for i in 0..500 {
            let key = format!("gone:{round}:{i}");
            input.extend_from_slice(&encode_command(&[b"SET", key.as_bytes(), b"value"]));
            input.extend_from_slice(&encode_command(&[b"GET", key.as_bytes()]));
        }
        // The last command stops half-way, and nobody reads the replies.
        input.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf");
        let _ = stream.write_all(&input);
        if round % 2 == 0 {
            let _ = stream.shutdown(Shutdown::Both);
        }
        drop(stream);
    }
    assert_node_healthy(&node, "clients that vanished mid-pipeline");
    let mut raw = node.raw();
    for round in 0..5 {
        for i in [0, 250, 499] {
            let reply = raw.command_words(&["GET", &format!("gone:{round}:{i}")]);
            assert!(
                reply == Reply::Bulk(None) || reply == Reply::bulk("value"),
                "gone:{round}:{i} holds {reply:?}"
            );
        }
    }
    assert_eq!(raw.command_words(&["EXISTS", "half"]), Reply::Integer(0));
}

#[test]
fn two_hundred_connections_at_once() {
    let node = start_node();
    write_reference_data(&node);
    let mut connections: Vec<RawConnection> = (0..200).map(|_| node.raw()).collect();
    for (i, connection) in connections.iter_mut().enumerate() {
        connection.send_command(&[b"SET", format!("conn:{i}").as_bytes(), b"x"]).unwrap();
    }
    for (i, connection) in connections.iter_mut().enumerate() {
        assert_eq!(connection.read_reply().unwrap(), Reply::Simple("OK".into()), "connection {i}");
        assert_eq!(
            connection.command_words(&["PING"]),
            Reply::Simple("PONG".into()),
            "connection {i}"
        );
    }
    let mut raw = node.raw();
    let count_line = |raw: &mut RawConnection| match raw.command_words(&["INFO", "clients"]) {
        Reply::Bulk(Some(info)) => {
            let info = String::from_utf8_lossy(&info).into_owned();
            strata_tests::info_field(&info, "connected_clients").expect("connected_clients")
        }
        other => panic!("INFO clients answered {other:?}"),
    };
    let connected: u64 = count_line(&mut raw).parse().unwrap();
    assert!(connected >= 201, "connected_clients {connected} with 201 open");
    drop(connections);
    // The count falls back once the node sees the closes; wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connected: u64 = count_line(&mut raw).parse().unwrap();
        if connected == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "connected_clients stays {connected} after the closes");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(raw.command_words(&["DBSIZE"]), Reply::Integer(250));
    assert_node_healthy(&node, "200 connections");
}

#[test]
fn a_command_split_byte_by_byte_still_works() {
    let node = start_node();
    let mut raw = node.raw();
    let send_slowly = |raw: &mut RawConnection, bytes: &[u8]| {
        for byte in bytes {
            raw.send(std::slice::from_ref(byte)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    send_slowly(&mut raw, &encode_command(&[b"SET", b"split key", b"split\r\nvalue"]));
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("OK".into()));
    send_slowly(&mut raw, &encode_command(&[b"GET", b"split key"]));
    assert_eq!(raw.read_reply().unwrap(), Reply::bulk("split\r\nvalue"));
    send_slowly(&mut raw, b"PING\r\n");
    assert_eq!(raw.read_reply().unwrap(), Reply::Simple("PONG".into()));
    // Two commands whose bytes arrive in uneven pieces, the boundary inside a length line.
    let both =
        [encode_command(&[b"INCR", b"n"]), encode_command(&[b"INCRBY", b"n", b"41"])].concat();
    for piece in both.chunks(5) {
        raw.send(piece).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(raw.read_reply().unwrap(), Reply::Integer(1));
    assert_eq!(raw.read_reply().unwrap(), Reply::Integer(42));
}

/// One request may not grow a connection's input without bound: an array of many large bulk
/// strings (each under the bulk limit) is refused once the input passes the query buffer limit
/// (128 MiB), and the node serves on.
#[test]
fn a_request_larger_than_the_query_buffer_limit_is_refused() {
    let node = start_node();
    write_reference_data(&node);
    let bulk_bytes = 8_000_000;
    let count = 20; // 160 MB in all: past the limit.
    let mut raw = node.raw();
    let mut head = format!("*{}\r\n$3\r\nSET\r\n$1\r\nk\r\n", count + 2).into_bytes();
    head.extend_from_slice(format!("${bulk_bytes}\r\n").as_bytes());
    let _ = raw.send(&head);
    let chunk = vec![b'x'; bulk_bytes];
    for index in 0..count {
        if index > 0 && raw.send(format!("\r\n${bulk_bytes}\r\n").as_bytes()).is_err() {
            break;
        }
        if raw.send(&chunk).is_err() {
            break;
        }
    }
    let (reply, end) = raw.read_until_end(VERDICT_TIMEOUT);
    assert!(reply.starts_with(b"-ERR Protocol error"), "answered {:?}", text(&reply));
    assert_eq!(end, End::Closed);
    assert_node_healthy(&node, "a request past the query buffer limit");
}

/// A large command is taken out of the input as it arrives, and is held to the same protocol:
/// a bulk without its `\r\n`, or a non-bulk element, far into a 2 MB MSET is a protocol
/// error, and the pairs before it are not written.
#[test]
fn a_large_command_broken_midway_is_a_protocol_error() {
    let node = start_node();
    write_reference_data(&node);
    let value = vec![b'v'; 16 * 1024];
    let pairs = 128;
    let mut request = format!("*{}\r\n$4\r\nMSET\r\n", 1 + 2 * pairs).into_bytes();
    let mut terminator = 0;
    for key in 0..pairs {
        // A pair's bulks, without the array header `*2\r\n` that encoding gives them.
        request
            .extend_from_slice(&encode_command(&[format!("midway:{key}").as_bytes(), &value])[4..]);
        if key == 100 {
            // The 101st value's terminator.
            terminator = request.len() - 2;
        }
    }
    let mut broken = request.clone();
    broken[terminator] = b'X';
    check_protocol_error(&node, "a bulk without CRLF in a large MSET", &broken).unwrap();
    let mut broken = request.clone();
    broken[terminator + 2] = b':';
    check_protocol_error(&node, "a non-bulk element in a large MSET", &broken).unwrap();
    let mut raw = node.raw();
    assert_eq!(raw.command(&[b"EXISTS", b"midway:0"]), Reply::Integer(0));
}
