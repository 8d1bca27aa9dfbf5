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
//! and checksum inside the envelope's payload); control requests carry JSON. Every message of a
//! stream names the epoch of the leader it belongs to, and the receiver refuses one whose epoch
//! is not its stream's. Nothing here does I/O: the caller feeds bytes in and gets whole
//! messages or a typed error back.

use crate::ids::{Epoch, Lsn, PartitionId};
use crate::replication::{EpochHistory, InSyncSet, EPOCH_HISTORY_ENTRIES_MAX};

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
    /// Leader → replica: the leader's epoch (u64), then one or more WAL frames, back to back,
    /// exactly as written.
    Frames = 10,
    /// Leader → replica, [`Position`]: the partition's commit LSN.
    Commit = 11,
    /// Leader → replica: the next piece of a snapshot (its sealed image, as in a snapshot file).
    SnapshotChunk = 12,
    /// Leader → replica, [`Position`]: the snapshot is complete; it holds the state at this
    /// LSN.
    SnapshotEnd = 13,
    /// Replica → leader, [`Position`]: every frame up to this LSN is durable on the replica.
    Ack = 14,
    /// Leader → replica, an encoded [`InSyncSet`]: record this version of the set.
    InSyncSet = 15,
    /// Replica → leader, [`Recorded`]: this version of the set is durable here.
    Recorded = 16,
    /// Replica → leader, u64: this replica has seen a newer epoch than the stream's; the
    /// connection closes and the leader steps down.
    Fenced = 17,
    /// Replica → leader, text: the partition's log failed here; the stream ends.
    Failed = 18,
    /// Member → member, JSON: a message of the controller's Raft (append, vote, snapshot).
    RaftRequest = 20,
    /// Member → member, JSON: the answer to a [`MessageKind::RaftRequest`].
    RaftResponse = 21,
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
            15 => MessageKind::InSyncSet,
            16 => MessageKind::Recorded,
            17 => MessageKind::Fenced,
            18 => MessageKind::Failed,
            20 => MessageKind::RaftRequest,
            21 => MessageKind::RaftResponse,
            _ => return None,
        })
    }

    /// Whether the message belongs to one partition's stream (the envelope names it).
    #[must_use]
    pub fn is_stream(self) -> bool {
        !matches!(
            self,
            MessageKind::ControlRequest
                | MessageKind::ControlResponse
                | MessageKind::Subscribe
                | MessageKind::Refused
                | MessageKind::RaftRequest
                | MessageKind::RaftResponse
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
    encode_envelope_parts(output, kind, partition, &[payload]);
}

/// Appends one envelope of `partition`'s stream whose payload is `parts` back to back, without
/// gathering them first (a frame goes out behind its epoch without a copy).
///
/// # Panics
///
/// As [`encode_stream_message`].
pub fn encode_stream_parts(
    output: &mut Vec<u8>,
    kind: MessageKind,
    partition: PartitionId,
    parts: &[&[u8]],
) {
    assert!(kind.is_stream(), "only stream messages name a partition");
    let partition = u16::try_from(partition.0).expect("partition fits the envelope");
    encode_envelope_parts(output, kind, partition, parts);
}

fn encode_envelope_parts(output: &mut Vec<u8>, kind: MessageKind, partition: u16, parts: &[&[u8]]) {
    let length: usize = parts.iter().map(|part| part.len()).sum();
    assert!(length <= ENVELOPE_PAYLOAD_BYTES_MAX, "envelope payload too large");
    let checksum = parts.iter().fold(0, |checksum, part| crc32c::crc32c_append(checksum, part));
    output.extend_from_slice(&ENVELOPE_MAGIC.to_le_bytes());
    output.extend_from_slice(&[kind as u8, 0]);
    output.extend_from_slice(&partition.to_le_bytes());
    output.extend_from_slice(&(length as u32).to_le_bytes());
    output.extend_from_slice(&checksum.to_le_bytes());
    for part in parts {
        output.extend_from_slice(part);
    }
}

/// Appends a stream message carrying an LSN and the epoch of the leader whose stream it
/// belongs to (Commit, Ack, `SnapshotEnd`).
pub fn encode_position_message(
    output: &mut Vec<u8>,
    kind: MessageKind,
    partition: PartitionId,
    position: Position,
) {
    encode_stream_message(output, kind, partition, &position.encode());
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

/// An LSN with the epoch of the stream it belongs to: the payload of Commit, Ack and
/// `SnapshotEnd` (16 bytes: u64 LSN, u64 epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub lsn: Lsn,
    pub epoch: Epoch,
}

impl Position {
    #[must_use]
    pub fn encode(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.lsn.0.to_le_bytes());
        bytes[8..].copy_from_slice(&self.epoch.0.to_le_bytes());
        bytes
    }

    /// The position a Commit, Ack or `SnapshotEnd` message carries.
    ///
    /// # Errors
    ///
    /// `PeerError::Payload` when the payload is not exactly 16 bytes.
    pub fn decode(message: &Message<'_>) -> Result<Position, PeerError> {
        if message.payload.len() != 16 {
            return Err(payload_error(
                message.kind,
                &format!("{} bytes, expected 16", message.payload.len()),
            ));
        }
        Ok(Position {
            lsn: Lsn(read_u64(message.payload, 0)),
            epoch: Epoch(read_u64(message.payload, 8)),
        })
    }
}

fn payload_error(kind: MessageKind, reason: &str) -> PeerError {
    PeerError::Payload { kind, reason: reason.to_string() }
}

/// The epoch a Frames message names and the frames after it.
///
/// # Errors
///
/// `PeerError::Payload` when the payload is shorter than the epoch.
pub fn split_frames<'a>(message: &Message<'a>) -> Result<(Epoch, &'a [u8]), PeerError> {
    if message.payload.len() < 8 {
        return Err(payload_error(message.kind, "shorter than its epoch"));
    }
    Ok((Epoch(read_u64(message.payload, 0)), &message.payload[8..]))
}

/// The epoch a Fenced message names.
///
/// # Errors
///
/// `PeerError::Payload` when the payload is not exactly eight bytes.
pub fn decode_epoch(message: &Message<'_>) -> Result<Epoch, PeerError> {
    let bytes: [u8; 8] = message.payload.try_into().map_err(|_| {
        payload_error(message.kind, &format!("{} bytes, expected 8", message.payload.len()))
    })?;
    Ok(Epoch(u64::from_le_bytes(bytes)))
}

/// A replica's answer to an in-sync set: that version is durable here (16 bytes: u64 leader
/// epoch, u64 isr epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub leader_epoch: Epoch,
    pub isr_epoch: u64,
}

impl Recorded {
    #[must_use]
    pub fn encode(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.leader_epoch.0.to_le_bytes());
        bytes[8..].copy_from_slice(&self.isr_epoch.to_le_bytes());
        bytes
    }

    /// # Errors
    ///
    /// `PeerError::Payload` when the payload is not exactly 16 bytes.
    pub fn decode(message: &Message<'_>) -> Result<Recorded, PeerError> {
        if message.payload.len() != 16 {
            let reason = format!("{} bytes, expected 16", message.payload.len());
            return Err(payload_error(message.kind, &reason));
        }
        Ok(Recorded {
            leader_epoch: Epoch(read_u64(message.payload, 0)),
            isr_epoch: read_u64(message.payload, 8),
        })
    }
}

/// An in-sync set carried by a message.
///
/// # Errors
///
/// `PeerError::Payload` when the payload is not exactly one encoded set.
pub fn decode_in_sync_set(message: &Message<'_>) -> Result<InSyncSet, PeerError> {
    let (set, used) = InSyncSet::decode(message.payload)
        .map_err(|error| payload_error(message.kind, &error.to_string()))?;
    if used != message.payload.len() {
        return Err(payload_error(message.kind, "bytes after the set"));
    }
    Ok(set)
}

/// Which replica role a subscription is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaKind {
    /// Acknowledged writes wait for it while it is in sync.
    Follower,
    /// Never waited for.
    Learner,
}

/// Where a replica's log of one partition stands: the stream continues from where it agrees
/// with the leader's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFrom {
    pub partition: PartitionId,
    /// The last LSN durable on the replica, and the epoch of the frame that wrote it.
    pub last_lsn: Lsn,
    pub last_epoch: Epoch,
    /// The lowest LSN its log can be cut back to (its newest snapshot's).
    pub floor: Lsn,
    /// The highest epoch the replica has seen for this partition.
    pub fence: Epoch,
    /// Its log's epoch history.
    pub history: EpochHistory,
}

/// The subscription format this code writes and reads (the byte after the replica kind).
pub const SUBSCRIBE_FORMAT: u8 = 2;

/// A replica asks for the streams of some partitions on one connection, saying what it
/// already has durably of each and where it can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub kind: ReplicaKind,
    pub name: String,
    /// Its peer address, recorded in in-sync sets.
    pub address: String,
    /// In ascending partition order, each partition once.
    pub streams: Vec<StreamFrom>,
}

impl Subscribe {
    /// The payload of a Subscribe message: u8 kind, u8 format, u16 count, per partition
    /// (u32 partition, u64 last LSN, u64 last epoch, u64 floor, u64 fence, u16 history
    /// entries, each u64 epoch and u64 first LSN), then u16 name length, name, address.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(64 + self.streams.len() * 64 + self.name.len());
        payload.push(match self.kind {
            ReplicaKind::Follower => 1,
            ReplicaKind::Learner => 2,
        });
        payload.push(SUBSCRIBE_FORMAT);
        let count = u16::try_from(self.streams.len()).expect("partition count");
        payload.extend_from_slice(&count.to_le_bytes());
        for stream in &self.streams {
            payload.extend_from_slice(&stream.partition.0.to_le_bytes());
            for value in [stream.last_lsn.0, stream.last_epoch.0, stream.floor.0, stream.fence.0] {
                payload.extend_from_slice(&value.to_le_bytes());
            }
            let entries = stream.history.entries();
            payload
                .extend_from_slice(&u16::try_from(entries.len()).expect("bounded").to_le_bytes());
            for (epoch, first) in entries {
                payload.extend_from_slice(&epoch.0.to_le_bytes());
                payload.extend_from_slice(&first.0.to_le_bytes());
            }
        }
        let name = u16::try_from(self.name.len()).expect("name length checked");
        payload.extend_from_slice(&name.to_le_bytes());
        payload.extend_from_slice(self.name.as_bytes());
        payload.extend_from_slice(self.address.as_bytes());
        payload
    }

    /// Parses a Subscribe payload.
    ///
    /// # Errors
    ///
    /// `PeerError::Payload` for a short payload, an unknown replica kind or format (an earlier
    /// release's subscription), no partition or more than [`SUBSCRIBE_PARTITIONS_MAX`],
    /// partitions out of order or repeated, an invalid epoch history, or a name or address
    /// that is empty, too long or not UTF-8.
    pub fn decode(payload: &[u8]) -> Result<Subscribe, PeerError> {
        let invalid = |reason: &str| payload_error(MessageKind::Subscribe, reason);
        let mut reader = Reader { bytes: payload, offset: 0 };
        let kind = match reader.u8().map_err(|()| invalid("empty"))? {
            1 => ReplicaKind::Follower,
            2 => ReplicaKind::Learner,
            _ => return Err(invalid("unknown replica kind")),
        };
        let format = reader.u8().map_err(|()| invalid("no format"))?;
        if format != SUBSCRIBE_FORMAT {
            return Err(invalid(&format!(
                "subscription format {format}, this node reads {SUBSCRIBE_FORMAT}: every node of a \
                 cluster must run the same release"
            )));
        }
        let count = usize::from(reader.u16().map_err(|()| invalid("no count"))?);
        if count == 0 || count > SUBSCRIBE_PARTITIONS_MAX {
            return Err(invalid("no partitions, or too many"));
        }
        let mut streams = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            streams.push(read_stream_from(&mut reader).map_err(|reason| invalid(&reason))?);
        }
        if streams.windows(2).any(|pair| pair[0].partition >= pair[1].partition) {
            return Err(invalid("partitions out of order or repeated"));
        }
        let name_length = usize::from(reader.u16().map_err(|()| invalid("no name"))?);
        let name = reader.take(name_length).map_err(|()| invalid("shorter than its name"))?;
        let address = &payload[reader.offset..];
        let text = |bytes: &[u8], what: &str| {
            if bytes.is_empty() || bytes.len() > NAME_BYTES_MAX {
                return Err(invalid(&format!("{what} empty or too long")));
            }
            std::str::from_utf8(bytes)
                .map(str::to_string)
                .map_err(|_| invalid(&format!("{what} is not UTF-8")))
        };
        Ok(Subscribe {
            kind,
            name: text(name, "name")?,
            address: text(address, "address")?,
            streams,
        })
    }
}

fn read_stream_from(reader: &mut Reader<'_>) -> Result<StreamFrom, String> {
    let short = |()| "shorter than its partitions".to_string();
    let partition = PartitionId(reader.u32().map_err(short)?);
    let last_lsn = Lsn(reader.u64().map_err(short)?);
    let last_epoch = Epoch(reader.u64().map_err(short)?);
    let floor = Lsn(reader.u64().map_err(short)?);
    let fence = Epoch(reader.u64().map_err(short)?);
    let entries = usize::from(reader.u16().map_err(short)?);
    if entries > EPOCH_HISTORY_ENTRIES_MAX {
        return Err(format!("an epoch history of {entries} entries"));
    }
    let mut history = Vec::with_capacity(entries);
    for _ in 0..entries {
        history.push((Epoch(reader.u64().map_err(short)?), Lsn(reader.u64().map_err(short)?)));
    }
    let history = EpochHistory::from_entries(history)
        .ok_or_else(|| format!("partition {partition}: an epoch history out of order"))?;
    if floor > last_lsn {
        return Err(format!("partition {partition}: a snapshot beyond the log's end"));
    }
    Ok(StreamFrom { partition, last_lsn, last_epoch, floor, fence, history })
}

/// How the leader starts a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// Frames from `next_lsn` follow: the replica cuts its log back to `next_lsn - 1` if it
    /// holds more.
    Tail { next_lsn: Lsn },
    /// A snapshot follows (chunks, then its end), then frames after the snapshot's LSN.
    Snapshot,
}

/// The leader's answer to a subscription of one partition: how the stream starts, under which
/// epoch, up to where the replica must get to have caught up (the leader's last framed LSN
/// when the stream started), and the newest version of the in-sync set, which the replica
/// records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStart {
    pub mode: StartMode,
    pub epoch: Epoch,
    pub caught_up_at: Lsn,
    pub in_sync: InSyncSet,
}

/// `StreamStart` bytes before the set.
const STREAM_START_FIXED_BYTES: usize = 25;

impl StreamStart {
    /// u8 mode (1 tail, 2 snapshot), u64 next LSN (0 for a snapshot), u64 epoch, u64 caught-up
    /// LSN, then the set ([`InSyncSet::encode`]).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let (mode, next_lsn) = match self.mode {
            StartMode::Tail { next_lsn } => (1u8, next_lsn),
            StartMode::Snapshot => (2u8, Lsn::ZERO),
        };
        let mut payload = Vec::with_capacity(STREAM_START_FIXED_BYTES + 64);
        payload.push(mode);
        payload.extend_from_slice(&next_lsn.0.to_le_bytes());
        payload.extend_from_slice(&self.epoch.0.to_le_bytes());
        payload.extend_from_slice(&self.caught_up_at.0.to_le_bytes());
        payload.extend_from_slice(&self.in_sync.encode());
        payload
    }

    /// Parses a `StreamStart` payload.
    ///
    /// # Errors
    ///
    /// `PeerError::Payload` for a short payload, an unknown mode, a tail from LSN 0, or a set
    /// that is malformed or of another epoch.
    pub fn decode(payload: &[u8]) -> Result<StreamStart, PeerError> {
        let invalid = |reason: &str| payload_error(MessageKind::StreamStart, reason);
        if payload.len() < STREAM_START_FIXED_BYTES {
            return Err(invalid("shorter than 25 bytes"));
        }
        let next_lsn = Lsn(read_u64(payload, 1));
        let epoch = Epoch(read_u64(payload, 9));
        let caught_up_at = Lsn(read_u64(payload, 17));
        let mode = match payload[0] {
            1 if next_lsn.0 > 0 => StartMode::Tail { next_lsn },
            2 => StartMode::Snapshot,
            1 => return Err(invalid("a tail from LSN 0")),
            _ => return Err(invalid("unknown mode")),
        };
        let (in_sync, used) = InSyncSet::decode(&payload[STREAM_START_FIXED_BYTES..])
            .map_err(|error| invalid(&error.to_string()))?;
        if STREAM_START_FIXED_BYTES + used != payload.len() {
            return Err(invalid("bytes after the set"));
        }
        if in_sync.leader_epoch != epoch {
            return Err(invalid("an in-sync set of another epoch"));
        }
        Ok(StreamStart { mode, epoch, caught_up_at, in_sync })
    }
}

/// Reads little-endian integers off a payload.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], ()> {
        let end = self.offset.checked_add(count).filter(|end| *end <= self.bytes.len()).ok_or(())?;
        let taken = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, ()> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ()> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("two bytes")))
    }

    fn u32(&mut self) -> Result<u32, ()> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    fn u64(&mut self) -> Result<u64, ()> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("eight bytes")))
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
    use crate::replication::Member;
    use proptest::prelude::*;

    fn position(lsn: u64, epoch: u64) -> Position {
        Position { lsn: Lsn(lsn), epoch: Epoch(epoch) }
    }

    #[test]
    fn message_round_trips_and_waits_for_whole_messages() {
        let mut bytes = Vec::new();
        encode_message(&mut bytes, MessageKind::ControlRequest, b"frame bytes");
        encode_position_message(
            &mut bytes,
            MessageKind::Commit,
            PartitionId(16383),
            position(42, 3),
        );
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
        assert_eq!(Position::decode(&second), Ok(position(42, 3)));
        assert_eq!(used + rest, bytes.len());
    }

    #[test]
    fn a_payload_in_parts_is_one_payload() {
        let mut parts = Vec::new();
        encode_stream_parts(
            &mut parts,
            MessageKind::Frames,
            PartitionId(2),
            &[&7u64.to_le_bytes(), b"frames"],
        );
        let mut whole = Vec::new();
        let mut payload = 7u64.to_le_bytes().to_vec();
        payload.extend_from_slice(b"frames");
        encode_stream_message(&mut whole, MessageKind::Frames, PartitionId(2), &payload);
        assert_eq!(parts, whole);
        let (message, _) = decode_message(&parts).unwrap().unwrap();
        assert_eq!(split_frames(&message), Ok((Epoch(7), &b"frames"[..])));
    }

    #[test]
    fn damage_is_refused() {
        let mut bytes = Vec::new();
        encode_position_message(&mut bytes, MessageKind::Ack, PartitionId(2), position(7, 1));
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

    fn history(entries: &[(u64, u64)]) -> EpochHistory {
        let entries = entries.iter().map(|(epoch, lsn)| (Epoch(*epoch), Lsn(*lsn))).collect();
        EpochHistory::from_entries(entries).unwrap()
    }

    fn stream(partition: u32, lsn: u64) -> StreamFrom {
        StreamFrom {
            partition: PartitionId(partition),
            last_lsn: Lsn(lsn),
            last_epoch: Epoch(2),
            floor: Lsn(0),
            fence: Epoch(3),
            history: match lsn {
                0 => history(&[]),
                1 => history(&[(2, 1)]),
                _ => history(&[(1, 1), (2, lsn)]),
            },
        }
    }

    #[test]
    fn subscriptions_round_trip_and_bad_ones_are_refused() {
        let subscribe = Subscribe {
            kind: ReplicaKind::Learner,
            name: "ron".into(),
            address: "127.0.0.1:23851".into(),
            streams: vec![stream(1, 99), stream(3, 0), stream(16383, u64::MAX)],
        };
        assert_eq!(Subscribe::decode(&subscribe.encode()), Ok(subscribe.clone()));
        for streams in [vec![], vec![stream(3, 1), stream(1, 1)], vec![stream(2, 1), stream(2, 5)]]
        {
            let refused = Subscribe { streams, ..subscribe.clone() };
            assert!(Subscribe::decode(&refused.encode()).is_err(), "{refused:?}");
        }
        for (name, address) in [("", "a:1"), ("ron", "")] {
            let bad = Subscribe { name: name.into(), address: address.into(), ..subscribe.clone() };
            assert!(Subscribe::decode(&bad.encode()).is_err());
        }
        let mut beyond = stream(1, 5);
        beyond.floor = Lsn(6);
        let bad = Subscribe { streams: vec![beyond], ..subscribe.clone() };
        assert!(Subscribe::decode(&bad.encode()).is_err(), "a snapshot beyond the log");
        let encoded = subscribe.encode();
        for cut in 0..encoded.len() - subscribe.address.len() {
            assert!(Subscribe::decode(&encoded[..cut]).is_err(), "cut at {cut}");
        }
        let mut earlier = encoded.clone();
        earlier[1] = 1;
        let refusal = Subscribe::decode(&earlier).unwrap_err().to_string();
        assert!(refusal.contains("same release"), "{refusal}");
    }

    #[test]
    fn stream_starts_carry_the_set_of_their_epoch() {
        let member = Member { name: "harry".into(), address: "127.0.0.1:1".into() };
        let in_sync = InSyncSet::new(Epoch(4), 2, "harry", vec![member]);
        for mode in [StartMode::Tail { next_lsn: Lsn(5) }, StartMode::Snapshot] {
            let start = StreamStart {
                mode,
                epoch: Epoch(4),
                caught_up_at: Lsn(9),
                in_sync: in_sync.clone(),
            };
            assert_eq!(StreamStart::decode(&start.encode()), Ok(start.clone()));
            let encoded = start.encode();
            for cut in 0..encoded.len() {
                assert!(StreamStart::decode(&encoded[..cut]).is_err(), "cut at {cut}");
            }
        }
        let other = StreamStart {
            mode: StartMode::Snapshot,
            epoch: Epoch(5),
            caught_up_at: Lsn(0),
            in_sync: in_sync.clone(),
        };
        assert!(StreamStart::decode(&other.encode()).is_err(), "a set of another epoch");
        let zero = StreamStart {
            mode: StartMode::Tail { next_lsn: Lsn(0) },
            epoch: Epoch(4),
            caught_up_at: Lsn(0),
            in_sync,
        };
        assert!(StreamStart::decode(&zero.encode()).is_err(), "a tail from LSN 0");
        let recorded = Recorded { leader_epoch: Epoch(4), isr_epoch: 2 };
        let mut bytes = Vec::new();
        encode_stream_message(
            &mut bytes,
            MessageKind::Recorded,
            PartitionId(1),
            &recorded.encode(),
        );
        let (message, _) = decode_message(&bytes).unwrap().unwrap();
        assert_eq!(Recorded::decode(&message), Ok(recorded));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..96)
        ) {
            if let Ok(Some((message, _))) = decode_message(&bytes) {
                let _ = Position::decode(&message);
                let _ = split_frames(&message);
                let _ = decode_epoch(&message);
                let _ = decode_in_sync_set(&message);
                let _ = Subscribe::decode(message.payload);
                let _ = StreamStart::decode(message.payload);
            }
            let _ = Subscribe::decode(&bytes);
            let _ = StreamStart::decode(&bytes);
        }
    }
}
