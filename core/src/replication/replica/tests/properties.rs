//! Random orders of well-formed events keep the replica's invariants.
//!
//! The test plays the replica's environment: leaders of rising epochs, each holding a copy of
//! a prefix of the previous leader's log plus records of its own, and going on cutting records
//! after a newer one took over until it hears of it; streams to any of them (mostly the
//! newest, sometimes a stale one), started the way a leader starts them from the replica's
//! subscription; the local disk (writes that become durable, truncations and snapshot
//! installs, one at a time, the facts file, one write at a time); promotions asking the
//! partition to accept a new epoch and record its leader's first set. Each generated choice
//! names a kind of event; the environment turns it into the nearest event legal now, from the
//! commands the replica gave, so that the replica's own assertions trip only on its mistakes.
//! Like the runtime, it holds a stream's messages while the replica waits for its disk; like the
//! simulator, which cuts and installs at once, it opens no stream while a cut or install runs
//! (the shard runtime may, and then the replica breaks: see the ignored tests in `tests.rs`).
//! After every step it checks (`docs/ARCHITECTURE.md`, "What the replica decides", I3, I5):
//!
//! - the fence never goes back, nor the fence on disk; no frame is appended from a stream
//!   whose epoch is below the fence, nor before that epoch is on disk;
//! - a frame that does not continue the log, goes back in epoch or is newer than its stream
//!   is refused and not appended;
//! - an acknowledgement never exceeds what is durable, is sent only on a stream not below the
//!   fence whose epoch is on disk, covers records that are its stream's leader's, and stays
//!   durable while its stream is current;
//! - it subscribes only from what is durable, and never once its log failed, which ends its
//!   stream;
//! - the commit point never exceeds what is durable, rises only up to what the current
//!   stream's leader said it committed and over that leader's records, and the records below
//!   it never change;
//! - the epoch history ascends, holds no epoch above the fence, and describes the log.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;

/// Leaders a case creates at most, and records a leader's log holds at most.
const LEADERS_MAX: usize = 8;
const LEADER_RECORDS_MAX: usize = 48;
/// Events generated per case at most.
const EVENTS_MAX: usize = 200;

/// How a case starts: the replica's log of epoch 1, how much of it is durable, and how many
/// more records the first leader (of epoch 1) holds.
#[derive(Clone, Copy, Debug)]
struct Setup {
    records: u64,
    not_durable: u64,
    leader_extra: u64,
}

/// Starts of cases: a log of up to 6 records, a few not durable yet.
fn setup() -> impl Strategy<Value = Setup> {
    (0u64..=6, 0u64..=2, 0u64..=4).prop_map(|(records, not_durable, leader_extra)| Setup {
        records,
        not_durable: not_durable.min(records),
        leader_extra,
    })
}

/// A kind of event the environment may bring about next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Move {
    /// The replica subscribes on a new stream.
    Open,
    /// The stream's leader answers with its start.
    Start,
    Frame,
    /// A frame that must be refused.
    BadFrame,
    Durable,
    Commit,
    /// The stream's leader offers a newer version of its set.
    Offer,
    /// The facts write is done.
    Persist,
    /// The truncation or snapshot install is done.
    DiskDone,
    /// The stream's snapshot arrives whole.
    Snapshot,
    /// Another member is promoted without asking this one.
    Promote,
    /// A leader cuts records of its epoch.
    Cut,
    Accept,
    Install,
    LocalSnapshot,
    Close,
    Fail,
}

/// Moves weighted by how often they come up: a choice indexes this table.
const MOVES: [Move; 31] = [
    Move::Open,
    Move::Open,
    Move::Start,
    Move::Start,
    Move::Frame,
    Move::Frame,
    Move::Frame,
    Move::Frame,
    Move::BadFrame,
    Move::Durable,
    Move::Durable,
    Move::Durable,
    Move::Commit,
    Move::Commit,
    Move::Commit,
    Move::Offer,
    Move::Persist,
    Move::Persist,
    Move::DiskDone,
    Move::DiskDone,
    Move::Snapshot,
    Move::Promote,
    Move::Cut,
    Move::Cut,
    Move::Cut,
    Move::Accept,
    Move::Install,
    Move::LocalSnapshot,
    Move::Close,
    Move::Fail,
    Move::Frame,
];

/// Moves tried in this order when the chosen one is not legal now.
const PROGRESS: [Move; 9] = [
    Move::Persist,
    Move::DiskDone,
    Move::Start,
    Move::Snapshot,
    Move::Frame,
    Move::Durable,
    Move::Commit,
    Move::Open,
    Move::Cut,
];

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

/// A leader the replica may hear from.
#[derive(Clone, Debug)]
struct TestLeader {
    epoch: Epoch,
    /// The epoch of each record of its log (index 0 is LSN 1).
    log: Vec<u64>,
    commit: Lsn,
    /// The version of its newest set.
    isr_epoch: u64,
}

impl TestLeader {
    /// The last LSN of its log.
    fn end(&self) -> Lsn {
        Lsn(self.log.len() as u64)
    }

    /// Its epoch history, as it plans a stream from it.
    fn history(&self) -> EpochHistory {
        history_of(&self.log)
    }

    /// Its newest set: itself and this replica.
    fn set(&self) -> InSyncSet {
        in_sync_set(self.epoch, self.isr_epoch)
    }
}

/// The current stream as the runtime sees it.
#[derive(Clone, Debug)]
struct TestStream {
    id: u64,
    /// Index of its leader in the environment's leaders.
    leader: usize,
    mode: StartMode,
    caught_up_at: Lsn,
    started: bool,
    /// The snapshot sent on it, once sent.
    snapshot: Option<Lsn>,
    /// The next LSN its leader sends.
    next: Lsn,
    /// The highest commit point its leader sent on it.
    told: Lsn,
    /// The highest LSN the replica acknowledged on it.
    acked: Lsn,
}

/// A change of the whole log the runtime is carrying out.
#[derive(Clone, Copy, Debug)]
enum DiskWork {
    Truncate { after: Lsn },
    Install { lsn: Lsn, leader: usize },
}

/// What the replica showed before a step, to compare with after it.
struct Before {
    fence: Epoch,
    durable_fence: Epoch,
    last: Lsn,
    commit: Lsn,
}

/// The replica and everything around it.
struct Environment {
    replica: Replica,
    /// The epoch of each record of the replica's log (index 0 is LSN 1).
    log: Vec<u64>,
    leaders: Vec<TestLeader>,
    stream: Option<TestStream>,
    next_stream: u64,
    /// The facts being written.
    facts_write: Option<PartitionFacts>,
    disk: Option<DiskWork>,
    /// Epochs the replica accepted for promotions.
    accepted: Vec<Epoch>,
    /// The records up to the commit point, as they were when it rose to them.
    served: Vec<u64>,
}

impl Environment {
    /// A replica fenced at epoch 1 whose log holds `setup.records` records of epoch 1, and the
    /// leader of epoch 1, whose log holds them and `setup.leader_extra` more.
    fn new(setup: Setup) -> Environment {
        let log = vec![1; usize::try_from(setup.records).expect("small")];
        let facts = PartitionFacts { fence: Epoch(1), in_sync: None };
        let start = ReplicaStart {
            last: Lsn(setup.records),
            durable: Lsn(setup.records - setup.not_durable),
            commit: Lsn::ZERO,
            floor: Lsn::ZERO,
            history: history_of(&log),
            facts: facts.clone(),
            durable_facts: facts,
        };
        let replica = Replica::new(PartitionId(0), start, Mutations::NONE);
        let mut first = log.clone();
        first.extend(std::iter::repeat_n(1, usize::try_from(setup.leader_extra).expect("small")));
        let leader = TestLeader { epoch: Epoch(1), log: first, commit: Lsn::ZERO, isr_epoch: 0 };
        Environment {
            replica,
            log,
            leaders: vec![leader],
            stream: None,
            next_stream: 1,
            facts_write: None,
            disk: None,
            accepted: Vec::new(),
            served: Vec::new(),
        }
    }

    /// Plays one choice: its move if legal now, else the first legal one of those that make
    /// progress, else nothing.
    fn play(&mut self, choice: Choice) -> Result<(), TestCaseError> {
        let chosen = MOVES[choice.slot % MOVES.len()];
        for next in std::iter::once(chosen).chain(PROGRESS) {
            if let Some(played) = self.try_move(next, choice) {
                return played;
            }
        }
        Ok(())
    }

    /// Plays `next` if it is legal now; `None` if it is not.
    fn try_move(&mut self, next: Move, choice: Choice) -> Option<Result<(), TestCaseError>> {
        let Choice { pick, amount, .. } = choice;
        let event = match next {
            Move::Open => self.open(pick, amount)?,
            Move::Start => self.start_stream(amount)?,
            Move::Frame => self.frame(amount)?,
            Move::BadFrame => return self.bad_frame(amount),
            Move::Durable => self.durable(amount)?,
            Move::Commit => self.leader_commit(amount)?,
            Move::Offer => self.offer(amount)?,
            Move::Persist => ReplicaEvent::FactsPersisted { facts: self.facts_write.take()? },
            Move::DiskDone => self.disk_done()?,
            Move::Snapshot => self.snapshot()?,
            Move::Promote => {
                self.promote(pick, amount)?;
                return Some(Ok(()));
            }
            Move::Cut => return self.cut(pick, amount),
            Move::Accept => self.accept(pick, amount),
            Move::Install => self.install(amount)?,
            Move::LocalSnapshot => return self.write_snapshot(amount),
            Move::Close => {
                let stream = self.stream.take()?.id;
                ReplicaEvent::StreamClosed { stream }
            }
            Move::Fail if amount.is_multiple_of(64) => {
                ReplicaEvent::WalFailed { reason: "EIO".into() }
            }
            Move::Fail => return None,
        };
        Some(self.step(event).map(|_| ()))
    }

    /// The replica subscribes from its durable log to a leader (mostly the newest), which
    /// plans the stream as a leader does: a tail from where the two logs agree, unless that
    /// lies below the replica's snapshot (or now and then the tail is gone), else a snapshot.
    fn open(&mut self, pick: usize, amount: u64) -> Option<ReplicaEvent> {
        if self.disk.is_some() {
            return None;
        }
        let from = self.replica.subscription()?;
        let index = if amount.is_multiple_of(4) {
            pick % self.leaders.len()
        } else {
            self.leaders.len() - 1
        };
        let leader = &self.leaders[index];
        let agreement = leader.history().agreement(leader.end(), &from.history, from.last_lsn);
        let mode = match agreement {
            Some(after) if after >= from.floor && amount % 8 != 1 => {
                StartMode::Tail { next_lsn: after.next() }
            }
            _ => StartMode::Snapshot,
        };
        let next = match mode {
            StartMode::Tail { next_lsn } => next_lsn,
            StartMode::Snapshot => Lsn::ZERO,
        };
        let id = self.next_stream;
        self.next_stream += 1;
        self.stream = Some(TestStream {
            id,
            leader: index,
            mode,
            caught_up_at: leader.end(),
            started: false,
            snapshot: None,
            next,
            told: Lsn::ZERO,
            acked: Lsn::ZERO,
        });
        Some(ReplicaEvent::StreamOpened { stream: id })
    }

    /// The stream's leader answers the subscription: its epoch, the plan, where the replica will
    /// have caught up, and mostly its newest set.
    fn start_stream(&mut self, amount: u64) -> Option<ReplicaEvent> {
        let stream = self.stream.as_mut().filter(|stream| !stream.started)?;
        stream.started = true;
        let leader = &self.leaders[stream.leader];
        Some(ReplicaEvent::StreamStarted {
            stream: stream.id,
            epoch: leader.epoch,
            mode: stream.mode,
            caught_up_at: stream.caught_up_at,
            in_sync: (!amount.is_multiple_of(4)).then(|| leader.set()),
        })
    }

    /// The current stream, once its messages reach the replica: started, and neither the
    /// replica nor the runtime waits for the disk.
    fn ready_stream(&self) -> Option<&TestStream> {
        let stream = self.stream.as_ref().filter(|stream| stream.started)?;
        let waiting = self.disk.is_some() || self.replica.waiting_for_disk(stream.id);
        (!waiting && self.replica.is_current(stream.id)).then_some(stream)
    }

    /// The stream's leader sends its next records of one epoch.
    fn frame(&mut self, amount: u64) -> Option<ReplicaEvent> {
        let id = self.ready_stream()?.id;
        if !self.replica.accepts_frames(id) {
            return None;
        }
        let stream = self.stream.as_mut().expect("ready stream");
        let log = &self.leaders[stream.leader].log;
        let first = stream.next;
        if first.0 > log.len() as u64 {
            return None;
        }
        let epoch = log[index_of(first)];
        let mut last = first;
        let end = (log.len() as u64).min(first.0 + amount % 3);
        while last.0 < end && log[index_of(last.next())] == epoch {
            last = last.next();
        }
        stream.next = last.next();
        Some(ReplicaEvent::Frame { stream: id, epoch: Epoch(epoch), first, last })
    }

    /// A frame the replica must refuse: a gap, a range that ends before it starts, an epoch
    /// newer than its stream's, or one older than the log's last.
    fn bad_frame(&mut self, amount: u64) -> Option<Result<(), TestCaseError>> {
        let stream = self.ready_stream()?;
        if !self.replica.accepts_frames(stream.id) {
            return None;
        }
        let (id, stream_epoch) = (stream.id, self.leaders[stream.leader].epoch);
        let next = self.replica.last().next();
        let last_epoch = self.replica.history().last_epoch();
        let (epoch, first, last) = match amount % 4 {
            1 => (Epoch(stream_epoch.0 + 1), next, next),
            2 => (stream_epoch, next, self.replica.last()),
            3 if last_epoch > Epoch(1) => (Epoch(last_epoch.0 - 1), next, next),
            _ => (stream_epoch, next.next(), next.next()),
        };
        let before = self.replica.last();
        let refused = self.step(ReplicaEvent::Frame { stream: id, epoch, first, last });
        Some(refused.and_then(|out| {
            let rejected = out.iter().any(
                |command| matches!(command, ReplicaCommand::Reject { stream, .. } if *stream == id),
            );
            prop_assert!(rejected, "frame {}..={} of epoch {} not refused", first, last, epoch);
            prop_assert_eq!(self.replica.last(), before);
            Ok(())
        }))
    }

    /// Local writes finish: durability advances, up to the log's end.
    fn durable(&self, amount: u64) -> Option<ReplicaEvent> {
        let (durable, last) = (self.replica.durable(), self.replica.last());
        (durable < last).then(|| ReplicaEvent::LocalDurable {
            lsn: Lsn(durable.0 + 1 + amount % (last.0 - durable.0)),
        })
    }

    /// The stream's leader commits more of its log and says so.
    fn leader_commit(&mut self, amount: u64) -> Option<ReplicaEvent> {
        let id = self.ready_stream()?.id;
        let stream = self.stream.as_mut().expect("ready stream");
        let leader = &mut self.leaders[stream.leader];
        leader.commit = leader.commit.max(Lsn(amount % (leader.end().0 + 1)));
        stream.told = stream.told.max(leader.commit);
        Some(ReplicaEvent::LeaderCommit { stream: id, lsn: leader.commit })
    }

    /// The stream's leader offers a newer set; now and then one of another epoch.
    fn offer(&mut self, amount: u64) -> Option<ReplicaEvent> {
        let id = self.ready_stream()?.id;
        let index = self.stream.as_ref().expect("ready stream").leader;
        let leader = &mut self.leaders[index];
        leader.isr_epoch += 1;
        let set = if amount.is_multiple_of(8) {
            in_sync_set(Epoch(leader.epoch.0 + 1), leader.isr_epoch)
        } else {
            leader.set()
        };
        Some(ReplicaEvent::InSyncSetOffered { stream: id, set })
    }

    /// The truncation or install the replica asked for is done: the log is what it says.
    fn disk_done(&mut self) -> Option<ReplicaEvent> {
        match self.disk.take()? {
            DiskWork::Truncate { after } => {
                self.log.truncate(index_of(after.next()));
                Some(ReplicaEvent::Truncated { lsn: after, epoch: epoch_at(&self.log, after) })
            }
            DiskWork::Install { lsn, leader } => {
                self.log = self.leaders[leader].log[..index_of(lsn.next())].to_vec();
                Some(ReplicaEvent::SnapshotInstalled { lsn, epoch: epoch_at(&self.log, lsn) })
            }
        }
    }

    /// The stream's snapshot, of everything its leader holds now, arrives whole.
    fn snapshot(&mut self) -> Option<ReplicaEvent> {
        let id = self.ready_stream()?.id;
        let stream = self.stream.as_mut().expect("ready stream");
        if stream.mode != StartMode::Snapshot || stream.snapshot.is_some() {
            return None;
        }
        let lsn = self.leaders[stream.leader].end();
        stream.snapshot = Some(lsn);
        stream.next = lsn.next();
        Some(ReplicaEvent::SnapshotReceived { stream: id, lsn })
    }

    /// A new leader, of an epoch above every other (sometimes well above, as a forced
    /// promotion), holding a prefix of the newest leader's log (mostly all of it).
    fn promote(&mut self, pick: usize, amount: u64) -> Option<Epoch> {
        if self.leaders.len() == LEADERS_MAX {
            return None;
        }
        let newest = self.leaders.last().expect("a first leader");
        let epoch = Epoch(newest.epoch.0 + 1 + 3 * u64::from(amount.is_multiple_of(5)));
        let kept =
            if amount.is_multiple_of(2) { newest.log.len() } else { pick % (newest.log.len() + 1) };
        let log = newest.log[..kept].to_vec();
        self.leaders.push(TestLeader { epoch, log, commit: Lsn::ZERO, isr_epoch: 0 });
        Some(epoch)
    }

    /// A leader (mostly the newest) cuts records of its epoch.
    fn cut(&mut self, pick: usize, amount: u64) -> Option<Result<(), TestCaseError>> {
        let count = self.leaders.len();
        let index = if amount.is_multiple_of(4) { pick % count } else { count - 1 };
        let leader = &mut self.leaders[index];
        if leader.log.len() >= LEADER_RECORDS_MAX {
            return None;
        }
        let records = usize::try_from(1 + amount % 3).expect("small");
        leader.log.extend(std::iter::repeat_n(leader.epoch.0, records));
        Some(Ok(()))
    }

    /// A promotion asks the partition to accept its epoch, planned on the newest set the
    /// replica recorded (now and then an older one, or none: forced); or an old promotion's
    /// epoch arrives late.
    fn accept(&mut self, pick: usize, amount: u64) -> ReplicaEvent {
        let recorded = self.replica.durable_facts().in_sync.as_ref().map(InSyncSet::version);
        let basis = match recorded {
            _ if amount.is_multiple_of(3) => None,
            Some((epoch, isr_epoch)) if amount.is_multiple_of(5) => {
                Some((epoch, isr_epoch.saturating_sub(1)))
            }
            recorded => recorded,
        };
        let epoch = match self.promote(pick, amount / 2) {
            Some(epoch) if !amount.is_multiple_of(4) => epoch,
            _ => self.replica.fence(),
        };
        ReplicaEvent::AcceptEpoch { epoch, basis }
    }

    /// A promotion every asked member accepted installs its leader's first set: mostly of the
    /// newest epoch accepted.
    fn install(&self, amount: u64) -> Option<ReplicaEvent> {
        let newest = *self.accepted.last()?;
        let epoch = if amount.is_multiple_of(4) { self.accepted[0] } else { newest };
        Some(ReplicaEvent::InstallInSyncSet { set: in_sync_set(epoch, 0) })
    }

    /// A snapshot of durable records, while no truncation or install runs.
    fn write_snapshot(&mut self, amount: u64) -> Option<Result<(), TestCaseError>> {
        if self.disk.is_some() {
            return None;
        }
        self.replica.snapshot_written(Lsn(amount % (self.replica.durable().0 + 1)));
        Some(self.check_state())
    }

    /// Steps the replica, follows its log, carries out its commands, and checks what it
    /// promises; returns the commands.
    fn step(&mut self, event: ReplicaEvent) -> Result<Vec<ReplicaCommand>, TestCaseError> {
        let before = Before {
            fence: self.replica.fence(),
            durable_fence: self.replica.durable_facts().fence,
            last: self.replica.last(),
            commit: self.replica.commit(),
        };
        let mut out = Vec::new();
        self.replica.step(event.clone(), &mut out);
        if let ReplicaEvent::Frame { epoch, first, last, .. } = event {
            self.follow_frame(&before, epoch, first, last)?;
        }
        let current = self.stream.clone();
        for command in &out {
            self.carry_out(command, current.as_ref())?;
        }
        prop_assert!(self.replica.fence() >= before.fence, "the fence went back");
        let durable_fence = self.replica.durable_facts().fence;
        prop_assert!(durable_fence >= before.durable_fence, "the fence on disk went back");
        self.check_commit(&before, current.as_ref(), &out)?;
        self.check_state()?;
        Ok(out)
    }

    /// A frame the replica took extends the log: only from a stream of an epoch not below the
    /// fence and on disk, and never of an epoch newer than the stream's.
    fn follow_frame(
        &mut self,
        before: &Before,
        epoch: Epoch,
        first: Lsn,
        last: Lsn,
    ) -> Result<(), TestCaseError> {
        if self.replica.last() == before.last {
            return Ok(());
        }
        let Some(stream) = self.stream.as_ref() else {
            return Err(TestCaseError::fail("a frame taken without a stream"));
        };
        let stream_epoch = self.leaders[stream.leader].epoch;
        prop_assert_eq!(first, before.last.next());
        prop_assert_eq!(self.replica.last(), last);
        prop_assert!(
            epoch <= stream_epoch,
            "a frame of epoch {} on {}'s stream",
            epoch,
            stream_epoch
        );
        prop_assert!(stream_epoch >= self.replica.fence(), "a frame of a stream below the fence");
        let durable_fence = self.replica.durable_facts().fence;
        prop_assert!(durable_fence >= stream_epoch, "a frame before the stream's epoch is on disk");
        let records = usize::try_from(last.0 - first.0 + 1).expect("small");
        self.log.extend(std::iter::repeat_n(epoch.0, records));
        Ok(())
    }

    /// What the runtime does with one command; `current` is the stream before the step.
    fn carry_out(
        &mut self,
        command: &ReplicaCommand,
        current: Option<&TestStream>,
    ) -> Result<(), TestCaseError> {
        let durable_facts = self.replica.durable_facts().clone();
        let recorded = durable_facts.in_sync.as_ref().map(InSyncSet::version);
        match command {
            ReplicaCommand::Reject { stream, fence, .. } => {
                let Some(current) = current.filter(|current| current.id == *stream) else {
                    return Err(TestCaseError::fail(format!("stream {stream} is not current")));
                };
                if let Some(fence) = fence {
                    prop_assert!(
                        *fence > self.leaders[current.leader].epoch,
                        "fenced by {}",
                        fence
                    );
                    prop_assert!(*fence <= self.replica.fence());
                }
                self.stream = None;
            }
            ReplicaCommand::PersistFacts { facts } => {
                prop_assert!(self.facts_write.is_none(), "a second facts write at once");
                prop_assert!(facts.fence >= durable_facts.fence, "facts write lowers the fence");
                self.facts_write = Some(facts.clone());
            }
            ReplicaCommand::Truncate { after, records } => {
                prop_assert!(self.disk.is_none(), "a truncation while the disk is busy");
                prop_assert_eq!(*records, self.replica.last().0 - after.0);
                self.disk = Some(DiskWork::Truncate { after: *after });
            }
            ReplicaCommand::InstallSnapshot { lsn } => {
                prop_assert!(self.disk.is_none(), "an install while the disk is busy");
                let current = current.expect("a snapshot comes on a stream");
                prop_assert_eq!(current.snapshot, Some(*lsn));
                self.disk = Some(DiskWork::Install { lsn: *lsn, leader: current.leader });
            }
            ReplicaCommand::Ack { stream, lsn } => {
                self.check_ack(current, *stream, *lsn)?;
                if let Some(current) = self.stream.as_mut().filter(|current| current.id == *stream)
                {
                    current.acked = current.acked.max(*lsn);
                }
            }
            ReplicaCommand::SendRecorded { leader_epoch, isr_epoch, .. } => {
                prop_assert!(recorded >= Some((*leader_epoch, *isr_epoch)), "not yet recorded");
            }
            ReplicaCommand::ReportFailure { .. } => self.stream = None,
            ReplicaCommand::CaughtUp => {
                let current = current.expect("catching up on a stream");
                prop_assert!(self.replica.durable() >= current.caught_up_at);
                prop_assert!(self.leaders[current.leader].epoch >= self.replica.fence());
            }
            ReplicaCommand::Accepted { epoch } => {
                prop_assert!(durable_facts.fence >= *epoch, "accepted before it is on disk");
                self.accepted.push(*epoch);
            }
            ReplicaCommand::Installed { epoch } => {
                prop_assert!(recorded >= Some((*epoch, 0)), "installed before it is on disk");
            }
            ReplicaCommand::Commit { .. }
            | ReplicaCommand::AcceptRefused { .. }
            | ReplicaCommand::InstallRefused { .. } => {}
        }
        Ok(())
    }

    /// An acknowledgement is of the current stream, of durable records only, which are the
    /// stream's leader's, and only once the stream's epoch is on disk.
    fn check_ack(
        &self,
        current: Option<&TestStream>,
        stream: u64,
        lsn: Lsn,
    ) -> Result<(), TestCaseError> {
        let Some(current) = current.filter(|current| current.id == stream) else {
            return Err(TestCaseError::fail(format!("an ack on stream {stream}, not current")));
        };
        let leader = &self.leaders[current.leader];
        prop_assert!(lsn <= self.replica.durable(), "acked {} beyond durable", lsn);
        let covered = index_of(lsn.next());
        prop_assert!(covered <= leader.log.len(), "acked {} beyond its leader's log", lsn);
        prop_assert_eq!(&self.log[..covered], &leader.log[..covered], "acked records differ");
        prop_assert!(leader.epoch >= self.replica.fence(), "acked on a stream below the fence");
        let durable_fence = self.replica.durable_facts().fence;
        prop_assert!(durable_fence >= leader.epoch, "acked before the epoch is on disk");
        Ok(())
    }

    /// The commit point rises only up to what the current stream's leader said it committed,
    /// over that leader's records; the records below it never change.
    fn check_commit(
        &mut self,
        before: &Before,
        current: Option<&TestStream>,
        out: &[ReplicaCommand],
    ) -> Result<(), TestCaseError> {
        let commit = self.replica.commit();
        let served = index_of(commit.next());
        prop_assert!(commit <= self.replica.durable(), "committed beyond durable");
        let commits: Vec<Lsn> = out
            .iter()
            .filter_map(|command| match command {
                ReplicaCommand::Commit { lsn } => Some(*lsn),
                _ => None,
            })
            .collect();
        prop_assert!(commits.windows(2).all(|pair| pair[0] < pair[1]), "commits {:?}", commits);
        if commits.is_empty() {
            prop_assert!(commit <= before.commit, "commit rose to {} unannounced", commit);
            prop_assert_eq!(&self.log[..served], &self.served[..served], "served records changed");
            self.served.truncate(served);
            return Ok(());
        }
        // A truncation or install may lower the commit point and the new stream raise it
        // again in the same step.
        prop_assert_eq!(commits.last().copied(), Some(commit));
        let Some(stream) = current.filter(|stream| self.replica.is_current(stream.id)) else {
            return Err(TestCaseError::fail(format!("commit rose to {commit} without a stream")));
        };
        prop_assert!(
            commit <= stream.told,
            "committed {} beyond its leader's {}",
            commit,
            stream.told
        );
        let leader = &self.leaders[stream.leader];
        prop_assert!(
            leader.epoch >= self.replica.fence(),
            "committed from a stream below the fence"
        );
        let leader = &leader.log;
        prop_assert_eq!(
            &self.log[..served],
            &leader[..served],
            "committed records not the leader's"
        );
        self.served = self.log[..served].to_vec();
        Ok(())
    }

    /// The log is as long as the test says, and the epoch history describes it. What it
    /// acknowledged on its stream stays durable. It subscribes only from what is durable, with
    /// its fence and history, and never after its log failed, which ended its stream.
    fn check_state(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.replica.last().0, self.log.len() as u64, "the log's length");
        if self.replica.failure().is_some() {
            prop_assert!(self.stream.is_none(), "a stream kept after the log failed");
            prop_assert!(self.replica.subscription().is_none(), "subscribes after its log failed");
        }
        if let Some(stream) = self.stream.as_ref() {
            let durable = self.replica.durable();
            prop_assert!(
                durable >= stream.acked,
                "acked {} on the stream, holds {}",
                stream.acked,
                durable
            );
        }
        if let Some(from) = self.replica.subscription() {
            prop_assert!(from.last_lsn <= self.replica.durable(), "subscribes from beyond durable");
            prop_assert_eq!(from.fence, self.replica.fence());
            prop_assert_eq!(&from.history, self.replica.history());
        }
        let history = self.replica.history();
        let entries = history.entries();
        prop_assert!(EpochHistory::from_entries(entries.to_vec()).is_some(), "{:?}", entries);
        prop_assert!(history.last_epoch() <= self.replica.fence(), "an epoch above the fence");
        prop_assert_eq!(
            entries.is_empty(),
            self.log.is_empty(),
            "{:?} for {:?}",
            entries,
            self.log
        );
        for (index, (epoch, first)) in entries.iter().enumerate() {
            let end = entries.get(index + 1).map_or(self.log.len(), |(_, next)| index_of(*next));
            prop_assert!(index_of(*first) < end, "{:?} for {:?}", entries, self.log);
            for record in &self.log[index_of(*first)..end] {
                prop_assert_eq!(*record, epoch.0, "{:?} for {:?}", entries, self.log);
            }
        }
        Ok(())
    }
}

/// Index in a log vector of the record at `lsn` (LSN 1 is index 0).
fn index_of(lsn: Lsn) -> usize {
    usize::try_from(lsn.0 - 1).expect("small")
}

/// The epoch of the record at `lsn`, or 0 for LSN 0.
fn epoch_at(log: &[u64], lsn: Lsn) -> Epoch {
    if lsn == Lsn::ZERO {
        return Epoch(0);
    }
    Epoch(log[index_of(lsn)])
}

/// The epoch history of a whole log.
fn history_of(log: &[u64]) -> EpochHistory {
    let mut history = EpochHistory::default();
    for (index, epoch) in log.iter().enumerate() {
        history.append(Epoch(*epoch), Lsn(index as u64 + 1));
    }
    history
}

/// A set version of the leader of `epoch`: the leader and this replica.
fn in_sync_set(epoch: Epoch, isr_epoch: u64) -> InSyncSet {
    let members = ["leader", "replica"]
        .map(|name| Member { name: name.into(), address: format!("127.0.0.1:{}", name.len()) });
    InSyncSet::new(epoch, isr_epoch, "leader", members.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_event_orders_keep_the_replicas_invariants(setup in setup(), choices in choices()) {
        let mut environment = Environment::new(setup);
        for choice in choices {
            environment.play(choice)?;
        }
    }
}
