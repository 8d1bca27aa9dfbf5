//! Automatic failover in the simulated world (`Failover::Automatic`): the controller's
//! decisions, made by the code the real node runs (`ClusterState::apply`, `plan_succession`,
//! `plan_promotion` with `Guard::Appointed`), carried out the way `control/src/failover.rs`
//! carries them out, on the virtual clock:
//!
//! - **The controller's leader** (the model in `crate::controller`) probes the data leader
//!   every 100 ms. One that is gone (its node is down), that says its appointed promotion
//!   failed, or that is idle with a fence at the controller's epoch is replaced at once; one
//!   that does not answer, or leads another epoch, once it went unconfirmed for the failover
//!   timeout. It then gathers the reports of the members it reaches, calls `plan_succession`
//!   and proposes the `Appoint`, which commits a round trip later if it still can (the
//!   compare-and-set on the leader epoch may refuse it).
//! - **Every member** carries out the state it learned, every 20 ms and when it learns more:
//!   the appointee promotes itself with `Guard::Appointed` unless it has seen the epoch
//!   already (it leads an epoch once); any other member, once the appointee says it leads at
//!   that epoch, leaves its role and follows it.
//! - **The lease.** The data leader confirms with the controller's leader every 100 ms that
//!   it still leads at its epoch and takes writes only while its lease (two thirds of the
//!   timeout, counted from when it asked) runs. Every fifth round it mirrors the in-sync sets
//!   it recorded to the controller (`RecordInSync`, taken when newer than the copy kept;
//!   nobody is answered).
//! - **In-sync sets go through the controller.** The data leader's partitions run with
//!   `LeaderConfig::controlled`: a new version of a set takes effect only once the controller
//!   recorded it, besides every member of it. Each `RecordWithController` is carried out as
//!   `record_in_sync` does: the request goes to the controller's leader (asked again every
//!   50 ms for 3 s while there is none, or it is down, as `propose_anywhere` does; lost if
//!   the two are cut apart; held by a paused leader until it resumes), which proposes
//!   `RecordInSync` if it still leads, committing a round trip later if it still can. The
//!   answer travels back: recorded (applied, or the same version already held), and the
//!   partition gets `ControllerRecorded`; not recorded, and the node looks at the
//!   controller's state as it learned it: if it holds that version or a later one of the
//!   epoch, the partition gets `ControllerRefused`. Either reaches the partition only if its
//!   node is up in the same life and still leads it at that epoch. A lost request or answer
//!   is covered by the partition asking again every second.
//! - **Faults** aimed at the controller: its leader or the data leader crash, pause or are cut
//!   off, the two lose each other, or the cluster splits in two.

use strata_core::controller::{plan_succession, ClusterState, Command, Effect};
use strata_core::replication::promotion::{plan_appointment, PromotionPlan};
use strata_core::replication::{InSyncSet, LeaderEvent};
use strata_core::Epoch;

use super::{Event, World};
use crate::controller::{Controller, Founder, Purpose};
use crate::node::{partition_id, AppointedStatus, Machine, Role};

/// How often the controller's leader looks at the data leader (`PROBE_INTERVAL`).
const PROBE_INTERVAL_US: u64 = 100_000;
/// How long the controller's leader waits before it tries a failover again
/// (`RETRY_INTERVAL`).
const RETRY_INTERVAL_US: u64 = 200_000;
/// How often a member carries out the controller's state at the latest
/// (`FOLLOW_POLL_INTERVAL`).
const FOLLOW_INTERVAL_US: u64 = 20_000;
/// The data leader mirrors its in-sync sets every this many lease rounds
/// (`MIRROR_EVERY_ROUNDS`).
const MIRROR_EVERY_ROUNDS: u64 = 5;
/// How often the data leader renews its lease (`LEASE_RENEW_INTERVAL`).
const LEASE_RENEW_INTERVAL_US: u64 = 100_000;
/// How often a data leader that leads the controller too hands the controller over.
const HAND_OFF_INTERVAL_US: u64 = 2_000_000;
/// The controller's election timeout is drawn in this range (`ELECTION_TIMEOUT_*_MS`).
const ELECTION_TIMEOUT_MIN_US: u64 = 200_000;
const ELECTION_TIMEOUT_MAX_US: u64 = 400_000;
/// How long a proposal whose proposer cannot reach a majority waits before it looks again.
const COMMIT_RETRY_US: u64 = 50_000;
/// A proposal passed on towards the controller's leader is asked again this often, for this
/// long, while there is no leader to take it (`propose_anywhere`, `PROPOSE_RETRY`).
const PROPOSE_AGAIN_US: u64 = 50_000;
const PROPOSE_RETRY_US: u64 = 3_000_000;

/// What the data leader answers the controller's probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaderHealth {
    /// It leads at the controller's epoch, or promotes itself to.
    Serving,
    /// Its node is down: nothing listens on its port.
    Gone,
    /// Its appointed promotion failed, or it is idle having seen the controller's epoch.
    Failed,
    /// No answer, or it leads another epoch: replaced once its lease surely ran out.
    Unknown,
}

impl World {
    /// Makes the controller from the initial cluster: `Init` led by n0, a `Join` of every
    /// other node. Every node then carries out what it says.
    pub(super) fn start_controller(&mut self) {
        let founders: Vec<Founder> = self
            .nodes
            .iter()
            .map(|node| Founder {
                node: node.id,
                name: node.member.name.clone(),
                peer_address: node.member.address.clone(),
                learner: node.learner,
            })
            .collect();
        let tag_id = u128::from(self.config.seed);
        let controller =
            Controller::new(&founders, tag_id, self.config.partitions, self.config.min_insync);
        let state = controller.committed().clone();
        self.controller = Some(controller);
        if let Some(leader) = state.data_leader.as_deref().and_then(|name| self.node_named(name)) {
            self.appointed(leader, state.leader_epoch);
        }
        for node in 0..self.nodes.len() {
            self.schedule(0, Event::Follow { node, incarnation: 0 });
        }
        self.schedule(PROBE_INTERVAL_US, Event::ControllerTick);
    }

    /// Whether `node` may take writes: always with a person operating the cluster; under the
    /// controller, while its lease runs.
    pub(super) fn serves_under_lease(&self, node: usize) -> bool {
        self.controller.is_none() || self.nodes[node].failover.lease_until_us > self.now
    }

    /// Whether `node` reaches a controller's leader that can commit (always, with a person
    /// operating the cluster).
    pub(super) fn controller_answers(&self, node: usize) -> bool {
        let Some(controller) = &self.controller else { return true };
        controller
            .leader()
            .is_some_and(|leader| self.reachable(node, leader) && self.leads_controller(leader))
    }

    /// A running node's periodic part in automatic failover.
    pub(super) fn failover_tick(&mut self, node: usize) {
        let memory = &mut self.nodes[node].failover;
        if self.now >= memory.next_follow_us {
            memory.next_follow_us = self.now + FOLLOW_INTERVAL_US;
            self.follow_controller(node);
        }
        let memory = &mut self.nodes[node].failover;
        if self.now >= memory.next_lease_us {
            memory.next_lease_us = self.now + LEASE_RENEW_INTERVAL_US;
            self.renew_lease(node);
        }
    }

    // ----- the controller's leader -----

    /// Every probe interval: the controller keeps or changes its leader, which replicates
    /// the log, hands the controller over or watches the data leader.
    pub(super) fn controller_tick(&mut self) {
        self.schedule(PROBE_INTERVAL_US, Event::ControllerTick);
        let Some(leader) = self.controller_leader() else { return };
        self.replicate_controller_log(leader);
        if self.hand_off(leader) {
            return;
        }
        self.watch_data_leader(leader);
    }

    /// Whether `node` can lead the controller: it runs and reaches a majority of the voters.
    fn leads_controller(&self, node: usize) -> bool {
        let Some(controller) = &self.controller else { return false };
        let reached =
            controller.voters().iter().filter(|voter| self.reachable(node, **voter)).count();
        self.nodes[node].running() && reached >= controller.majority()
    }

    /// The controller's leader, if one can lead now; elects another once the election timeout
    /// ran out on a leader that cannot.
    fn controller_leader(&mut self) -> Option<usize> {
        let current = self.controller.as_ref()?.leader();
        if let Some(leader) = current.filter(|leader| self.leads_controller(*leader)) {
            self.controller.as_mut()?.leader_holds();
            return Some(leader);
        }
        let now = self.now;
        let random = &mut self.random;
        let timeout = || random.between(ELECTION_TIMEOUT_MIN_US, ELECTION_TIMEOUT_MAX_US);
        if !self.controller.as_mut()?.leader_lost(now, timeout) {
            return None;
        }
        let voters = self.controller.as_ref()?.voters().to_vec();
        let candidates: Vec<usize> =
            voters.into_iter().filter(|voter| self.leads_controller(*voter)).collect();
        if candidates.is_empty() {
            return None;
        }
        let elected = candidates[self.random.index(candidates.len())];
        self.elect_controller_leader(elected);
        Some(elected)
    }

    /// `node` leads the controller's next term. Each proposal of an earlier term reached its
    /// log or not (drawn); those that did commit with its first entry.
    fn elect_controller_leader(&mut self, node: usize) {
        let Some(controller) = self.controller.as_mut() else { return };
        let earlier = controller.elect(node, self.now);
        let term = controller.term();
        self.note(format!("controller: n{node} leads term {term}"));
        for proposal in earlier {
            if self.random.chance(1, 2) {
                let what = proposal.command.to_string();
                self.note(format!("controller: n{node} commits {what} of an earlier term"));
                self.commit_command(proposal.command);
            }
        }
    }

    /// Every member the leader reaches learns the whole committed log.
    fn replicate_controller_log(&mut self, leader: usize) {
        let Some(controller) = self.controller.as_mut() else { return };
        let members = controller.members().to_vec();
        for member in members {
            if !self.reachable(leader, member) {
                continue;
            }
            let learned = self.controller.as_mut().is_some_and(|model| model.catch_up(member));
            if learned {
                let incarnation = self.nodes[member].incarnation;
                self.schedule(0, Event::Follow { node: member, incarnation });
            }
        }
    }

    /// A data leader that leads the controller too hands the controller over now and then
    /// (to a voter that holds the whole log), so that losing one node never loses both.
    fn hand_off(&mut self, leader: usize) -> bool {
        let Some(controller) = &self.controller else { return false };
        let named = controller.committed().data_leader.as_deref();
        let memory = &self.nodes[leader].failover;
        let due = self.now.saturating_sub(memory.handed_off_at_us) > HAND_OFF_INTERVAL_US;
        let leads_data = named == Some(self.nodes[leader].name());
        if !leads_data || !due || self.nodes[leader].role != Role::Leader {
            return false;
        }
        let target = controller.voters().iter().copied().find(|voter| {
            *voter != leader
                && self.reachable(leader, *voter)
                && controller.view(*voter) == controller.committed()
                && self.leads_controller(*voter)
        });
        self.nodes[leader].failover.handed_off_at_us = self.now;
        let Some(target) = target else { return false };
        self.note(format!("controller: n{leader} hands the controller over to n{target}"));
        self.elect_controller_leader(target);
        true
    }

    /// Replaces the data leader when it is lost (module doc).
    fn watch_data_leader(&mut self, leader: usize) {
        let Some(controller) = &self.controller else { return };
        if self.now < self.nodes[leader].failover.watch_resumes_us || controller.proposing(leader) {
            return;
        }
        let since = controller.leading_since_us();
        let state = controller.committed().clone();
        let Some(data_leader) = state.data_leader.clone() else { return };
        let health = self.probe(leader, &state, &data_leader);
        let confirmed = self.nodes[leader].failover.lease_confirmed_us.max(since);
        let silent_too_long =
            self.now.saturating_sub(confirmed) > self.config.failover_timeout_ms * 1000;
        let replace = match health {
            LeaderHealth::Serving => false,
            LeaderHealth::Gone | LeaderHealth::Failed => true,
            LeaderHealth::Unknown => silent_too_long,
        };
        if replace {
            let epoch = state.leader_epoch;
            self.note(format!(
                "controller: n{leader} finds the data leader {data_leader} lost ({health:?}) \
                 at epoch {epoch}"
            ));
            self.fail_over(leader, &state);
        }
    }

    /// What the data leader `name` answers the controller's leader.
    fn probe(&self, leader: usize, state: &ClusterState, name: &str) -> LeaderHealth {
        let Some(node) = self.node_named(name) else { return LeaderHealth::Gone };
        let pair = (leader.min(node), leader.max(node));
        if node != leader {
            if self.cut.contains(&pair) {
                return LeaderHealth::Unknown;
            }
            if !self.nodes[node].up {
                return LeaderHealth::Gone;
            }
            if self.nodes[node].paused {
                return LeaderHealth::Unknown;
            }
        }
        match self.nodes[node].failover.status {
            Some(AppointedStatus::Promoting) => return LeaderHealth::Serving,
            Some(AppointedStatus::Failed) => return LeaderHealth::Failed,
            None => {}
        }
        match self.nodes[node].leader_epoch() {
            Some(epoch) if epoch == state.leader_epoch => LeaderHealth::Serving,
            Some(_) => LeaderHealth::Unknown,
            None if self.nodes[node].highest_fence() >= state.leader_epoch => LeaderHealth::Failed,
            None => LeaderHealth::Unknown,
        }
    }

    /// Appoints the best member the promotion guard accepts, from the reports of every
    /// member the controller's leader reaches.
    fn fail_over(&mut self, leader: usize, state: &ClusterState) {
        let reports: Vec<_> = (0..self.nodes.len())
            .filter(|member| self.reachable(leader, *member))
            .map(|member| self.nodes[member].report())
            .collect();
        match plan_succession(state, &reports, self.config.mutations) {
            Ok(appoint) => {
                self.note(format!("controller: n{leader} proposes {appoint:?}"));
                let Some(controller) = self.controller.as_mut() else { return };
                let proposal = controller.propose(leader, appoint, Purpose::Appointment);
                let round_trip = self.latency() + self.latency();
                self.schedule(round_trip, Event::ControllerCommit { proposal });
            }
            Err(nobody) => {
                self.note(format!("controller: n{leader} appoints nobody: {nobody}"));
                self.nodes[leader].failover.watch_resumes_us = self.now + RETRY_INTERVAL_US;
            }
        }
    }

    /// A proposal commits if its proposer still leads the controller in the term it proposed
    /// in and reaches a majority; it waits while the proposer leads but cannot. A set
    /// recorded for a controlled leader is answered.
    pub(super) fn controller_commit(&mut self, id: u64) {
        let Some(controller) = &self.controller else { return };
        let Some(proposal) = controller.proposal(id) else { return };
        let proposer = proposal.proposer;
        let current = controller.leader() == Some(proposer) && controller.term() == proposal.term;
        if current && !self.leads_controller(proposer) {
            self.schedule(COMMIT_RETRY_US, Event::ControllerCommit { proposal: id });
            return;
        }
        let Some(proposal) = self.controller.as_mut().and_then(|model| model.take_proposal(id))
        else {
            return;
        };
        let watched = proposal.watched();
        let applied = current && self.commit_command(proposal.command);
        if let Purpose::Record { node, incarnation, part, version } = proposal.purpose {
            self.answer_record(proposer, (node, incarnation, part), version, applied);
        }
        if !watched {
            return;
        }
        let memory = &mut self.nodes[proposer].failover;
        if applied {
            // The new leader gets a whole timeout to promote itself.
            memory.lease_confirmed_us = self.now;
        } else {
            memory.watch_resumes_us = self.now + RETRY_INTERVAL_US;
        }
    }

    /// Commits `command` (the controller's leader can); whether it applied. Every member the
    /// leader reaches learns of it.
    fn commit_command(&mut self, command: Command) -> bool {
        let Some(controller) = self.controller.as_mut() else { return false };
        let what = command.to_string();
        let outcome = controller.apply(command);
        let applied = match outcome {
            Ok(effects) => {
                self.note(format!("controller: commits {what}"));
                for effect in effects {
                    if let Effect::NewLeader { leader, epoch } = effect {
                        if let Some(node) = self.node_named(&leader) {
                            self.appointed(node, epoch);
                        }
                    }
                }
                true
            }
            Err(refusal) => {
                self.note(format!("controller: {what} refused: {refusal}"));
                false
            }
        };
        if let Some(leader) = self.controller.as_ref().and_then(Controller::leader) {
            self.replicate_controller_log(leader);
        }
        applied
    }

    /// The controller named `node` data leader at `epoch`: the checker sees it, and no other
    /// leader may still serve under a lease.
    fn appointed(&mut self, node: usize, epoch: Epoch) {
        self.appointments += 1;
        self.note(format!("controller: n{node} is appointed at epoch {epoch}"));
        self.checker.controller_appointed(node, epoch);
        for other in 0..self.nodes.len() {
            let target = &self.nodes[other];
            let leads = target.up && target.role == Role::Leader;
            let serves = target.failover.lease_until_us > self.now;
            if self.config.check_leases && other != node && leads && serves {
                let until = target.failover.lease_until_us;
                self.checker.lease_outlived(other, until, self.now, node, epoch);
            }
        }
    }

    // ----- every member -----

    /// Carries out the controller's state as `node` learned it (`carry_out`).
    pub(super) fn follow_controller(&mut self, node: usize) {
        let Some(controller) = &self.controller else { return };
        let view = controller.view(node);
        let me = self.nodes[node].name();
        let (Some(_), Some(leader)) = (view.members.get(me), view.data_leader.as_deref()) else {
            return;
        };
        let epoch = view.leader_epoch;
        if leader == me {
            // A node leads an epoch once: one that has seen it already (it led it and then
            // restarted, or its promotion to it failed half-way) waits to be replaced.
            let memory = &self.nodes[node].failover;
            if self.nodes[node].highest_fence() >= epoch || memory.tried == Some(epoch) {
                return;
            }
            self.nodes[node].failover.tried = Some(epoch);
            self.lead_appointed(node, epoch);
            return;
        }
        let Some(leader) = self.node_named(leader) else { return };
        // Only once the new leader leads: leaving the old one earlier would change its
        // in-sync sets under the new leader's promotion, which then fails.
        if !self.follows(node, leader) && self.leads_at(node, leader, epoch) {
            self.leave_role(node);
            self.repoint(node, leader);
        }
    }

    /// Whether `leader` answers `node` that it leads at `epoch` or later (`leads_at`).
    fn leads_at(&self, node: usize, leader: usize, epoch: Epoch) -> bool {
        let target = &self.nodes[leader];
        self.reachable(node, leader)
            && target.failover.status.is_none()
            && target.leader_epoch().is_some_and(|own| own >= epoch)
    }

    /// Whether `node` follows `leader` and `leader` knows it. (The runtime's `carry_out`
    /// checks only the role and the leader's address, so a follower of a leader that
    /// restarted and was appointed again stays unregistered; the simulator re-points it, as
    /// the manual operator does.)
    fn follows(&self, node: usize, leader: usize) -> bool {
        let name = self.nodes[node].name();
        let registered = self.nodes[leader]
            .membership
            .as_ref()
            .is_some_and(|membership| membership.get(name).is_some());
        let following = matches!(self.nodes[node].role,
            Role::Follower { leader: of } | Role::Learner { leader: of } if of == leader);
        registered && following
    }

    /// The node stops leading or following (admin mode), as a member does before it follows
    /// the controller's leader.
    fn leave_role(&mut self, node: usize) {
        match self.nodes[node].role {
            Role::Leader => self.step_down(node),
            Role::Follower { .. } | Role::Learner { .. } => {
                self.nodes[node].role = Role::Admin;
                for part in 0..self.config.partitions {
                    if let Some(id) = self.nodes[node].parts[part].link {
                        self.close_link(id, Some(node));
                        self.replica_closed(node, part, id);
                    }
                }
            }
            Role::Admin => {}
        }
    }

    /// The node promotes itself, appointed at `epoch`: the guard and both phases.
    fn lead_appointed(&mut self, node: usize, epoch: Epoch) {
        let busy = self.in_flight.values().any(|promotion| promotion.candidate == node);
        if busy || self.nodes[node].learner {
            return;
        }
        self.note(format!("n{node}: appointed at epoch {epoch}, promotes itself"));
        self.nodes[node].failover.status = Some(AppointedStatus::Promoting);
        match self.plan_appointed(node, epoch) {
            Ok(plan) => self.launch_promotion(node, plan, Some(epoch)),
            Err(refusal) => {
                self.note(format!("n{node}: appointed promotion refused: {refusal}"));
                self.nodes[node].failover.status = Some(AppointedStatus::Failed);
            }
        }
    }

    /// The appointee's guard, as `control/src/promotion.rs` runs it: the sets the controller
    /// recorded, as this node learned them, decide (`plan_appointment`).
    fn plan_appointed(&self, node: usize, at_least: Epoch) -> Result<PromotionPlan, String> {
        let Some(controller) = &self.controller else {
            return Err("no controller".into());
        };
        let recorded = controller.view(node).recorded_members(None);
        let own = self.nodes[node].report();
        let others: Vec<_> = (0..self.nodes.len())
            .filter(|other| *other != node && self.reachable(node, *other))
            .map(|other| self.nodes[other].report())
            .collect();
        plan_appointment(&own, &others, at_least, &recorded, self.config.mutations)
            .map_err(|refusal| refusal.to_string())
    }

    /// An appointed promotion succeeded: the node leads with a fresh lease.
    pub(super) fn led_appointed(&mut self, node: usize, epoch: Epoch, appointed: Epoch) {
        let lease_us = self.lease_us();
        let memory = &mut self.nodes[node].failover;
        memory.status = None;
        memory.lease_until_us = self.now + lease_us;
        self.checker.led_appointed(node, epoch, appointed);
    }

    /// The lease a confirmation gives: two thirds of the failover timeout.
    fn lease_us(&self) -> u64 {
        self.config.failover_timeout_ms * 1000 * 2 / 3
    }

    /// A leading node confirms with the controller's leader that it still leads at its epoch
    /// (`keep_lease`): its lease is renewed, ended (the controller names another), or left to
    /// run out (no answer, no majority).
    fn renew_lease(&mut self, node: usize) {
        self.nodes[node].failover.lease_rounds += 1;
        let Some(epoch) = self.nodes[node].leader_epoch() else { return };
        let Some(controller) = &self.controller else { return };
        let Some(leader) = controller.leader() else { return };
        if !self.reachable(node, leader) || !self.leads_controller(leader) {
            return;
        }
        let state = controller.committed();
        let named = state.data_leader.as_deref() == Some(self.nodes[node].name());
        if named && state.leader_epoch == epoch {
            let lease_us = self.lease_us();
            self.nodes[node].failover.lease_until_us = self.now + lease_us;
            self.nodes[leader].failover.lease_confirmed_us = self.now;
            if self.nodes[node].failover.lease_rounds.is_multiple_of(MIRROR_EVERY_ROUNDS) {
                self.mirror_in_sync_sets(node, leader, epoch);
            }
        } else if self.nodes[node].failover.lease_until_us > 0 {
            let named = state.data_leader.clone().unwrap_or_default();
            let current = state.leader_epoch;
            self.note(format!("n{node}: lease refused: the controller names {named} at {current}"));
            self.nodes[node].failover.lease_until_us = 0;
        }
    }

    /// The data leader `node` proposes, through the controller's leader, the in-sync sets it
    /// recorded at `epoch` where they differ from the controller's as it learned them.
    fn mirror_in_sync_sets(&mut self, node: usize, leader: usize, epoch: Epoch) {
        let Some(controller) = &self.controller else { return };
        let view = controller.view(node);
        if view.data_leader.as_deref() != Some(self.nodes[node].name())
            || view.leader_epoch != epoch
        {
            return;
        }
        let mut commands = Vec::new();
        for (index, part) in self.nodes[node].parts.iter().enumerate() {
            let Some(set) = &part.disk.facts.in_sync else { continue };
            let Some(record) = view.partitions.get(index) else { continue };
            let mut names = vec![self.nodes[node].name().to_string()];
            let followers = set.members.iter().map(|member| &member.name);
            names.extend(followers.filter(|name| *name != self.nodes[node].name()).cloned());
            if set.leader_epoch != epoch || set.isr_epoch <= record.isr_epoch {
                continue;
            }
            commands.push(Command::RecordInSync {
                partition: crate::node::partition_id(index),
                epoch,
                version: set.isr_epoch,
                in_sync: names,
            });
        }
        for command in commands {
            let Some(controller) = self.controller.as_mut() else { return };
            let proposal = controller.propose(leader, command, Purpose::Mirror);
            let round_trips = self.latency() + self.latency() + self.latency() + self.latency();
            self.schedule(round_trips, Event::ControllerCommit { proposal });
        }
    }

    /// Partition `part` of `node` asks the controller to record this version of its set
    /// (`record_in_sync`, on a controlled leader's `RecordWithController`): the request goes
    /// to the controller's leader. As `propose_anywhere` does, the node asks again every 50 ms,
    /// for 3 s from `started_us`, while the controller has no leader or the one it has is
    /// down; a leader cut off from it never answers (the runtime's request times out), and
    /// the partition's own retry covers that.
    pub(super) fn record_in_sync(
        &mut self,
        node: usize,
        part: usize,
        set: InSyncSet,
        started_us: u64,
    ) {
        let Some(controller) = &self.controller else {
            panic!("n{node} p{part}: a leader not under a controller asked it to record {set}");
        };
        let first = started_us == self.now;
        let incarnation = self.nodes[node].incarnation;
        let known = controller.leader().filter(|leader| self.nodes[*leader].up);
        let Some(leader) = known else {
            if first {
                self.note(format!("n{node} p{part}: no controller's leader to record {set} yet"));
            }
            if self.now + PROPOSE_AGAIN_US <= started_us + PROPOSE_RETRY_US {
                let set = Box::new(set);
                let again = Event::RecordInSync { node, incarnation, part, set, started_us };
                self.schedule(PROPOSE_AGAIN_US, again);
            }
            return;
        };
        if !self.reachable_or_paused(node, leader) {
            if first {
                self.note(format!("n{node} p{part}: cannot reach n{leader} to record {set}"));
            }
            return;
        }
        self.note(format!("n{node} p{part}: asks the controller (n{leader}) to record {set}"));
        let delay = if leader == node { 0 } else { self.latency() };
        let set = Box::new(set);
        let at = self.nodes[leader].incarnation;
        let from_incarnation = incarnation;
        let arrives = Event::RecordArrives {
            node: leader,
            incarnation: at,
            from: node,
            from_incarnation,
            part,
            set,
        };
        self.schedule(delay, arrives);
    }

    /// A request to record `set` reaches `node`: if it still leads the controller, it
    /// proposes `RecordInSync`, which commits a round trip later if it still can; if not, the
    /// request fails.
    pub(super) fn record_arrives(
        &mut self,
        node: usize,
        (from, from_incarnation, part): (usize, u64, usize),
        set: InSyncSet,
    ) {
        let asker = (from, from_incarnation, part);
        let version = set.version();
        let Some(controller) = self.controller.as_mut() else { return };
        if controller.leader() != Some(node) {
            self.answer_record(node, asker, version, false);
            return;
        }
        let leader = &set.leader;
        let mut in_sync = vec![leader.clone()];
        let followers = set.members.iter().map(|member| &member.name);
        in_sync.extend(followers.filter(|name| *name != leader).cloned());
        let command = Command::RecordInSync {
            partition: partition_id(part),
            epoch: version.0,
            version: version.1,
            in_sync,
        };
        let purpose = Purpose::Record { node: from, incarnation: from_incarnation, part, version };
        let proposal = controller.propose(node, command, purpose);
        let round_trip = self.latency() + self.latency();
        self.schedule(round_trip, Event::ControllerCommit { proposal });
    }

    /// The controller's leader `proposer` committed a version a controlled leader asked it to
    /// record (or found it recorded already), or it did not (refused, or no longer leading):
    /// the answer travels back to `node`, unless the two cannot reach each other.
    fn answer_record(
        &mut self,
        proposer: usize,
        (node, incarnation, part): (usize, u64, usize),
        version: (Epoch, u64),
        recorded: bool,
    ) {
        if !self.reachable_or_paused(proposer, node) {
            let (epoch, isr_epoch) = version;
            self.note(format!(
                "controller: n{proposer} cannot answer n{node} p{part} about {epoch}/{isr_epoch}"
            ));
            return;
        }
        let delay = if node == proposer { 0 } else { self.latency() };
        let answer = Event::RecordAnswer { node, incarnation, part, version, recorded };
        self.schedule(delay, answer);
    }

    /// The controller's answer about `version` reaches `node` (up, in the life that asked);
    /// the partition hears of it only if it still leads at that epoch. Recorded: it hears so.
    /// Not recorded: if the controller's state as the node learned it holds that version or a
    /// later one of that epoch, it hears that the controller refused (and numbers its set
    /// above); otherwise nothing (it asks again a second later).
    pub(super) fn record_answered(
        &mut self,
        node: usize,
        part: usize,
        version: (Epoch, u64),
        recorded: bool,
    ) {
        let (leader_epoch, isr_epoch) = version;
        let leads = self.nodes[node].role == Role::Leader
            && matches!(&self.nodes[node].parts[part].machine,
                Machine::Leader(leader) if leader.epoch() == leader_epoch);
        if !leads {
            return;
        }
        let event = if recorded {
            self.note(format!(
                "n{node} p{part}: the controller recorded {leader_epoch}/{isr_epoch}"
            ));
            LeaderEvent::ControllerRecorded { leader_epoch, isr_epoch }
        } else {
            let Some(controller) = &self.controller else { return };
            let view = controller.view(node);
            let Some(record) = view.partitions.get(part) else { return };
            if view.leader_epoch != leader_epoch || record.isr_epoch < isr_epoch {
                return;
            }
            let recorded = record.isr_epoch;
            self.note(format!(
                "n{node} p{part}: the controller refused {leader_epoch}/{isr_epoch}: it holds \
                 {leader_epoch}/{recorded}"
            ));
            LeaderEvent::ControllerRefused { leader_epoch, isr_epoch, recorded }
        };
        self.leader_step(node, part, event);
    }

    // ----- faults aimed at the controller -----

    /// One of the nemesis's moves under automatic failover (`choice` in `0..14`).
    pub(super) fn controller_nemesis(&mut self, choice: u64, heal: u64) {
        let leader = self.controller.as_ref().and_then(Controller::leader);
        let data_leader = self.controller.as_ref().and_then(|controller| {
            controller.committed().data_leader.as_deref().and_then(|name| self.node_named(name))
        });
        match choice {
            0..=2 => self.fault(leader, heal),
            3..=5 => self.fault(data_leader, heal),
            6..=8 => self.separate(leader, data_leader, heal),
            9..=11 => self.split(heal),
            _ => {
                // A pause about as long as the controller's election timeout.
                let short = self.random.between(100_000, 600_000);
                if let Some(leader) = leader {
                    self.pause(leader, short);
                }
            }
        }
    }

    /// Crashes, pauses or cuts off `node`.
    fn fault(&mut self, node: Option<usize>, heal: u64) {
        let Some(node) = node else { return };
        match self.random.below(3) {
            0 => self.crash(node, heal),
            1 => self.pause(node, heal),
            _ => self.isolate(node, heal),
        }
    }

    /// The controller's leader and the data leader lose each other (or, when one node is
    /// both, it loses one other node): each still reaches the rest.
    fn separate(&mut self, leader: Option<usize>, data_leader: Option<usize>, heal: u64) {
        let Some(first) = leader.or(data_leader) else { return };
        let second = match data_leader.filter(|node| *node != first) {
            Some(second) => second,
            None => {
                let others: Vec<usize> = (0..self.nodes.len()).filter(|n| *n != first).collect();
                others[self.random.index(others.len())]
            }
        };
        self.note(format!("n{first} and n{second} lose each other"));
        self.cut_pair(first, second, heal);
    }

    /// The network splits the nodes in two sides at random.
    fn split(&mut self, heal: u64) {
        let count = self.nodes.len();
        let mut side: Vec<bool> = (0..count).map(|_| self.random.chance(1, 2)).collect();
        if side.iter().all(|one| *one == side[0]) {
            let flipped = self.random.index(count);
            side[flipped] = !side[flipped];
        }
        let left: Vec<usize> = (0..count).filter(|node| side[*node]).collect();
        self.note(format!("the network splits {left:?} from the others"));
        for first in 0..count {
            for second in first + 1..count {
                if side[first] != side[second] {
                    self.cut_pair(first, second, heal);
                }
            }
        }
    }

    /// `first` and `second` cannot reach each other until `heal` has passed; the streams
    /// between them break.
    fn cut_pair(&mut self, first: usize, second: usize, heal: u64) {
        let pair = (first.min(second), first.max(second));
        self.cut.insert(pair);
        self.schedule(heal, Event::Rejoin { first: pair.0, second: pair.1 });
        let crossing: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, link)| {
                let ends = (link.replica.min(link.leader), link.replica.max(link.leader));
                (link.open[0] || link.open[1]) && ends == pair
            })
            .map(|(id, _)| *id)
            .collect();
        for id in crossing {
            self.close_link(id, None);
        }
    }
}
