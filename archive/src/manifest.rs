//! Manifests: JSON documents that list what the archive holds, each stored inside an envelope
//! that carries the CRC32C of the document, so a damaged manifest is refused like any other
//! damaged object.
//!
//! The cluster manifest records the partition count and segment size; each partition's
//! manifest lists its segment and snapshot objects with their LSN ranges, sizes and
//! checksums. Only the node that uploads (the leader, or a standalone node) writes them.
//!
//! Every manifest and entry records the leader epoch it was written under (`writer_epoch`):
//! a writer whose epoch is older than the stored manifest's refuses to overwrite it, so an old
//! leader that has not yet noticed its replacement cannot put back an older view. Documents
//! written before the field existed read as epoch 0. A zero epoch is left out when writing, so
//! those documents re-serialize to the same bytes and keep matching their checksums.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strata_core::{Epoch, Lsn};

use crate::error::ArchiveError;

/// Format 1 still: `writer_epoch` was added as an optional field, and every document written
/// before it reads unchanged (see `docs/archive-format.md`).
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterManifest {
    pub format: u32,
    /// The prefix the cluster's objects live under (`<cluster name>-<cluster id>`).
    pub cluster: String,
    pub partitions: u32,
    /// Segment size the uploading node writes; restore writes segments of this size.
    pub segment_bytes: u64,
    /// Leader epoch of the node that wrote this manifest (0: written before epochs were kept).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writer_epoch: u64,
}

/// One archived segment: a local segment file without its trailing zeros.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Name relative to the partition (`seg/<epoch>-<first LSN>`).
    pub object: String,
    /// Epoch of the segment's last frame.
    pub epoch: u64,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub bytes: u64,
    pub crc32c: u32,
    /// Leader epoch of the node that uploaded the object (0: before epochs were kept).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writer_epoch: u64,
}

/// One archived snapshot: the local snapshot file as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// Name relative to the partition (`snap/<LSN>`).
    pub object: String,
    pub lsn: u64,
    pub epoch: u64,
    pub entries: u64,
    pub bytes: u64,
    pub crc32c: u32,
    /// Leader epoch of the node that uploaded the object (0: before epochs were kept).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writer_epoch: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionManifest {
    pub format: u32,
    pub partition: u32,
    /// Leader epoch of the node that wrote this manifest (0: written before epochs were kept).
    /// A writer with an older epoch leaves the manifest alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writer_epoch: u64,
    /// Sorted by first LSN.
    pub segments: Vec<SegmentEntry>,
    /// Sorted by LSN.
    pub snapshots: Vec<SnapshotEntry>,
}

/// What restore loads for one partition: a snapshot (if any) and the segments after it, in
/// order, each starting at or before the LSN the previous one leaves off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePlan {
    pub snapshot: Option<SnapshotEntry>,
    pub segments: Vec<SegmentEntry>,
    /// The last LSN restore reaches.
    pub last_lsn: u64,
}

impl RestorePlan {
    /// Bytes of every object the plan loads.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |snapshot| snapshot.bytes)
            + self.segments.iter().map(|segment| segment.bytes).sum::<u64>()
    }
}

impl PartitionManifest {
    #[must_use]
    pub fn empty(partition: u32) -> PartitionManifest {
        PartitionManifest { format: MANIFEST_FORMAT, partition, ..Default::default() }
    }

    /// Whether a segment with exactly these LSNs is archived (by any epoch: committed records
    /// are the same whoever archived them).
    #[must_use]
    pub fn has_segment(&self, first_lsn: Lsn, last_lsn: Lsn) -> bool {
        self.segments
            .iter()
            .any(|segment| segment.first_lsn == first_lsn.0 && segment.last_lsn == last_lsn.0)
    }

    /// Whether a segment with these LSNs needs no upload: it is archived, or every record of
    /// it is covered by the oldest archived snapshot (restore starts at a snapshot).
    #[must_use]
    pub fn covers_segment(&self, first_lsn: Lsn, last_lsn: Lsn) -> bool {
        self.has_segment(first_lsn, last_lsn)
            || self.snapshots.first().is_some_and(|oldest| last_lsn.0 <= oldest.lsn)
    }

    /// Keeps the newest `snapshots_kept` snapshots (at least one) and the segments after the
    /// oldest of them; returns the names of the objects dropped from the manifest, to delete
    /// once the manifest without them is stored.
    pub fn prune(&mut self, snapshots_kept: usize) -> Vec<String> {
        let kept = snapshots_kept.max(1);
        if self.snapshots.len() <= kept {
            return Vec::new();
        }
        let dropped: Vec<SnapshotEntry> =
            self.snapshots.drain(..self.snapshots.len() - kept).collect();
        let oldest_kept = self.snapshots[0].lsn;
        let mut names: Vec<String> = dropped.into_iter().map(|snapshot| snapshot.object).collect();
        self.segments.retain(|segment| {
            let covered = segment.last_lsn <= oldest_kept;
            if covered {
                names.push(segment.object.clone());
            }
            !covered
        });
        names
    }

    /// Whether the manifest lists the object `name` (relative to its partition).
    #[must_use]
    pub fn lists(&self, name: &str) -> bool {
        self.segments.iter().any(|segment| segment.object == name)
            || self.snapshots.iter().any(|snapshot| snapshot.object == name)
    }

    #[must_use]
    pub fn newest_snapshot(&self) -> Option<&SnapshotEntry> {
        self.snapshots.last()
    }

    pub fn add_segment(&mut self, entry: SegmentEntry) {
        self.segments.retain(|segment| segment.object != entry.object);
        self.segments.push(entry);
        self.segments.sort_by_key(|segment| (segment.first_lsn, segment.last_lsn));
    }

    pub fn add_snapshot(&mut self, entry: SnapshotEntry) {
        self.snapshots.retain(|snapshot| snapshot.lsn != entry.lsn);
        self.snapshots.push(entry);
        self.snapshots.sort_by_key(|snapshot| snapshot.lsn);
    }

    /// The newest snapshot and the chain of segments after it, as far as it reaches without a
    /// gap. Where segments overlap (archived by two leaders), the one reaching furthest wins.
    #[must_use]
    pub fn restore_plan(&self) -> RestorePlan {
        let snapshot = self.newest_snapshot().cloned();
        let mut reached = snapshot.as_ref().map_or(0, |snapshot| snapshot.lsn);
        let mut segments = Vec::new();
        loop {
            let next = reached + 1;
            let best = self
                .segments
                .iter()
                .filter(|segment| segment.first_lsn <= next && segment.last_lsn >= next)
                .max_by_key(|segment| (segment.last_lsn, segment.epoch));
            let Some(best) = best else { break };
            reached = best.last_lsn;
            segments.push(best.clone());
        }
        RestorePlan { snapshot, segments, last_lsn: reached }
    }

    /// Checks that the document is what it claims to be.
    fn validate(&self, object: &str) -> Result<(), ArchiveError> {
        let sorted = self.segments.windows(2).all(|pair| pair[0].first_lsn <= pair[1].first_lsn)
            && self.snapshots.windows(2).all(|pair| pair[0].lsn < pair[1].lsn);
        let ranges = self.segments.iter().all(|segment| segment.first_lsn <= segment.last_lsn + 1);
        if self.format != MANIFEST_FORMAT || !sorted || !ranges {
            return Err(ArchiveError::Corrupt {
                object: object.to_string(),
                reason: "manifest fields out of order or of an unknown format".into(),
            });
        }
        Ok(())
    }
}

/// The fencing rule: a manifest stored by a writer of a newer epoch than `own_epoch` is not
/// overwritten; an equal or older one is. `partition` is `None` for the cluster manifest.
///
/// The caller reads the stored manifest and then writes: this is not an atomic compare-and-set.
/// It stops a stale leader at its first manifest write after the newer leader's manifest is
/// stored; a write racing that one can still land (conditional PUTs would close that window,
/// but Ceph RGW and Garage do not honour them).
///
/// # Errors
///
/// [`ArchiveError::Fenced`] naming the object and both epochs.
pub(crate) fn check_writer(
    object: &str,
    partition: Option<u32>,
    stored_epoch: u64,
    own_epoch: Epoch,
) -> Result<(), ArchiveError> {
    if stored_epoch <= own_epoch.0 {
        return Ok(());
    }
    Err(ArchiveError::Fenced {
        object: object.to_string(),
        partition,
        stored_epoch,
        own_epoch: own_epoch.0,
    })
}

/// Whether an epoch field is left out of the document: documents from before the field existed
/// must re-serialize to the bytes their checksum was computed over.
#[allow(clippy::trivially_copy_pass_by_ref)] // `skip_serializing_if` passes a reference.
fn is_zero(epoch: &u64) -> bool {
    *epoch == 0
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    crc32c: u32,
    manifest: T,
}

/// The stored bytes of a manifest: the document and its checksum.
#[must_use]
pub(crate) fn encode<T: Serialize>(manifest: &T) -> Vec<u8> {
    let document = serde_json::to_vec(manifest).expect("manifests serialize");
    let envelope = Envelope { crc32c: crc32c::crc32c(&document), manifest };
    serde_json::to_vec_pretty(&envelope).expect("manifests serialize")
}

/// Parses stored manifest bytes, checking the checksum.
///
/// # Errors
///
/// [`ArchiveError::Corrupt`] naming `object` when the bytes do not parse or the checksum does
/// not match.
pub(crate) fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    object: &str,
) -> Result<T, ArchiveError> {
    let corrupt = |reason: String| ArchiveError::Corrupt { object: object.to_string(), reason };
    let envelope: Envelope<T> = serde_json::from_slice(bytes)
        .map_err(|error| corrupt(format!("manifest does not parse: {error}")))?;
    let document = serde_json::to_vec(&envelope.manifest).expect("manifests serialize");
    let computed = crc32c::crc32c(&document);
    if computed != envelope.crc32c {
        return Err(corrupt(format!(
            "manifest checksum mismatch: stored {:#010x}, computed {computed:#010x}",
            envelope.crc32c
        )));
    }
    Ok(envelope.manifest)
}

/// Parses and validates a partition manifest.
pub(crate) fn decode_partition(
    bytes: &[u8],
    object: &str,
) -> Result<PartitionManifest, ArchiveError> {
    let manifest: PartitionManifest = decode(bytes, object)?;
    manifest.validate(object)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(first: u64, last: u64, epoch: u64) -> SegmentEntry {
        SegmentEntry {
            object: format!("seg/{epoch}-{first}"),
            epoch,
            first_lsn: first,
            last_lsn: last,
            bytes: 1,
            crc32c: 0,
            writer_epoch: epoch,
        }
    }

    #[test]
    fn round_trip_and_any_flip_in_the_document_is_caught() {
        let mut manifest = PartitionManifest::empty(2);
        manifest.add_segment(segment(1, 10, 1));
        let bytes = encode(&manifest);
        assert_eq!(decode_partition(&bytes, "m").unwrap(), manifest);
        let text =
            String::from_utf8(bytes).unwrap().replace("\"last_lsn\": 10", "\"last_lsn\": 11");
        let error = decode_partition(text.as_bytes(), "p2/manifest.json").unwrap_err();
        assert!(error.to_string().contains("p2/manifest.json"), "{error}");
        assert!(decode_partition(b"{not json", "m").is_err());
    }

    /// A stored document as a node without `writer_epoch` wrote it: the compact document, its
    /// checksum, and the pretty envelope around it.
    fn stored_without_epochs(document: &str) -> Vec<u8> {
        let checksum = crc32c::crc32c(document.as_bytes());
        format!("{{\n  \"crc32c\": {checksum},\n  \"manifest\": {document}\n}}").into_bytes()
    }

    #[test]
    fn manifests_written_before_writer_epochs_read_as_epoch_zero() {
        let document = concat!(
            r#"{"format":1,"partition":3,"segments":[{"object":"seg/1-1","epoch":1,"#,
            r#""first_lsn":1,"last_lsn":10,"bytes":100,"crc32c":7}],"snapshots":[{"#,
            r#""object":"snap/10","lsn":10,"epoch":1,"entries":4,"bytes":50,"crc32c":9}]}"#,
        );
        let manifest = decode_partition(&stored_without_epochs(document), "p3").unwrap();
        assert_eq!(manifest.writer_epoch, 0);
        assert_eq!(manifest.segments[0].writer_epoch, 0);
        assert_eq!(manifest.snapshots[0].writer_epoch, 0);
        assert_eq!(manifest.restore_plan().last_lsn, 10);
        let document = r#"{"format":1,"cluster":"demo-01","partitions":4,"segment_bytes":8192}"#;
        let cluster: ClusterManifest = decode(&stored_without_epochs(document), "c").unwrap();
        assert_eq!(cluster.writer_epoch, 0);
        assert_eq!(cluster.partitions, 4);
    }

    #[test]
    fn writer_epochs_round_trip_and_a_newer_stored_epoch_fences() {
        let mut manifest = PartitionManifest::empty(1);
        manifest.writer_epoch = 7;
        manifest.add_segment(segment(1, 10, 6));
        let bytes = encode(&manifest);
        assert!(String::from_utf8_lossy(&bytes).contains("\"writer_epoch\": 7"));
        assert_eq!(decode_partition(&bytes, "m").unwrap(), manifest);
        for own in [7, 8] {
            assert!(check_writer("p1/manifest.json", Some(1), 7, Epoch(own)).is_ok(), "{own}");
        }
        let error = check_writer("p1/manifest.json", Some(1), 7, Epoch(6)).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ArchiveError::Fenced { partition: Some(1), .. }), "{text}");
        assert!(text.contains("p1/manifest.json"), "{text}");
        assert!(text.contains("epoch 7"), "{text}");
        assert!(text.contains("epoch 6"), "{text}");
    }

    #[test]
    fn pruning_keeps_the_newest_snapshots_and_the_segments_after_the_oldest_kept() {
        let mut manifest = PartitionManifest::empty(0);
        for entry in [segment(1, 10, 1), segment(11, 20, 1), segment(21, 30, 1)] {
            manifest.add_segment(entry);
        }
        for lsn in [5, 15, 25] {
            let object = format!("snap/{lsn}");
            manifest.add_snapshot(SnapshotEntry {
                object,
                lsn,
                epoch: 1,
                entries: 1,
                bytes: 1,
                crc32c: 0,
                writer_epoch: 1,
            });
        }
        assert!(manifest.prune(3).is_empty());
        let dropped = manifest.prune(2);
        assert_eq!(dropped, ["snap/5", "seg/1-1"], "segment 11..=20 reaches past snapshot 15");
        assert_eq!(manifest.snapshots.len(), 2);
        assert!(manifest.covers_segment(Lsn(1), Lsn(10)), "covered by snapshot 15");
        assert!(!manifest.covers_segment(Lsn(31), Lsn(40)));
        assert_eq!(manifest.restore_plan().last_lsn, 30);
    }

    #[test]
    fn plan_starts_at_the_newest_snapshot_and_joins_overlapping_segments() {
        let mut manifest = PartitionManifest::empty(0);
        for entry in [
            segment(1, 10, 1),
            segment(11, 20, 1),
            segment(15, 30, 2),
            segment(31, 40, 2),
            segment(50, 60, 2),
        ] {
            manifest.add_segment(entry);
        }
        let plan = manifest.restore_plan();
        assert_eq!(plan.last_lsn, 40, "stops at the gap before 50");
        let firsts: Vec<u64> = plan.segments.iter().map(|segment| segment.first_lsn).collect();
        assert_eq!(firsts, [1, 11, 15, 31]);
        manifest.add_snapshot(SnapshotEntry {
            object: "snap/25".into(),
            lsn: 25,
            epoch: 2,
            entries: 3,
            bytes: 1,
            crc32c: 0,
            writer_epoch: 2,
        });
        let plan = manifest.restore_plan();
        let firsts: Vec<u64> = plan.segments.iter().map(|segment| segment.first_lsn).collect();
        assert_eq!(firsts, [15, 31]);
        assert_eq!(plan.snapshot.unwrap().lsn, 25);
    }
}
