//! The connector's side of the peer handshake (`strata_core::handshake`) on the connection a
//! replica opens to its leader: the leader's peer port reads nothing else before it.

use std::time::Duration;

use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::TcpStream;
use strata_core::handshake::{
    ClusterSecret, Handshake, Nonce, Progress, Trust, HANDSHAKE_MESSAGE_BYTES,
    HANDSHAKE_TIMEOUT_MS, NONCE_BYTES,
};

use super::StreamError;

/// Proves `secret` to the leader and checks its proof, within the handshake's time limit.
pub(crate) async fn prove(
    stream: &mut TcpStream,
    secret: Option<ClusterSecret>,
) -> Result<Trust, StreamError> {
    let limit = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    monoio::time::timeout(limit, run(stream, secret))
        .await
        .map_err(|_| StreamError::HandshakeTimeout(limit))?
}

async fn run(stream: &mut TcpStream, secret: Option<ClusterSecret>) -> Result<Trust, StreamError> {
    let (mut handshake, hello) = Handshake::connector(secret, nonce()?);
    let (written, _) = stream.write_all(hello.to_vec()).await;
    written?;
    let mut buffer = vec![0u8; HANDSHAKE_MESSAGE_BYTES];
    loop {
        let (read, filled) = stream.read_exact(buffer).await;
        read?;
        buffer = filled;
        let step = handshake.step(&buffer);
        if let Some(answer) = step.send {
            let (written, _) = stream.write_all(answer.to_vec()).await;
            written?;
        }
        match step.progress {
            Progress::Continue => {}
            Progress::Done(trust) => return Ok(trust),
            Progress::Failed(error) => return Err(error.into()),
        }
    }
}

/// A fresh nonce from the operating system's random source.
fn nonce() -> std::io::Result<Nonce> {
    use rand::RngCore;
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut nonce).map_err(std::io::Error::other)?;
    Ok(nonce)
}
