//! The leader's side of one partition's replication.
//!
//! A write commits once it is durable here and acknowledged durable by every member the leader
//! waits for: the in-sync set in effect, every member of a set proposed since, and followers
//! that caught up and are about to join. The set changes only by recording a new version on
//! every member of the new set first ([`LeaderCommand::PersistInSyncSet`] here,
//! [`LeaderCommand::SendInSyncSet`] to the others); a version in flight may only be replaced by
//! a smaller one. A shrink that would leave fewer members than `min_insync` is never recorded:
//! the member stays, writes are refused (`-NOREPLICAS`) and pending ones wait. Together with
//! the promotion guard ([`super::promotion`]) this keeps every member of the newest recorded
//! set holding every acknowledged write.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::ids::{Epoch, Lsn, PartitionId};
use crate::peer::ReplicaKind;
use crate::replication::history::EpochHistory;
use crate::replication::in_sync::{InSyncSet, Member, IN_SYNC_MEMBERS_MAX};
use crate::replication::mutations::{Mutation, Mutations};
use crate::replication::{Moment, StreamId};

/// Subscriptions from one position within `SUBSCRIPTION_REPEAT_WINDOW_MS` after which the
/// replica gets a snapshot: its streams keep ending where they started, so something in the
/// tail it is sent fails every time, and a snapshot starts it afresh.
pub const SUBSCRIPTION_REPEAT_LIMIT: u32 = 4;
const SUBSCRIPTION_REPEAT_WINDOW_MS: u64 = 10_000;
/// Replicas whose subscriptions a partition remembers.
const SUBSCRIPTIONS_REMEMBERED: usize = 32;
/// Streams one partition serves at most (followers, learners, and their replacements).
const STREAMS_MAX: usize = 512;
/// How long a controlled leader waits for the controller's answer before it asks again.
pub const CONTROLLER_RECORD_RETRY_MS: u64 = 1000;

/// How a leader runs.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// This node, as it appears in in-sync sets.
    pub me: Member,
    /// Members (this one included) a set must keep; fewer in sync and writes are refused.
    pub min_insync: usize,
    /// A follower the leader waits for whose acknowledgements make no progress this long,
    /// while frames wait for it, or that has no stream this long, leaves the set.
    pub progress_timeout_ms: u64,
    /// The cluster's controller keeps the in-sync sets (automatic failover): every new
    /// version is recorded there ([`LeaderCommand::RecordWithController`]) before it takes
    /// effect, so that the controller never appoints a member the leader stopped waiting for.
    pub controlled: bool,
    pub mutations: Mutations,
}

/// What a replica says of its log when it subscribes to a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub member: Member,
    pub kind: ReplicaKind,
    /// The last LSN durable in its log, and that frame's epoch.
    pub last_lsn: Lsn,
    pub last_epoch: Epoch,
    /// Its log's epoch history.
    pub history: EpochHistory,
    /// The lowest LSN it can cut its log back to (its newest snapshot's).
    pub floor: Lsn,
    /// The highest epoch it has seen.
    pub fence: Epoch,
}

/// How a stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamPlan {
    /// The frames after `after` follow, then live ones; a replica holding more first cuts its
    /// log back to `after`.
    Tail { after: Lsn },
    /// A snapshot taken at the next clean point follows, then the frames after it.
    Snapshot { reason: SnapshotReason },
}

/// Why a stream starts with a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotReason {
    /// The two logs share no epoch the histories know of.
    NoAgreement,
    /// The replica's log agrees only below its snapshot, which it cannot cut back past.
    BelowSnapshot,
    /// The replica subscribed from the same place again and again: what its tail gets fails.
    Repeated,
    /// The frames after the point of agreement are no longer in this leader's log.
    TailUnavailable,
}

impl std::fmt::Display for SnapshotReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            SnapshotReason::NoAgreement => "its log shares no epoch with this leader's",
            SnapshotReason::BelowSnapshot => "its log agrees only below its snapshot",
            SnapshotReason::Repeated => "replica keeps subscribing from the same place",
            SnapshotReason::TailUnavailable => "the frames it lacks are gone from this log",
        })
    }
}

/// What happened, as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderEvent {
    /// The open batch became a frame of this leader's epoch; it is being written here and
    /// goes to every live stream.
    FrameCut {
        first: Lsn,
        last: Lsn,
    },
    /// Every frame up to `lsn` is durable here.
    LocalDurable {
        lsn: Lsn,
    },
    Subscribed {
        stream: StreamId,
        subscription: Subscription,
    },
    /// The frames a tail start needs are gone (or could not be read): a snapshot instead.
    TailUnavailable {
        stream: StreamId,
    },
    /// The catch-up frames of a tail start are queued for the stream, up to every frame cut
    /// so far; live frames follow.
    TailQueued {
        stream: StreamId,
    },
    /// The stream's snapshot, holding every record up to `lsn`, is queued; frames after it
    /// follow.
    SnapshotQueued {
        stream: StreamId,
        lsn: Lsn,
    },
    Acked {
        stream: StreamId,
        lsn: Lsn,
    },
    /// The stream's replica recorded a version of the set durably.
    InSyncSetRecorded {
        stream: StreamId,
        leader_epoch: Epoch,
        isr_epoch: u64,
    },
    /// This node recorded a version of the set durably.
    InSyncSetPersisted {
        leader_epoch: Epoch,
        isr_epoch: u64,
    },
    StreamClosed {
        stream: StreamId,
    },
    /// The replica's log failed: it can neither store nor acknowledge frames.
    ReplicaFailed {
        stream: StreamId,
        reason: String,
    },
    /// The control plane heard nothing from the member for its heartbeat timeout.
    MemberTimedOut {
        name: String,
    },
    /// Some member has seen a newer epoch: another leader exists.
    NewerEpoch {
        epoch: Epoch,
    },
    /// The controller recorded this version of the set (the answer to
    /// [`LeaderCommand::RecordWithController`]).
    ControllerRecorded {
        leader_epoch: Epoch,
        isr_epoch: u64,
    },
    /// The controller refused this version of the set: it holds version `recorded` of this
    /// epoch already (it changed the set itself, as when it removed a member). The proposal
    /// is made again above that.
    ControllerRefused {
        leader_epoch: Epoch,
        isr_epoch: u64,
        recorded: u64,
    },
    /// Time passed.
    Tick,
}

/// What the runtime is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderCommand {
    /// Start the stream: send a stream start with these fields, then the frames or snapshot
    /// the plan says; report back with `TailQueued`, `TailUnavailable` or `SnapshotQueued`.
    StartStream {
        stream: StreamId,
        plan: StreamPlan,
        epoch: Epoch,
        caught_up_at: Lsn,
        in_sync: InSyncSet,
    },
    /// Refuse the subscription with `reason` and close the stream.
    Refuse { stream: StreamId, reason: String },
    /// Close the stream (its replica may subscribe again).
    Close { stream: StreamId, reason: String },
    /// The commit point moved to `lsn`: answer what waited and tell the live streams.
    Commit { lsn: Lsn },
    /// Send this version of the set to the stream's replica to record.
    SendInSyncSet { stream: StreamId, set: InSyncSet },
    /// Record this version of the set durably here.
    PersistInSyncSet { set: InSyncSet },
    /// Have the cluster's controller record this version of the set (a compare-and-set on
    /// its version); answer `ControllerRecorded` once it did. Asked again every
    /// `CONTROLLER_RECORD_RETRY_MS` (a second) while unanswered.
    RecordWithController { set: InSyncSet },
    /// A newer epoch exists: stop leading, fail what waits, hand the role back.
    StepDown { epoch: Epoch },
}

/// A version of the set on its way to being recorded by every member of it.
#[derive(Clone, Debug)]
struct Proposal {
    set: InSyncSet,
    recorded: BTreeSet<String>,
    /// Whether the controller recorded it (always, when the leader is not controlled).
    controller_recorded: bool,
    /// When the controller was last asked to record it.
    asked_at: Moment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for its catch-up frames or snapshot to be queued.
    Starting,
    /// Frames whose first LSN is after `from` go to it as they are cut.
    Live { from: Lsn },
}

#[derive(Clone, Debug)]
struct Stream {
    member: Member,
    kind: ReplicaKind,
    phase: Phase,
    plan: StreamPlan,
    acked: Lsn,
    /// A follower outside the set joins once it acknowledged this LSN: the last framed when
    /// it subscribed.
    join_at: Lsn,
    /// The newest version of the set sent to it (in its stream start, or since).
    offered: (Epoch, u64),
}

/// What the leader knows of a follower it waits for.
#[derive(Clone, Copy, Debug, Default)]
struct Waiting {
    acked: Lsn,
    /// Since when frames have waited for it (or it has had no stream), if they do.
    stalled_since: Option<Moment>,
}

/// A replica's subscriptions from one position, counted while they repeat.
#[derive(Clone, Debug)]
struct RecentSubscription {
    name: String,
    last_lsn: Lsn,
    last_epoch: Epoch,
    count: u32,
    since: Moment,
}

/// One partition's replication on its leader. Owned by the shard that owns the partition.
#[derive(Clone, Debug)]
pub struct Leader {
    partition: PartitionId,
    epoch: Epoch,
    config: LeaderConfig,
    framed: Lsn,
    durable: Lsn,
    commit: Lsn,
    history: EpochHistory,
    in_sync: InSyncSet,
    proposal: Option<Proposal>,
    /// Members of versions proposed since the last one took effect: waited for until then.
    proposed_members: BTreeSet<String>,
    /// Followers caught up and waited for, whose joining version is not proposed yet.
    joining: BTreeSet<String>,
    /// Members of the set (in effect or proposed) known to be gone: stream ended, failed, or
    /// timed out. A shrink removes them when it may.
    gone: BTreeSet<String>,
    waiting: BTreeMap<String, Waiting>,
    streams: BTreeMap<StreamId, Stream>,
    subscriptions: VecDeque<RecentSubscription>,
    fenced_by: Option<Epoch>,
    /// The moment of the last tick: a tick that comes more than half the progress timeout
    /// after it means this leader stood still, and its followers' silence meanwhile is not
    /// theirs.
    last_tick: Moment,
    /// The highest version of this epoch the controller said it holds: new versions are
    /// numbered above it.
    version_floor: u64,
}

/// Where the log stands when a node starts leading a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderStart {
    pub framed: Lsn,
    pub durable: Lsn,
    pub commit: Lsn,
    pub history: EpochHistory,
    /// The version recorded when this leader's epoch was accepted.
    pub in_sync: InSyncSet,
}

impl Leader {
    /// A leader of `partition` at `epoch`, whose log and set are `start`.
    ///
    /// # Panics
    ///
    /// If the set is not this leader's at this epoch, or positions are out of order.
    #[must_use]
    pub fn new(
        partition: PartitionId,
        epoch: Epoch,
        config: LeaderConfig,
        start: LeaderStart,
        now: Moment,
    ) -> Leader {
        assert_eq!(start.in_sync.leader_epoch, epoch, "the set of this epoch");
        assert_eq!(start.in_sync.leader, config.me.name, "this leader's set");
        assert!(start.durable <= start.framed, "durable beyond framed");
        assert!(start.commit <= start.durable, "committed beyond durable");
        assert!(start.history.last_epoch() <= epoch, "the log holds a newer epoch");
        let waiting = start
            .in_sync
            .followers()
            .map(|member| {
                let stalled_since = Some(now);
                (member.name.clone(), Waiting { acked: Lsn::ZERO, stalled_since })
            })
            .collect();
        Leader {
            partition,
            epoch,
            config,
            framed: start.framed,
            durable: start.durable,
            commit: start.commit,
            history: start.history,
            in_sync: start.in_sync,
            proposal: None,
            proposed_members: BTreeSet::new(),
            joining: BTreeSet::new(),
            gone: BTreeSet::new(),
            waiting,
            streams: BTreeMap::new(),
            subscriptions: VecDeque::new(),
            fenced_by: None,
            last_tick: now,
            version_floor: 0,
        }
    }

    #[must_use]
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    #[must_use]
    pub fn commit(&self) -> Lsn {
        self.commit
    }

    #[must_use]
    pub fn framed(&self) -> Lsn {
        self.framed
    }

    #[must_use]
    pub fn durable(&self) -> Lsn {
        self.durable
    }

    #[must_use]
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// The version of the set in effect.
    #[must_use]
    pub fn in_sync(&self) -> &InSyncSet {
        &self.in_sync
    }

    /// The newest version: proposed, or in effect.
    #[must_use]
    pub fn newest_in_sync(&self) -> &InSyncSet {
        self.proposal.as_ref().map_or(&self.in_sync, |proposal| &proposal.set)
    }

    #[must_use]
    pub fn fenced_by(&self) -> Option<Epoch> {
        self.fenced_by
    }

    /// Whether a new write may be taken: not fenced, and this node plus the members of the set
    /// that stream and are not gone make at least `min_insync`.
    #[must_use]
    pub fn accepts_writes(&self) -> bool {
        if self.fenced_by.is_some() {
            return false;
        }
        self.healthy_members() >= self.config.min_insync
    }

    /// This node and the followers of the set in effect that have a stream and are not gone.
    #[must_use]
    pub fn healthy_members(&self) -> usize {
        let streaming = |name: &str| {
            self.streams.values().any(|stream| stream.member.name == name)
                && !self.gone.contains(name)
        };
        1 + self.in_sync.followers().filter(|member| streaming(&member.name)).count()
    }

    /// Live streams a frame starting at `first` goes to.
    pub fn recipients(&self, first: Lsn) -> impl Iterator<Item = StreamId> + '_ {
        self.streams.iter().filter_map(move |(id, stream)| match stream.phase {
            Phase::Live { from } if first > from => Some(*id),
            _ => None,
        })
    }

    /// Live streams (for commit messages).
    pub fn live_streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.streams
            .iter()
            .filter(|(_, stream)| matches!(stream.phase, Phase::Live { .. }))
            .map(|(id, _)| *id)
    }

    /// The member a stream serves and its acknowledged LSN.
    #[must_use]
    pub fn stream_progress(&self, stream: StreamId) -> Option<(&Member, ReplicaKind, Lsn)> {
        self.streams.get(&stream).map(|stream| (&stream.member, stream.kind, stream.acked))
    }

    /// Whether commits wait for `name`.
    #[must_use]
    pub fn waits_for(&self, name: &str) -> bool {
        self.waiting.contains_key(name)
    }

    /// Whether this leader gives way to a promotion to `epoch` planned on `basis` (the
    /// newest set version the promotion saw; `None`: forced): not if the epoch is not newer,
    /// nor if this leader recorded or proposed a newer set since (the promotion would lead
    /// without what that set committed, and fails instead).
    ///
    /// # Errors
    ///
    /// Why it does not, for the promotion's answer.
    pub fn yields_to(&self, epoch: Epoch, basis: Option<(Epoch, u64)>) -> Result<(), String> {
        if epoch <= self.epoch {
            return Err(format!("epoch {epoch} is not newer than this leader's {}", self.epoch));
        }
        let newest = self.newest_in_sync();
        if basis.is_some_and(|basis| newest.version() > basis) {
            return Err(format!(
                "partition {} changed its in-sync set to {newest} after the promotion asked: \
                 retry it",
                self.partition
            ));
        }
        Ok(())
    }

    /// Takes one event; appends what to do to `out`.
    pub fn step(&mut self, now: Moment, event: LeaderEvent, out: &mut Vec<LeaderCommand>) {
        match event {
            LeaderEvent::FrameCut { first, last } => self.on_frame_cut(now, first, last),
            LeaderEvent::LocalDurable { lsn } => {
                assert!(lsn <= self.framed, "durable beyond what was framed");
                self.durable = self.durable.max(lsn);
            }
            LeaderEvent::Subscribed { stream, subscription } => {
                self.on_subscribed(now, stream, subscription, out);
            }
            LeaderEvent::TailUnavailable { stream } => self.restart_with_snapshot(stream, out),
            LeaderEvent::TailQueued { stream } => self.go_live(now, stream, None),
            LeaderEvent::SnapshotQueued { stream, lsn } => self.go_live(now, stream, Some(lsn)),
            LeaderEvent::Acked { stream, lsn } => self.on_acked(now, stream, lsn, out),
            LeaderEvent::InSyncSetRecorded { stream, leader_epoch, isr_epoch } => {
                let name = self.streams.get(&stream).map(|stream| stream.member.name.clone());
                if let Some(name) = name {
                    self.on_recorded(name, leader_epoch, isr_epoch);
                }
            }
            LeaderEvent::InSyncSetPersisted { leader_epoch, isr_epoch } => {
                self.on_recorded(self.config.me.name.clone(), leader_epoch, isr_epoch);
            }
            LeaderEvent::StreamClosed { stream } => self.on_closed(now, stream),
            LeaderEvent::ReplicaFailed { stream, reason } => {
                out.push(LeaderCommand::Close { stream, reason });
                self.on_closed(now, stream);
            }
            LeaderEvent::MemberTimedOut { name } => self.on_timed_out(now, &name, out),
            LeaderEvent::NewerEpoch { epoch } => self.fence(epoch, out),
            LeaderEvent::ControllerRecorded { leader_epoch, isr_epoch } => {
                if let Some(proposal) = self.proposal.as_mut() {
                    if proposal.set.version() == (leader_epoch, isr_epoch) {
                        proposal.controller_recorded = true;
                    }
                }
            }
            LeaderEvent::ControllerRefused { leader_epoch, isr_epoch, recorded } => {
                self.on_controller_refused(now, (leader_epoch, isr_epoch), recorded, out);
            }
            LeaderEvent::Tick => self.on_tick(now, out),
        }
        self.settle(now, out);
        self.check_invariants();
    }

    /// After any event: changes of the set that have become possible, and the commit point.
    fn settle(&mut self, now: Moment, out: &mut Vec<LeaderCommand>) {
        self.start_joins(now);
        self.take_effect(now);
        self.propose_shrink(now, out);
        self.propose_join(now, out);
        self.offer_newest(out);
        self.advance_commit(out);
    }

    /// Every live stream gets the newest version of the set, once: its replica records it, and
    /// a proposal takes effect once every member of it did.
    fn offer_newest(&mut self, out: &mut Vec<LeaderCommand>) {
        let newest = self.newest_in_sync().clone();
        for (id, stream) in &mut self.streams {
            if matches!(stream.phase, Phase::Live { .. }) && stream.offered < newest.version() {
                stream.offered = newest.version();
                out.push(LeaderCommand::SendInSyncSet { stream: *id, set: newest.clone() });
            }
        }
    }

    fn on_frame_cut(&mut self, now: Moment, first: Lsn, last: Lsn) {
        assert_eq!(first, self.framed.next(), "frames follow each other");
        assert!(last >= first);
        self.history.append(self.epoch, first);
        self.framed = last;
        for waiting in self.waiting.values_mut() {
            if waiting.stalled_since.is_none() && waiting.acked < self.framed {
                waiting.stalled_since = Some(now);
            }
        }
    }

    fn on_subscribed(
        &mut self,
        now: Moment,
        stream: StreamId,
        subscription: Subscription,
        out: &mut Vec<LeaderCommand>,
    ) {
        if subscription.fence > self.epoch {
            self.fence(subscription.fence, out);
        }
        if let Some(fence) = self.fenced_by {
            let reason = format!(
                "this leader's epoch {} is older than epoch {fence}, which a member has seen",
                self.epoch
            );
            out.push(LeaderCommand::Refuse { stream, reason });
            return;
        }
        if self.streams.len() >= STREAMS_MAX {
            let reason = format!("more than {STREAMS_MAX} streams on partition {}", self.partition);
            out.push(LeaderCommand::Refuse { stream, reason });
            return;
        }
        self.replace_streams_of(&subscription.member.name, out);
        let plan = if self.keeps_subscribing(now, &subscription) {
            StreamPlan::Snapshot { reason: SnapshotReason::Repeated }
        } else {
            self.plan_for(&subscription)
        };
        let acked = match plan {
            StreamPlan::Tail { after } => after,
            StreamPlan::Snapshot { .. } => Lsn::ZERO,
        };
        let name = subscription.member.name.clone();
        let entry = Stream {
            member: subscription.member,
            kind: subscription.kind,
            phase: Phase::Starting,
            plan,
            acked,
            join_at: self.framed,
            offered: self.newest_in_sync().version(),
        };
        self.streams.insert(stream, entry);
        self.back_from_gone(&name);
        self.start(stream, plan, out);
    }

    /// Where a subscribing replica starts: after the last LSN on which its log and this one
    /// agree, when it can cut its log back that far; otherwise from a snapshot.
    fn plan_for(&self, subscription: &Subscription) -> StreamPlan {
        if self.config.mutations.has(Mutation::SkipDivergenceCheck)
            && subscription.last_lsn <= self.framed
        {
            return StreamPlan::Tail { after: subscription.last_lsn };
        }
        let agreement =
            self.history.agreement(self.framed, &subscription.history, subscription.last_lsn);
        match agreement {
            Some(after) if after >= subscription.floor => StreamPlan::Tail { after },
            Some(_) => StreamPlan::Snapshot { reason: SnapshotReason::BelowSnapshot },
            None => StreamPlan::Snapshot { reason: SnapshotReason::NoAgreement },
        }
    }

    fn start(&mut self, stream: StreamId, plan: StreamPlan, out: &mut Vec<LeaderCommand>) {
        out.push(LeaderCommand::StartStream {
            stream,
            plan,
            epoch: self.epoch,
            caught_up_at: self.framed,
            in_sync: self.newest_in_sync().clone(),
        });
    }

    fn restart_with_snapshot(&mut self, stream: StreamId, out: &mut Vec<LeaderCommand>) {
        let Some(entry) = self.streams.get_mut(&stream) else { return };
        if entry.phase != Phase::Starting || matches!(entry.plan, StreamPlan::Snapshot { .. }) {
            return;
        }
        let plan = StreamPlan::Snapshot { reason: SnapshotReason::TailUnavailable };
        entry.plan = plan;
        entry.acked = Lsn::ZERO;
        self.start(stream, plan, out);
    }

    fn go_live(&mut self, now: Moment, stream: StreamId, snapshot: Option<Lsn>) {
        let framed = self.framed;
        let Some(entry) = self.streams.get_mut(&stream) else { return };
        if entry.phase != Phase::Starting {
            return;
        }
        let from = match (snapshot, entry.plan) {
            (Some(lsn), StreamPlan::Snapshot { .. }) => {
                assert!(lsn <= framed, "a snapshot of what was framed");
                entry.join_at = entry.join_at.max(lsn);
                lsn
            }
            // Catch-up frames reach everything framed until now; live ones follow.
            (None, StreamPlan::Tail { .. }) => framed,
            _ => return,
        };
        entry.phase = Phase::Live { from };
        let name = entry.member.name.clone();
        let acked = entry.acked;
        if let Some(waiting) = self.waiting.get_mut(&name) {
            waiting.acked = waiting.acked.max(acked);
            waiting.stalled_since = (waiting.acked < framed).then_some(now);
        }
    }

    fn on_acked(&mut self, now: Moment, stream: StreamId, lsn: Lsn, out: &mut Vec<LeaderCommand>) {
        let framed = self.framed;
        let Some(entry) = self.streams.get_mut(&stream) else { return };
        if lsn > framed {
            let reason = format!("acknowledged LSN {lsn} beyond the last framed {framed}");
            out.push(LeaderCommand::Close { stream, reason });
            self.on_closed(now, stream);
            return;
        }
        if lsn <= entry.acked {
            return;
        }
        entry.acked = lsn;
        let name = entry.member.name.clone();
        if let Some(waiting) = self.waiting.get_mut(&name) {
            waiting.acked = waiting.acked.max(lsn);
            waiting.stalled_since = (waiting.acked < framed).then_some(now);
        }
    }

    /// A live follower outside the waited-for members that acknowledged what was framed when
    /// it subscribed: commits wait for it from now on, and its joining version is proposed
    /// once it holds everything committed.
    fn start_joins(&mut self, now: Moment) {
        let framed = self.framed;
        let ready: Vec<(String, Lsn)> = self
            .streams
            .values()
            .filter(|stream| {
                stream.kind == ReplicaKind::Follower
                    && matches!(stream.phase, Phase::Live { .. })
                    && stream.acked >= stream.join_at
                    && !self.waiting.contains_key(&stream.member.name)
                    && !self.gone.contains(&stream.member.name)
            })
            .map(|stream| (stream.member.name.clone(), stream.acked))
            .collect();
        for (name, acked) in ready {
            self.joining.insert(name.clone());
            let stalled_since = (acked < framed).then_some(now);
            self.waiting.insert(name, Waiting { acked, stalled_since });
        }
    }

    fn on_recorded(&mut self, name: String, leader_epoch: Epoch, isr_epoch: u64) {
        let Some(proposal) = self.proposal.as_mut() else { return };
        if proposal.set.version() == (leader_epoch, isr_epoch) {
            proposal.recorded.insert(name);
        }
    }

    fn on_closed(&mut self, now: Moment, stream: StreamId) {
        let Some(entry) = self.streams.remove(&stream) else { return };
        let name = entry.member.name;
        if self.streams.values().any(|other| other.member.name == name) {
            return;
        }
        self.forget_or_mark_gone(now, &name);
    }

    /// A member without a stream: if the set (in effect or proposed) holds it, it is gone
    /// until a shrink removes it; a joiner not yet proposed is simply no longer waited for.
    fn forget_or_mark_gone(&mut self, now: Moment, name: &str) {
        let recorded = self.in_sync.contains(name)
            || self.proposed_members.contains(name)
            || self.proposal.as_ref().is_some_and(|proposal| proposal.set.contains(name));
        if recorded {
            if name != self.config.me.name {
                self.gone.insert(name.to_string());
                if let Some(waiting) = self.waiting.get_mut(name) {
                    waiting.stalled_since.get_or_insert(now);
                }
            }
        } else if self.joining.remove(name) {
            self.waiting.remove(name);
        }
    }

    fn on_timed_out(&mut self, now: Moment, name: &str, out: &mut Vec<LeaderCommand>) {
        let reason = format!("{name} sent no heartbeat within the timeout");
        self.close_streams_of(now, name, &reason, out);
        if self.waiting.contains_key(name) {
            self.forget_or_mark_gone(now, name);
        }
    }

    /// A follower the leader waits for that made no progress within the timeout leaves: its
    /// streams close and a shrink removes it.
    /// After a tick that came late (the leader itself paused or starved), every stalled
    /// follower gets the whole timeout again from now.
    fn on_tick(&mut self, now: Moment, out: &mut Vec<LeaderCommand>) {
        self.ask_controller_again(now, out);
        if self.config.mutations.has(Mutation::KeepFailedReplica) {
            return;
        }
        let timeout = self.config.progress_timeout_ms;
        let stood_still = now.since(self.last_tick) > timeout / 2;
        self.last_tick = self.last_tick.max(now);
        if stood_still {
            for waiting in self.waiting.values_mut() {
                if let Some(since) = waiting.stalled_since.as_mut() {
                    *since = (*since).max(now);
                }
            }
            return;
        }
        let stalled: Vec<String> = self
            .waiting
            .iter()
            .filter(|(name, waiting)| {
                !self.gone.contains(*name)
                    && waiting.stalled_since.is_some_and(|since| now.since(since) >= timeout)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stalled {
            let reason = format!("no acknowledgement progress from {name} for {timeout} ms");
            self.close_streams_of(now, &name, &reason, out);
            self.forget_or_mark_gone(now, &name);
        }
    }

    /// The controller holds a version at least as high as the proposal's: the same members
    /// are proposed again, numbered above it.
    fn on_controller_refused(
        &mut self,
        now: Moment,
        version: (Epoch, u64),
        recorded: u64,
        out: &mut Vec<LeaderCommand>,
    ) {
        let Some(proposal) = &self.proposal else { return };
        if self.fenced_by.is_some() || proposal.set.version() != version || recorded < version.1 {
            return;
        }
        self.version_floor = self.version_floor.max(recorded);
        let members = proposal.set.members.clone();
        self.propose(now, members, out);
    }

    /// A proposal the controller has not answered for a while is put to it again (the
    /// request or its answer may have been lost, or the controller was electing a leader).
    fn ask_controller_again(&mut self, now: Moment, out: &mut Vec<LeaderCommand>) {
        if self.fenced_by.is_some() {
            return;
        }
        let Some(proposal) = self.proposal.as_mut() else { return };
        if proposal.controller_recorded || now.since(proposal.asked_at) < CONTROLLER_RECORD_RETRY_MS
        {
            return;
        }
        proposal.asked_at = now;
        out.push(LeaderCommand::RecordWithController { set: proposal.set.clone() });
    }

    /// The streams of the member `name`.
    fn streams_of(&self, name: &str) -> Vec<StreamId> {
        let streams = self.streams.iter();
        streams.filter(|(_, stream)| stream.member.name == name).map(|(id, _)| *id).collect()
    }

    /// Closes every stream of the member `name`, telling it `reason`.
    fn close_streams_of(
        &mut self,
        now: Moment,
        name: &str,
        reason: &str,
        out: &mut Vec<LeaderCommand>,
    ) {
        for stream in self.streams_of(name) {
            out.push(LeaderCommand::Close { stream, reason: reason.to_string() });
            self.on_closed(now, stream);
        }
    }

    fn fence(&mut self, epoch: Epoch, out: &mut Vec<LeaderCommand>) {
        if epoch <= self.epoch || self.fenced_by.is_some_and(|fenced| fenced >= epoch) {
            return;
        }
        self.fenced_by = Some(epoch);
        out.push(LeaderCommand::StepDown { epoch });
    }

    /// Another subscription of the same member replaces its earlier streams; the member keeps
    /// its place in the set.
    fn replace_streams_of(&mut self, name: &str, out: &mut Vec<LeaderCommand>) {
        for stream in self.streams_of(name) {
            let reason = "replaced by a new subscription of the same replica".to_string();
            out.push(LeaderCommand::Close { stream, reason });
            self.streams.remove(&stream);
        }
    }

    /// A member that subscribes again is no longer gone, unless a version without it is on its
    /// way (it rejoins once that takes effect).
    fn back_from_gone(&mut self, name: &str) {
        let leaving = self.proposal.as_ref().is_some_and(|proposal| !proposal.set.contains(name));
        if !leaving {
            self.gone.remove(name);
        }
    }

    fn keeps_subscribing(&mut self, now: Moment, subscription: &Subscription) -> bool {
        let name = &subscription.member.name;
        let (last_lsn, last_epoch) = (subscription.last_lsn, subscription.last_epoch);
        let fresh =
            |name: String| RecentSubscription { name, last_lsn, last_epoch, count: 0, since: now };
        let known = self.subscriptions.iter().position(|seen| seen.name == *name);
        let mut seen = match known {
            Some(index) => self.subscriptions.remove(index).expect("index in range"),
            None => fresh(name.clone()),
        };
        let same_place = seen.last_lsn == last_lsn && seen.last_epoch == last_epoch;
        if !same_place || now.since(seen.since) > SUBSCRIPTION_REPEAT_WINDOW_MS {
            seen = fresh(seen.name);
        }
        seen.count += 1;
        if seen.count >= SUBSCRIPTION_REPEAT_LIMIT {
            return true;
        }
        if self.subscriptions.len() == SUBSCRIPTIONS_REMEMBERED {
            self.subscriptions.pop_front();
        }
        self.subscriptions.push_back(seen);
        false
    }

    /// A proposal every member of which recorded it, and the controller when there is one,
    /// takes effect.
    fn take_effect(&mut self, now: Moment) {
        let complete = self.proposal.as_ref().is_some_and(|proposal| {
            proposal.controller_recorded
                && proposal
                    .set
                    .members
                    .iter()
                    .all(|member| proposal.recorded.contains(&member.name))
        });
        if !complete {
            return;
        }
        let proposal = self.proposal.take().expect("complete proposal");
        self.in_sync = proposal.set;
        self.proposed_members.clear();
        let in_sync = &self.in_sync;
        self.joining.retain(|name| !in_sync.contains(name));
        self.gone.retain(|name| in_sync.contains(name));
        let joining = &self.joining;
        self.waiting.retain(|name, _| in_sync.contains(name) || joining.contains(name));
        for follower in self.in_sync.followers() {
            self.waiting
                .entry(follower.name.clone())
                .or_insert(Waiting { acked: Lsn::ZERO, stalled_since: Some(now) });
        }
    }

    /// Removes gone members from the newest version, when enough remain.
    fn propose_shrink(&mut self, now: Moment, out: &mut Vec<LeaderCommand>) {
        if self.fenced_by.is_some() || self.gone.is_empty() {
            return;
        }
        let base = self.newest_in_sync();
        let remaining: Vec<Member> = base
            .members
            .iter()
            .filter(|member| !self.gone.contains(&member.name))
            .cloned()
            .collect();
        if remaining.len() == base.len() || !self.may_replace_with(&remaining) {
            return;
        }
        self.propose(now, remaining, out);
    }

    /// Whether a version with `members` may follow the set in effect: one that drops members
    /// of it must keep at least `min_insync` of them. A member promoting itself asks every
    /// follower of the newest set it knows; so a version it never heard of, taking effect
    /// without it, must be known to one of those followers.
    fn may_replace_with(&self, members: &[Member]) -> bool {
        let kept = members.iter().filter(|member| self.in_sync.contains(&member.name)).count();
        let drops = kept < self.in_sync.len();
        !drops || (kept >= self.config.min_insync && members.len() >= self.config.min_insync)
    }

    /// Proposes the version that adds a caught-up follower, once it holds everything
    /// committed and no other change is on its way.
    fn propose_join(&mut self, now: Moment, out: &mut Vec<LeaderCommand>) {
        if self.fenced_by.is_some() || self.proposal.is_some() {
            return;
        }
        if self.in_sync.len() >= IN_SYNC_MEMBERS_MAX {
            return;
        }
        let commit = self.commit;
        let ready = self
            .joining
            .iter()
            .find(|name| self.waiting.get(*name).is_some_and(|waiting| waiting.acked >= commit));
        let Some(name) = ready.cloned() else { return };
        let stream = self.streams.values().find(|stream| stream.member.name == name);
        let Some(member) = stream.map(|stream| stream.member.clone()) else { return };
        let mut members = self.in_sync.members.clone();
        members.push(member);
        self.propose(now, members, out);
    }

    fn propose(&mut self, now: Moment, members: Vec<Member>, out: &mut Vec<LeaderCommand>) {
        let newest = self.newest_in_sync();
        let isr_epoch = newest.isr_epoch.max(self.version_floor) + 1;
        let set = InSyncSet::new(self.epoch, isr_epoch, &self.config.me.name, members);
        if let Some(proposal) = &self.proposal {
            let subset = set.members.iter().all(|member| proposal.set.contains(&member.name));
            assert!(subset, "a proposal is replaced only by a smaller one");
        }
        for member in set.followers() {
            self.proposed_members.insert(member.name.clone());
            self.waiting.entry(member.name.clone()).or_default();
        }
        out.push(LeaderCommand::PersistInSyncSet { set: set.clone() });
        let controlled = self.config.controlled;
        if controlled {
            out.push(LeaderCommand::RecordWithController { set: set.clone() });
        }
        let recorded = BTreeSet::new();
        self.proposal =
            Some(Proposal { set, recorded, controller_recorded: !controlled, asked_at: now });
    }

    fn advance_commit(&mut self, out: &mut Vec<LeaderCommand>) {
        if self.fenced_by.is_some() || self.in_sync.len() < self.config.min_insync {
            return;
        }
        let mut candidate = self.durable;
        for waiting in self.waiting.values() {
            candidate = candidate.min(waiting.acked);
        }
        if candidate > self.commit {
            self.commit = candidate;
            out.push(LeaderCommand::Commit { lsn: candidate });
        }
    }

    /// Cheap checks in every build; the whole state under `debug_assertions`.
    fn check_invariants(&self) {
        assert!(self.durable <= self.framed, "durable beyond framed");
        assert!(self.commit <= self.durable, "committed beyond durable");
        #[cfg(debug_assertions)]
        self.check_whole_state();
    }

    #[cfg(debug_assertions)]
    fn check_whole_state(&self) {
        for follower in self.in_sync.followers() {
            assert!(self.waiting.contains_key(&follower.name), "waits for every follower");
        }
        for name in self.waiting.keys() {
            let known = self.in_sync.contains(name)
                || self.proposed_members.contains(name)
                || self.joining.contains(name);
            assert!(known, "waits only for members, proposed ones and joiners");
        }
        for stream in self.streams.values() {
            assert!(stream.acked <= self.framed, "acknowledged beyond framed");
        }
        if let Some(proposal) = &self.proposal {
            assert!(proposal.set.version() > self.in_sync.version(), "a proposal is newer");
            assert!(proposal.set.len() >= self.config.min_insync.min(self.in_sync.len()));
        }
        assert!(self.in_sync.leader_epoch == self.epoch, "the set is this epoch's");
    }
}

#[cfg(test)]
mod tests;
