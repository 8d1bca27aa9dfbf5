//! The connector's side of the peer handshake (`strata_core::handshake`) on the connection a
//! replica opens to its leader: the leader's peer port reads nothing else before it.

use std::time::Duration;

use strata_core::handshake::{
    ClusterSecret, Handshake, Nonce, Progress, Trust, HANDSHAKE_MESSAGE_BYTES,
    HANDSHAKE_TIMEOUT_MS, NONCE_BYTES,
};

use super::StreamError;
use crate::peer_stream::PeerStream;
use crate::tls::StreamIo;

/// Proves `secret` to the leader and checks its proof, within the handshake's time limit.
pub(crate) async fn prove(
    stream: &mut PeerStream,
    secret: Option<ClusterSecret>,
) -> Result<Trust, StreamError> {
    let limit = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    monoio::time::timeout(limit, run(stream, secret))
        .await
        .map_err(|_| StreamError::HandshakeTimeout(limit))?
}

async fn run(stream: &mut PeerStream, secret: Option<ClusterSecret>) -> Result<Trust, StreamError> {
    let (mut handshake, hello) = Handshake::connector(secret, nonce()?);
    let (written, _) = stream.write_from(hello.to_vec()).await;
    written?;
    let mut buffer = Vec::with_capacity(HANDSHAKE_MESSAGE_BYTES);
    loop {
        buffer = read_exactly(stream, buffer).await?;
        let step = handshake.step(&buffer);
        buffer.clear();
        if let Some(answer) = step.send {
            let (written, _) = stream.write_from(answer.to_vec()).await;
            written?;
        }
        match step.progress {
            Progress::Continue => {}
            Progress::Done(trust) => return Ok(trust),
            Progress::Failed(error) => return Err(error.into()),
        }
    }
}

/// Reads one handshake message, exactly: the leader sends nothing after its last one until
/// the replica's Subscribe, so no byte of a later message is taken.
async fn read_exactly(
    stream: &mut PeerStream,
    mut buffer: Vec<u8>,
) -> Result<Vec<u8>, StreamError> {
    while buffer.len() < HANDSHAKE_MESSAGE_BYTES {
        let (read, filled) = stream.read_into(buffer).await;
        buffer = filled;
        if read? == 0 {
            return Err(StreamError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    if buffer.len() > HANDSHAKE_MESSAGE_BYTES {
        let unexpected = "bytes after the leader's handshake message".to_string();
        return Err(StreamError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            unexpected,
        )));
    }
    Ok(buffer)
}

/// A fresh nonce from the operating system's random source.
fn nonce() -> std::io::Result<Nonce> {
    use rand::RngCore;
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut nonce).map_err(std::io::Error::other)?;
    Ok(nonce)
}
