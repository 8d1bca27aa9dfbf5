//! Who replaces a lost data leader: the decision the controller's leader makes from what
//! every answering member reports of itself, before it proposes [`Command::Appoint`].
//!
//! A leader under the controller records every new version of an in-sync set there before
//! it takes effect, so the controller's set holds every member the leader still waits for,
//! and every member of it holds every acknowledged write. A candidate must be in that set for
//! every partition (`plan_appointment`); a member's own newer record is a proposal that never
//! took effect, and does not count. Among acceptable voters that answered, the one with the
//! most durable records leads; ties go to the first name. The appointment carries the set
//! versions it was chosen on, and applies only if none changed meanwhile.

use super::{ClusterState, Command, MemberKind};
use crate::ids::Epoch;
use crate::replication::mutations::Mutations;
use crate::replication::promotion::{plan_appointment, MemberReport};

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
/// [`NoSuccessor`] when no unfenced voter that answered is in every set the controller
/// recorded (or each such one is a learner or has a failed log): appointing anyone could
/// lose acknowledged writes, so the cluster waits (a member that comes back may pass).
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
    // The lost leader holds every acknowledged write and may lead again; under another
    // leader it may hold records it never committed, and catches up before it is in sync.
    let lost = state.data_leader.as_deref();
    let with_lost = state.recorded_members(None);
    let without_lost = state.recorded_members(lost);
    // Above the controller's epoch and every epoch an answering member has seen.
    let seen = reports.iter().map(MemberReport::highest_epoch).max().unwrap_or(Epoch(0));
    let at_least = Epoch(state.leader_epoch.max(seen).0 + 1);
    let mut reasons = Vec::new();
    for candidate in candidates {
        let others: Vec<MemberReport> = reports
            .iter()
            .filter(|report| report.member.name != candidate.member.name)
            .cloned()
            .collect();
        let again = Some(candidate.member.name.as_str()) == lost;
        let recorded = if again { &with_lost } else { &without_lost };
        match plan_appointment(candidate, &others, at_least, recorded, mutations) {
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
                let basis = state.partitions.iter().map(|partition| partition.isr_epoch).collect();
                return Ok(Command::Appoint {
                    leader,
                    previous_epoch: state.leader_epoch,
                    at_least: plan.epoch,
                    in_sync,
                    basis,
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
