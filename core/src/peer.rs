//! The peer protocol's envelope: every message between nodes on `peer_port` is one envelope.
//!
//! Layout (integers little-endian; see `docs/peer-protocol.md`):
//!
//! ```text
//! offset size field
//!      0    4 magic     "STRP" = 0x50525453
//!      4    1 kind      what the payload is (MessageKind)
//!      5    1 reserved  0
//!      6    2 partition the stream a replication message belongs to; 0 for the others
//!      8    4 length    payload bytes that follow the header
//!     12    4 checksum  CRC32C of the payload
//!     16    … payload
//! ```
//!
//! A replication stream carries WAL frames exactly as the leader wrote them (their own header
//! and checksum inside the envelope's payload); control requests carry JSON. Nothing here does
//! I/O: the caller feeds bytes in and gets whole messages or a typed error back.

use crate::ids::{Epoch, Lsn, PartitionId};

pub const ENVELOPE_MAGIC: u32 = u32::from_le_bytes(*b"STRP");
pub const ENVELOPE_HEADER_BYTES: usize = 16;
/// Largest payload accepted: a WAL frame is at most 16 MiB plus its header, a snapshot chunk
/// 1 MiB, a control message a few KiB.
pub const ENVELOPE_PAYLOAD_BYTES_MAX: usize = 20 * 1024 * 1024;
/// Snapshot bytes sent per chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Longest node name carried in a subscription.
pub const NAME_BYTES_MAX: usize = 1024;
/// Most partitions one subscription carries (a node has at most one per slot).
pub const SUBSCRIBE_PARTITIONS_MAX: usize = 16384;

/// What an envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// Client → server, JSON: a control request (register, heartbeat, ...).
    ControlRequest = 1,
    /// Server → client, JSON: the answer to a control request.
    ControlResponse = 2,
    /// Replica → leader, binary [`Subscribe`]: open the replication streams of some partitions
    /// (all owned by one shard of the leader) on this connection.
    Subscribe = 3,
    /// Leader → replica, binary [`StreamStart`]: how the stream begins.
    StreamStart = 4,
    /// Leader → replica, text: the subscription is refused; the connection closes.
    Refused = 5,
    /// Leader → replica: one or more WAL frames, back to back, exactly as written.
    Frames = 10,
    /// Leader → replica, u64: the partition's commit LSN.
    Commit = 11,
    /// Leader → replica: the next piece of a snapshot (a sealed checkpoint image).
    SnapshotChunk = 12,
    /// Leader → replica, u64: the snapshot is complete; it holds the state at this LSN.
    SnapshotEnd = 13,
    /// Replica → leader, u64: every frame up to this LSN is durable on the replica.
    Ack = 14,
}

impl MessageKind {
    fn from_u8(value: u8) -> Option<MessageKind> {
        Some(match value {
            1 => MessageKind::ControlRequest,
            2 => MessageKind::ControlResponse,
            3 => MessageKind::Subscribe,
            4 => MessageKind::StreamStart,
            5 => MessageKind::Refused,
            10 => MessageKind::Frames,
            11 => MessageKind::Commit,
            12 => MessageKind::SnapshotChunk,
            13 => MessageKind::SnapshotEnd,
            14 => MessageKind::Ack,
            _ => return None,
        })
    }

    /// Whether the message belongs to one partition's stream (the envelope names it).
    #[must_use]
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            MessageKind::StreamStart
                | MessageKind::Frames
                | MessageKind::Commit
                | MessageKind::SnapshotChunk
                | MessageKind::SnapshotEnd
                | MessageKind::Ack
        )
    }
}

/// Why bytes from a peer are not a valid message. The connection is closed; nothing is applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("bad envelope magic {0:#010x}")]
    Magic(u32),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("reserved envelope bytes are not zero")]
    Reserved,
    #[error("payload of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("payload checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed {kind:?} payload: {reason}")]
    Payload { kind: MessageKind, reason: String },
}

/// One whole message taken from the input.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: MessageKind,
    /// The stream a replication message belongs to; 0 for the other kinds.
    pub partition: PartitionId,
    pub payload: &'a [u8],
}

/// Appends one envelope holding `payload` to `output`, for a message of no stream.
///
/// # Panics
///
/// If `payload` exceeds [`ENVELOPE_PAYLOAD_BYTES_MAX`], or `kind` belongs to a stream: the
/// sender never builds one.
pub fn encode_message(output: &mut Vec<u8>, kind: MessageKind, payload: &[u8]) {
    assert!(!kind.is_stream(), "a stream message needs its partition");
    encode_envelope(output, kind, 0, payload);
}

/// Appends one envelope of `partition`'s stream holding `payload` to `output`.
///
/// # Panics
///
/// If `payload` exceeds [`ENVELOPE_PAYLOAD_BYTES_MAX`], `kind` is not a stream message, or the
/// partition does not fit the envelope's 16 bits (a node has at most 16384 partitions).
pub fn encode_stream_message(
    output: &mut Vec<u8>,
    kind: MessageKind,
    partition: PartitionId,
    payload: &[u8],
) {
    assert!(kind.is_stream(), "only stream messages name a partition");
    let partition = u16::try_from(partition.0).expect("partition fits the envelope");
    encode_envelope(output, kind, partition, payload);
}

fn encode_envelope(output: &mut Vec<u8>, kind: MessageKind, partition: u16, payload: &[u8]) {
    assert!(payload.len() <= ENVELOPE_PAYLOAD_BYTES_MAX, "envelope payload too large");
    output.extend_from_slice(&ENVELOPE_MAGIC.to_le_bytes());
    output.extend_from_slice(&[kind as u8, 0]);
    output.extend_from_slice(&partition.to_le_bytes());
    output.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    output.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    output.extend_from_slice(payload);
}

/// Appends a stream message whose payload is one little-endian u64 (Commit, Ack,
/// `SnapshotEnd`).
pub fn encode_lsn_message(
    output: &mut Vec<u8>,
    kind: MessageKind,
    partition: PartitionId,
    lsn: Lsn,
) {
    encode_stream_message(output, kind, partition, &lsn.0.to_le_bytes());
}

/// The first whole message in `input` and the bytes it takes, `Ok(None)` when more bytes are
/// needed, or why the input is not a message stream.
///
/// # Errors
///
/// Any [`PeerError`] but `Payload`: bad magic, unknown kind, a non-zero reserved byte (or a
/// partition on a message of no stream), an oversized length, a checksum mismatch.
pub fn decode_message(input: &[u8]) -> Result<Option<(Message<'_>, usize)>, PeerError> {
    if input.len() < ENVELOPE_HEADER_BYTES {
        return Ok(None);
    }
    let magic = read_u32(input, 0);
    if magic != ENVELOPE_MAGIC {
        return Err(PeerError::Magic(magic));
    }
    let kind = MessageKind::from_u8(input[4]).ok_or(PeerError::Kind(input[4]))?;
    let partition = u16::from_le_bytes([input[6], input[7]]);
    if input[5] != 0 || (partition != 0 && !kind.is_stream()) {
        return Err(PeerError::Reserved);
    }
    let length = read_u32(input, 8) as usize;
    if length > ENVELOPE_PAYLOAD_BYTES_MAX {
        return Err(PeerError::TooLarge(length));
    }
    let total = ENVELOPE_HEADER_BYTES + length;
    if input.len() < total {
        return Ok(None);
    }
    let payload = &input[ENVELOPE_HEADER_BYTES..total];
    let stored = read_u32(input, 12);
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(PeerError::Checksum { stored, computed });
    }
    let partition = PartitionId(u32::from(partition));
    Ok(Some((Message { kind, partition, payload }, total)))
}

/// The LSN carried by a Commit, Ack or `SnapshotEnd` message.
///
/// # Errors
///
/// `PeerError::Payload` when the payload is not exactly eight bytes.
pub fn decode_lsn(message: &Message<'_>) -> Result<Lsn, PeerError> {
    let bytes: [u8; 8] = message.payload.try_into().map_err(|_| PeerError::Payload {
        kind: message.kind,
        reason: format!("{} bytes, expected 8", message.payload.len()),
    })?;
    Ok(Lsn(u64::from_le_bytes(bytes)))
}

/// Which replica role a subscription is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaKind {
    /// Acknowledged writes wait for it while it is in sync.
    Follower,
    /// Never waited for.
    Learner,
}

/// Where a replica's log of one partition ends: the stream continues from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFrom {
    pub partition: PartitionId,
    /// The last LSN durable on the replica, and the epoch of the frame that wrote it.
    pub last_lsn: Lsn,
    pub last_epoch: Epoch,
}

/// Bytes of one [`StreamFrom`] in a Subscribe payload.
const STREAM_FROM_BYTES: usize = 20;

/// A replica asks for the streams of some partitions on one connection, saying what it
/// already has durably of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub kind: ReplicaKind,
    pub name: String,
    /// In ascending partition order, each partition once.
    pub streams: Vec<StreamFrom>,
}

impl Subscribe {
    /// The payload of a Subscribe message.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let count = self.streams.len();
        let mut payload = Vec::with_capacity(3 + count * STREAM_FROM_BYTES + self.name.len());
        payload.push(match self.kind {
            ReplicaKind::Follower => 1,
            ReplicaKind::Learner => 2,
        });
        payload.extend_from_slice(&u16::try_from(count).expect("partition count").to_le_bytes());
        for stream in &self.streams {
            payload.extend_from_slice(&stream.partition.0.to_le_bytes());
            payload.extend_from_slice(&stream.last_lsn.0.to_le_bytes());
            payload.extend_from_slice(&stream.last_epoch.0.to_le_bytes());
        }
        payload.extend_from_slice(self.name.as_bytes());
        payload
    }

    /// Parses a Subscribe payload.
    ///
    /// # Errors
    ///
    /// `PeerError::Payload` for a short payload, an unknown replica kind, no partition or more
    /// than [`SUBSCRIBE_PARTITIONS_MAX`], partitions out of order or repeated, or a name that
    /// is empty, too long or not UTF-8.
    pub fn decode(payload: &[u8]) -> Result<Subscribe, PeerError> {
        let invalid = |reason: &str| PeerError::Payload {
            kind: MessageKind::Subscribe,
            reason: reason.to_string(),
        };
        if payload.len() < 3 {
            return Err(invalid("shorter than 3 bytes"));
        }
        let kind = match payload[0] {
            1 => ReplicaKind::Follower,
            2 => ReplicaKind::Learner,
            _ => return Err(invalid("unknown replica kind")),
        };
        let count = usize::from(u16::from_le_bytes([payload[1], payload[2]]));
        if count == 0 || count > SUBSCRIBE_PARTITIONS_MAX {
            return Err(invalid("no partitions, or too many"));
        }
        let name_offset = 3 + count * STREAM_FROM_BYTES;
        if payload.len() < name_offset {
            return Err(invalid("shorter than its partitions"));
        }
        let streams: Vec<StreamFrom> = payload[3..name_offset]
            .chunks_exact(STREAM_FROM_BYTES)
            .map(|entry| StreamFrom {
                partition: PartitionId(read_u32(entry, 0)),
                last_lsn: Lsn(read_u64(entry, 4)),
                last_epoch: Epoch(read_u64(entry, 12)),
            })
            .collect();
        if streams.windows(2).any(|pair| pair[0].partition >= pair[1].partition) {
            return Err(invalid("partitions out of order or repeated"));
        }
        let name = &payload[name_offset..];
        if name.is_empty() || name.len() > NAME_BYTES_MAX {
            return Err(invalid("name empty or too long"));
        }
        let name = std::str::from_utf8(name).map_err(|_| invalid("name is not UTF-8"))?;
        Ok(Subscribe { kind, name: name.to_string(), streams })
    }
}

/// How the leader starts a stream.
///
/// `caught_up_at` is the leader's last framed LSN when the stream started: once the replica
/// holds it durably, it has everything the leader had then, and the leader counts a follower
/// in sync from that point. A leader of an earlier version does not send it; it decodes as
/// `Lsn::ZERO`, which the replica reaches at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStart {
    /// Frames follow from `next_lsn`: the replica's log continues where it stopped.
    Tail { next_lsn: Lsn, epoch: Epoch, caught_up_at: Lsn },
    /// A snapshot follows (chunks, then its end), then frames after the snapshot's LSN.
    Snapshot { epoch: Epoch, caught_up_at: Lsn },
}

/// `StreamStart` payload sizes: without `caught_up_at` (earlier versions), and with it.
const STREAM_START_BYTES_SHORT: usize = 17;
const STREAM_START_BYTES: usize = 25;

impl StreamStart {
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let (mode, lsn, epoch, caught_up_at) = match *self {
            StreamStart::Tail { next_lsn, epoch, caught_up_at } => {
                (1u8, next_lsn, epoch, caught_up_at)
            }
            StreamStart::Snapshot { epoch, caught_up_at } => (2u8, Lsn::ZERO, epoch, caught_up_at),
        };
        let mut payload = Vec::with_capacity(STREAM_START_BYTES);
        payload.push(mode);
        payload.extend_from_slice(&lsn.0.to_le_bytes());
        payload.extend_from_slice(&epoch.0.to_le_bytes());
        payload.extend_from_slice(&caught_up_at.0.to_le_bytes());
        payload
    }

    /// Parses a `StreamStart` payload: 25 bytes, or 17 from a leader that does not send
    /// `caught_up_at`.
    ///
    /// # Errors
    ///
    /// `PeerError::Payload` for a wrong length or an unknown mode.
    pub fn decode(payload: &[u8]) -> Result<StreamStart, PeerError> {
        let invalid = |reason: &str| PeerError::Payload {
            kind: MessageKind::StreamStart,
            reason: reason.to_string(),
        };
        let caught_up_at = match payload.len() {
            STREAM_START_BYTES => Lsn(read_u64(payload, STREAM_START_BYTES_SHORT)),
            STREAM_START_BYTES_SHORT => Lsn::ZERO,
            _ => return Err(invalid("expected 25 bytes (or 17)")),
        };
        let lsn = Lsn(read_u64(payload, 1));
        let epoch = Epoch(read_u64(payload, 9));
        match payload[0] {
            1 => Ok(StreamStart::Tail { next_lsn: lsn, epoch, caught_up_at }),
            2 => Ok(StreamStart::Snapshot { epoch, caught_up_at }),
            _ => Err(invalid("unknown mode")),
        }
    }
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("four bytes"))
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn message_round_trips_and_waits_for_whole_messages() {
        let mut bytes = Vec::new();
        encode_message(&mut bytes, MessageKind::ControlRequest, b"frame bytes");
        encode_lsn_message(&mut bytes, MessageKind::Commit, PartitionId(16383), Lsn(42));
        for cut in 0..ENVELOPE_HEADER_BYTES + 11 {
            assert_eq!(decode_message(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let (first, used) = decode_message(&bytes).unwrap().unwrap();
        let control = Message {
            kind: MessageKind::ControlRequest,
            partition: PartitionId(0),
            payload: b"frame bytes",
        };
        assert_eq!(first, control);
        let (second, rest) = decode_message(&bytes[used..]).unwrap().unwrap();
        assert_eq!((second.kind, second.partition), (MessageKind::Commit, PartitionId(16383)));
        assert_eq!(decode_lsn(&second), Ok(Lsn(42)));
        assert_eq!(used + rest, bytes.len());
    }

    #[test]
    fn damage_is_refused() {
        let mut bytes = Vec::new();
        encode_lsn_message(&mut bytes, MessageKind::Ack, PartitionId(2), Lsn(7));
        let mut flipped = bytes.clone();
        flipped[ENVELOPE_HEADER_BYTES] ^= 1;
        assert!(matches!(decode_message(&flipped), Err(PeerError::Checksum { .. })));
        let mut kind = bytes.clone();
        kind[4] = 99;
        assert_eq!(decode_message(&kind), Err(PeerError::Kind(99)));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(matches!(decode_message(&magic), Err(PeerError::Magic(_))));
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_message(&huge), Err(PeerError::TooLarge(_))));
        let mut reserved = bytes.clone();
        reserved[5] = 1;
        assert_eq!(decode_message(&reserved), Err(PeerError::Reserved));
        // A partition on a message that belongs to no stream.
        let mut control = Vec::new();
        encode_message(&mut control, MessageKind::ControlResponse, b"{}");
        control[6] = 1;
        assert_eq!(decode_message(&control), Err(PeerError::Reserved));
    }

    #[test]
    fn subscribe_and_start_round_trip() {
        let stream = |partition, lsn| StreamFrom {
            partition: PartitionId(partition),
            last_lsn: Lsn(lsn),
            last_epoch: Epoch(2),
        };
        let subscribe = Subscribe {
            kind: ReplicaKind::Learner,
            name: "ron".into(),
            streams: vec![stream(1, 99), stream(3, 0), stream(16383, u64::MAX)],
        };
        assert_eq!(Subscribe::decode(&subscribe.encode()), Ok(subscribe.clone()));
        for streams in [vec![], vec![stream(3, 1), stream(1, 1)], vec![stream(2, 1), stream(2, 5)]]
        {
            let refused = Subscribe { streams, ..subscribe.clone() };
            assert!(Subscribe::decode(&refused.encode()).is_err(), "{refused:?}");
        }
        let no_name = Subscribe { name: String::new(), ..subscribe.clone() };
        assert!(Subscribe::decode(&no_name.encode()).is_err());
        let encoded = subscribe.encode();
        assert!(Subscribe::decode(&encoded[..3 + 3 * 20]).is_err(), "cut before the name");
        assert!(Subscribe::decode(&encoded[..30]).is_err(), "cut inside the partitions");
        for start in [
            StreamStart::Tail { next_lsn: Lsn(5), epoch: Epoch(3), caught_up_at: Lsn(9) },
            StreamStart::Snapshot { epoch: Epoch(4), caught_up_at: Lsn(70) },
        ] {
            assert_eq!(StreamStart::decode(&start.encode()), Ok(start));
        }
        assert!(Subscribe::decode(&[0; 21]).is_err());
        assert!(StreamStart::decode(&[9; 17]).is_err());
        assert!(StreamStart::decode(&[9; 25]).is_err());
        for length in [0, 1, 16, 18, 24, 26] {
            assert!(StreamStart::decode(&vec![1; length]).is_err(), "{length} bytes");
        }
    }

    #[test]
    fn a_stream_start_without_its_catch_up_point_is_caught_up_at_once() {
        let start = StreamStart::Tail { next_lsn: Lsn(5), epoch: Epoch(3), caught_up_at: Lsn(9) };
        let short = &start.encode()[..17];
        let expected =
            StreamStart::Tail { next_lsn: Lsn(5), epoch: Epoch(3), caught_up_at: Lsn::ZERO };
        assert_eq!(StreamStart::decode(short), Ok(expected));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            if let Ok(Some((message, _))) = decode_message(&bytes) {
                let _ = decode_lsn(&message);
                let _ = Subscribe::decode(message.payload);
                let _ = StreamStart::decode(message.payload);
            }
            let _ = Subscribe::decode(&bytes);
            let _ = StreamStart::decode(&bytes);
        }
    }
}
