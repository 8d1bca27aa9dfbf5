//! Who replaces a lost data leader: the decision the controller's leader makes from what
//! every answering member reports of itself, before it proposes [`Command::Appoint`].
//!
//! The controller's own in-sync sets may lag the sets the members recorded (the leader
//! changes them by itself within its epoch), so the choice is checked against the members'
//! records with the promotion guard of the safe-replication work: a candidate is acceptable
//! only if it is in the newest set any answering member recorded, on every partition, and
//! every other follower of that set answered. Among acceptable voters, the one with the most
//! durable records leads; ties go to the first name.
//!
//! A candidate must also be in the set the controller recorded for every partition: a leader
//! under the controller records every new version there before it takes effect, so the
//! controller's set holds every member the leader still waits for, and a member left out may
//! lack acknowledged writes even when no member that could say so answered.

use super::{ClusterState, Command, MemberKind};
use crate::ids::Epoch;
use crate::replication::mutations::{Mutation, Mutations};
use crate::replication::promotion::{plan_promotion, Guard, MemberReport};

/// Why nobody could be appointed: per candidate considered, why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoSuccessor {
    pub reasons: Vec<String>,
}

impl std::fmt::Display for NoSuccessor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reasons.is_empty() {
            return formatter.write_str("no voter answered");
        }
        formatter.write_str(&self.reasons.join("; "))
    }
}

/// The [`Command::Appoint`] to propose once the data leader of `state` is lost, given the
/// `reports` of the members that answered (the proposer's own among them).
///
/// # Errors
///
/// [`NoSuccessor`] when no unfenced voter passes the promotion guard: appointing anyone
/// could lose acknowledged writes, so the cluster waits (a member that comes back may pass).
pub fn plan_succession(
    state: &ClusterState,
    reports: &[MemberReport],
    mutations: Mutations,
) -> Result<Command, NoSuccessor> {
    let mut candidates: Vec<&MemberReport> = reports
        .iter()
        .filter(|report| {
            state.members.get(&report.member.name).is_some_and(|member| {
                member.kind == MemberKind::Voter && !member.fenced && !report.learner
            })
        })
        .collect();
    candidates.sort_by(|one, other| {
        durable(other).cmp(&durable(one)).then(one.member.name.cmp(&other.member.name))
    });
    let guard = Guard::Appointed { at_least: Epoch(state.leader_epoch.0 + 1) };
    let mut reasons = Vec::new();
    for candidate in candidates {
        let name = &candidate.member.name;
        let left_out =
            state.partitions.iter().position(|partition| !partition.in_sync.contains(name));
        // The mutation that takes the promotion guard out takes this check out with it.
        let unguarded = mutations.has(Mutation::PromoteOutOfSync);
        if let Some(index) = left_out.filter(|_| !unguarded) {
            reasons.push(format!(
                "{name}: not in the in-sync set the controller recorded for partition {index}"
            ));
            continue;
        }
        let others: Vec<MemberReport> = reports
            .iter()
            .filter(|report| report.member.name != candidate.member.name)
            .cloned()
            .collect();
        match plan_promotion(candidate, &others, guard, state.min_insync, mutations) {
            Ok(plan) => {
                let leader = candidate.member.name.clone();
                let in_sync = plan
                    .sets
                    .values()
                    .map(|set| {
                        let followers = set.members.iter().map(|member| &member.name);
                        let mut names = vec![leader.clone()];
                        names.extend(followers.filter(|name| **name != leader).cloned());
                        names
                    })
                    .collect();
                return Ok(Command::Appoint {
                    leader,
                    previous_epoch: state.leader_epoch,
                    at_least: plan.epoch,
                    in_sync,
                });
            }
            Err(refusal) => reasons.push(format!("{}: {refusal}", candidate.member.name)),
        }
    }
    Err(NoSuccessor { reasons })
}

/// Records durable over every partition.
fn durable(report: &MemberReport) -> u64 {
    report.partitions.iter().map(|partition| partition.durable_lsn.0).sum()
}
