//! The peer port's handshake (`strata_core::handshake`) over blocking sockets: what a test
//! that talks to a node's peer port, or plays a node for one, does before anything else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use strata_core::handshake::{
    ClusterSecret, Handshake, HandshakeError, HandshakeMessage, Progress, Trust,
    HANDSHAKE_MESSAGE_BYTES, NONCE_BYTES,
};

/// Why a handshake a test made did not succeed.
#[derive(Debug)]
pub enum Refusal {
    /// The node refused in the handshake, for this reason.
    Handshake(HandshakeError),
    /// The connection broke or timed out (a node that refuses closes the connection).
    Io(std::io::Error),
}

/// Connects to the peer port `port` and makes the connector's handshake with `secret`.
///
/// # Errors
///
/// What the node refused, or the connection's failure.
pub fn connect(port: u16, secret: Option<&str>) -> Result<TcpStream, Refusal> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(Refusal::Io)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(Refusal::Io)?;
    let (handshake, hello) = Handshake::connector(secret.and_then(ClusterSecret::new), nonce());
    run(&mut stream, handshake, Some(hello)).map(|_| stream)
}

/// The acceptor's handshake with `secret` on a connection a node opened to a test.
///
/// # Errors
///
/// What the node refused, or the connection's failure.
pub fn accept(stream: &mut TcpStream, secret: Option<&str>) -> Result<Trust, Refusal> {
    let handshake = Handshake::acceptor(secret.and_then(ClusterSecret::new), nonce());
    run(stream, handshake, None)
}

/// Runs `handshake` on `stream`: sends `first`, then reads and answers one message at a time.
///
/// # Errors
///
/// What the peer refused, or the connection's failure.
pub fn run(
    stream: &mut TcpStream,
    mut handshake: Handshake,
    first: Option<HandshakeMessage>,
) -> Result<Trust, Refusal> {
    if let Some(hello) = first {
        stream.write_all(&hello).map_err(Refusal::Io)?;
    }
    loop {
        let message = read_message(stream).map_err(Refusal::Io)?;
        let step = handshake.step(&message);
        if let Some(answer) = step.send {
            stream.write_all(&answer).map_err(Refusal::Io)?;
        }
        match step.progress {
            Progress::Continue => {}
            Progress::Done(trust) => return Ok(trust),
            Progress::Failed(error) => return Err(Refusal::Handshake(error)),
        }
    }
}

/// Reads one handshake message.
///
/// # Errors
///
/// The connection ended or timed out first.
pub fn read_message(stream: &mut TcpStream) -> std::io::Result<HandshakeMessage> {
    let mut message = [0u8; HANDSHAKE_MESSAGE_BYTES];
    stream.read_exact(&mut message)?;
    Ok(message)
}

/// A fresh random nonce.
#[must_use]
pub fn nonce() -> [u8; NONCE_BYTES] {
    rand::random()
}

/// CRC32C (Castagnoli), bit by bit: the envelope checksum, computed independently of the
/// node's code.
#[must_use]
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}
