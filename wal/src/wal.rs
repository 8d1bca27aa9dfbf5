//! [`PartitionWal`]: the write-ahead log of one partition, owned by the shard that owns it.

use std::cell::Cell;
use std::fs;
use std::io;
use std::mem;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::fs::File;
use monoio::task::JoinHandle;
use strata_core::frame::{decode_frame, FrameHeader};
use strata_core::record::RecordView;
use strata_core::{Lsn, PartitionId};

use crate::config::WalConfig;
use crate::device_sync::DeviceSync;
use crate::direct::DirectAppender;
use crate::error::WalError;
use crate::recovery::{recover_log, RecoveredLog, RecoveredTail, RecoverySummary, SealedSegment};
use crate::segment::{
    flushing_device, open_direct, open_direct_blocking, prewrite_segment, segment_file_name,
    SegmentHeader, SEGMENT_HEADER_BYTES,
};
use crate::snapshot::{seal_snapshot, snapshot_file_name, TEMPORARY_SUFFIX};

/// Distinguishes the spare files of every WAL in this process.
static SPARE_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// What [`PartitionWal::write_snapshot`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub lsn: Lsn,
    pub path: PathBuf,
    pub entries: u64,
    pub bytes: u64,
    pub segments_deleted: usize,
    pub elapsed: Duration,
}

/// The segment being appended to.
struct ActiveSegment {
    file: File,
    path: PathBuf,
    first_lsn: Lsn,
    segment_bytes: u64,
    /// Where the next frame goes.
    write_offset: u64,
    /// Everything before this offset is durable.
    synced_offset: u64,
}

/// The next segment file, pre-written ahead of need so that a roll only renames it.
enum Spare {
    Absent,
    Preparing { path: PathBuf, task: JoinHandle<io::Result<File>> },
}

/// What a log did that takes a while besides appending and syncing, counted since it was
/// opened: the caller compares two readings to learn what an operation included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalActivity {
    /// Moves to a new segment.
    pub rolls: u64,
    /// Spare segments whose pre-writing began (in a task of their own, or inside a roll that
    /// found none ready).
    pub spares_started: u64,
    /// Spare segments written (or failed), and how long the newest took (0 before any).
    pub spares_finished: u64,
    pub last_spare_micros: u64,
}

/// Spares finished and the newest one's duration in microseconds, set by the pre-writing
/// task when it ends.
type SpareProgress = Rc<Cell<(u64, u64)>>;

/// The write-ahead log of one partition: fixed-size, pre-written segment files in one
/// directory, plus snapshots.
///
/// Owned by the shard thread that owns the partition (`!Send`); use it only inside that shard's
/// monoio runtime, which also drops it. One operation runs at a time (`&mut self`): while a
/// batch's [`append`](Self::append) and [`sync`](Self::sync) are awaited, the caller gathers the
/// next batch. Appended frames are durable once a later `sync` returns `Ok`; in direct I/O
/// mode ([`WalConfig::direct_io`]) they are durable as soon as `append` returns `Ok`, unless
/// the sync is shared ([`WalConfig::shared_sync`]).
///
/// A failed write or sync poisons the log: every later append, sync or snapshot returns
/// [`WalError::Poisoned`] until the process restarts and recovers the directory.
pub struct PartitionWal {
    dir: PathBuf,
    partition: PartitionId,
    config: WalConfig,
    dir_file: File,
    segment: ActiveSegment,
    /// Present in direct I/O mode: the active segment is open with `O_DIRECT`, and with
    /// `O_DSYNC` unless `sync_device` is set.
    direct: Option<DirectAppender>,
    /// In direct I/O mode with a shared sync: the device whose cache flush makes appends
    /// durable; they wait for a [`sync`](Self::sync).
    sync_device: Option<u64>,
    /// The node's shared sync, once attached ([`attach_device_sync`](Self::attach_device_sync)).
    device_sync: Option<Arc<DeviceSync>>,
    /// The tag of the newest write the shared sync must cover.
    sync_tag: Option<u64>,
    sealed: Vec<SealedSegment>,
    last_lsn: Lsn,
    durable_lsn: Lsn,
    snapshot_lsn: Lsn,
    snapshot_path: Option<PathBuf>,
    bytes_since_snapshot: u64,
    /// With [`WalConfig::keep_until_archived`]: sealed segments at or below it are archived.
    archive_floor: Lsn,
    spare: Spare,
    activity: WalActivity,
    spare_progress: SpareProgress,
    /// Set while an operation awaits I/O; still set on entry means that operation was
    /// cancelled, and the file state is unknown.
    in_flight: bool,
    poison: Option<String>,
    /// A failure to inject at the next I/O of this kind (tests only).
    #[cfg(test)]
    pub(crate) fault: Option<FaultSite>,
}

/// Where a test can inject an I/O failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultSite {
    Write,
    Sync,
}

impl PartitionWal {
    /// Recovers the partition directory `dir` (created if missing): loads the newest
    /// snapshot, calling `on_snapshot_entry(key, value, expire_at_ms)` for each entry, then
    /// replays every record after the snapshot's LSN through `on_record`, borrowed from the
    /// mapped segment where it lies (copy what outlives the call). A torn tail of the
    /// newest segment is cut; any other damage is [`WalError::Corrupt`] naming file and offset.
    /// On error the callbacks may have seen part of the data, which the caller discards.
    ///
    /// Blocking file I/O: call it inside the shard's monoio runtime (the files are registered
    /// with it), before the shard serves the partition.
    ///
    /// # Errors
    ///
    /// [`WalError::Config`] for an unusable `config`, [`WalError::Io`] when a file cannot be
    /// read, written or synced, [`WalError::Corrupt`] for damage that is not a torn tail.
    pub fn recover(
        dir: &Path,
        partition: PartitionId,
        config: &WalConfig,
        mut on_snapshot_entry: impl FnMut(&[u8], &[u8], u64),
        mut on_record: impl FnMut(Lsn, RecordView<'_>),
    ) -> Result<(PartitionWal, RecoverySummary), WalError> {
        let (log, summary) =
            recover_log(dir, partition, config, &mut on_snapshot_entry, &mut on_record)?;
        let wal = PartitionWal::open(dir, partition, config, log)?;
        tracing::info!(
            partition = partition.0,
            snapshot_lsn = summary.snapshot_lsn.0,
            last_lsn = summary.last_lsn.0,
            records = summary.records_replayed,
            torn_bytes = summary.torn_bytes,
            elapsed_us = summary.elapsed.as_micros(),
            "recovered partition WAL"
        );
        Ok((wal, summary))
    }

    fn open(
        dir: &Path,
        partition: PartitionId,
        config: &WalConfig,
        log: RecoveredLog,
    ) -> Result<PartitionWal, WalError> {
        let dir_file = fs::File::open(dir)
            .and_then(File::from_std)
            .map_err(|source| WalError::io("open directory", dir, source))?;
        let tail = log.tail;
        let sync_device = if config.direct_io && config.shared_sync {
            flushing_device(dir).map_err(|source| WalError::io("statfs", dir, source))?
        } else {
            None
        };
        let (file, direct) = open_tail(&tail, config, sync_device.is_none())?;
        let sync_device = sync_device.filter(|_| direct.is_some());
        let segment = ActiveSegment {
            file,
            path: tail.path,
            first_lsn: tail.first_lsn,
            segment_bytes: tail.segment_bytes,
            write_offset: tail.write_offset,
            synced_offset: tail.write_offset,
        };
        Ok(PartitionWal {
            dir: dir.to_path_buf(),
            partition,
            config: config.clone(),
            dir_file,
            segment,
            direct,
            sync_device,
            device_sync: None,
            sync_tag: None,
            sealed: log.sealed,
            last_lsn: log.last_lsn,
            durable_lsn: log.last_lsn,
            snapshot_lsn: log.snapshot_lsn,
            snapshot_path: log.snapshot_path,
            bytes_since_snapshot: log.bytes_since_snapshot,
            archive_floor: Lsn::ZERO,
            spare: Spare::Absent,
            activity: WalActivity::default(),
            spare_progress: SpareProgress::default(),
            in_flight: false,
            poison: None,
            #[cfg(test)]
            fault: None,
        })
    }

    /// What the log did besides appends and syncs, so far.
    #[must_use]
    pub fn activity(&self) -> WalActivity {
        let (spares_finished, last_spare_micros) = self.spare_progress.get();
        WalActivity { spares_finished, last_spare_micros, ..self.activity }
    }

    #[must_use]
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// LSN of the last appended record (durable or not).
    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// LSN of the last record made durable by a sync.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// LSN of the newest snapshot, or 0.
    #[must_use]
    pub fn snapshot_lsn(&self) -> Lsn {
        self.snapshot_lsn
    }

    /// Lets the next snapshot delete sealed segments whose records are all at or below
    /// `floor` (with [`WalConfig::keep_until_archived`]; otherwise the snapshot alone
    /// decides).
    pub fn set_archive_floor(&mut self, floor: Lsn) {
        self.archive_floor = floor;
    }

    /// Sealed segment files still on disk.
    #[must_use]
    pub fn sealed_segments(&self) -> usize {
        self.sealed.len()
    }

    /// Frame bytes appended since the newest snapshot was written (replayed bytes after a
    /// restart): what recovery would replay, roughly. Callers write a snapshot when it grows
    /// large.
    #[must_use]
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    /// The largest buffer [`append`](Self::append) accepts.
    #[must_use]
    pub fn max_frame_bytes(&self) -> usize {
        self.config.max_frame_bytes()
    }

    /// Whether appends go straight to the disk with `O_DIRECT`: configured, and the
    /// filesystem accepted it.
    #[must_use]
    pub fn direct_io(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether direct appends wait for a shared sync (rather than being `O_DSYNC`).
    #[must_use]
    pub fn shares_sync(&self) -> bool {
        self.sync_device.is_some()
    }

    /// The original failure, once the log is poisoned.
    #[must_use]
    pub fn poison_cause(&self) -> Option<&str> {
        self.poison.as_deref()
    }

    /// Writes one or more encoded frames (from `strata_core::frame::encode_frame`, back to
    /// back) at the tail; they must continue the log at `last_lsn() + 1`. Starts a new segment
    /// when they do not fit in the current one. Not durable until [`sync`](Self::sync), except
    /// in direct I/O mode, where the frames are durable when this returns `Ok`.
    /// Returns the buffer, emptied, for reuse.
    ///
    /// # Errors
    ///
    /// Without touching the log: [`WalError::FrameTooLarge`], [`WalError::InvalidFrame`],
    /// [`WalError::WrongPartition`], [`WalError::Gap`]. [`WalError::Io`] when the write fails,
    /// which poisons the log; [`WalError::Poisoned`] once it is.
    pub async fn append(&mut self, frames: Vec<u8>) -> Result<Vec<u8>, WalError> {
        let last = self.check_frames(&frames)?;
        self.enter()?;
        let outcome = self.write_frames(frames, &last).await;
        self.leave(outcome)
    }

    /// Makes every appended frame durable: one `fdatasync` of the active segment, if it has
    /// unsynced frames. (Earlier segments were synced when the log rolled past them.) In
    /// direct I/O mode with `O_DSYNC` every append was durable when it returned, so there is
    /// nothing to do. With a shared sync attached, the `fdatasync` is the node's: one covers
    /// the completed appends of every log sharing it. `Ok(true)` when this call ran an
    /// `fdatasync`; `Ok(false)` when there was nothing to sync or another log's covered it.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] when the sync fails, which poisons the log; [`WalError::Poisoned`]
    /// once it is. A shared sync that failed fails every later one of the node.
    pub async fn sync(&mut self) -> Result<bool, WalError> {
        self.enter()?;
        let outcome = self.sync_active().await;
        self.leave(outcome)
    }

    /// Lets this log's syncs be shared through `device`, the node's: possible when its
    /// appends wait for a sync ([`shares_sync`](Self::shares_sync)) on the device `device`
    /// serves. Returns whether it now shares.
    pub fn attach_device_sync(&mut self, device: Arc<DeviceSync>) -> bool {
        match self.sync_device {
            Some(id) if device.serves(id) => {
                self.device_sync = Some(device);
                true
            }
            _ => false,
        }
    }

    /// Writes `encoded` (from [`encode_snapshot`](crate::encode_snapshot) for this
    /// partition) as the snapshot at `lsn`: the partition's state with every record up to
    /// `lsn` applied. Durably: temporary file, fsync, rename, directory fsync. Then deletes the
    /// older snapshot and the segments whose records it covers. `lsn` must be durable and not
    /// older than the current snapshot.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] when a file operation fails, which poisons the log;
    /// [`WalError::Poisoned`] once it is.
    ///
    /// # Panics
    ///
    /// If `encoded` is not a snapshot of this partition, or `lsn` is older than the current
    /// snapshot or not durable yet: all bugs of the caller.
    pub async fn write_snapshot(
        &mut self,
        lsn: Lsn,
        mut encoded: Vec<u8>,
    ) -> Result<SnapshotSummary, WalError> {
        assert!(lsn >= self.snapshot_lsn, "snapshot older than the current one");
        assert!(lsn <= self.durable_lsn, "snapshot of records not yet durable");
        let entries = seal_snapshot(&mut encoded, self.partition, lsn);
        self.enter()?;
        let outcome = self.persist_snapshot(lsn, entries, encoded).await;
        self.leave(outcome)
    }

    /// Validates frames before any I/O; a rejected buffer does not poison the log.
    fn check_frames(&self, frames: &[u8]) -> Result<FrameHeader, WalError> {
        let max_frame_bytes = self.max_frame_bytes();
        if frames.len() > max_frame_bytes {
            return Err(WalError::FrameTooLarge { frame_bytes: frames.len(), max_frame_bytes });
        }
        let mut offset = 0;
        let mut expected = self.last_lsn.next();
        let mut last = None;
        while offset < frames.len() || last.is_none() {
            let header = decode_frame(&frames[offset..])
                .map_err(|source| WalError::InvalidFrame { offset, source })?;
            if header.partition != self.partition {
                let found = header.partition;
                return Err(WalError::WrongPartition { expected: self.partition, found });
            }
            if header.first_lsn != expected {
                return Err(WalError::Gap { expected, found: header.first_lsn });
            }
            expected = header.last_lsn.next();
            offset += header.frame_bytes();
            last = Some(header);
        }
        Ok(last.expect("at least one frame"))
    }

    fn enter(&mut self) -> Result<(), WalError> {
        if self.in_flight {
            self.set_poison("an earlier WAL operation was cancelled while its I/O was in flight");
        }
        if let Some(cause) = &self.poison {
            return Err(WalError::Poisoned { cause: cause.clone() });
        }
        self.in_flight = true;
        Ok(())
    }

    fn leave<T>(&mut self, outcome: Result<T, WalError>) -> Result<T, WalError> {
        self.in_flight = false;
        if let Err(error) = &outcome {
            self.set_poison(&error.to_string());
        }
        outcome
    }

    fn set_poison(&mut self, cause: &str) {
        if self.poison.is_none() {
            tracing::error!(partition = self.partition.0, cause, "partition WAL poisoned");
            self.poison = Some(cause.to_string());
        }
    }

    async fn write_frames(
        &mut self,
        mut frames: Vec<u8>,
        last: &FrameHeader,
    ) -> Result<Vec<u8>, WalError> {
        let frame_bytes = frames.len() as u64;
        if self.segment.write_offset + frame_bytes > self.segment.segment_bytes {
            self.roll(self.last_lsn.next()).await?;
        }
        let offset = self.segment.write_offset;
        if self.direct.is_some() {
            self.write_direct(&frames, offset).await?;
        } else {
            frames = self.write_buffered(frames, offset).await?;
        }
        self.segment.write_offset += frame_bytes;
        self.last_lsn = last.last_lsn;
        if self.direct.is_some() && self.sync_device.is_none() {
            // An O_DSYNC write is on stable storage when it completes.
            self.segment.synced_offset = self.segment.write_offset;
            self.durable_lsn = self.last_lsn;
        }
        self.bytes_since_snapshot += frame_bytes;
        self.prepare_spare_when_due();
        frames.clear();
        Ok(frames)
    }

    /// Writes `frames` at `offset` through the page cache.
    async fn write_buffered(&mut self, frames: Vec<u8>, offset: u64) -> Result<Vec<u8>, WalError> {
        self.injected(FaultSite::Write)
            .map_err(|source| WalError::io("write", &self.segment.path, source))?;
        let (result, frames) = self.segment.file.write_all_at(frames, offset).await;
        result.map_err(|source| WalError::io("write", &self.segment.path, source))?;
        Ok(frames)
    }

    /// Writes `frames` at `offset` with one `O_DIRECT` write of whole blocks: the partial block
    /// before `offset` again (the same bytes), the frames, zeros to the block end. With a shared
    /// sync attached, the write is tagged for the sync that must cover it.
    async fn write_direct(&mut self, frames: &[u8], offset: u64) -> Result<(), WalError> {
        // An O_DSYNC write is also the sync, so a test's sync failure lands here too.
        let dsync = self.sync_device.is_none();
        self.injected(FaultSite::Write)
            .and_then(|()| if dsync { self.injected(FaultSite::Sync) } else { Ok(()) })
            .map_err(|source| WalError::io("write", &self.segment.path, source))?;
        let appender = self.direct.as_mut().expect("direct I/O mode");
        let staged = appender.stage(offset, frames);
        let end = staged.file_offset + staged.buffer.len() as u64;
        assert!(end <= self.segment.segment_bytes, "write past the segment end");
        let write = self.segment.file.write_all_at(staged.buffer, staged.file_offset);
        let tagged = self.device_sync.as_ref().map(TaggedWrite::begin);
        let (result, buffer) = write.await;
        self.sync_tag = tagged.map(|tagged| tagged.tag).or(self.sync_tag);
        result.map_err(|source| WalError::io("write", &self.segment.path, source))?;
        let appender = self.direct.as_mut().expect("direct I/O mode");
        appender.written(buffer, staged.data_bytes);
        Ok(())
    }

    /// Makes the active segment's unsynced appends durable: its own `fdatasync`, or the
    /// node's shared one when attached. `Ok(true)` if this call ran an `fdatasync`.
    async fn sync_active(&mut self) -> Result<bool, WalError> {
        if self.segment.synced_offset == self.segment.write_offset {
            return Ok(false);
        }
        self.injected(FaultSite::Sync)
            .map_err(|source| WalError::io("sync", &self.segment.path, source))?;
        let path = &self.segment.path;
        let ran = if let Some(device) = self.device_sync.clone() {
            // Every append has completed (`&mut self`); the sync of the newest one's tag
            // covers them all.
            let synced = device.sync(self.sync_tag.take(), &self.segment.file).await;
            synced.map_err(|reason| WalError::io("shared sync", path, io::Error::other(reason)))?
        } else {
            let synced = self.segment.file.sync_data().await;
            synced.map_err(|source| WalError::io("sync", path, source))?;
            true
        };
        self.segment.synced_offset = self.segment.write_offset;
        self.durable_lsn = self.last_lsn;
        Ok(ran)
    }

    /// Seals the active segment and makes a new one starting at `first_lsn` active. Order:
    /// the new segment's header is written and synced and the old segment synced before the
    /// new name exists, so a newer segment implies every older one is complete and durable.
    async fn roll(&mut self, first_lsn: Lsn) -> Result<(), WalError> {
        let (file, spare_path) = self.take_spare().await?;
        let segment_bytes = self.config.segment_bytes;
        let header = SegmentHeader { partition: self.partition, first_lsn, segment_bytes };
        let (result, _) = file.write_all_at(header.encode(), 0).await;
        result.map_err(|source| WalError::io("write segment header", &spare_path, source))?;
        self.sync_active().await?;
        self.injected(FaultSite::Sync)
            .map_err(|source| WalError::io("sync", &spare_path, source))?;
        file.sync_data().await.map_err(|source| WalError::io("sync", &spare_path, source))?;
        let file = self.reopen_for_appends(file, &spare_path).await?;
        let path = self.dir.join(segment_file_name(first_lsn));
        monoio::fs::rename(&spare_path, &path)
            .await
            .map_err(|source| WalError::io("rename", &spare_path, source))?;
        self.sync_directory().await?;
        let active = ActiveSegment {
            file,
            path,
            first_lsn,
            segment_bytes,
            write_offset: SEGMENT_HEADER_BYTES,
            synced_offset: SEGMENT_HEADER_BYTES,
        };
        if let Some(appender) = &mut self.direct {
            appender.start_segment(SEGMENT_HEADER_BYTES);
        }
        let sealed = mem::replace(&mut self.segment, active);
        tracing::debug!(
            partition = self.partition.0,
            first_lsn = first_lsn.0,
            "rolled to a new segment"
        );
        self.sealed.push(SealedSegment { path: sealed.path, first_lsn: sealed.first_lsn });
        self.activity.rolls += 1;
        Ok(())
    }

    /// In direct I/O mode, the new segment `file` at `path` opened again with `O_DIRECT` (and
    /// `O_DSYNC` unless the sync is shared) for its appends (its zeros and header went through
    /// the page cache and are synced). A filesystem that refuses it turns direct I/O off for
    /// this log.
    async fn reopen_for_appends(&mut self, file: File, path: &Path) -> Result<File, WalError> {
        if self.direct.is_none() {
            return Ok(file);
        }
        let dsync = self.sync_device.is_none();
        let reopened = open_direct(path, dsync)
            .await
            .map_err(|source| WalError::io("open segment", path, source))?;
        if let Some(direct) = reopened {
            return Ok(direct);
        }
        self.direct = None;
        self.sync_device = None;
        self.device_sync = None;
        Ok(file)
    }

    /// The pre-written spare, or a new one written now if none was started or it failed.
    async fn take_spare(&mut self) -> Result<(File, PathBuf), WalError> {
        if let Spare::Preparing { path, task } = mem::replace(&mut self.spare, Spare::Absent) {
            match task.await {
                Ok(file) => return Ok((file, path)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "spare segment failed");
                }
            }
        }
        let path = self.spare_path();
        self.activity.spares_started += 1;
        let progress = Rc::clone(&self.spare_progress);
        let written = timed_prewrite(path.clone(), self.config.segment_bytes, progress).await;
        let file = written.map_err(|source| WalError::io("prewrite segment", &path, source))?;
        Ok((file, path))
    }

    /// Starts pre-writing the next segment once the active one is a quarter to about three
    /// quarters full (by partition, so partitions do not all pre-write at once), in a task of its
    /// own on this shard, so the roll later finds it ready.
    fn prepare_spare_when_due(&mut self) {
        // Partitions filling at the same rate would all pre-write at once: each starts at its
        // own point between a quarter and about three quarters full.
        let sixteenths = 4 + u64::from(self.partition.0 % 8);
        let due = self.segment.write_offset * 16 >= self.segment.segment_bytes * sixteenths;
        if due && matches!(self.spare, Spare::Absent) {
            let path = self.spare_path();
            let progress = Rc::clone(&self.spare_progress);
            let bytes = self.config.segment_bytes;
            let task = monoio::spawn(timed_prewrite(path.clone(), bytes, progress));
            self.spare = Spare::Preparing { path, task };
            self.activity.spares_started += 1;
        }
    }

    fn spare_path(&self) -> PathBuf {
        let sequence = SPARE_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("spare-{sequence}{TEMPORARY_SUFFIX}"))
    }

    async fn sync_directory(&mut self) -> Result<(), WalError> {
        let dir = &self.dir;
        self.dir_file.sync_all().await.map_err(|source| WalError::io("sync directory", dir, source))
    }

    async fn persist_snapshot(
        &mut self,
        lsn: Lsn,
        entries: u64,
        encoded: Vec<u8>,
    ) -> Result<SnapshotSummary, WalError> {
        let started = Instant::now();
        let path = self.dir.join(snapshot_file_name(lsn));
        let temporary = self.dir.join(format!("{}{TEMPORARY_SUFFIX}", snapshot_file_name(lsn)));
        let bytes = write_new_file(&temporary, encoded, "write snapshot").await?;
        monoio::fs::rename(&temporary, &path)
            .await
            .map_err(|source| WalError::io("rename", &temporary, source))?;
        self.sync_directory().await?;
        let previous = self.snapshot_path.replace(path.clone());
        self.snapshot_lsn = lsn;
        self.bytes_since_snapshot = 0;
        if let Some(previous) = previous.filter(|previous| *previous != path) {
            remove_file(&previous).await?;
        }
        let segments_deleted = self.remove_covered_segments().await?;
        self.sync_directory().await?;
        let elapsed = started.elapsed();
        Ok(SnapshotSummary { lsn, path, entries, bytes, segments_deleted, elapsed })
    }

    /// Deletes the sealed segments whose records are all at or below the snapshot's LSN
    /// (and the archive floor, when segments wait for the archive), oldest first, so that the
    /// remaining ones always reach back to the snapshot.
    async fn remove_covered_segments(&mut self) -> Result<usize, WalError> {
        let mut limit = self.snapshot_lsn;
        if self.config.keep_until_archived {
            limit = limit.min(self.archive_floor);
        }
        let mut removed = 0;
        while let Some(oldest) = self.sealed.first() {
            let next_first_lsn =
                self.sealed.get(1).map_or(self.segment.first_lsn, |next| next.first_lsn);
            if next_first_lsn.0 > limit.0 + 1 {
                break;
            }
            remove_file(&oldest.path).await?;
            self.sealed.remove(0);
            removed += 1;
        }
        Ok(removed)
    }

    /// Fails the I/O at `site` if a test asked for it.
    #[allow(clippy::unused_self, clippy::unnecessary_wraps)]
    fn injected(&mut self, site: FaultSite) -> io::Result<()> {
        #[cfg(test)]
        if self.fault == Some(site) {
            self.fault = None;
            return Err(io::Error::other(format!("injected {site:?} failure")));
        }
        let _ = site;
        Ok(())
    }
}

/// A direct write in flight, tagged for the shared sync that must cover it; ends in the
/// shared sync's count when dropped, whether the write completed, failed or was cancelled.
struct TaggedWrite {
    device: Arc<DeviceSync>,
    tag: u64,
}

impl TaggedWrite {
    fn begin(device: &Arc<DeviceSync>) -> TaggedWrite {
        TaggedWrite { device: Arc::clone(device), tag: device.begin_write() }
    }
}

impl Drop for TaggedWrite {
    fn drop(&mut self) {
        self.device.end_write(self.tag);
    }
}

/// Opens the newest segment, where appends continue: with `O_DIRECT` (and `O_DSYNC` if
/// `dsync`) and a copy of its partial last block when `config` asks for direct I/O and the
/// filesystem allows it.
fn open_tail(
    tail: &RecoveredTail,
    config: &WalConfig,
    dsync: bool,
) -> Result<(File, Option<DirectAppender>), WalError> {
    let io_error = |source| WalError::io("open segment", &tail.path, source);
    if config.direct_io {
        if let Some(file) = open_direct_blocking(&tail.path, dsync).map_err(io_error)? {
            let tail_block = read_tail_block(&tail.path, tail.write_offset).map_err(io_error)?;
            let appender =
                DirectAppender::new(tail.write_offset, tail_block, config.max_frame_bytes());
            return Ok((File::from_std(file).map_err(io_error)?, Some(appender)));
        }
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tail.path)
        .and_then(File::from_std)
        .map_err(io_error)?;
    Ok((file, None))
}

/// The bytes of the segment at `path` from the block boundary at or before `write_offset` up
/// to `write_offset`, read through the page cache (recovery has just synced the file).
fn read_tail_block(path: &Path, write_offset: u64) -> io::Result<Vec<u8>> {
    let mut block = vec![0u8; DirectAppender::tail_bytes(write_offset)];
    let block_offset = DirectAppender::block_offset(write_offset);
    fs::File::open(path)?.read_exact_at(&mut block, block_offset)?;
    Ok(block)
}

/// Writes `bytes` as the whole of a new file at `path` and syncs it (`fsync`: the file is new),
/// on the shard's `io_uring`. `op` names the operation in errors.
pub(crate) async fn write_new_file(
    path: &Path,
    bytes: Vec<u8>,
    op: &'static str,
) -> Result<u64, WalError> {
    let io_error = |source| WalError::io(op, path, source);
    let file = monoio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .await
        .map_err(io_error)?;
    let (result, bytes) = file.write_all_at(bytes, 0).await;
    result.map_err(io_error)?;
    file.sync_all().await.map_err(io_error)?;
    file.close().await.map_err(io_error)?;
    Ok(bytes.len() as u64)
}

async fn remove_file(path: &Path) -> Result<(), WalError> {
    monoio::fs::remove_file(path).await.map_err(|source| WalError::io("remove", path, source))
}

#[cfg(test)]
impl PartitionWal {
    /// The active segment's path, write offset and synced offset.
    pub(crate) fn active_segment(&self) -> (PathBuf, u64, u64) {
        let segment = &self.segment;
        (segment.path.clone(), segment.write_offset, segment.synced_offset)
    }
}

/// Pre-writes a segment file, and counts it in `progress` with how long it took.
async fn timed_prewrite(
    path: PathBuf,
    segment_bytes: u64,
    progress: SpareProgress,
) -> io::Result<File> {
    let started = Instant::now();
    let written = prewrite_segment(path, segment_bytes).await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    progress.set((progress.get().0 + 1, micros));
    written
}
