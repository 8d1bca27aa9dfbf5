//! Random orders of well-formed events keep the leader's invariants.
//!
//! The test plays the leader's whole environment: clients whose writes it takes while the
//! leader accepts them, the local log, replicas whose logs it tracks record by record (the part
//! that holds the leader's records, and a divergent tail an old leader left), their streams,
//! the set versions they record, the clock, and other leaders' epochs. Each generated choice
//! names a kind of event; the environment turns it into the nearest event legal now (from the
//! commands the leader gave so far), so that the leader's own assertions trip only on its own
//! mistakes. After every step the test checks what the leader promises from outside
//! (`docs/ARCHITECTURE.md`, "Invariants"):
//!
//! - the commit point only grows, and `commit <= durable <= framed`;
//! - I1: every follower of the set in effect and of a version proposed since holds every
//!   committed record (from what the test's replicas really hold, not the leader's books);
//! - I4: the set changes only to a version proposed here and recorded by every member of it,
//!   versions only grow, and a change that drops members keeps `min_insync` of them;
//! - writes are taken only while this node and the followers of the set in effect that have a
//!   stream make `min_insync`, and nothing commits while the set has fewer members;
//! - a subscriber is never told to keep records the leader's log does not hold, nor to cut
//!   its log back below its snapshot;
//! - once fenced the leader commits nothing, proposes no set and takes no writes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;

/// The followers a generated leader may have, and its learner.
const FOLLOWERS: [&str; 3] = ["a", "b", "c"];
const LEARNER: &str = "r";
/// The leader's epoch; its log may start with records of epoch 1.
const EPOCH: Epoch = Epoch(2);
/// Events generated per case at most.
const EVENTS_MAX: usize = 200;

/// How a case starts: the set, the rule, and the logs.
#[derive(Clone, Debug)]
struct Setup {
    follower_count: usize,
    /// Bit `index` set: follower `index` is in the first set.
    in_sync_mask: u8,
    min_insync: usize,
    learner: bool,
    /// Records of epoch 1 the leader holds, all durable, none committed.
    base: u64,
    /// Per replica (followers, then the learner): records of the leader's log it holds,
    /// records of epoch 1 the leader lacks after them, and its snapshot.
    logs: Vec<(u64, u64, u64)>,
    /// The controller must record every version before it takes effect.
    controlled: bool,
}

/// Starts of cases: 2 or 3 followers, any first set, `min_insync` 1 or 2, logs of a few records.
fn setup() -> impl Strategy<Value = Setup> {
    let logs = proptest::collection::vec((0u64..=4, 0u64..=3, 0u64..=8), 4);
    (2usize..=3, any::<u8>(), 1usize..=2, any::<bool>(), 0u64..=4, logs, any::<bool>()).prop_map(
        |(follower_count, in_sync_mask, min_insync, learner, base, logs, controlled)| Setup {
            follower_count,
            in_sync_mask,
            min_insync,
            learner,
            base,
            logs,
            controlled,
        },
    )
}

/// A kind of event the environment may bring about next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Move {
    /// A client write is taken into the open batch (only while the leader accepts writes).
    Write,
    /// The open batch becomes a frame.
    Cut,
    Durable,
    Subscribe,
    /// A starting stream's catch-up frames or snapshot are queued, or its tail is gone.
    Start,
    Ack,
    Close,
    Fail,
    /// A replica's answer that it recorded a set version.
    Record,
    /// This node's write of a set version is done.
    Persist,
    /// The controller answers a request to record a set version.
    ControllerAnswer,
    /// The controller refuses a request: it holds that version or a later one already.
    ControllerRefuse,
    TimeOut,
    Tick,
    NewerEpoch,
}

/// Moves weighted by how often they come up: a choice indexes this table.
const MOVES: [Move; 31] = [
    Move::Write,
    Move::Write,
    Move::Write,
    Move::Cut,
    Move::Cut,
    Move::Durable,
    Move::Durable,
    Move::Durable,
    Move::Subscribe,
    Move::Subscribe,
    Move::Start,
    Move::Start,
    Move::Ack,
    Move::Ack,
    Move::Ack,
    Move::Ack,
    Move::Ack,
    Move::Close,
    Move::Fail,
    Move::Record,
    Move::Record,
    Move::Record,
    Move::Persist,
    Move::Persist,
    Move::ControllerAnswer,
    Move::ControllerAnswer,
    Move::ControllerRefuse,
    Move::TimeOut,
    Move::Tick,
    Move::Tick,
    Move::NewerEpoch,
];

/// Moves tried in this order when the chosen one is not legal now.
const PROGRESS: [Move; 8] = [
    Move::Ack,
    Move::Record,
    Move::Persist,
    Move::ControllerAnswer,
    Move::Start,
    Move::Durable,
    Move::Cut,
    Move::Write,
];
/// The clock's advance at most when no move is legal: the runtime's tick.
const TICK_MS: u64 = 100;

/// One generated choice: which move, which of the candidates, and how far.
#[derive(Clone, Copy, Debug)]
struct Choice {
    slot: usize,
    pick: usize,
    amount: u64,
}

/// Up to `EVENTS_MAX` choices.
fn choices() -> impl Strategy<Value = Vec<Choice>> {
    let choice = (0..MOVES.len(), any::<u16>(), any::<u16>()).prop_map(|(slot, pick, amount)| {
        Choice { slot, pick: usize::from(pick), amount: u64::from(amount) }
    });
    proptest::collection::vec(choice, 1..=EVENTS_MAX)
}

/// One replica's log as the test knows it, record by record.
#[derive(Clone, Debug)]
struct ReplicaLog {
    member: Member,
    kind: ReplicaKind,
    /// LSNs up to this one hold the leader's records.
    agreed: Lsn,
    /// Records of epoch 1 after `agreed` that the leader's log does not hold.
    divergent: u64,
    /// Where a snapshot it installed starts its log (0: none did).
    snapshot: Lsn,
    /// Its newest snapshot: it cannot cut its log back below it.
    floor: Lsn,
}

impl ReplicaLog {
    /// The end of its log, divergent tail included.
    fn last(&self) -> Lsn {
        Lsn(self.agreed.0 + self.divergent)
    }

    /// Its epoch history as it sends it when it subscribes; `log` is the leader's.
    fn history(&self, log: &[u64]) -> EpochHistory {
        let epoch_at = |lsn: u64| Epoch(log[usize::try_from(lsn - 1).expect("small")]);
        let mut history = EpochHistory::default();
        if self.snapshot > Lsn::ZERO {
            history.reset_to_snapshot(epoch_at(self.snapshot.0), self.snapshot);
        }
        for lsn in self.snapshot.0 + 1..=self.agreed.0 {
            history.append(epoch_at(lsn), Lsn(lsn));
        }
        for lsn in self.agreed.0 + 1..=self.last().0 {
            history.append(Epoch(1), Lsn(lsn));
        }
        history
    }

    /// What it says of its log when it subscribes (its whole log is durable).
    fn subscription(&self, log: &[u64], fence: Epoch) -> Subscription {
        let history = self.history(log);
        Subscription {
            member: self.member.clone(),
            kind: self.kind,
            last_lsn: self.last(),
            last_epoch: history.last_epoch(),
            history,
            floor: self.floor,
            fence,
        }
    }
}

/// A stream as the test's runtime sees it.
#[derive(Clone, Debug)]
struct TestStream {
    name: String,
    /// `None` until the leader answers the subscription.
    plan: Option<StreamPlan>,
    live: bool,
    /// Where the replica's log stands on this stream before anything is sent: the tail's
    /// start, or the snapshot's LSN once queued.
    start: Lsn,
    /// The last LSN sent on it.
    sent: Lsn,
    /// The highest LSN its replica acknowledged on it.
    acked: Option<Lsn>,
}

/// What the leader showed before a step, to compare with after it.
struct Before {
    commit: Lsn,
    in_sync: InSyncSet,
    newest: (Epoch, u64),
    fenced: bool,
}

/// The leader and everything around it.
struct Environment {
    leader: Leader,
    min_insync: usize,
    now: u64,
    /// The epoch of each record of the leader's log (index 0 is LSN 1).
    log: Vec<u64>,
    replicas: BTreeMap<String, ReplicaLog>,
    streams: BTreeMap<StreamId, TestStream>,
    next_stream: u64,
    /// Records of writes taken and not yet framed.
    batch: u64,
    /// Set versions sent to a stream's replica, not yet answered.
    recordings: Vec<(StreamId, (Epoch, u64))>,
    /// Set versions this node is writing, oldest first.
    persisting: VecDeque<(Epoch, u64)>,
    /// Every version proposed, and who recorded it (this node included).
    proposed: BTreeMap<(Epoch, u64), (InSyncSet, BTreeSet<String>)>,
    /// Versions the controller was asked to record, not yet answered (controlled only).
    controller_asked: VecDeque<(Epoch, u64)>,
    /// Versions the controller recorded: the first set, then those it answered.
    controller_recorded: BTreeSet<(Epoch, u64)>,
    controlled: bool,
    stepped_down: bool,
}

impl Environment {
    /// A leader of `EPOCH` whose log holds `setup.base` records of epoch 1, and its replicas.
    fn new(setup: &Setup) -> Environment {
        let followers = &FOLLOWERS[..setup.follower_count];
        let mut names = vec!["l"];
        for (index, name) in followers.iter().enumerate() {
            if setup.in_sync_mask & (1 << index) != 0 {
                names.push(name);
            }
        }
        let config = LeaderConfig {
            me: member("l"),
            min_insync: setup.min_insync,
            progress_timeout_ms: TIMEOUT_MS,
            controlled: setup.controlled,
            mutations: Mutations::NONE,
        };
        let log = vec![1; usize::try_from(setup.base).expect("small")];
        let mut history = EpochHistory::default();
        if setup.base > 0 {
            history.append(Epoch(1), Lsn(1));
        }
        let in_sync = set(EPOCH.0, 0, &names);
        let start = LeaderStart {
            framed: Lsn(setup.base),
            durable: Lsn(setup.base),
            commit: Lsn::ZERO,
            history,
            in_sync: in_sync.clone(),
        };
        let leader = Leader::new(PartitionId(0), EPOCH, config, start, Moment(0));
        let recorded = names.iter().map(|name| (*name).to_string()).collect();
        Environment {
            leader,
            min_insync: setup.min_insync,
            now: 0,
            log,
            replicas: replica_logs(setup),
            streams: BTreeMap::new(),
            next_stream: 1,
            batch: 0,
            recordings: Vec::new(),
            persisting: VecDeque::new(),
            controller_asked: VecDeque::new(),
            controller_recorded: BTreeSet::from([in_sync.version()]),
            controlled: setup.controlled,
            proposed: BTreeMap::from([(in_sync.version(), (in_sync, recorded))]),
            stepped_down: false,
        }
    }

    /// Plays one choice: its move if legal now, else the first legal one of those that make
    /// progress, else a short tick.
    fn play(&mut self, choice: Choice) -> Result<(), TestCaseError> {
        let chosen = MOVES[choice.slot % MOVES.len()];
        for next in std::iter::once(chosen).chain(PROGRESS) {
            if let Some(played) = self.try_move(next, choice) {
                return played;
            }
        }
        self.now += choice.amount % TICK_MS;
        self.step(LeaderEvent::Tick)
    }

    /// Plays `next` if it is legal now; `None` if it is not.
    fn try_move(&mut self, next: Move, choice: Choice) -> Option<Result<(), TestCaseError>> {
        let Choice { pick, amount, .. } = choice;
        let event = match next {
            Move::Write => return self.write(amount),
            Move::Cut => return self.cut(),
            Move::Durable => self.durable(amount)?,
            Move::Subscribe => self.subscribe(pick, amount),
            Move::Start => self.start_stream(pick, amount)?,
            Move::Ack => self.ack(pick, amount)?,
            Move::Close => LeaderEvent::StreamClosed { stream: self.end_stream(pick)? },
            Move::Fail => {
                let stream = self.end_stream(pick)?;
                LeaderEvent::ReplicaFailed { stream, reason: "log failed".into() }
            }
            Move::Record => self.record(pick)?,
            Move::Persist => {
                let (leader_epoch, isr_epoch) = self.persisting.pop_front()?;
                self.note_recorded((leader_epoch, isr_epoch), "l");
                LeaderEvent::InSyncSetPersisted { leader_epoch, isr_epoch }
            }
            Move::ControllerAnswer => {
                // Answers come in any order, and only once (a retry may be asked again).
                let index = pick % self.controller_asked.len().max(1);
                let (leader_epoch, isr_epoch) = self.controller_asked.remove(index)?;
                self.controller_recorded.insert((leader_epoch, isr_epoch));
                LeaderEvent::ControllerRecorded { leader_epoch, isr_epoch }
            }
            Move::ControllerRefuse => {
                let index = pick % self.controller_asked.len().max(1);
                let (leader_epoch, isr_epoch) = self.controller_asked.remove(index)?;
                let recorded = isr_epoch + amount % 3;
                LeaderEvent::ControllerRefused { leader_epoch, isr_epoch, recorded }
            }
            Move::TimeOut => {
                let names: Vec<&String> = self.replicas.keys().collect();
                LeaderEvent::MemberTimedOut { name: names[pick % names.len()].clone() }
            }
            Move::Tick => {
                self.now += amount % (2 * TIMEOUT_MS);
                LeaderEvent::Tick
            }
            // Most choices of this move find no newer epoch: fencing ends a case's interest.
            Move::NewerEpoch if amount.is_multiple_of(8) => {
                LeaderEvent::NewerEpoch { epoch: Epoch(EPOCH.0 + amount % 3) }
            }
            Move::NewerEpoch => return None,
        };
        Some(self.step(event))
    }

    /// A client write, taken only while the leader accepts writes.
    fn write(&mut self, amount: u64) -> Option<Result<(), TestCaseError>> {
        if !self.leader.accepts_writes() {
            return None;
        }
        self.batch += 1 + amount % 3;
        Some(self.check_writes())
    }

    /// The open batch becomes a frame; every live stream gets it.
    fn cut(&mut self) -> Option<Result<(), TestCaseError>> {
        if self.batch == 0 || self.stepped_down {
            return None;
        }
        let first = self.leader.framed().next();
        let last = Lsn(self.leader.framed().0 + self.batch);
        self.batch = 0;
        let recipients: BTreeSet<StreamId> = self.leader.recipients(first).collect();
        let live: BTreeSet<StreamId> =
            self.streams.iter().filter(|(_, stream)| stream.live).map(|(id, _)| *id).collect();
        if recipients != live {
            return Some(Err(TestCaseError::fail(format!(
                "frame {first}..={last} goes to {recipients:?}, live streams are {live:?}"
            ))));
        }
        for id in &live {
            self.streams.get_mut(id).expect("live stream").sent = last;
        }
        let records = usize::try_from(last.0 - first.0 + 1).expect("small");
        self.log.extend(std::iter::repeat_n(EPOCH.0, records));
        Some(self.step(LeaderEvent::FrameCut { first, last }))
    }

    /// Local writes finish: durability advances, up to what was framed.
    fn durable(&self, amount: u64) -> Option<LeaderEvent> {
        let (durable, framed) = (self.leader.durable(), self.leader.framed());
        (durable < framed).then(|| LeaderEvent::LocalDurable {
            lsn: Lsn(durable.0 + 1 + amount % (framed.0 - durable.0)),
        })
    }

    /// A replica subscribes on a new stream, from its whole log; now and then it has seen a
    /// newer epoch.
    fn subscribe(&mut self, pick: usize, amount: u64) -> LeaderEvent {
        let names: Vec<String> = self.replicas.keys().cloned().collect();
        let name = &names[pick % names.len()];
        let fence = if amount.is_multiple_of(64) { Epoch(EPOCH.0 + 1) } else { EPOCH };
        let subscription = self.replicas[name].subscription(&self.log, fence);
        let stream = StreamId(self.next_stream);
        self.next_stream += 1;
        let entry = TestStream {
            name: name.clone(),
            plan: None,
            live: false,
            start: Lsn::ZERO,
            sent: Lsn::ZERO,
            acked: None,
        };
        self.streams.insert(stream, entry);
        LeaderEvent::Subscribed { stream, subscription }
    }

    /// A starting stream's catch-up frames or snapshot are queued (a snapshot at the last
    /// frame cut), or the frames its tail needs are gone.
    fn start_stream(&mut self, pick: usize, amount: u64) -> Option<LeaderEvent> {
        let starting: Vec<(StreamId, StreamPlan)> = self
            .streams
            .iter()
            .filter(|(_, stream)| !stream.live)
            .filter_map(|(id, stream)| stream.plan.map(|plan| (*id, plan)))
            .collect();
        let (stream, plan) = *starting.get(pick % starting.len().max(1))?;
        let framed = self.leader.framed();
        let entry = self.streams.get_mut(&stream).expect("starting stream");
        Some(match plan {
            StreamPlan::Tail { .. } if amount.is_multiple_of(4) => {
                LeaderEvent::TailUnavailable { stream }
            }
            StreamPlan::Tail { .. } => {
                entry.live = true;
                entry.sent = framed;
                LeaderEvent::TailQueued { stream }
            }
            StreamPlan::Snapshot { .. } => {
                entry.live = true;
                entry.start = framed;
                entry.sent = framed;
                LeaderEvent::SnapshotQueued { stream, lsn: framed }
            }
        })
    }

    /// A live stream's replica acknowledges more of what it was sent: it holds it durably. Its
    /// first acknowledgement on a snapshot stream says the snapshot replaced its log.
    fn ack(&mut self, pick: usize, amount: u64) -> Option<LeaderEvent> {
        let ready: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, stream)| {
                stream.live && stream.acked.is_none_or(|acked| acked < stream.sent)
            })
            .map(|(id, _)| *id)
            .collect();
        let stream = *ready.get(pick % ready.len().max(1))?;
        let entry = self.streams.get_mut(&stream).expect("live stream");
        let low = entry.acked.map_or(entry.start, Lsn::next);
        let lsn = Lsn(low.0 + amount % (entry.sent.0 - low.0 + 1));
        let installs =
            entry.acked.is_none() && matches!(entry.plan, Some(StreamPlan::Snapshot { .. }));
        entry.acked = Some(lsn);
        let start = entry.start;
        let replica = self.replicas.get_mut(&entry.name).expect("known replica");
        if installs {
            *replica = ReplicaLog {
                agreed: lsn,
                divergent: 0,
                snapshot: start,
                floor: start,
                ..replica.clone()
            };
        } else {
            replica.agreed = replica.agreed.max(lsn);
        }
        Some(LeaderEvent::Acked { stream, lsn })
    }

    /// A stream that ends: its connection dropped or its replica's log failed.
    fn end_stream(&mut self, pick: usize) -> Option<StreamId> {
        let streams: Vec<StreamId> = self.streams.keys().copied().collect();
        let stream = *streams.get(pick % streams.len().max(1))?;
        self.streams.remove(&stream);
        Some(stream)
    }

    /// A replica answers that it recorded a version sent to it, on a stream still open.
    fn record(&mut self, pick: usize) -> Option<LeaderEvent> {
        let streams = &self.streams;
        self.recordings.retain(|(stream, _)| streams.contains_key(stream));
        if self.recordings.is_empty() {
            return None;
        }
        let (stream, version) = self.recordings.remove(pick % self.recordings.len());
        let name = self.streams[&stream].name.clone();
        self.note_recorded(version, &name);
        let (leader_epoch, isr_epoch) = version;
        Some(LeaderEvent::InSyncSetRecorded { stream, leader_epoch, isr_epoch })
    }

    /// Notes that `name` recorded `version`, as its answer reaches the leader.
    fn note_recorded(&mut self, version: (Epoch, u64), name: &str) {
        if let Some((_, recorded)) = self.proposed.get_mut(&version) {
            recorded.insert(name.to_string());
        }
    }

    /// Steps the leader, carries out its commands, and checks what it promises.
    fn step(&mut self, event: LeaderEvent) -> Result<(), TestCaseError> {
        let before = Before {
            commit: self.leader.commit(),
            in_sync: self.leader.in_sync().clone(),
            newest: self.leader.newest_in_sync().version(),
            fenced: self.stepped_down,
        };
        let mut out = Vec::new();
        self.leader.step(Moment(self.now), event, &mut out);
        for command in &out {
            self.carry_out(command, &before)?;
        }
        self.check_commit(&before, &out)?;
        self.check_sets(&before)?;
        self.check_writes()?;
        let live: BTreeSet<StreamId> = self.leader.live_streams().collect();
        let expected: BTreeSet<StreamId> =
            self.streams.iter().filter(|(_, stream)| stream.live).map(|(id, _)| *id).collect();
        prop_assert_eq!(live, expected, "the leader's live streams are the runtime's");
        Ok(())
    }

    /// What the runtime does with one command.
    fn carry_out(&mut self, command: &LeaderCommand, before: &Before) -> Result<(), TestCaseError> {
        match command {
            LeaderCommand::StartStream { stream, plan, epoch, caught_up_at, in_sync } => {
                prop_assert_eq!(*epoch, EPOCH);
                prop_assert_eq!(*caught_up_at, self.leader.framed());
                self.start_replica(*stream, *plan)?;
                self.recordings.push((*stream, in_sync.version()));
            }
            LeaderCommand::Refuse { stream, .. } | LeaderCommand::Close { stream, .. } => {
                self.streams.remove(stream);
            }
            LeaderCommand::Commit { .. } => {}
            LeaderCommand::SendInSyncSet { stream, set } => {
                prop_assert!(self.streams.contains_key(stream), "a set for an unknown stream");
                self.recordings.push((*stream, set.version()));
            }
            LeaderCommand::PersistInSyncSet { set } => {
                prop_assert!(!before.fenced, "a fenced leader proposed {}", set);
                let newest = self.proposed.keys().next_back().copied().expect("first set");
                prop_assert!(set.version() > newest, "{} after version {:?}", set, newest);
                check_set(set)?;
                self.proposed.insert(set.version(), (set.clone(), BTreeSet::new()));
                self.persisting.push_back(set.version());
            }
            LeaderCommand::RecordWithController { set } => {
                prop_assert!(self.controlled, "an uncontrolled leader asked the controller");
                prop_assert!(self.proposed.contains_key(&set.version()), "{} never proposed", set);
                self.controller_asked.push_back(set.version());
            }
            LeaderCommand::StepDown { epoch } => {
                prop_assert!(*epoch > EPOCH, "stepped down for epoch {}", epoch);
                self.stepped_down = true;
            }
        }
        Ok(())
    }

    /// The replica of a stream that starts takes the plan: a tail cuts its log back to the
    /// tail's start, which must hold only the leader's records and not lie below its snapshot.
    fn start_replica(&mut self, stream: StreamId, plan: StreamPlan) -> Result<(), TestCaseError> {
        let Some(entry) = self.streams.get_mut(&stream) else {
            return Err(TestCaseError::fail(format!("stream {stream:?} started unasked")));
        };
        entry.plan = Some(plan);
        entry.acked = None;
        let StreamPlan::Tail { after } = plan else { return Ok(()) };
        entry.start = after;
        entry.sent = after;
        let replica = self.replicas.get_mut(&entry.name).expect("known replica");
        prop_assert!(
            after <= replica.agreed,
            "{} holds the leader's records up to {}, and is told to keep up to {}",
            replica.member.name,
            replica.agreed,
            after
        );
        prop_assert!(after >= replica.floor, "a tail below {}'s snapshot", replica.member.name);
        replica.agreed = after;
        replica.divergent = 0;
        Ok(())
    }

    /// The commit point only grows, within what is durable here and on every follower the
    /// newest sets hold, and never while fenced or while the set is below its minimum.
    fn check_commit(&self, before: &Before, out: &[LeaderCommand]) -> Result<(), TestCaseError> {
        let commit = self.leader.commit();
        let commits: Vec<Lsn> = out
            .iter()
            .filter_map(|command| match command {
                LeaderCommand::Commit { lsn } => Some(*lsn),
                _ => None,
            })
            .collect();
        prop_assert!(commit >= before.commit, "commit went back from {}", before.commit);
        prop_assert_eq!(commits.last().copied().unwrap_or(before.commit), commit);
        prop_assert!(commits.len() <= 1, "several commit commands: {:?}", commits);
        prop_assert!(commit <= self.leader.durable(), "committed beyond durable");
        prop_assert!(self.leader.durable() <= self.leader.framed(), "durable beyond framed");
        prop_assert_eq!(self.leader.framed().0, self.log.len() as u64);
        if commit > before.commit {
            prop_assert!(!before.fenced, "a fenced leader committed {}", commit);
            prop_assert!(self.leader.in_sync().len() >= self.min_insync, "committed below min");
        }
        let newest = self.leader.newest_in_sync();
        for follower in self.leader.in_sync().followers().chain(newest.followers()) {
            let holds = self.replicas[&follower.name].agreed;
            prop_assert!(
                commit <= holds,
                "committed {} while {} of the set holds only {}",
                commit,
                follower.name,
                holds
            );
        }
        Ok(())
    }

    /// Versions only grow; the set in effect changes only to a proposed version that every
    /// member recorded, and a change that drops members keeps `min_insync` of them.
    fn check_sets(&self, before: &Before) -> Result<(), TestCaseError> {
        let in_sync = self.leader.in_sync();
        let newest = self.leader.newest_in_sync();
        prop_assert!(in_sync.version() >= before.in_sync.version(), "the set in effect went back");
        prop_assert!(newest.version() >= before.newest, "the newest set went back");
        check_set(in_sync)?;
        check_set(newest)?;
        if in_sync.version() == before.in_sync.version() {
            prop_assert_eq!(in_sync, &before.in_sync);
            return Ok(());
        }
        let Some((proposed, recorded)) = self.proposed.get(&in_sync.version()) else {
            return Err(TestCaseError::fail(format!("{in_sync} in effect, never proposed")));
        };
        prop_assert_eq!(in_sync, proposed);
        prop_assert!(
            !self.controlled || self.controller_recorded.contains(&in_sync.version()),
            "{} took effect before the controller recorded it",
            in_sync
        );
        for member in &in_sync.members {
            prop_assert!(
                recorded.contains(&member.name),
                "{} never recorded {}",
                member.name,
                in_sync
            );
        }
        let kept = in_sync.members.iter().filter(|member| before.in_sync.contains(&member.name));
        let kept = kept.count();
        if kept < before.in_sync.len() {
            prop_assert!(
                kept >= self.min_insync,
                "{} keeps {} of {}",
                in_sync,
                kept,
                before.in_sync
            );
        }
        Ok(())
    }

    /// Writes are taken only when not fenced and when this node and the followers of the set
    /// in effect that have a stream make `min_insync`.
    fn check_writes(&self) -> Result<(), TestCaseError> {
        if !self.leader.accepts_writes() {
            return Ok(());
        }
        prop_assert!(!self.stepped_down, "a fenced leader takes writes");
        prop_assert!(self.leader.fenced_by().is_none());
        let streaming = self
            .leader
            .in_sync()
            .followers()
            .filter(|member| self.streams.values().any(|stream| stream.name == member.name))
            .count();
        prop_assert!(1 + streaming >= self.min_insync, "writes taken with {} streaming", streaming);
        Ok(())
    }
}

/// Every set this leader has is of its epoch, holds it, and never holds the learner.
fn check_set(set: &InSyncSet) -> Result<(), TestCaseError> {
    prop_assert_eq!(set.leader_epoch, EPOCH);
    prop_assert_eq!(set.leader.as_str(), "l");
    prop_assert!(set.contains("l"), "{} lacks its leader", set);
    prop_assert!(!set.contains(LEARNER), "{} holds the learner", set);
    Ok(())
}

/// The replicas' logs at the start: a prefix of the leader's log of epoch 1, and when they
/// hold all of it, records of epoch 1 it lacks (an old leader's tail); a snapshot anywhere.
fn replica_logs(setup: &Setup) -> BTreeMap<String, ReplicaLog> {
    let mut names: Vec<(&str, ReplicaKind)> = FOLLOWERS[..setup.follower_count]
        .iter()
        .map(|name| (*name, ReplicaKind::Follower))
        .collect();
    if setup.learner {
        names.push((LEARNER, ReplicaKind::Learner));
    }
    names
        .into_iter()
        .zip(&setup.logs)
        .map(|((name, kind), (held, divergent, floor))| {
            let agreed = Lsn((*held).min(setup.base));
            let divergent = if agreed.0 == setup.base { *divergent } else { 0 };
            let floor = Lsn(floor % (agreed.0 + divergent + 1));
            let log = ReplicaLog {
                member: member(name),
                kind,
                agreed,
                divergent,
                snapshot: Lsn::ZERO,
                floor,
            };
            (name.to_string(), log)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_event_orders_keep_the_leaders_invariants(setup in setup(), choices in choices()) {
        let mut environment = Environment::new(&setup);
        for choice in choices {
            environment.play(choice)?;
        }
    }
}
