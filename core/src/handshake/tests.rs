use super::*;

const CONNECTOR_NONCE: Nonce = [1; NONCE_BYTES];
const ACCEPTOR_NONCE: Nonce = [2; NONCE_BYTES];

fn secret(text: &str) -> Option<ClusterSecret> {
    ClusterSecret::new(text)
}

/// Every message each side sent, in order.
#[derive(Debug, Default)]
struct Transcript {
    connector: Vec<HandshakeMessage>,
    acceptor: Vec<HandshakeMessage>,
}

/// Runs a handshake between the two sides to its end: what each side ended with, and what
/// crossed the connection.
fn run(
    connector_secret: Option<ClusterSecret>,
    acceptor_secret: Option<ClusterSecret>,
) -> (Progress, Progress, Transcript) {
    let (mut connector, hello) = Handshake::connector(connector_secret, CONNECTOR_NONCE);
    let mut acceptor = Handshake::acceptor(acceptor_secret, ACCEPTOR_NONCE);
    let mut transcript = Transcript { connector: vec![hello], ..Transcript::default() };
    let mut to_acceptor = Some(hello);
    let mut outcomes = (Progress::Continue, Progress::Continue);
    while let Some(message) = to_acceptor.take() {
        let step = acceptor.step(&message);
        outcomes.1 = step.progress;
        let Some(answer) = step.send else { break };
        transcript.acceptor.push(answer);
        if outcomes.0 != Progress::Continue {
            break;
        }
        let step = connector.step(&answer);
        outcomes.0 = step.progress;
        if let Some(reply) = step.send {
            transcript.connector.push(reply);
            to_acceptor = (outcomes.1 == Progress::Continue).then_some(reply);
        }
    }
    (outcomes.0, outcomes.1, transcript)
}

#[test]
fn the_same_secret_is_proven_both_ways() {
    let (connector, acceptor, transcript) = run(secret("shared"), secret("shared"));
    assert_eq!(connector, Progress::Done(Trust::Proven));
    assert_eq!(acceptor, Progress::Done(Trust::Proven));
    assert_eq!(transcript.connector.len(), 2, "Hello and Proof");
    assert_eq!(transcript.acceptor.len(), 2, "Challenge and Verdict");
    assert_eq!(&transcript.connector[0][..4], b"STRH");
    assert_eq!(transcript.connector[0][HEADER_BYTES..], CONNECTOR_NONCE);
    assert_eq!(transcript.acceptor[0][HEADER_BYTES..], ACCEPTOR_NONCE);
}

#[test]
fn a_wrong_secret_is_refused_on_both_sides() {
    let (connector, acceptor, transcript) = run(secret("guess"), secret("shared"));
    assert_eq!(connector, Progress::Failed(HandshakeError::WrongSecret));
    assert_eq!(acceptor, Progress::Failed(HandshakeError::WrongSecret));
    let verdict = transcript.acceptor.last().unwrap();
    assert_eq!(verdict[6], VERDICT_REFUSED);
    assert_eq!(verdict[HEADER_BYTES..], [0; NONCE_BYTES], "no proof for an unproven peer");
}

#[test]
fn an_acceptor_with_another_secret_is_caught_by_the_connector() {
    // An impostor acceptor that accepts any proof cannot prove the secret in turn.
    let (mut connector, _) = Handshake::connector(secret("shared"), CONNECTOR_NONCE);
    let challenge = encode(Kind::Challenge, FLAG_SECURED, &ACCEPTOR_NONCE);
    assert!(connector.step(&challenge).send.is_some());
    let forged = ClusterSecret::new("other").unwrap().prove(
        ACCEPTOR_LABEL,
        &CONNECTOR_NONCE,
        &ACCEPTOR_NONCE,
    );
    let verdict = encode(Kind::Verdict, VERDICT_ACCEPTED, &forged);
    assert_eq!(connector.step(&verdict).progress, Progress::Failed(HandshakeError::WrongSecret));
}

#[test]
fn a_side_without_a_secret_is_refused_by_one_with_a_secret() {
    let (connector, acceptor, transcript) = run(None, secret("shared"));
    assert_eq!(connector, Progress::Failed(HandshakeError::NoSecretHere));
    assert_eq!(acceptor, Progress::Failed(HandshakeError::PeerHasNoSecret));
    assert_eq!(transcript.connector.len(), 1, "no proof from a side without a secret");
    let (connector, acceptor, _) = run(secret("shared"), None);
    assert_eq!(connector, Progress::Failed(HandshakeError::PeerHasNoSecret));
    assert_eq!(acceptor, Progress::Failed(HandshakeError::NoSecretHere));
}

#[test]
fn two_sides_without_a_secret_talk_unauthenticated() {
    let (connector, acceptor, transcript) = run(None, None);
    assert_eq!(connector, Progress::Done(Trust::Insecure));
    assert_eq!(acceptor, Progress::Done(Trust::Insecure));
    assert_eq!((transcript.connector.len(), transcript.acceptor.len()), (1, 1));
}

#[test]
fn garbage_and_truncated_messages_are_refused() {
    let hello = encode(Kind::Hello, FLAG_SECURED, &CONNECTOR_NONCE);
    let garbage: [&[u8]; 3] = [&[0xAB; HANDSHAKE_MESSAGE_BYTES], &hello[..39], b""];
    for message in garbage {
        let mut acceptor = Handshake::acceptor(secret("shared"), ACCEPTOR_NONCE);
        let step = acceptor.step(message);
        assert!(matches!(step.progress, Progress::Failed(HandshakeError::Garbage(_))));
        assert_eq!(step.send, None, "nothing is sent to a peer that sent garbage");
    }
    let mut envelope = hello;
    envelope[..4].copy_from_slice(b"STRP");
    let mut acceptor = Handshake::acceptor(secret("shared"), ACCEPTOR_NONCE);
    let Progress::Failed(HandshakeError::Garbage(reason)) = acceptor.step(&envelope).progress
    else {
        panic!("an envelope is not a Hello");
    };
    assert!(reason.contains("earlier release"), "{reason}");
    let mut version = hello;
    version[4] = 9;
    let mut acceptor = Handshake::acceptor(secret("shared"), ACCEPTOR_NONCE);
    assert_eq!(acceptor.step(&version).progress, Progress::Failed(HandshakeError::Version(9)));
    for (offset, value) in [(5, Kind::Proof as u8), (6, 7), (7, 1)] {
        let mut bent = hello;
        bent[offset] = value;
        let mut acceptor = Handshake::acceptor(secret("shared"), ACCEPTOR_NONCE);
        let step = acceptor.step(&bent);
        assert!(matches!(step.progress, Progress::Failed(HandshakeError::Garbage(_))), "{offset}");
    }
}

#[test]
fn a_recorded_connector_transcript_fails_against_a_new_challenge() {
    let (_, acceptor, recorded) = run(secret("shared"), secret("shared"));
    assert_eq!(acceptor, Progress::Done(Trust::Proven));
    // The impostor replays the connector's recorded Hello and Proof to an acceptor that
    // chooses a fresh nonce.
    let mut fresh = Handshake::acceptor(secret("shared"), [3; NONCE_BYTES]);
    let step = fresh.step(&recorded.connector[0]);
    assert_eq!(step.progress, Progress::Continue);
    let step = fresh.step(&recorded.connector[1]);
    assert_eq!(step.progress, Progress::Failed(HandshakeError::WrongSecret));
    assert_eq!(step.send.unwrap()[6], VERDICT_REFUSED);
}

#[test]
fn an_acceptor_proof_reflected_as_a_connector_proof_fails() {
    let (_, _, recorded) = run(secret("shared"), secret("shared"));
    let acceptor_proof = &recorded.acceptor[1][HEADER_BYTES..];
    // The impostor connects with the acceptor's nonce as its own, to an acceptor that happens
    // to choose the connector's nonce: the nonces are the recorded ones, swapped, and the
    // acceptor's recorded proof is offered as the connector's.
    let mut acceptor = Handshake::acceptor(secret("shared"), CONNECTOR_NONCE);
    let hello = encode(Kind::Hello, FLAG_SECURED, &ACCEPTOR_NONCE);
    assert_eq!(acceptor.step(&hello).progress, Progress::Continue);
    let proof = encode(Kind::Proof, 0, acceptor_proof.try_into().unwrap());
    assert_eq!(acceptor.step(&proof).progress, Progress::Failed(HandshakeError::WrongSecret));
    // Nor does a connector take its own proof back as the acceptor's.
    let (mut connector, _) = Handshake::connector(secret("shared"), CONNECTOR_NONCE);
    let challenge = encode(Kind::Challenge, FLAG_SECURED, &ACCEPTOR_NONCE);
    let own = connector.step(&challenge).send.unwrap();
    let mirrored = encode(Kind::Verdict, VERDICT_ACCEPTED, own[HEADER_BYTES..].try_into().unwrap());
    assert_eq!(connector.step(&mirrored).progress, Progress::Failed(HandshakeError::WrongSecret));
}

#[test]
fn a_side_refuses_its_own_nonce_back() {
    let mut acceptor = Handshake::acceptor(secret("shared"), ACCEPTOR_NONCE);
    let echoed = encode(Kind::Hello, FLAG_SECURED, &ACCEPTOR_NONCE);
    assert!(matches!(acceptor.step(&echoed).progress, Progress::Failed(_)));
    let (mut connector, hello) = Handshake::connector(secret("shared"), CONNECTOR_NONCE);
    let mut challenge = hello;
    challenge[5] = Kind::Challenge as u8;
    assert!(matches!(connector.step(&challenge).progress, Progress::Failed(_)));
}

#[test]
fn the_secret_never_shows_in_debug_output() {
    let secret = ClusterSecret::new("do-not-print-me").unwrap();
    let (handshake, _) = Handshake::connector(Some(secret.clone()), CONNECTOR_NONCE);
    assert!(!format!("{secret:?} {handshake:?}").contains("do-not-print-me"));
    assert!(ClusterSecret::new("").is_none());
}

#[test]
#[should_panic(expected = "after the handshake ended")]
fn a_step_after_the_end_is_a_bug() {
    let mut acceptor = Handshake::acceptor(None, ACCEPTOR_NONCE);
    let hello = encode(Kind::Hello, 0, &CONNECTOR_NONCE);
    assert_eq!(acceptor.step(&hello).progress, Progress::Done(Trust::Insecure));
    let _ = acceptor.step(&hello);
}
