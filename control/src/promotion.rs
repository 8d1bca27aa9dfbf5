//! A member promoting itself to leader: it asks every member it can reach what each partition
//! recorded, decides with [`strata_core::replication::promotion::plan_promotion`] (the guard),
//! then runs the two phases on every member that answered: accept the new epoch (a fence; a
//! member that recorded a newer set since refuses), then install the first in-sync sets.
//! Only then does this node lead. Also the conversions between the wire's JSON and the core's
//! types, and the answers to the same requests from other members.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use strata_core::cluster::AdminError;
use strata_core::replication::promotion::{
    plan_appointment, plan_promotion, Guard, MemberReport, PartitionReport, PromotionPlan,
};
use strata_core::replication::{mutations::Mutations, InSyncSet, Member, IN_SYNC_MEMBERS_MAX};
use strata_core::{Epoch, Lsn, PartitionId};

use crate::roles::Control;
use crate::wire::{
    self, Request, Response, WireBasis, WireMember, WirePartition, WirePartitionSet, WireSet,
};

impl Control {
    /// Runs a promotion of this node, named `name`, up to the point where it may lead: the
    /// guard, then both phases on every member that answered. Returns the plan.
    pub(crate) async fn promote(
        self: &Arc<Self>,
        name: &str,
        guard: Guard,
    ) -> Result<PromotionPlan, AdminError> {
        let own = self.own_report(name, false).await;
        let others = self.gather_reports(&own).await;
        let mutations = Mutations::in_force();
        let plan = match (guard, self.controller()) {
            // Appointed: the controller's sets decide (`plan_appointment`).
            (Guard::Appointed { at_least }, Some(controller)) => {
                let recorded = controller.state().recorded_members(None);
                plan_appointment(&own, &others, at_least, &recorded, mutations)
            }
            _ => plan_promotion(&own, &others, guard, self.config.min_insync_replicas, mutations),
        }
        .map_err(|refusal| {
            AdminError::promotion_refused(&refusal.to_string(), refusal.forceable())
        })?;
        if plan.forced {
            tracing::warn!(
                epoch = plan.epoch.0,
                records_behind = plan.records_behind,
                "forced promotion: up to this many acknowledged records may be lost"
            );
        }
        let addresses: BTreeMap<String, String> = others
            .iter()
            .map(|report| (report.member.name.clone(), report.member.address.clone()))
            .collect();
        let required: Vec<(String, String)> = plan
            .required
            .iter()
            .filter_map(|name| addresses.get(name).map(|address| (name.clone(), address.clone())))
            .collect();
        let what = "promotion: every member accepts the epoch";
        tracing::info!(epoch = plan.epoch.0, members = ?plan.required, "{what}");
        self.handle
            .accept_epoch(plan.epoch, &plan.basis)
            .await
            .map_err(|reason| AdminError::promotion_failed(name, &reason))?;
        let accept = Request::AcceptEpoch {
            epoch: plan.epoch.0,
            basis: basis_to_wire(&plan.basis),
            candidate: name.to_string(),
        };
        ask_all(&self.dialer, &required, &accept).await?;
        self.handle
            .install_sets(&plan.sets)
            .await
            .map_err(|reason| AdminError::promotion_failed(name, &reason))?;
        let install = Request::InstallSets { epoch: plan.epoch.0, sets: sets_to_wire(&plan.sets) };
        ask_all(&self.dialer, &required, &install).await?;
        Ok(plan)
    }

    /// This node's report to a promotion.
    pub(crate) async fn own_report(&self, name: &str, learner: bool) -> MemberReport {
        let partitions = self.handle.report().await;
        let member =
            Member { name: name.to_string(), address: self.config.advertised_address.clone() };
        MemberReport { member, learner, partitions }
    }

    /// Asks every member this node knows of (from the sets it recorded, the leader it
    /// followed, the members it heard of) for its report; those that do not answer in time
    /// are left out.
    async fn gather_reports(&self, own: &MemberReport) -> Vec<MemberReport> {
        let addresses = self.known_addresses(own);
        self.ask_reports(addresses, &known_names(own), &own.member.name).await
    }

    /// Asks each `(name, address)` for its report (a member in admin mode answers nameless:
    /// it goes by the name given here).
    pub(crate) async fn reports_from(&self, members: Vec<(String, String)>) -> Vec<MemberReport> {
        let names: BTreeMap<String, String> =
            members.iter().map(|(name, address)| (address.clone(), name.clone())).collect();
        let addresses = members.into_iter().map(|(_, address)| address).collect();
        self.ask_reports(addresses, &names, "").await
    }

    /// Asks every address at once for its report; `names` names the nameless ones by the
    /// address asked; a member reached twice, or named `exclude`, counts not at all.
    async fn ask_reports(
        &self,
        addresses: BTreeSet<String>,
        names: &BTreeMap<String, String>,
        exclude: &str,
    ) -> Vec<MemberReport> {
        let mut tasks = Vec::new();
        for address in addresses {
            let dialer = self.dialer.clone();
            tasks.push(tokio::spawn(async move {
                let answer = dialer.call(&address, &Request::ReplicationState {}).await;
                (address, answer)
            }));
        }
        let mut reports: Vec<MemberReport> = Vec::new();
        for task in tasks {
            let Ok((address, answer)) = task.await else { continue };
            match answer.map_err(|error| error.to_string()).and_then(report_from_wire) {
                Ok(mut report) => {
                    // A member in admin mode (restarted, not given its role again) answers
                    // without a name: it is the member the sets name at the address asked, or
                    // else at the address it advertises (asked through another address: a
                    // proxy, a host name), so that a member reached twice counts once.
                    if report.member.name.is_empty() {
                        report.member.name = names
                            .get(&address)
                            .or_else(|| names.get(&report.member.address))
                            .cloned()
                            .unwrap_or_else(|| address.clone());
                    }
                    report.member.address = address;
                    let known = reports.iter().any(|other| other.member.name == report.member.name);
                    if report.member.name != exclude && !known {
                        reports.push(report);
                    }
                }
                Err(error) => tracing::info!(address, %error, "promotion: a member did not answer"),
            }
        }
        reports
    }

    fn known_addresses(&self, own: &MemberReport) -> BTreeSet<String> {
        let mut addresses: BTreeSet<String> = own
            .partitions
            .iter()
            .filter_map(|report| report.in_sync.as_ref())
            .flat_map(|set| set.members.iter().map(|member| member.address.clone()))
            .collect();
        addresses.extend(self.peer_addresses());
        if let Some(controller) = self.controller() {
            let state = controller.state();
            addresses.extend(state.members.values().map(|member| member.peer_address.clone()));
        }
        addresses.remove(&self.config.advertised_address);
        addresses
    }

    /// Answers a member's request for this node's replication state.
    pub(crate) async fn answer_replication_state(&self) -> Response {
        let (name, learner) = self.identity();
        let partitions = self.handle.report().await.iter().map(partition_to_wire).collect();
        Response {
            name,
            address: self.config.advertised_address.clone(),
            learner,
            partitions,
            ..Response::default()
        }
    }
}

/// The name each address has in the sets this node recorded.
fn known_names(own: &MemberReport) -> BTreeMap<String, String> {
    own.partitions
        .iter()
        .filter_map(|report| report.in_sync.as_ref())
        .flat_map(|set| {
            set.members.iter().map(|member| (member.address.clone(), member.name.clone()))
        })
        .collect()
}

/// Sends `request` to every `(name, address)` at once; any refusal or silence fails the whole.
async fn ask_all(
    dialer: &wire::Dialer,
    members: &[(String, String)],
    request: &Request,
) -> Result<(), AdminError> {
    let mut tasks = Vec::new();
    for (name, address) in members {
        let (name, address, request) = (name.clone(), address.clone(), request.clone());
        let dialer = dialer.clone();
        tasks.push(tokio::spawn(async move {
            let answer = dialer.call(&address, &request).await;
            (name, answer)
        }));
    }
    for task in tasks {
        let (name, answer) =
            task.await.map_err(|error| AdminError::promotion_failed("?", &error.to_string()))?;
        match answer {
            Ok(response) if response.error_code == 0 => {}
            Ok(response) => {
                return Err(AdminError::promotion_failed(&name, &response.error_message))
            }
            Err(error) => return Err(AdminError::promotion_failed(&name, &error.to_string())),
        }
    }
    Ok(())
}

pub(crate) fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.finish()
}

// ----- conversions -----

pub(crate) fn set_to_wire(set: &InSyncSet) -> WireSet {
    WireSet {
        leader_epoch: set.leader_epoch.0,
        isr_epoch: set.isr_epoch,
        leader: set.leader.clone(),
        members: set
            .members
            .iter()
            .map(|member| WireMember { name: member.name.clone(), address: member.address.clone() })
            .collect(),
    }
}

/// A set from the wire, checked: members distinct, not too many, the leader among them.
pub(crate) fn set_from_wire(set: WireSet) -> Result<InSyncSet, String> {
    let names: BTreeSet<&str> = set.members.iter().map(|member| member.name.as_str()).collect();
    if set.members.is_empty()
        || set.members.len() > IN_SYNC_MEMBERS_MAX
        || names.len() != set.members.len()
    {
        return Err("an in-sync set with no members, too many, or a name twice".into());
    }
    if !names.contains(set.leader.as_str()) {
        return Err("an in-sync set without its leader".into());
    }
    let members = set
        .members
        .into_iter()
        .map(|member| Member { name: member.name, address: member.address })
        .collect();
    Ok(InSyncSet::new(Epoch(set.leader_epoch), set.isr_epoch, &set.leader, members))
}

pub(crate) fn partition_to_wire(report: &PartitionReport) -> WirePartition {
    WirePartition {
        partition: report.partition.0,
        fence: report.fence.0,
        in_sync: report.in_sync.as_ref().map(set_to_wire),
        durable_lsn: report.durable_lsn.0,
        failed: report.failed.clone(),
    }
}

fn report_from_wire(response: Response) -> Result<MemberReport, String> {
    if response.error_code != 0 {
        return Err(response.error_message);
    }
    let mut partitions = Vec::with_capacity(response.partitions.len());
    for partition in response.partitions {
        partitions.push(PartitionReport {
            partition: PartitionId(partition.partition),
            fence: Epoch(partition.fence),
            in_sync: partition.in_sync.map(set_from_wire).transpose()?,
            durable_lsn: Lsn(partition.durable_lsn),
            failed: partition.failed,
        });
    }
    let member = Member { name: response.name, address: response.address };
    Ok(MemberReport { member, learner: response.learner, partitions })
}

pub(crate) fn basis_to_wire(basis: &BTreeMap<PartitionId, Option<(Epoch, u64)>>) -> Vec<WireBasis> {
    basis
        .iter()
        .map(|(partition, version)| WireBasis {
            partition: partition.0,
            leader_epoch: version.map(|(epoch, _)| epoch.0),
            isr_epoch: version.map(|(_, isr_epoch)| isr_epoch),
        })
        .collect()
}

pub(crate) fn basis_from_wire(
    basis: Vec<WireBasis>,
) -> BTreeMap<PartitionId, Option<(Epoch, u64)>> {
    basis
        .into_iter()
        .map(|entry| {
            let version =
                entry.leader_epoch.zip(entry.isr_epoch).map(|(epoch, isr)| (Epoch(epoch), isr));
            (PartitionId(entry.partition), version)
        })
        .collect()
}

pub(crate) fn sets_to_wire(sets: &BTreeMap<PartitionId, InSyncSet>) -> Vec<WirePartitionSet> {
    sets.iter()
        .map(|(partition, set)| WirePartitionSet { partition: partition.0, set: set_to_wire(set) })
        .collect()
}

pub(crate) fn sets_from_wire(
    sets: Vec<WirePartitionSet>,
) -> Result<BTreeMap<PartitionId, InSyncSet>, String> {
    sets.into_iter()
        .map(|entry| Ok((PartitionId(entry.partition), set_from_wire(entry.set)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_cross_the_wire_unchanged_and_bad_ones_are_refused() {
        let members = vec![
            Member { name: "harry".into(), address: "127.0.0.1:1".into() },
            Member { name: "ron".into(), address: "127.0.0.1:2".into() },
        ];
        let set = InSyncSet::new(Epoch(3), 4, "harry", members);
        assert_eq!(set_from_wire(set_to_wire(&set)), Ok(set.clone()));
        let mut orphan = set_to_wire(&set);
        orphan.leader = "ginny".into();
        assert!(set_from_wire(orphan).is_err());
        let mut twice = set_to_wire(&set);
        twice.members.push(twice.members[0].clone());
        assert!(set_from_wire(twice).is_err());
        let mut empty = set_to_wire(&set);
        empty.members.clear();
        assert!(set_from_wire(empty).is_err());
        let basis = BTreeMap::from([(PartitionId(0), Some((Epoch(3), 4))), (PartitionId(1), None)]);
        assert_eq!(basis_from_wire(basis_to_wire(&basis)), basis);
    }
}
