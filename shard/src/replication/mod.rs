//! Replication on the shard that owns a partition: the runtime of the state machines in
//! `strata_core::replication`. The machines decide (commit point, in-sync sets, where a stream
//! starts, what a replica refuses); this code carries out their commands on sockets and files
//! and feeds them what happens.
//!
//! - [`leader`]: replicas' subscriptions, their streams' frames, snapshots and catch-up reads,
//!   their acknowledgements; commits.
//! - [`replica`]: following a leader: subscriptions, the stream's messages, truncation,
//!   snapshot installs, acknowledgements.
//! - [`phases`]: what the control thread asks of every partition (reports, the two phases of
//!   a promotion, leading, stepping down) and the partition's replication facts file.
//!
//! A replica shard opens one connection per leader shard that owns some of its partitions and
//! subscribes to all of them on it; every stream message names its partition. What the
//! partitions of a shard send in one turn goes out in one write.

mod handshake;
mod leader;
mod phases;
mod replica;

use std::time::Duration;

use strata_core::peer::{decode_message, encode_message, Message, MessageKind, PeerError};
use strata_core::replication::Moment;

pub(crate) use leader::{LeaderCommands, LeaderSide};
pub(crate) use phases::replica_start;
pub(crate) use phases::PhaseTracker;
pub(crate) use replica::{replica_step_in, ReplicaSide};

use crate::peer_stream::{PeerReader, PeerStream};
use crate::shard::Shard;
use crate::tls::StreamIo;

/// How long a replica waits before it connects to the leader again.
const RECONNECT_DELAY: Duration = Duration::from_millis(300);
/// Received frames a replica holds before they are written, at most; reading waits beyond.
const INBOUND_BYTES_MAX: usize = 64 * 1024 * 1024;
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Largest snapshot a replica accepts.
const SNAPSHOT_BYTES_MAX: usize = 16 * 1024 * 1024 * 1024;
/// How often a shard ticks its leading partitions (progress timeouts).
pub(crate) const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// What a partition does in replication.
pub(crate) enum Role {
    /// Alone (standalone mode): what is durable is committed. The epoch history of the log
    /// is kept for the day the node joins a cluster.
    Standalone {
        history: strata_core::replication::EpochHistory,
    },
    Leader(Box<LeaderSide>),
    /// Following a leader, or idle (admin mode): a replica with or without a stream.
    Replica(Box<ReplicaSide>),
}

impl Role {
    pub(crate) fn leader(&mut self) -> Option<&mut LeaderSide> {
        match self {
            Role::Leader(side) => Some(side),
            _ => None,
        }
    }

    pub(crate) fn replica(&mut self) -> Option<&mut ReplicaSide> {
        match self {
            Role::Replica(side) => Some(side),
            _ => None,
        }
    }
}

/// Why a replication stream ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad message: {0}")]
    Peer(#[from] PeerError),
    #[error("the leader refused the stream: {0}")]
    Refused(String),
    #[error("{0}")]
    Protocol(String),
    #[error("no longer following")]
    Stopped,
    #[error("peer handshake refused: {0}")]
    Handshake(#[from] strata_core::handshake::HandshakeError),
    #[error("peer handshake not done within {0:?}")]
    HandshakeTimeout(std::time::Duration),
}

pub(crate) fn protocol(reason: &str) -> StreamError {
    StreamError::Protocol(reason.to_string())
}

impl Shard {
    /// The shard's monotonic clock, as the state machines take it.
    pub(crate) fn moment(&self) -> Moment {
        let elapsed = self.mesh.started.elapsed().as_millis();
        Moment(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// A number for a new stream, unique on this shard while the process runs.
    pub(crate) fn next_stream_number(&self) -> u64 {
        let number = self.stream_numbers.get() + 1;
        self.stream_numbers.set(number);
        number
    }
}

/// Hands the whole messages in `input` to `handle`, in order, then drops them from `input`.
/// A handler returning `Ok(false)` stops the walk after its message (the rest stays).
fn take_messages(
    input: &mut Vec<u8>,
    mut handle: impl FnMut(&Message<'_>) -> Result<bool, StreamError>,
) -> Result<(), StreamError> {
    let mut consumed = 0;
    let outcome = loop {
        match decode_message(&input[consumed..]) {
            Ok(Some((message, length))) => match handle(&message) {
                Ok(go_on) => {
                    consumed += length;
                    if !go_on {
                        break Ok(());
                    }
                }
                Err(error) => break Err(error),
            },
            Ok(None) => break Ok(()),
            Err(error) => break Err(StreamError::Peer(error)),
        }
    };
    input.drain(..consumed);
    outcome
}

/// Reads more bytes into `input`; end of stream is an error.
async fn read_more(reader: &mut PeerReader, input: &mut Vec<u8>) -> Result<(), StreamError> {
    if input.capacity() - input.len() < READ_CHUNK_BYTES / 4 {
        input.reserve(READ_CHUNK_BYTES);
    }
    let (result, buffer) = reader.read_into(std::mem::take(input)).await;
    *input = buffer;
    match result {
        Ok(0) => Err(StreamError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(_) => Ok(()),
        Err(error) => Err(StreamError::Io(error)),
    }
}

async fn refuse(mut stream: PeerStream, reason: &str) {
    let mut bytes = Vec::new();
    encode_message(&mut bytes, MessageKind::Refused, reason.as_bytes());
    let _ = stream.write_from(bytes).await;
}
