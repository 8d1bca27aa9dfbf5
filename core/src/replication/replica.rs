//! The replica's side of one partition's replication: what it takes from a leader, what it
//! makes durable and reports, and what it may serve.
//!
//! - It refuses anything from an epoch older than its fence (the highest epoch it has seen,
//!   recorded durably before it acts on a newer one), and tells the sender which epoch it saw.
//! - Its log's epochs never go back, and LSNs continue the log without a gap.
//! - It subscribes from what is durable, never from what it only applied.
//! - A leader's stream may start by cutting its log back to where both logs agree; a cut is
//!   reported with the number of records it discards.
//! - It serves reads up to the commit point of the leader whose frames it holds, learned on
//!   the current stream only: a new stream starts from nothing it was told before.
//! - A failed log ends its stream with a report, so the leader stops waiting for it.

use crate::ids::{Epoch, Lsn, PartitionId};
use crate::replication::facts::PartitionFacts;
use crate::replication::history::EpochHistory;
use crate::replication::in_sync::InSyncSet;
use crate::replication::mutations::{Mutation, Mutations};

pub use crate::peer::StartMode;

/// What happened, as the runtime reports it. `stream` numbers the replica's connections to a
/// leader; events of a stream that is no longer current are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaEvent {
    /// A new stream is being set up; an earlier one is over.
    StreamOpened {
        stream: u64,
    },
    StreamStarted {
        stream: u64,
        epoch: Epoch,
        mode: StartMode,
        caught_up_at: Lsn,
        in_sync: Option<InSyncSet>,
    },
    /// A frame arrived whose checksum and partition the runtime checked.
    Frame {
        stream: u64,
        epoch: Epoch,
        first: Lsn,
        last: Lsn,
    },
    /// Every frame up to `lsn` is durable in the local log.
    LocalDurable {
        lsn: Lsn,
    },
    LeaderCommit {
        stream: u64,
        lsn: Lsn,
    },
    /// The leader asks to record this version of the in-sync set.
    InSyncSetOffered {
        stream: u64,
        set: InSyncSet,
    },
    /// The runtime wrote these facts durably.
    FactsPersisted {
        facts: PartitionFacts,
    },
    /// The log was cut back to `lsn`, whose frame has `epoch` (what a `Truncate` asked).
    Truncated {
        lsn: Lsn,
        epoch: Epoch,
    },
    /// The stream's snapshot arrived whole and holds every record up to `lsn`.
    SnapshotReceived {
        stream: u64,
        lsn: Lsn,
    },
    /// The snapshot replaced the log; its last frame was of `epoch`.
    SnapshotInstalled {
        lsn: Lsn,
        epoch: Epoch,
    },
    WalFailed {
        reason: String,
    },
    StreamClosed {
        stream: u64,
    },
    /// A promotion asks this partition to refuse everything older than `epoch`. It was
    /// planned on `basis`, the newest version of the in-sync set it saw (`None`: forced,
    /// unchecked); a newer one recorded here refuses it. The new leader's set is recorded
    /// only once its stream starts: a promotion that fails half-way leaves fences, never a
    /// set.
    AcceptEpoch {
        epoch: Epoch,
        basis: Option<(Epoch, u64)>,
    },
    /// Every member a promotion asked accepted its epoch: record the new leader's first set.
    InstallInSyncSet {
        set: InSyncSet,
    },
}

/// What the runtime is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaCommand {
    /// End the stream, telling the leader why; with `fence` when the reason is a newer epoch
    /// seen here (the leader then steps down).
    Reject {
        stream: u64,
        reason: String,
        fence: Option<Epoch>,
    },
    /// Write these facts durably, then report `FactsPersisted`. One at a time.
    PersistFacts {
        facts: PartitionFacts,
    },
    /// Cut the log back so that it ends at `after`, discarding `records`; report `Truncated`.
    Truncate {
        after: Lsn,
        records: u64,
    },
    /// Replace the log with the received snapshot; report `SnapshotInstalled`.
    InstallSnapshot {
        lsn: Lsn,
    },
    Ack {
        stream: u64,
        lsn: Lsn,
    },
    /// Tell the leader this version of the set is recorded durably here.
    SendRecorded {
        stream: u64,
        leader_epoch: Epoch,
        isr_epoch: u64,
    },
    /// Tell the leader this partition's log failed, and end the stream.
    ReportFailure {
        stream: u64,
        reason: String,
    },
    /// Reads may now see every record up to `lsn`.
    Commit {
        lsn: Lsn,
    },
    /// The partition holds durably what the leader had framed when the stream started.
    CaughtUp,
    /// The promotion's epoch is durable here.
    Accepted {
        epoch: Epoch,
    },
    /// The new leader's first set is durable here.
    Installed {
        epoch: Epoch,
    },
    /// The new leader's first set is refused, for `reason`.
    InstallRefused {
        epoch: Epoch,
        reason: String,
    },
    /// The promotion's epoch is refused, for `reason`.
    AcceptRefused {
        epoch: Epoch,
        reason: String,
    },
}

/// Why a replica refuses what a leader sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("the leader's epoch {epoch} is older than epoch {fence}, which this replica has seen")]
    OlderEpoch { epoch: Epoch, fence: Epoch },
    #[error("{0}")]
    Protocol(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitingStart,
    /// The stream's epoch is newer than the fence on disk: waiting for it to be recorded.
    AwaitingFence {
        mode: StartMode,
    },
    Truncating,
    ReceivingSnapshot,
    /// Received whole; waits for the fence on disk, or is being installed.
    SnapshotReady {
        lsn: Lsn,
        installing: bool,
    },
    Live,
}

#[derive(Clone, Debug)]
struct Stream {
    id: u64,
    epoch: Epoch,
    phase: Phase,
    caught_up_at: Lsn,
    caught_up: bool,
    /// The leader's commit point as this stream told it.
    leader_commit: Lsn,
}

/// Where a replica's subscription to a partition starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeFrom {
    pub last_lsn: Lsn,
    pub last_epoch: Epoch,
    pub history: EpochHistory,
    pub floor: Lsn,
    pub fence: Epoch,
}

/// Where a partition's log stands when it starts as a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStart {
    pub last: Lsn,
    pub durable: Lsn,
    pub commit: Lsn,
    pub floor: Lsn,
    pub history: EpochHistory,
    /// The newest facts the partition asked to be written (a leader stepping down may have a
    /// write on its way), and the facts on disk now: the same unless a write is pending.
    pub facts: PartitionFacts,
    pub durable_facts: PartitionFacts,
}

/// One partition's replication on a follower or learner. Owned by the shard that owns it.
#[derive(Clone, Debug)]
pub struct Replica {
    partition: PartitionId,
    mutations: Mutations,
    /// The facts as this replica wants them, and as they are on disk.
    facts: PartitionFacts,
    durable_facts: PartitionFacts,
    persisting: bool,
    last: Lsn,
    history: EpochHistory,
    durable: Lsn,
    commit: Lsn,
    floor: Lsn,
    stream: Option<Stream>,
    /// The previous stream's commit point, kept only when the stale-commit mutation is on.
    kept_commit: Lsn,
    failed: Option<String>,
    /// Recorded-set replies waiting for their set to be on disk.
    replies: Vec<(u64, Epoch, u64)>,
    /// A promotion's epoch waiting to be on disk.
    accepting: Option<Epoch>,
    /// A promoted leader's first set waiting to be on disk.
    installing: Option<InSyncSet>,
    /// A cut or a snapshot install asked of the runtime and not reported done: the log it
    /// changes is not the one to subscribe from, whatever became of the stream that asked.
    reshaping: bool,
}

impl Replica {
    #[must_use]
    pub fn new(partition: PartitionId, start: ReplicaStart, mutations: Mutations) -> Replica {
        assert!(start.durable <= start.last, "durable beyond the log's end");
        assert!(start.commit <= start.durable, "committed beyond durable");
        assert!(start.facts.fence >= start.durable_facts.fence, "a pending write lowers no fence");
        let version = |facts: &PartitionFacts| facts.in_sync.as_ref().map(InSyncSet::version);
        assert!(version(&start.facts) >= version(&start.durable_facts), "nor a set version");
        // A write still on its way brings the disk to `facts`: this replica waits for it
        // rather than write them again.
        let persisting = start.facts != start.durable_facts;
        Replica {
            partition,
            mutations,
            facts: start.facts,
            durable_facts: start.durable_facts,
            persisting,
            last: start.last,
            history: start.history,
            durable: start.durable,
            commit: start.commit,
            floor: start.floor,
            stream: None,
            kept_commit: Lsn::ZERO,
            failed: None,
            replies: Vec::new(),
            accepting: None,
            installing: None,
            reshaping: false,
        }
    }

    #[must_use]
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    #[must_use]
    pub fn last(&self) -> Lsn {
        self.last
    }

    #[must_use]
    pub fn durable(&self) -> Lsn {
        self.durable
    }

    #[must_use]
    pub fn commit(&self) -> Lsn {
        self.commit
    }

    #[must_use]
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// The facts on disk.
    #[must_use]
    pub fn durable_facts(&self) -> &PartitionFacts {
        &self.durable_facts
    }

    /// The highest epoch seen, recorded or on its way to disk.
    #[must_use]
    pub fn fence(&self) -> Epoch {
        self.facts.fence
    }

    #[must_use]
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether the current stream is live and has caught up.
    #[must_use]
    pub fn caught_up(&self) -> bool {
        self.stream.as_ref().is_some_and(|stream| stream.phase == Phase::Live && stream.caught_up)
    }

    #[must_use]
    pub fn streaming(&self) -> bool {
        self.stream.as_ref().is_some_and(|stream| stream.phase == Phase::Live)
    }

    /// Whether `stream` is the current one.
    #[must_use]
    pub fn is_current(&self, stream: u64) -> bool {
        self.current(stream)
    }

    /// Whether frames of `stream` may be taken now: it is current and live.
    #[must_use]
    pub fn accepts_frames(&self, stream: u64) -> bool {
        self.stream
            .as_ref()
            .is_some_and(|current| current.id == stream && current.phase == Phase::Live)
    }

    /// Whether `stream` waits for facts to reach the disk, its log to be cut back or a snapshot
    /// to be installed before it can take frames: the runtime holds the stream's later
    /// messages until then.
    #[must_use]
    pub fn waiting_for_disk(&self, stream: u64) -> bool {
        self.stream.as_ref().is_some_and(|current| {
            current.id == stream
                && matches!(
                    current.phase,
                    Phase::AwaitingFence { .. } | Phase::Truncating | Phase::SnapshotReady { .. }
                )
        })
    }

    /// A snapshot at `lsn` was written: the log can no longer be cut back below it.
    pub fn snapshot_written(&mut self, lsn: Lsn) {
        assert!(lsn <= self.durable, "a snapshot of what is durable");
        self.floor = self.floor.max(lsn);
    }

    /// Whether this partition would accept a promotion's `epoch` planned on `basis` (see
    /// [`ReplicaEvent::AcceptEpoch`]), changing nothing.
    ///
    /// # Errors
    ///
    /// Why it would refuse.
    pub fn would_accept(&self, epoch: Epoch, basis: Option<(Epoch, u64)>) -> Result<(), String> {
        if epoch <= self.facts.fence && self.fencing() {
            return Err(format!(
                "epoch {epoch} is not newer than epoch {}, which partition {} has seen",
                self.facts.fence, self.partition
            ));
        }
        let recorded = self.facts.in_sync.as_ref();
        if let (Some(basis), Some(set)) = (basis, recorded) {
            if set.version() > basis && self.fencing() {
                return Err(format!(
                    "partition {} recorded {set} after the promotion asked: retry it",
                    self.partition
                ));
            }
        }
        Ok(())
    }

    /// Where a subscription starts: the durable end of the log. `None` while frames it applied
    /// are not durable yet or a cut or snapshot install is under way (the runtime waits and
    /// asks again), or after its log failed.
    #[must_use]
    pub fn subscription(&self) -> Option<SubscribeFrom> {
        if self.failed.is_some() || self.reshaping {
            return None;
        }
        let applied = self.mutations.has(Mutation::ReportApplied);
        if self.durable < self.last && !applied {
            return None;
        }
        Some(SubscribeFrom {
            last_lsn: if applied { self.last } else { self.durable },
            last_epoch: self.history.last_epoch(),
            history: self.history.clone(),
            floor: self.floor,
            fence: self.facts.fence,
        })
    }

    /// Takes one event; appends what to do to `out`.
    pub fn step(&mut self, event: ReplicaEvent, out: &mut Vec<ReplicaCommand>) {
        match event {
            ReplicaEvent::StreamOpened { stream } => self.open(stream),
            ReplicaEvent::StreamStarted { stream, epoch, mode, caught_up_at, in_sync } => {
                self.on_started(stream, epoch, mode, caught_up_at, in_sync, out);
            }
            ReplicaEvent::Frame { stream, epoch, first, last } => {
                if let Err(error) = self.on_frame(stream, epoch, first, last) {
                    self.reject(stream, error, out);
                }
            }
            ReplicaEvent::LocalDurable { lsn } => self.on_durable(lsn, out),
            ReplicaEvent::LeaderCommit { stream, lsn } => self.on_leader_commit(stream, lsn, out),
            ReplicaEvent::InSyncSetOffered { stream, set } => self.on_offered(stream, set, out),
            ReplicaEvent::FactsPersisted { facts } => self.on_persisted(facts, out),
            ReplicaEvent::Truncated { lsn, epoch } => self.on_truncated(lsn, epoch, out),
            ReplicaEvent::SnapshotReceived { stream, lsn } => {
                self.on_snapshot_received(stream, lsn, out);
            }
            ReplicaEvent::SnapshotInstalled { lsn, epoch } => self.on_installed(lsn, epoch, out),
            ReplicaEvent::WalFailed { reason } => self.on_failed(reason, out),
            ReplicaEvent::StreamClosed { stream } => {
                if self.current(stream) {
                    self.close();
                }
            }
            ReplicaEvent::AcceptEpoch { epoch, basis } => self.on_accept(epoch, basis, out),
            ReplicaEvent::InstallInSyncSet { set } => self.on_install_set(set, out),
        }
        self.check_invariants();
    }

    fn current(&self, stream: u64) -> bool {
        self.stream.as_ref().is_some_and(|current| current.id == stream)
    }

    fn open(&mut self, stream: u64) {
        self.close();
        self.stream = Some(Stream {
            id: stream,
            epoch: Epoch(0),
            phase: Phase::AwaitingStart,
            caught_up_at: Lsn::ZERO,
            caught_up: false,
            leader_commit: Lsn::ZERO,
        });
    }

    fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            if self.mutations.has(Mutation::StaleCommit) {
                self.kept_commit = self.kept_commit.max(stream.leader_commit);
            }
        }
    }

    fn reject(&mut self, stream: u64, error: ReplicaError, out: &mut Vec<ReplicaCommand>) {
        if !self.current(stream) {
            return;
        }
        let fence = match error {
            ReplicaError::OlderEpoch { fence, .. } => Some(fence),
            ReplicaError::Protocol(_) => None,
        };
        out.push(ReplicaCommand::Reject { stream, reason: error.to_string(), fence });
        self.close();
    }

    fn fencing(&self) -> bool {
        !self.mutations.has(Mutation::NoFencing)
    }

    fn on_started(
        &mut self,
        stream: u64,
        epoch: Epoch,
        mode: StartMode,
        caught_up_at: Lsn,
        in_sync: Option<InSyncSet>,
        out: &mut Vec<ReplicaCommand>,
    ) {
        let Some(current) = self.stream.as_ref().filter(|current| current.id == stream) else {
            return;
        };
        if current.phase != Phase::AwaitingStart {
            let error = ReplicaError::Protocol("a second stream start".into());
            return self.reject(stream, error, out);
        }
        if epoch < self.facts.fence && self.fencing() {
            return self.reject(
                stream,
                ReplicaError::OlderEpoch { epoch, fence: self.facts.fence },
                out,
            );
        }
        let offered = in_sync.filter(|set| set.leader_epoch == epoch);
        if let Some(set) = &offered {
            // The leader counts this member as having recorded the set once it says so.
            let (leader_epoch, isr_epoch) = set.version();
            self.replies.push((stream, leader_epoch, isr_epoch));
        }
        self.want(epoch, offered, out);
        let current = self.stream.as_mut().expect("current stream");
        current.epoch = epoch;
        current.caught_up_at = caught_up_at;
        current.phase = Phase::AwaitingFence { mode };
        self.resume(out);
    }

    /// Raises the wanted facts to `epoch` and a newer set, and starts writing them.
    fn want(&mut self, epoch: Epoch, set: Option<InSyncSet>, out: &mut Vec<ReplicaCommand>) {
        self.facts.fence = self.facts.fence.max(epoch);
        if let Some(set) = set {
            let newer = self.facts.in_sync.as_ref().is_none_or(|own| set.version() > own.version());
            if newer {
                self.facts.in_sync = Some(set);
            }
        }
        self.persist(out);
    }

    fn persist(&mut self, out: &mut Vec<ReplicaCommand>) {
        if !self.persisting && self.facts != self.durable_facts {
            self.persisting = true;
            out.push(ReplicaCommand::PersistFacts { facts: self.facts.clone() });
        }
    }

    /// Moves on with whatever waited for facts on disk.
    fn resume(&mut self, out: &mut Vec<ReplicaCommand>) {
        let fence = self.durable_facts.fence;
        let ready = self.stream.as_ref().and_then(|stream| match stream.phase {
            Phase::AwaitingFence { mode } if fence >= stream.epoch || !self.fencing() => {
                Some((stream.id, mode))
            }
            _ => None,
        });
        if let Some((stream, mode)) = ready {
            self.begin(stream, mode, out);
        }
        let waiting = self.stream.as_ref().and_then(|stream| match stream.phase {
            Phase::SnapshotReady { lsn, installing: false } if fence >= stream.epoch => Some(lsn),
            _ => None,
        });
        if let Some(lsn) = waiting {
            self.install(lsn, out);
        }
        self.send_replies(out);
        let recorded = self.durable_facts.in_sync.as_ref().map(InSyncSet::version);
        let installed = self.installing.as_ref().map(InSyncSet::version);
        if installed.is_some_and(|version| recorded >= Some(version)) {
            let epoch = self.installing.take().expect("installing").leader_epoch;
            out.push(ReplicaCommand::Installed { epoch });
        }
        if let Some(epoch) = self.accepting.filter(|epoch| fence >= *epoch) {
            self.accepting = None;
            out.push(ReplicaCommand::Accepted { epoch });
        }
    }

    fn begin(&mut self, stream: u64, mode: StartMode, out: &mut Vec<ReplicaCommand>) {
        match mode {
            StartMode::Snapshot => self.set_phase(Phase::ReceivingSnapshot),
            StartMode::Tail { next_lsn } => {
                let Some(after) = next_lsn.0.checked_sub(1).map(Lsn) else {
                    let error = ReplicaError::Protocol("a tail from LSN 0".into());
                    return self.reject(stream, error, out);
                };
                if after > self.last {
                    let reason = format!(
                        "the leader's tail starts after LSN {after}, this log ends at {}",
                        self.last
                    );
                    return self.reject(stream, ReplicaError::Protocol(reason), out);
                }
                if after < self.last {
                    if after < self.floor {
                        let reason = format!(
                            "cannot cut the log back to LSN {after}, below its snapshot at {}",
                            self.floor
                        );
                        return self.reject(stream, ReplicaError::Protocol(reason), out);
                    }
                    self.set_phase(Phase::Truncating);
                    let records = self.last.0 - after.0;
                    self.reshape();
                    out.push(ReplicaCommand::Truncate { after, records });
                    return;
                }
                self.go_live(out);
            }
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        if let Some(stream) = self.stream.as_mut() {
            stream.phase = phase;
        }
    }

    fn go_live(&mut self, out: &mut Vec<ReplicaCommand>) {
        let Some(stream) = self.stream.as_mut() else { return };
        stream.phase = Phase::Live;
        if self.mutations.has(Mutation::StaleCommit) {
            stream.leader_commit = stream.leader_commit.max(self.kept_commit);
        }
        let id = stream.id;
        out.push(ReplicaCommand::Ack { stream: id, lsn: self.durable });
        self.note_progress(out);
    }

    /// Commit point and catch-up after the log or the leader's commit moved.
    fn note_progress(&mut self, out: &mut Vec<ReplicaCommand>) {
        let Some(stream) = self.stream.as_mut().filter(|stream| stream.phase == Phase::Live) else {
            return;
        };
        if !stream.caught_up && self.durable >= stream.caught_up_at {
            stream.caught_up = true;
            out.push(ReplicaCommand::CaughtUp);
        }
        let candidate = stream.leader_commit.min(self.durable).min(self.last);
        if candidate > self.commit {
            self.commit = candidate;
            out.push(ReplicaCommand::Commit { lsn: candidate });
        }
    }

    fn on_frame(
        &mut self,
        stream: u64,
        epoch: Epoch,
        first: Lsn,
        last: Lsn,
    ) -> Result<(), ReplicaError> {
        let Some(current) = self.stream.as_ref().filter(|current| current.id == stream) else {
            return Ok(());
        };
        if current.phase != Phase::Live {
            return Err(ReplicaError::Protocol("frames before the stream started".into()));
        }
        if current.epoch < self.facts.fence && self.fencing() {
            return Err(ReplicaError::OlderEpoch { epoch: current.epoch, fence: self.facts.fence });
        }
        let last_epoch = self.history.last_epoch();
        if epoch > current.epoch {
            let reason =
                format!("a frame of epoch {epoch} from a leader of epoch {}", current.epoch);
            return Err(ReplicaError::Protocol(reason));
        }
        if epoch < last_epoch {
            let reason = format!("a frame of epoch {epoch} after one of epoch {last_epoch}");
            return Err(ReplicaError::Protocol(reason));
        }
        if first != self.last.next() || last < first {
            let reason = format!("a frame of LSNs {first}..={last}, expected {}", self.last.next());
            return Err(ReplicaError::Protocol(reason));
        }
        self.history.append(epoch, first);
        self.last = last;
        Ok(())
    }

    fn on_durable(&mut self, lsn: Lsn, out: &mut Vec<ReplicaCommand>) {
        assert!(lsn <= self.last, "durable beyond the log's end");
        if lsn <= self.durable {
            return;
        }
        self.durable = lsn;
        if let Some(stream) = self.stream.as_ref().filter(|stream| stream.phase == Phase::Live) {
            out.push(ReplicaCommand::Ack { stream: stream.id, lsn });
        }
        self.note_progress(out);
    }

    fn on_leader_commit(&mut self, stream: u64, lsn: Lsn, out: &mut Vec<ReplicaCommand>) {
        let Some(current) = self.stream.as_mut().filter(|current| current.id == stream) else {
            return;
        };
        current.leader_commit = current.leader_commit.max(lsn);
        self.note_progress(out);
    }

    fn on_offered(&mut self, stream: u64, set: InSyncSet, out: &mut Vec<ReplicaCommand>) {
        let Some(current) = self.stream.as_ref().filter(|current| current.id == stream) else {
            return;
        };
        if set.leader_epoch != current.epoch {
            let reason = format!(
                "an in-sync set of epoch {} on a stream of epoch {}",
                set.leader_epoch, current.epoch
            );
            return self.reject(stream, ReplicaError::Protocol(reason), out);
        }
        let (leader_epoch, isr_epoch) = set.version();
        self.replies.push((stream, leader_epoch, isr_epoch));
        self.want(leader_epoch, Some(set), out);
        self.send_replies(out);
    }

    /// Answers every offered set that is now on disk (or superseded by a newer one on disk).
    fn send_replies(&mut self, out: &mut Vec<ReplicaCommand>) {
        let recorded = self.durable_facts.in_sync.as_ref().map(InSyncSet::version);
        let current = self.stream.as_ref().map(|stream| stream.id);
        self.replies.retain(|(stream, leader_epoch, isr_epoch)| {
            if Some(*stream) != current {
                return false;
            }
            if recorded.is_some_and(|version| version >= (*leader_epoch, *isr_epoch)) {
                out.push(ReplicaCommand::SendRecorded {
                    stream: *stream,
                    leader_epoch: *leader_epoch,
                    isr_epoch: *isr_epoch,
                });
                return false;
            }
            true
        });
    }

    fn on_persisted(&mut self, facts: PartitionFacts, out: &mut Vec<ReplicaCommand>) {
        assert!(facts.fence >= self.durable_facts.fence, "the fence on disk never goes back");
        self.durable_facts = facts;
        self.persisting = false;
        self.persist(out);
        self.resume(out);
    }

    /// The log was cut back. It is so on disk whatever became of the stream that asked.
    fn on_truncated(&mut self, lsn: Lsn, epoch: Epoch, out: &mut Vec<ReplicaCommand>) {
        assert!(lsn <= self.last && lsn >= self.floor, "cut back within the log");
        debug_assert!(self.reshaping, "a cut that was asked for");
        self.reshaping = false;
        self.last = lsn;
        self.durable = self.durable.min(lsn);
        self.history.truncate_after(lsn);
        if self.history.last_epoch() != epoch && lsn > Lsn::ZERO {
            self.history.reset_to_snapshot(epoch, lsn);
        }
        // Cutting committed records happens only after a forced promotion lost them.
        self.commit = self.commit.min(self.durable);
        let truncating =
            self.stream.as_ref().is_some_and(|stream| stream.phase == Phase::Truncating);
        if truncating {
            self.go_live(out);
        }
    }

    fn on_snapshot_received(&mut self, stream: u64, lsn: Lsn, out: &mut Vec<ReplicaCommand>) {
        let receiving = self.stream.as_ref().is_some_and(|current| {
            current.id == stream && current.phase == Phase::ReceivingSnapshot
        });
        if !receiving {
            let error = ReplicaError::Protocol("a snapshot out of place".into());
            return self.reject(stream, error, out);
        }
        self.set_phase(Phase::SnapshotReady { lsn, installing: false });
        self.resume(out);
    }

    fn install(&mut self, lsn: Lsn, out: &mut Vec<ReplicaCommand>) {
        self.set_phase(Phase::SnapshotReady { lsn, installing: true });
        self.reshape();
        out.push(ReplicaCommand::InstallSnapshot { lsn });
    }

    /// Notes a cut or install asked of the runtime: one at a time, since a stream starts only
    /// from a subscription, and none is given while one runs.
    fn reshape(&mut self) {
        assert!(!self.reshaping, "one log change at a time");
        self.reshaping = true;
    }

    /// The snapshot replaced the log, whatever became of the stream that sent it.
    fn on_installed(&mut self, lsn: Lsn, epoch: Epoch, out: &mut Vec<ReplicaCommand>) {
        debug_assert!(self.reshaping, "an install that was asked for");
        self.reshaping = false;
        self.last = lsn;
        self.durable = lsn;
        self.floor = lsn;
        self.history.reset_to_snapshot(epoch, lsn);
        // The log is another one now: its commit point comes from the leader that sent it
        // (through `note_progress`), not from what the replaced log had.
        self.commit = Lsn::ZERO;
        let installing = self.stream.as_ref().is_some_and(|stream| {
            matches!(stream.phase, Phase::SnapshotReady { lsn: expected, installing: true }
                if expected == lsn)
        });
        if installing {
            self.go_live(out);
        }
    }

    fn on_failed(&mut self, reason: String, out: &mut Vec<ReplicaCommand>) {
        if self.failed.is_none() {
            self.failed = Some(reason.clone());
        }
        if self.mutations.has(Mutation::KeepFailedReplica) {
            return;
        }
        if let Some(stream) = self.stream.as_ref().map(|stream| stream.id) {
            out.push(ReplicaCommand::ReportFailure { stream, reason });
            self.close();
        }
    }

    fn on_accept(
        &mut self,
        epoch: Epoch,
        basis: Option<(Epoch, u64)>,
        out: &mut Vec<ReplicaCommand>,
    ) {
        if let Err(reason) = self.would_accept(epoch, basis) {
            out.push(ReplicaCommand::AcceptRefused { epoch, reason });
            return;
        }
        self.accepting = Some(self.accepting.map_or(epoch, |waiting| waiting.max(epoch)));
        self.want(epoch, None, out);
        let older =
            self.stream.as_ref().filter(|stream| stream.epoch < epoch).map(|stream| stream.id);
        if let Some(stream) = older.filter(|_| self.fencing()) {
            let current_epoch = self.stream.as_ref().map_or(Epoch(0), |stream| stream.epoch);
            self.reject(
                stream,
                ReplicaError::OlderEpoch { epoch: current_epoch, fence: epoch },
                out,
            );
        }
        self.resume(out);
    }

    /// Records a promoted leader's first set: it must be of the epoch this partition fenced
    /// itself at last (a later promotion would have raised the fence).
    fn on_install_set(&mut self, set: InSyncSet, out: &mut Vec<ReplicaCommand>) {
        let epoch = set.leader_epoch;
        if epoch != self.facts.fence && self.fencing() {
            let reason = format!(
                "partition {} has seen epoch {}, not the promotion's {epoch}",
                self.partition, self.facts.fence
            );
            out.push(ReplicaCommand::InstallRefused { epoch, reason });
            return;
        }
        self.installing = Some(set.clone());
        self.want(epoch, Some(set), out);
        self.resume(out);
    }

    fn check_invariants(&self) {
        assert!(self.durable <= self.last, "durable beyond the log's end");
        assert!(self.commit <= self.durable, "committed beyond durable");
        assert!(self.floor <= self.last, "the snapshot beyond the log's end");
        assert!(self.facts.fence >= self.durable_facts.fence, "wanted facts behind the disk");
    }
}

#[cfg(test)]
mod tests;
