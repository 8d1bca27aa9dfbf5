//! The peer port's handshake: before anything else crosses a peer connection, both ends prove
//! they hold the cluster's shared secret (`[security] cluster_secret`), each with an HMAC
//! over both sides' fresh nonces, so that a recorded handshake cannot be replayed and one
//! side's proof cannot be reflected back as the other's.
//!
//! Four messages of [`HANDSHAKE_MESSAGE_BYTES`] each (layout in `docs/peer-protocol.md`):
//!
//! ```text
//! connector                                   acceptor
//!   Hello     {secured?, connector nonce} ──►
//!                                         ◄── Challenge {secured?, acceptor nonce}
//!   Proof     {HMAC(connector label, nonces)} ──►
//!                                         ◄── Verdict {accepted, HMAC(acceptor label, nonces)}
//!                                              or {refused}
//! ```
//!
//! The connector proves first, so a connector without the secret learns nothing from the
//! acceptor but a refusal. When neither side has a secret (`allow_insecure_peers`), the
//! handshake ends after the Challenge, unauthenticated; when exactly one side has one, both
//! refuse, each saying which side lacks it. Nothing here does I/O: the runtime reads exactly
//! one message, passes it to [`Handshake::step`], writes what it answers, and puts its own
//! time limit ([`HANDSHAKE_TIMEOUT_MS`]) around the whole exchange.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Every handshake message has this many bytes: an 8-byte header and a 32-byte body.
pub const HANDSHAKE_MESSAGE_BYTES: usize = 40;
/// The header's magic: not the envelope's `STRP`, so that a node of a release without the
/// handshake is told apart from one that sends garbage.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"STRH";
/// The handshake's version; a peer of another version is refused.
pub const HANDSHAKE_VERSION: u8 = 1;
/// Bytes of each side's nonce, and of each proof (an HMAC-SHA256).
pub const NONCE_BYTES: usize = 32;
/// How long a whole handshake may take, on either side, before the connection is closed: a
/// silent connector must not hold an acceptor's task.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

const HEADER_BYTES: usize = 8;
const _: () = assert!(HEADER_BYTES + NONCE_BYTES == HANDSHAKE_MESSAGE_BYTES);
/// What the connector's proof covers besides the nonces; the acceptor's covers the other
/// label, so neither proof is valid as the other.
const CONNECTOR_LABEL: &[u8] = b"strata peer handshake v1: connector proof";
const ACCEPTOR_LABEL: &[u8] = b"strata peer handshake v1: acceptor proof";
const ENVELOPE_MAGIC: [u8; 4] = *b"STRP";

/// One handshake message, as sent.
pub type HandshakeMessage = [u8; HANDSHAKE_MESSAGE_BYTES];
/// A side's nonce: fresh random bytes for every connection, from the runtime's entropy.
pub type Nonce = [u8; NONCE_BYTES];

/// The secret every node of a cluster shares. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterSecret(std::sync::Arc<[u8]>);

impl ClusterSecret {
    /// The secret `text` stands for; `None` when it is empty (no secret).
    #[must_use]
    pub fn new(text: &str) -> Option<ClusterSecret> {
        (!text.is_empty()).then(|| ClusterSecret(text.as_bytes().into()))
    }

    fn mac(&self, label: &[u8], connector: &Nonce, acceptor: &Nonce) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(connector);
        mac.update(acceptor);
        mac
    }

    fn prove(&self, label: &[u8], connector: &Nonce, acceptor: &Nonce) -> [u8; NONCE_BYTES] {
        self.mac(label, connector, acceptor).finalize().into_bytes().into()
    }

    /// Whether `proof` is this secret's proof over the nonces, compared in constant time.
    fn verify(&self, label: &[u8], connector: &Nonce, acceptor: &Nonce, proof: &[u8]) -> bool {
        self.mac(label, connector, acceptor).verify_slice(proof).is_ok()
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ClusterSecret(hidden)")
    }
}

/// Why a handshake failed. The connection is closed; nothing else was read or sent on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer sent bytes that are not the handshake message expected now.
    #[error("the peer sent {0}, not the expected handshake message")]
    Garbage(&'static str),
    /// The peer speaks another version of the handshake.
    #[error("the peer speaks handshake version {0}, this node {HANDSHAKE_VERSION}")]
    Version(u8),
    /// The peer's proof does not match our secret, or it refused ours: the secrets differ.
    #[error("the peer's [security] cluster_secret is not this node's")]
    WrongSecret,
    /// The peer has no secret, and this node asks for one.
    #[error(
        "the peer has no [security] cluster_secret (allow_insecure_peers) and this node \
         requires one"
    )]
    PeerHasNoSecret,
    /// The peer asks for a secret, and this node has none.
    #[error(
        "the peer requires a [security] cluster_secret and this node has none \
         (allow_insecure_peers)"
    )]
    NoSecretHere,
}

/// What a finished handshake established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Both sides proved the shared secret.
    Proven,
    /// Neither side has a secret: nothing is proven (`allow_insecure_peers` on both).
    Insecure,
}

/// Where a handshake stands after a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Read the next message.
    Continue,
    /// The handshake is over: the connection may carry the peer protocol.
    Done(Trust),
    /// The handshake failed: send what the step answered, if anything, then close.
    Failed(HandshakeError),
}

/// What one message made of the handshake: a message to send first, then where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub send: Option<HandshakeMessage>,
    pub progress: Progress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Hello = 1,
    Challenge = 2,
    Proof = 3,
    Verdict = 4,
}

/// The flags byte of a Hello or Challenge: whether the sender has a secret.
const FLAG_SECURED: u8 = 1;
/// The status byte of a Verdict.
const VERDICT_ACCEPTED: u8 = 1;
const VERDICT_REFUSED: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Acceptor: waiting for the connector's Hello.
    AwaitHello,
    /// Connector: sent its Hello, waiting for the Challenge.
    AwaitChallenge,
    /// Acceptor: sent its Challenge, waiting for the connector's Proof.
    AwaitProof { connector: Nonce },
    /// Connector: sent its Proof, waiting for the acceptor's Verdict.
    AwaitVerdict { acceptor: Nonce },
    /// Done or failed: no more messages.
    Over,
}

/// One side of one connection's handshake.
#[derive(Debug)]
pub struct Handshake {
    secret: Option<ClusterSecret>,
    /// This side's nonce.
    nonce: Nonce,
    state: State,
}

impl Handshake {
    /// The side that opened the connection, and the Hello it sends first.
    #[must_use]
    pub fn connector(secret: Option<ClusterSecret>, nonce: Nonce) -> (Handshake, HandshakeMessage) {
        let hello = encode(Kind::Hello, flags(secret.as_ref()), &nonce);
        (Handshake { secret, nonce, state: State::AwaitChallenge }, hello)
    }

    /// The side that accepted the connection; it waits for the Hello.
    #[must_use]
    pub fn acceptor(secret: Option<ClusterSecret>, nonce: Nonce) -> Handshake {
        Handshake { secret, nonce, state: State::AwaitHello }
    }

    /// Takes the next message from the peer.
    ///
    /// # Panics
    ///
    /// When called after the handshake ended (the runtime stops at `Done` or `Failed`).
    pub fn step(&mut self, message: &[u8]) -> Step {
        let state = std::mem::replace(&mut self.state, State::Over);
        let step = match state {
            State::AwaitHello => self.take_hello(message),
            State::AwaitChallenge => self.take_challenge(message),
            State::AwaitProof { connector } => self.take_proof(message, &connector),
            State::AwaitVerdict { acceptor } => self.take_verdict(message, &acceptor),
            State::Over => panic!("a handshake step after the handshake ended"),
        };
        assert!(
            step.progress == Progress::Continue || self.state == State::Over,
            "a finished handshake waits for nothing"
        );
        step
    }

    /// Acceptor: answers a Hello with the Challenge (also when refusing, so the connector
    /// learns whether this side has a secret).
    fn take_hello(&mut self, message: &[u8]) -> Step {
        let (secured, connector) = match decode(message, Kind::Hello) {
            Ok(decoded) => decoded,
            Err(error) => return failed(None, error),
        };
        if connector == self.nonce {
            return failed(None, HandshakeError::Garbage("this node's own nonce"));
        }
        let challenge = encode(Kind::Challenge, flags(self.secret.as_ref()), &self.nonce);
        match (self.secret.is_some(), flag_secured(secured)) {
            (true, Ok(true)) => {
                self.state = State::AwaitProof { connector };
                Step { send: Some(challenge), progress: Progress::Continue }
            }
            (false, Ok(false)) => done(Some(challenge), Trust::Insecure),
            (true, Ok(false)) => failed(Some(challenge), HandshakeError::PeerHasNoSecret),
            (false, Ok(true)) => failed(Some(challenge), HandshakeError::NoSecretHere),
            (_, Err(error)) => failed(None, error),
        }
    }

    /// Connector: answers a secured Challenge with its Proof.
    fn take_challenge(&mut self, message: &[u8]) -> Step {
        let (secured, acceptor) = match decode(message, Kind::Challenge) {
            Ok(decoded) => decoded,
            Err(error) => return failed(None, error),
        };
        if acceptor == self.nonce {
            return failed(None, HandshakeError::Garbage("this node's own nonce"));
        }
        match (&self.secret, flag_secured(secured)) {
            (Some(secret), Ok(true)) => {
                let proof = secret.prove(CONNECTOR_LABEL, &self.nonce, &acceptor);
                self.state = State::AwaitVerdict { acceptor };
                Step { send: Some(encode(Kind::Proof, 0, &proof)), progress: Progress::Continue }
            }
            (None, Ok(false)) => done(None, Trust::Insecure),
            (Some(_), Ok(false)) => failed(None, HandshakeError::PeerHasNoSecret),
            (None, Ok(true)) => failed(None, HandshakeError::NoSecretHere),
            (_, Err(error)) => failed(None, error),
        }
    }

    /// Acceptor: checks the connector's Proof, and proves the secret in turn only if it holds.
    fn take_proof(&mut self, message: &[u8], connector: &Nonce) -> Step {
        let secret = self.secret.as_ref().expect("a Proof is awaited only with a secret");
        let proof = match decode(message, Kind::Proof) {
            Ok((0, proof)) => proof,
            Ok(_) => return failed(None, HandshakeError::Garbage("a Proof with flags set")),
            Err(error) => return failed(None, error),
        };
        if !secret.verify(CONNECTOR_LABEL, connector, &self.nonce, &proof) {
            let refusal = encode(Kind::Verdict, VERDICT_REFUSED, &[0; NONCE_BYTES]);
            return failed(Some(refusal), HandshakeError::WrongSecret);
        }
        let own = secret.prove(ACCEPTOR_LABEL, connector, &self.nonce);
        done(Some(encode(Kind::Verdict, VERDICT_ACCEPTED, &own)), Trust::Proven)
    }

    /// Connector: checks the acceptor's Verdict and its proof.
    fn take_verdict(&mut self, message: &[u8], acceptor: &Nonce) -> Step {
        let secret = self.secret.as_ref().expect("a Verdict is awaited only with a secret");
        match decode(message, Kind::Verdict) {
            Ok((VERDICT_ACCEPTED, proof)) => {
                if secret.verify(ACCEPTOR_LABEL, &self.nonce, acceptor, &proof) {
                    done(None, Trust::Proven)
                } else {
                    failed(None, HandshakeError::WrongSecret)
                }
            }
            Ok((VERDICT_REFUSED, _)) => failed(None, HandshakeError::WrongSecret),
            Ok(_) => failed(None, HandshakeError::Garbage("a Verdict of unknown status")),
            Err(error) => failed(None, error),
        }
    }
}

fn done(send: Option<HandshakeMessage>, trust: Trust) -> Step {
    Step { send, progress: Progress::Done(trust) }
}

fn failed(send: Option<HandshakeMessage>, error: HandshakeError) -> Step {
    Step { send, progress: Progress::Failed(error) }
}

fn flags(secret: Option<&ClusterSecret>) -> u8 {
    if secret.is_some() {
        FLAG_SECURED
    } else {
        0
    }
}

fn flag_secured(flags: u8) -> Result<bool, HandshakeError> {
    match flags {
        0 => Ok(false),
        FLAG_SECURED => Ok(true),
        _ => Err(HandshakeError::Garbage("unknown handshake flags")),
    }
}

/// `magic (4 bytes), version, kind, flags, reserved (zero), body (32 bytes)`.
fn encode(kind: Kind, flags: u8, body: &[u8; NONCE_BYTES]) -> HandshakeMessage {
    let mut message = [0u8; HANDSHAKE_MESSAGE_BYTES];
    message[..4].copy_from_slice(&HANDSHAKE_MAGIC);
    message[4] = HANDSHAKE_VERSION;
    message[5] = kind as u8;
    message[6] = flags;
    message[HEADER_BYTES..].copy_from_slice(body);
    message
}

/// The flags byte and the body of a message of `kind`.
fn decode(message: &[u8], kind: Kind) -> Result<(u8, [u8; NONCE_BYTES]), HandshakeError> {
    if message.len() != HANDSHAKE_MESSAGE_BYTES {
        return Err(HandshakeError::Garbage("a message of the wrong length"));
    }
    if message[..4] == ENVELOPE_MAGIC {
        return Err(HandshakeError::Garbage(
            "a peer-protocol message without a handshake (a node of an earlier release?)",
        ));
    }
    if message[..4] != HANDSHAKE_MAGIC {
        return Err(HandshakeError::Garbage("bytes without the handshake magic"));
    }
    if message[4] != HANDSHAKE_VERSION {
        return Err(HandshakeError::Version(message[4]));
    }
    if message[5] != kind as u8 {
        return Err(HandshakeError::Garbage("a handshake message of another kind"));
    }
    if message[7] != 0 {
        return Err(HandshakeError::Garbage("a handshake message with reserved bytes set"));
    }
    let body = message[HEADER_BYTES..].try_into().expect("the length was checked");
    Ok((message[6], body))
}

#[cfg(test)]
mod tests;
