//! Whether a member may become leader, decided from what the members it reached report, and
//! with which epoch and first in-sync sets.
//!
//! The rule, per partition: take the newest set any answering member recorded (versions order
//! by `(leader_epoch, isr_epoch)`). The candidate must belong to it, and every member of it
//! other than its leader and the candidate must have answered. Why that is enough: a leader
//! records a new version on every member of the new set before acting on it, and never records
//! one smaller than `min_insync_replicas`; so with `min_insync_replicas` ≥ 2 any newer version
//! than the one seen would be known to one of the members asked. And the leader waits, for
//! every write it acknowledges, for every member of every version it recorded or proposed; so a
//! member of the newest version holds every acknowledged write. With `min_insync_replicas` = 1
//! a leader left alone records a set of itself and acknowledges alone, which only it knows.
//!
//! The new epoch is higher than every epoch any answering member has seen, and every answering
//! member must accept it (record it durably as its fence) before the candidate leads, so two
//! promotions never lead with one epoch: each member accepts an epoch once.
//!
//! Forcing skips the set checks (Kafka's unclean election): the candidate leads with a set of
//! itself, and the plan says how many records it lacks that some member reported durable. A
//! forced promotion may not have reached a member that led the next epoch already, and two
//! leaders of one epoch would break the agreement of logs by epoch; so a forced epoch jumps
//! ahead by a random amount the caller draws ([`Guard::Forced`]).

/// Whether a promotion is checked, or forced by the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    Checked,
    /// Checked, at an epoch of at least `at_least`: the controller appointed this member at
    /// that epoch (it only ever hands out one epoch per leader).
    Appointed {
        at_least: Epoch,
    },
    /// `salt`: a random number; the new epoch is raised by `salt % FORCED_EPOCH_JUMP`.
    Forced {
        salt: u64,
    },
}

/// The range of the random jump of a forced epoch.
pub const FORCED_EPOCH_JUMP: u64 = 1 << 24;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::ids::{Epoch, Lsn, PartitionId};
use crate::replication::in_sync::{InSyncSet, Member};
use crate::replication::mutations::{Mutation, Mutations};

/// What one member reports of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReport {
    pub partition: PartitionId,
    /// The highest epoch it has seen.
    pub fence: Epoch,
    /// The newest set it recorded.
    pub in_sync: Option<InSyncSet>,
    /// The last LSN durable in its log.
    pub durable_lsn: Lsn,
    /// Why its log failed, if it did (it takes no writes until the node restarts).
    pub failed: Option<String>,
}

/// What one member reports of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberReport {
    pub member: Member,
    pub learner: bool,
    pub partitions: Vec<PartitionReport>,
}

impl MemberReport {
    /// The highest epoch it has seen: its fences and the epochs of the sets it recorded.
    #[must_use]
    pub fn highest_epoch(&self) -> Epoch {
        let fences = self.partitions.iter().map(|report| report.fence);
        let sets = self.partitions.iter().filter_map(|report| report.in_sync.as_ref());
        fences.chain(sets.map(|set| set.leader_epoch)).max().unwrap_or(Epoch(0))
    }

    fn partition(&self, partition: PartitionId) -> Option<&PartitionReport> {
        self.partitions.iter().find(|report| report.partition == partition)
    }
}

/// What a promotion does when it is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromotionPlan {
    pub epoch: Epoch,
    /// Members that must accept the epoch (record it as their fence) before the candidate
    /// leads: every member that answered.
    pub required: BTreeSet<String>,
    /// Each partition's first set under the new epoch.
    pub sets: BTreeMap<PartitionId, InSyncSet>,
    /// Each partition's newest set version the plan was made on: a member that recorded a
    /// newer one since refuses the epoch (the old leader changed its set meanwhile), so the
    /// promotion fails rather than lead with a set that lacks what that change committed.
    /// `None` for a forced promotion, which checks nothing.
    pub basis: BTreeMap<PartitionId, Option<(Epoch, u64)>>,
    /// Records, summed over partitions, that some answering member holds durably beyond the
    /// candidate's log (what a forced promotion may lose).
    pub records_behind: u64,
    pub forced: bool,
}

/// Why a promotion is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromotionRefusal {
    Learner,
    /// A partition's log failed here: it can make nothing durable until the node restarts.
    LogFailed {
        partition: PartitionId,
        reason: String,
    },
    /// No other member answered: nothing tells whether the candidate is in sync.
    NobodyReached,
    NotInSync {
        partition: PartitionId,
        set: InSyncSet,
    },
    /// Members have seen epochs, but none that answered recorded a set of the partition.
    NoSetKnown {
        partition: PartitionId,
    },
    Unreached {
        partition: PartitionId,
        set: InSyncSet,
        missing: Vec<String>,
    },
    /// Appointed: the candidate is not in the set the controller recorded for the partition.
    NotInControllerSet {
        partition: PartitionId,
        members: Vec<String>,
    },
    /// Appointed at `appointed`, but a member has seen `seen`, as high or higher: another
    /// leader was appointed since (this node's view of the controller is old), or an earlier
    /// attempt of this promotion got that far. The controller appoints again.
    AppointmentOutdated {
        appointed: Epoch,
        seen: Epoch,
    },
}

impl PromotionRefusal {
    /// Whether `force` would override this refusal.
    #[must_use]
    pub fn forceable(&self) -> bool {
        !matches!(self, PromotionRefusal::Learner | PromotionRefusal::LogFailed { .. })
    }
}

impl fmt::Display for PromotionRefusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromotionRefusal::Learner => write!(formatter, "a learner cannot lead"),
            PromotionRefusal::LogFailed { partition, reason } => write!(
                formatter,
                "the log of partition {partition} failed on this node ({reason}); restart it \
                 before it leads"
            ),
            PromotionRefusal::NobodyReached => write!(
                formatter,
                "no other member of the cluster answered, so nothing tells whether this node \
                 holds every acknowledged write"
            ),
            PromotionRefusal::NotInSync { partition, set } => write!(
                formatter,
                "this node is not in the in-sync set of partition {partition}: the newest any \
                 member recorded is {set}"
            ),
            PromotionRefusal::NoSetKnown { partition } => write!(
                formatter,
                "no member that answered recorded an in-sync set of partition {partition}, though \
                 the cluster has led epochs: the members that did are out of reach"
            ),
            PromotionRefusal::AppointmentOutdated { appointed, seen } => write!(
                formatter,
                "appointed at epoch {appointed}, but a member has seen epoch {seen} already: \
                 the controller appoints again"
            ),
            PromotionRefusal::NotInControllerSet { partition, members } => write!(
                formatter,
                "this node is not in the in-sync set the controller recorded for partition \
                 {partition}: {}",
                members.join(", ")
            ),
            PromotionRefusal::Unreached { partition, set, missing } => write!(
                formatter,
                "cannot reach {} of the in-sync set of partition {partition}, {set}, so a newer \
                 set may exist",
                missing.join(", ")
            ),
        }
    }
}

/// Decides whether `candidate` may lead, given the reports of the members that answered
/// (`others`, the candidate excluded) and the cluster's `min_insync_replicas`.
///
/// # Errors
///
/// The refusal, naming the partition and the set, when the candidate is a learner, reached
/// nobody, is not in the newest set, or did not reach a member of it (all but the learner case
/// are skipped with `force`).
pub fn plan_promotion(
    candidate: &MemberReport,
    others: &[MemberReport],
    guard: Guard,
    min_insync: usize,
    mutations: Mutations,
) -> Result<PromotionPlan, PromotionRefusal> {
    let force = matches!(guard, Guard::Forced { .. });
    may_lead_at_all(candidate)?;
    let unguarded = mutations.has(Mutation::PromoteOutOfSync);
    let no_fencing = mutations.has(Mutation::NoFencing);
    // A node that never saw an epoch nor recorded a set was never in a cluster: nothing
    // acknowledged can be lost by letting it start one.
    let fresh = candidate
        .partitions
        .iter()
        .all(|report| report.in_sync.is_none() && report.fence == Epoch(0));
    // With `min_insync_replicas` = 1 a leader left alone may have recorded a set of itself
    // and acknowledged alone, which only it knows: someone else must answer. With more, every
    // newer set is known to a follower of the newest one, whom the checks below require.
    if others.is_empty() && !force && !fresh && min_insync <= 1 {
        return Err(PromotionRefusal::NobodyReached);
    }
    let considered: &[MemberReport] = if no_fencing { &[] } else { others };
    let highest = considered.iter().map(MemberReport::highest_epoch).max().unwrap_or(Epoch(0));
    let jump = match guard {
        Guard::Checked | Guard::Appointed { .. } => 0,
        Guard::Forced { salt } => salt % FORCED_EPOCH_JUMP,
    };
    let computed = Epoch(highest.max(candidate.highest_epoch()).0 + 1 + jump);
    let epoch = match guard {
        Guard::Appointed { at_least } => computed.max(at_least),
        Guard::Checked | Guard::Forced { .. } => computed,
    };
    let mut sets = BTreeMap::new();
    let mut basis = BTreeMap::new();
    for own in &candidate.partitions {
        let set = if force {
            alone(candidate, epoch)
        } else {
            first_set(candidate, others, own.partition, epoch, unguarded)?
        };
        sets.insert(own.partition, set);
        let newest = (!force).then(|| newest_version(candidate, others, own.partition)).flatten();
        basis.insert(own.partition, newest);
    }
    let required = required_members(others, no_fencing);
    let records_behind = records_behind(candidate, others);
    Ok(PromotionPlan { epoch, required, sets, basis, records_behind, forced: force })
}

/// Decides whether `candidate`, appointed by the cluster's controller at epoch `appointed`,
/// may lead, given the reports of the members that answered (`others`) and the in-sync sets the
/// controller recorded (`recorded`, per partition). Under a controller a set takes effect only
/// once the controller recorded it, so the controller's set holds every member the leader
/// waited for, and a member's newer record is a proposal that never took effect: the
/// candidate must be in the controller's set of every partition, and its first set of each is
/// that set with it as leader (its old leader taken out by the caller). No member's newer
/// record refuses the epoch (`basis` is `None`): the controller's compare-and-set on the set
/// versions (`Command::Appoint`'s basis) took that role. It leads at exactly `appointed`: a
/// member that has seen that epoch or a higher one makes the appointment outdated (the
/// candidate's view of the controller may be old, as after a restart).
///
/// # Errors
///
/// The candidate is a learner, a log of it failed, it is not in a set the controller
/// recorded, or the appointment is outdated.
pub fn plan_appointment(
    candidate: &MemberReport,
    others: &[MemberReport],
    appointed: Epoch,
    recorded: &BTreeMap<PartitionId, Vec<Member>>,
    mutations: Mutations,
) -> Result<PromotionPlan, PromotionRefusal> {
    may_lead_at_all(candidate)?;
    let unguarded = mutations.has(Mutation::PromoteOutOfSync);
    let no_fencing = mutations.has(Mutation::NoFencing);
    let considered: &[MemberReport] = if no_fencing { &[] } else { others };
    let highest = considered.iter().map(MemberReport::highest_epoch).max().unwrap_or(Epoch(0));
    let seen = highest.max(candidate.highest_epoch());
    if seen >= appointed {
        return Err(PromotionRefusal::AppointmentOutdated { appointed, seen });
    }
    let epoch = appointed;
    let name = &candidate.member.name;
    let mut sets = BTreeMap::new();
    let mut basis = BTreeMap::new();
    for own in &candidate.partitions {
        let members = recorded.get(&own.partition).map_or(&[][..], Vec::as_slice);
        if !unguarded && !members.iter().any(|member| member.name == *name) {
            let members = members.iter().map(|member| member.name.clone()).collect();
            return Err(PromotionRefusal::NotInControllerSet { partition: own.partition, members });
        }
        let mut first: Vec<Member> =
            members.iter().filter(|member| member.name != *name).cloned().collect();
        first.push(candidate.member.clone());
        sets.insert(own.partition, InSyncSet::new(epoch, 0, name, first));
        basis.insert(own.partition, None);
    }
    let required = required_members(others, no_fencing);
    let records_behind = records_behind(candidate, others);
    Ok(PromotionPlan { epoch, required, sets, basis, records_behind, forced: false })
}

/// What no promotion lifts: a learner never leads, nor a node whose log failed (until it
/// restarts).
fn may_lead_at_all(candidate: &MemberReport) -> Result<(), PromotionRefusal> {
    if candidate.learner {
        return Err(PromotionRefusal::Learner);
    }
    if let Some(report) = candidate.partitions.iter().find(|report| report.failed.is_some()) {
        let reason = report.failed.clone().unwrap_or_default();
        return Err(PromotionRefusal::LogFailed { partition: report.partition, reason });
    }
    Ok(())
}

/// Every member that answered must accept the epoch (none under the `NoFencing` mutation).
fn required_members(others: &[MemberReport], no_fencing: bool) -> BTreeSet<String> {
    if no_fencing {
        return BTreeSet::new();
    }
    others.iter().map(|report| report.member.name.clone()).collect()
}

fn newest_version(
    candidate: &MemberReport,
    others: &[MemberReport],
    partition: PartitionId,
) -> Option<(Epoch, u64)> {
    std::iter::once(candidate)
        .chain(others)
        .filter_map(|report| report.partition(partition)?.in_sync.as_ref())
        .map(InSyncSet::version)
        .max()
}

/// The candidate's first set of a partition: the newest set's members but its old leader,
/// once the checks pass.
fn first_set(
    candidate: &MemberReport,
    others: &[MemberReport],
    partition: PartitionId,
    epoch: Epoch,
    unguarded: bool,
) -> Result<InSyncSet, PromotionRefusal> {
    let newest = std::iter::once(candidate)
        .chain(others)
        .filter_map(|report| report.partition(partition)?.in_sync.as_ref())
        .max_by_key(|set| set.version());
    let Some(newest) = newest else {
        let led = std::iter::once(candidate)
            .chain(others)
            .filter_map(|report| report.partition(partition))
            .any(|report| report.fence > Epoch(0));
        if led && !unguarded {
            return Err(PromotionRefusal::NoSetKnown { partition });
        }
        return Ok(alone(candidate, epoch));
    };
    let name = &candidate.member.name;
    if !unguarded {
        if !newest.contains(name) {
            return Err(PromotionRefusal::NotInSync { partition, set: newest.clone() });
        }
        let answered = |member: &Member| others.iter().any(|report| report.member == *member);
        let missing: Vec<String> = newest
            .followers()
            .filter(|member| member.name != *name && !answered(member))
            .map(|member| member.name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(PromotionRefusal::Unreached { partition, set: newest.clone(), missing });
        }
    }
    let mut members: Vec<Member> = newest
        .members
        .iter()
        .filter(|member| member.name != newest.leader && member.name != *name)
        .cloned()
        .collect();
    members.push(candidate.member.clone());
    Ok(InSyncSet::new(epoch, 0, name, members))
}

fn alone(candidate: &MemberReport, epoch: Epoch) -> InSyncSet {
    InSyncSet::new(epoch, 0, &candidate.member.name, vec![candidate.member.clone()])
}

fn records_behind(candidate: &MemberReport, others: &[MemberReport]) -> u64 {
    candidate
        .partitions
        .iter()
        .map(|own| {
            let most = others
                .iter()
                .filter_map(|report| report.partition(own.partition))
                .map(|report| report.durable_lsn)
                .max()
                .unwrap_or(Lsn::ZERO);
            most.0.saturating_sub(own.durable_lsn.0)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Member {
        Member { name: name.into(), address: format!("10.0.0.{}:1", name.len()) }
    }

    fn set(epoch: u64, version: u64, leader: &str, names: &[&str]) -> InSyncSet {
        InSyncSet::new(
            Epoch(epoch),
            version,
            leader,
            names.iter().map(|name| member(name)).collect(),
        )
    }

    fn report(name: &str, fence: u64, in_sync: Option<InSyncSet>, durable: u64) -> MemberReport {
        let partition = PartitionReport {
            partition: PartitionId(0),
            fence: Epoch(fence),
            in_sync,
            durable_lsn: Lsn(durable),
            failed: None,
        };
        MemberReport { member: member(name), learner: false, partitions: vec![partition] }
    }

    #[test]
    fn a_member_of_the_newest_set_that_reached_the_others_leads_with_them() {
        let old = set(5, 3, "harry", &["harry", "hermione", "ginny"]);
        let candidate = report("hermione", 5, Some(old.clone()), 100);
        let others = [report("ginny", 5, Some(old), 101)];
        let plan = plan_promotion(&candidate, &others, Guard::Checked, 1, Mutations::NONE).unwrap();
        assert_eq!(plan.epoch, Epoch(6));
        assert_eq!(plan.sets[&PartitionId(0)], set(6, 0, "hermione", &["hermione", "ginny"]));
        assert_eq!(plan.required, BTreeSet::from(["ginny".to_string()]));
        assert_eq!(plan.records_behind, 1);
    }

    #[test]
    fn a_member_dropped_from_the_set_is_refused_once_another_knows() {
        let before = set(5, 3, "harry", &["harry", "hermione", "ginny"]);
        let after = set(5, 4, "harry", &["harry", "ginny"]);
        let candidate = report("hermione", 5, Some(before), 80);
        let others = [report("ginny", 5, Some(after.clone()), 120)];
        let refusal =
            plan_promotion(&candidate, &others, Guard::Checked, 1, Mutations::NONE).unwrap_err();
        assert_eq!(refusal, PromotionRefusal::NotInSync { partition: PartitionId(0), set: after });
        assert!(refusal.to_string().contains("isr_epoch 4"), "{refusal}");
        let forced =
            plan_promotion(&candidate, &others, Guard::Forced { salt: 0 }, 1, Mutations::NONE)
                .unwrap();
        assert_eq!(forced.records_behind, 40);
        assert_eq!(forced.sets[&PartitionId(0)], set(6, 0, "hermione", &["hermione"]));
    }

    #[test]
    fn every_follower_of_the_newest_set_must_answer_and_somebody_must() {
        let current = set(2, 1, "harry", &["harry", "hermione", "ginny", "neville"]);
        let candidate = report("hermione", 2, Some(current.clone()), 10);
        let others = [report("ginny", 2, Some(current), 10)];
        let refusal =
            plan_promotion(&candidate, &others, Guard::Checked, 1, Mutations::NONE).unwrap_err();
        assert!(matches!(&refusal, PromotionRefusal::Unreached { missing, .. }
                if missing == &["neville"]));
        assert_eq!(
            plan_promotion(&candidate, &[], Guard::Checked, 1, Mutations::NONE),
            Err(PromotionRefusal::NobodyReached)
        );
        // With a minimum of two, a set of two is known to both: the candidate may lead alone.
        let pair = set(2, 1, "harry", &["harry", "hermione"]);
        let lone = report("hermione", 2, Some(pair), 10);
        assert!(plan_promotion(&lone, &[], Guard::Checked, 2, Mutations::NONE).is_ok());
    }

    #[test]
    fn the_new_epoch_is_above_every_epoch_any_member_saw() {
        let current = set(2, 1, "harry", &["harry", "hermione"]);
        let candidate = report("hermione", 2, Some(current.clone()), 10);
        // Ginny accepted epoch 9 of a promotion that failed.
        let others = [report("ginny", 9, None, 10)];
        let plan = plan_promotion(&candidate, &others, Guard::Checked, 1, Mutations::NONE).unwrap();
        assert_eq!(plan.epoch, Epoch(10));
        assert_eq!(plan.sets[&PartitionId(0)], set(10, 0, "hermione", &["hermione"]));
        // Appointed by the controller at 14: 14; at 3: still above what Ginny saw.
        let appointed = Guard::Appointed { at_least: Epoch(14) };
        let plan = plan_promotion(&candidate, &others, appointed, 1, Mutations::NONE).unwrap();
        assert_eq!(plan.sets[&PartitionId(0)], set(14, 0, "hermione", &["hermione"]));
        let low = Guard::Appointed { at_least: Epoch(3) };
        let plan = plan_promotion(&candidate, &others, low, 1, Mutations::NONE).unwrap();
        assert_eq!(plan.epoch, Epoch(10));
    }

    #[test]
    fn learners_never_lead_and_a_fresh_cluster_starts_alone() {
        let mut learner = report("ron", 0, None, 0);
        learner.learner = true;
        assert_eq!(
            plan_promotion(&learner, &[], Guard::Forced { salt: 0 }, 1, Mutations::NONE),
            Err(PromotionRefusal::Learner)
        );
        let fresh = report("harry", 0, None, 0);
        let plan = plan_promotion(&fresh, &[], Guard::Checked, 1, Mutations::NONE).unwrap();
        assert_eq!(plan.epoch, Epoch(1));
        assert_eq!(plan.sets[&PartitionId(0)], set(1, 0, "harry", &["harry"]));
    }
}
