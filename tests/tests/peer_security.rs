//! The peer port's handshake against real node processes: impostors without the cluster
//! secret, with a wrong one, or replaying a recorded handshake get nothing; a node with
//! another secret cannot join; a node without a secret refuses cluster roles unless
//! `allow_insecure_peers` is set, and then talks only to nodes without one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use strata_core::handshake::{ClusterSecret, Handshake, HandshakeError};
use strata_tests::admin::{role_body, set_role, wait_until};
use strata_tests::peer::{self, crc32c, Refusal};
use strata_tests::{NodeSettings, TestNode};

/// A registration that would list "mallory" as a follower of the leader.
const REGISTER_MALLORY: &str = concat!(
    r#"{"type":"register","name":"mallory","role":"follower","address":"127.0.0.1:9","#,
    r#""version":"0.2.0","partitions":8}"#
);

/// One control request envelope (`docs/peer-protocol.md`, "Envelope").
fn control_request(json: &str) -> Vec<u8> {
    let mut bytes = b"STRP".to_vec();
    bytes.extend_from_slice(&[1, 0, 0, 0]);
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c(json.as_bytes()).to_le_bytes());
    bytes.extend_from_slice(json.as_bytes());
    bytes
}

/// Sends a registration on `stream` and returns every byte the node answers until it closes
/// the connection (or 10 s pass).
fn register_mallory(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.write_all(&control_request(REGISTER_MALLORY));
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn listed(leader: &TestNode, name: &str) -> bool {
    let nodes = leader.admin("GET", "/admin/nodes", None);
    let nodes = nodes.assert_ok()["nodes"].as_array().cloned().unwrap_or_default();
    nodes.iter().any(|node| node["name"] == name)
}

/// A handshake as a connector with the right secret, by hand: the messages it sent (Hello,
/// Proof) are what an eavesdropper records.
fn recorded_connector_transcript(port: u16) -> Vec<[u8; 40]> {
    let secret = ClusterSecret::new(&strata_tests::test_cluster_secret());
    let (mut handshake, hello) = Handshake::connector(secret, peer::nonce());
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(&hello).unwrap();
    let challenge = peer::read_message(&mut stream).unwrap();
    let proof = handshake.step(&challenge).send.expect("a proof");
    stream.write_all(&proof).unwrap();
    let verdict = peer::read_message(&mut stream).unwrap();
    assert_eq!(verdict[6], 1, "the node accepted the recorded handshake itself");
    vec![hello, proof]
}

#[test]
fn impostors_on_the_peer_port_get_nothing() {
    let leader = TestNode::start(NodeSettings::cluster(1));
    set_role(&leader, "leader", "boss", None);
    let port = leader.peer_port;

    // No secret: the node says it requires one, and closes.
    let refusal = peer::connect(port, None).expect_err("no secret is refused");
    assert!(matches!(refusal, Refusal::Handshake(HandshakeError::NoSecretHere)), "{refusal:?}");
    // A wrong secret: refused in the Verdict.
    let refusal = peer::connect(port, Some("guessed")).expect_err("a wrong secret is refused");
    assert!(matches!(refusal, Refusal::Handshake(HandshakeError::WrongSecret)), "{refusal:?}");

    // A replayed handshake: the recorded Hello and Proof, against a new Challenge.
    let recorded = recorded_connector_transcript(port);
    let mut replay = TcpStream::connect(("127.0.0.1", port)).unwrap();
    replay.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    replay.write_all(&recorded[0]).unwrap();
    let challenge = peer::read_message(&mut replay).unwrap();
    assert_eq!(&challenge[..4], b"STRH");
    replay.write_all(&recorded[1]).unwrap();
    let verdict = peer::read_message(&mut replay).unwrap();
    assert_eq!(verdict[6], 2, "the replayed proof is refused");
    assert!(register_mallory(&mut replay).is_empty(), "nothing answered after the refusal");

    // Straight to a registration, without any handshake.
    let mut bare = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(register_mallory(&mut bare).is_empty(), "nothing answered without a handshake");

    // A silent connector is cut off by the handshake's time limit.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed = silent.read_to_end(&mut answer);
    assert!(closed.is_ok() && answer.is_empty(), "{closed:?} {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "closed after {:?}", started.elapsed());

    assert!(!listed(&leader, "mallory"), "no impostor registered");
    let log = leader.log();
    for reason in [
        "the peer has no [security] cluster_secret",
        "the peer's [security] cluster_secret is not this node's",
        "peer handshake not done within",
        "a peer-protocol message without a handshake",
    ] {
        assert!(log.contains(reason), "the leader logged {reason:?}:\n{log}");
    }
    assert!(log.contains("peer connection refused"), "{log}");

    // The same registration after a proper handshake is taken: the checks above can fail.
    let secret = strata_tests::test_cluster_secret();
    let mut proven = peer::connect(port, Some(&secret)).expect("the right secret passes");
    proven.write_all(&control_request(REGISTER_MALLORY)).unwrap();
    let mut header = [0u8; 16];
    proven.read_exact(&mut header).unwrap();
    assert_eq!(&header[..5], b"STRP\x02", "a control response");
    assert!(wait_until(Duration::from_secs(5), || listed(&leader, "mallory")));
}

#[test]
fn a_follower_with_another_secret_cannot_join() {
    let leader = TestNode::start(NodeSettings::cluster(1));
    set_role(&leader, "leader", "boss", None);
    let stranger = TestNode::start(NodeSettings {
        cluster_secret: Some("another-cluster's-secret".into()),
        ..NodeSettings::cluster(1)
    });
    let body = role_body("follower", Some("f1"), Some(&leader.peer_address()));
    let reply = stranger.admin("POST", "/admin/node/current", Some(&body));
    reply.assert_error(7021);
    assert!(reply.message().contains("cluster_secret is not this node's"), "{}", reply.text);
    assert!(!listed(&leader, "f1"));
    // The leader logs the refusal after sending it, so the line may follow the reply.
    let logged =
        wait_until(Duration::from_secs(5), || leader.log().contains("peer connection refused"));
    assert!(logged, "{}", leader.log());
    // With the cluster's secret, the same call joins.
    let member = TestNode::start(NodeSettings::cluster(1));
    set_role(&member, "follower", "f1", Some(&leader));
    assert!(listed(&leader, "f1"));
}

#[test]
fn a_node_without_a_secret_refuses_cluster_roles() {
    for failover in ["manual", "automatic"] {
        let node = TestNode::start(NodeSettings {
            cluster_secret: None,
            failover,
            ..NodeSettings::cluster(1)
        });
        for (role, address) in [("leader", None), ("follower", Some("127.0.0.1:9"))] {
            let reply = node.admin(
                "POST",
                "/admin/node/current",
                Some(&role_body(role, Some("n"), address)),
            );
            reply.assert_error(7038);
            assert!(reply.message().contains("allow_insecure_peers = true"), "{}", reply.text);
        }
        // Its peer port takes no connection, with or without a secret.
        let secret = strata_tests::test_cluster_secret();
        for secret in [None, Some(secret.as_str())] {
            let refusal = peer::connect(node.peer_port, secret).expect_err("refused");
            assert!(matches!(refusal, Refusal::Io(_)), "{refusal:?}");
        }
        assert!(node.log().contains("this node has no [security] cluster_secret"));
        // Standalone needs no secret.
        node.admin("POST", "/admin/node/current", Some(&role_body("standalone", None, None)))
            .assert_ok();
    }
}

#[test]
fn nodes_allowing_insecure_peers_replicate_only_among_themselves() {
    let insecure = NodeSettings {
        cluster_secret: None,
        allow_insecure_peers: true,
        ..NodeSettings::cluster(1)
    };
    let leader = TestNode::start(insecure.clone());
    set_role(&leader, "leader", "boss", None);
    let follower = TestNode::start(insecure);
    set_role(&follower, "follower", "f1", Some(&leader));
    let mut client = leader.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut client).unwrap();
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut follower.client()).unwrap();
    assert_eq!(value.as_deref(), Some("v"), "the insecure follower holds the write");
    // A node with a secret does not join an insecure leader, and says why.
    let secured = TestNode::start(NodeSettings::cluster(1));
    let body = role_body("follower", Some("f2"), Some(&leader.peer_address()));
    let reply = secured.admin("POST", "/admin/node/current", Some(&body));
    reply.assert_error(7021);
    assert!(
        reply.message().contains("the peer has no [security] cluster_secret"),
        "{}",
        reply.text
    );
    // The leader logs the refusal after sending it, so the line may follow the reply.
    let refusal = "the peer requires a [security] cluster_secret";
    let logged = wait_until(Duration::from_secs(5), || leader.log().contains(refusal));
    assert!(logged, "{}", leader.log());
    assert!(!listed(&leader, "f2"));
}
