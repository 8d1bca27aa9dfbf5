//! What the control thread asks of every partition of a shard, and the partition's replication
//! facts file (`p<N>/replication`: the highest epoch seen and the newest in-sync set).
//!
//! - Reports for a promotion; its two phases (accept the epoch, install the first sets);
//!   leading; stepping down; going idle or standalone.
//! - Facts are written one at a time per partition, in order, through the shard's runtime
//!   (no blocking write on the shard thread); the machine hears of each once it is durable.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use strata_core::replication::promotion::PartitionReport;
use strata_core::replication::{
    mutations::Mutations, InSyncSet, Leader, LeaderConfig, LeaderEvent, LeaderStart,
    PartitionFacts, Replica, ReplicaEvent, ReplicaStart, STATE_FILE_NAME,
};
use strata_core::{Epoch, Lsn, PartitionId};

use super::{leader::LeaderSide, replica::ReplicaSide, Role};
use crate::cluster::{LeaderSettings, PhaseReply};
use crate::shard::{PartitionSlot, Shard};

/// Answers a promotion phase once every owned partition answered, or at the first refusal.
pub(crate) struct PhaseTracker {
    remaining: Cell<usize>,
    reply: RefCell<Option<PhaseReply>>,
}

impl PhaseTracker {
    fn new(count: usize, reply: PhaseReply) -> Rc<PhaseTracker> {
        let tracker =
            Rc::new(PhaseTracker { remaining: Cell::new(count), reply: RefCell::new(Some(reply)) });
        if count == 0 {
            tracker.answer(Ok(()));
        }
        tracker
    }

    fn answer(&self, result: Result<(), String>) {
        match result {
            Err(reason) => {
                if let Some(reply) = self.reply.borrow_mut().take() {
                    let _ = reply.send(Err(reason));
                }
            }
            Ok(()) => {
                let left = self.remaining.get().saturating_sub(1);
                self.remaining.set(left);
                if left == 0 {
                    if let Some(reply) = self.reply.borrow_mut().take() {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
        }
    }
}

impl Shard {
    // ----- facts -----

    /// Writes `facts` durably after any write of them in progress; the partition's machine
    /// hears of it when it is on disk.
    pub(crate) fn persist_facts(self: &Rc<Self>, partition: PartitionId, facts: PartitionFacts) {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        assert!(facts.fence >= slot.facts_requested.fence, "a write never lowers the fence");
        slot.facts_requested = facts.clone();
        if slot.facts_writing {
            slot.facts_queued = Some(facts);
            return;
        }
        slot.facts_writing = true;
        drop(partitions);
        monoio::spawn(Rc::clone(self).write_facts(partition, facts));
    }

    /// The leader records a new version of its set (with its own epoch as the fence).
    pub(crate) fn persist_in_sync_set(self: &Rc<Self>, partition: PartitionId, set: InSyncSet) {
        let fence = {
            let partitions = self.partitions.borrow();
            let slot = partitions[partition.0 as usize].as_ref().expect("owned partition");
            slot.facts_requested.fence.max(set.leader_epoch)
        };
        self.persist_facts(partition, PartitionFacts { fence, in_sync: Some(set) });
    }

    async fn write_facts(self: Rc<Self>, partition: PartitionId, mut facts: PartitionFacts) {
        let directory = self.partition_directory(partition);
        loop {
            if let Err(error) =
                strata_wal::write_state_file(&directory, STATE_FILE_NAME, &facts.encode()).await
            {
                let reason = format!("cannot record the replication state: {error}");
                let what = "partition refuses writes until restart";
                tracing::error!(partition = partition.0, %reason, "{what}");
                {
                    let mut partitions = self.partitions.borrow_mut();
                    let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                    slot.facts_writing = false;
                    slot.facts_queued = None;
                    slot.state.fail(reason.clone());
                    crate::shard::fail_waiters(slot);
                }
                // A promotion phase waiting on this write is refused now, not left to time out.
                self.phase_answer(partition, Err(reason));
                return;
            }
            self.facts_persisted(partition, facts);
            let next = {
                let mut partitions = self.partitions.borrow_mut();
                let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                let next = slot.facts_queued.take();
                slot.facts_writing = next.is_some();
                next
            };
            match next {
                Some(queued) => facts = queued,
                None => return,
            }
        }
    }

    fn facts_persisted(self: &Rc<Self>, partition: PartitionId, facts: PartitionFacts) {
        let leading = {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            slot.facts = facts.clone();
            slot.role.leader().map(|side| side.machine.epoch())
        };
        self.mesh.shared.observe_epoch(facts.fence);
        match leading {
            Some(epoch) => {
                if let Some(set) = facts.in_sync.filter(|set| set.leader_epoch == epoch) {
                    let (leader_epoch, isr_epoch) = set.version();
                    self.leader_step(
                        partition,
                        LeaderEvent::InSyncSetPersisted { leader_epoch, isr_epoch },
                    );
                }
            }
            None => {
                let _ = self.replica_step(partition, ReplicaEvent::FactsPersisted { facts });
            }
        }
    }

    // ----- what the control thread asks -----

    /// Each owned partition's report to a promotion.
    pub(crate) fn report(&self) -> Vec<PartitionReport> {
        let mut partitions = self.partitions.borrow_mut();
        partitions
            .iter_mut()
            .flatten()
            .map(|slot| {
                let seen = match &mut slot.role {
                    Role::Leader(side) => {
                        side.machine.epoch().max(side.machine.fenced_by().unwrap_or_default())
                    }
                    Role::Replica(side) => side.machine.fence(),
                    Role::Standalone { .. } => Epoch(0),
                };
                PartitionReport {
                    partition: slot.state.id(),
                    fence: slot.facts.fence.max(seen),
                    in_sync: slot.facts.in_sync.clone(),
                    durable_lsn: slot.durable_lsn,
                    failed: slot.state.failure().map(str::to_string),
                }
            })
            .collect()
    }

    /// Whether every owned partition would accept a promotion's epoch: leading ones give way
    /// to it, following ones fence themselves at it. Changes nothing.
    pub(crate) fn would_accept(
        &self,
        epoch: Epoch,
        basis: &BTreeMap<PartitionId, Option<(Epoch, u64)>>,
    ) -> Result<(), String> {
        let mut partitions = self.partitions.borrow_mut();
        for slot in partitions.iter_mut().flatten() {
            let partition_basis = basis.get(&slot.state.id()).copied().flatten();
            match &slot.role {
                Role::Leader(side) => side.machine.yields_to(epoch, partition_basis)?,
                Role::Replica(side) => side.machine.would_accept(epoch, partition_basis)?,
                Role::Standalone { .. } => {}
            }
        }
        Ok(())
    }

    /// Promotion, phase one: every owned partition refuses anything older than `epoch` (one
    /// that leads steps down first), unless it recorded a newer set than its basis.
    pub(crate) fn accept_epoch(
        self: &Rc<Self>,
        epoch: Epoch,
        basis: &BTreeMap<PartitionId, Option<(Epoch, u64)>>,
        reply: PhaseReply,
    ) {
        let owned = self.owned_partitions();
        let tracker = PhaseTracker::new(owned.len(), reply);
        for partition in owned {
            self.fence_leader(partition, epoch);
            self.become_replica(partition);
            self.set_phase(partition, &tracker);
            let basis = basis.get(&partition).copied().flatten();
            let _ = self.replica_step(partition, ReplicaEvent::AcceptEpoch { epoch, basis });
        }
    }

    /// Promotion, phase two: record the new leader's first set of each owned partition.
    pub(crate) fn install_sets(
        self: &Rc<Self>,
        sets: &BTreeMap<PartitionId, InSyncSet>,
        reply: PhaseReply,
    ) {
        let owned = self.owned_partitions();
        let tracker = PhaseTracker::new(owned.len(), reply);
        for partition in owned {
            let Some(set) = sets.get(&partition).cloned() else {
                tracker.answer(Err(format!("no in-sync set for partition {partition}")));
                continue;
            };
            self.become_replica(partition);
            self.set_phase(partition, &tracker);
            let _ = self.replica_step(partition, ReplicaEvent::InstallInSyncSet { set });
        }
    }

    fn set_phase(&self, partition: PartitionId, tracker: &Rc<PhaseTracker>) {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        if let Some(side) = slot.role.replica() {
            side.phase = Some(Rc::clone(tracker));
        }
    }

    pub(crate) fn phase_answer(&self, partition: PartitionId, result: Result<(), String>) {
        let tracker = {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            slot.role.replica().and_then(|side| side.phase.take())
        };
        if let Some(tracker) = tracker {
            tracker.answer(result);
        }
    }

    /// Every owned partition starts leading at `epoch` with its first set.
    pub(crate) fn lead(
        self: &Rc<Self>,
        epoch: Epoch,
        sets: &BTreeMap<PartitionId, InSyncSet>,
        settings: &LeaderSettings,
        reply: PhaseReply,
    ) {
        self.unfollow();
        let now = self.moment();
        let mut outcome = Ok(());
        for partition in self.owned_partitions() {
            self.become_replica(partition);
            let Some(set) = sets.get(&partition).filter(|set| set.leader_epoch == epoch) else {
                outcome = Err(format!("no in-sync set of epoch {epoch} for partition {partition}"));
                continue;
            };
            let config = LeaderConfig {
                me: settings.me.clone(),
                min_insync: settings.min_insync,
                progress_timeout_ms: settings.progress_timeout_ms,
                controlled: settings.controlled,
                mutations: Mutations::in_force(),
            };
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            let Role::Replica(side) = &slot.role else { continue };
            let start = LeaderStart {
                framed: slot.state.last_lsn(),
                durable: slot.durable_lsn,
                commit: slot.state.commit_lsn(),
                history: side.machine.history().clone(),
                in_sync: set.clone(),
            };
            let machine = Leader::new(partition, epoch, config, start, now);
            self.mesh.shared.set_refusing(partition, !machine.accepts_writes());
            slot.role = Role::Leader(Box::new(LeaderSide::new(machine)));
            drop(partitions);
            // The first step publishes whether writes are refused, and ticks nothing early.
            self.leader_step(partition, LeaderEvent::Tick);
        }
        self.mesh.shared.observe_epoch(epoch);
        let _ = reply.send(outcome);
    }

    /// A newer epoch exists: every leading partition steps down; its waiting writes fail.
    pub(crate) fn step_down(self: &Rc<Self>, epoch: Epoch) {
        for partition in self.owned_partitions() {
            self.fence_leader(partition, epoch);
            self.become_replica(partition);
        }
    }

    fn fence_leader(self: &Rc<Self>, partition: PartitionId, epoch: Epoch) {
        let leads = {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            slot.role.leader().is_some_and(|side| side.machine.epoch() < epoch)
        };
        if leads {
            self.leader_step(partition, LeaderEvent::NewerEpoch { epoch });
        }
    }

    /// The partition stops leading or standing alone and becomes a replica of nothing yet.
    pub(crate) fn become_replica(&self, partition: PartitionId) {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let (commit, history) = match &mut slot.role {
            Role::Replica(_) => return,
            Role::Leader(side) => {
                side.close_all();
                (side.machine.commit(), side.machine.history().clone())
            }
            Role::Standalone { history } => (slot.state.commit_lsn(), history.clone()),
        };
        crate::shard::interrupt_waiters(slot, crate::shard::stepped_down());
        self.mesh.shared.set_refusing(partition, false);
        let start = replica_start(slot, commit, history);
        slot.role = Role::Replica(Box::new(ReplicaSide::new(Replica::new(
            partition,
            start,
            Mutations::in_force(),
        ))));
    }

    /// The node stands alone: every partition commits what is durable.
    pub(crate) fn become_standalone(self: &Rc<Self>) {
        self.unfollow();
        for partition in self.owned_partitions() {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            let history = match &mut slot.role {
                Role::Standalone { .. } => continue,
                Role::Leader(side) => {
                    side.close_all();
                    side.machine.history().clone()
                }
                Role::Replica(side) => side.machine.history().clone(),
            };
            slot.role = Role::Standalone { history };
            let durable = slot.durable_lsn.min(slot.state.last_lsn());
            if durable > slot.state.commit_lsn() {
                slot.state.commit(durable);
                crate::shard::release_waiters(slot);
            }
        }
    }

    /// Every leading partition hears that `name` left or timed out.
    pub(crate) fn member_gone(self: &Rc<Self>, name: &str) {
        for partition in self.owned_partitions() {
            self.leader_step(partition, LeaderEvent::MemberTimedOut { name: name.to_string() });
        }
    }

    /// Leader partitions stop leading and close their streams (the node goes idle).
    pub(crate) fn go_idle(self: &Rc<Self>) {
        self.unfollow();
        for partition in self.owned_partitions() {
            self.become_replica(partition);
        }
    }

    /// Ticks every leading partition (progress timeouts), about ten times a second.
    pub(crate) async fn run_ticks(self: Rc<Self>) {
        loop {
            monoio::time::sleep(super::TICK_INTERVAL).await;
            for partition in self.owned_partitions() {
                self.leader_step(partition, LeaderEvent::Tick);
            }
        }
    }
}

/// A replica machine's start from what the slot holds.
pub(crate) fn replica_start(
    slot: &PartitionSlot,
    commit: Lsn,
    history: strata_core::replication::EpochHistory,
) -> ReplicaStart {
    let last = slot.state.last_lsn();
    let durable = slot.durable_lsn.min(last);
    ReplicaStart {
        last,
        durable,
        commit: commit.min(durable),
        floor: slot.floor.min(durable),
        history,
        facts: slot.facts_requested.clone(),
        durable_facts: slot.facts.clone(),
    }
}
