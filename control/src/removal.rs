//! Removing a member of a cluster with a controller (`DELETE /admin/node/{name}`), as
//! Klustron's remove peer does, without editing any config: the data leader commits
//! `Remove` through the controller (it refuses the last voter, or a removal that would leave
//! a set below `min_insync_replicas`), stops streaming to the member, and tells it to go back
//! to admin mode, where it forgets the cluster. Removing the data leader transfers the
//! leadership first. The controller's leader drops a removed member from Raft by itself
//! (`Control::dismiss_removed`), so a removal half done by a crash completes.

use strata_core::cluster::{normalize_name, AdminError, NodeStatus, Role};
use strata_core::controller::{ClusterState, Command, JobKind, MemberKind};
use strata_shard::ControlMessage;

use crate::controller::runtime::Controller;
use crate::roles::Control;
use crate::wire::{self, Request, Response};

/// How long removing the data leader waits for its transfer to take effect.
const TRANSFER_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

impl Control {
    /// `DELETE /admin/node/{name}` in a cluster with a controller: the removal, recorded as
    /// a job; answers its id once it ended (its error when it failed).
    pub(crate) async fn remove_as_job(
        &self,
        controller: &Controller,
        raw_name: &str,
    ) -> Result<u64, AdminError> {
        let name = normalize_name(raw_name);
        if !controller.state().members.contains_key(&name) {
            return Err(AdminError::node_missing(&name));
        }
        let id = self.start_job(self.job_record(JobKind::Remove, &name, "started")).await?;
        let outcome = self.remove_controlled(controller, &name).await;
        self.finish_job(id, outcome.as_ref().err().map(|error| error.message.clone())).await;
        outcome.map(|()| id)
    }

    /// A removal in a cluster with a controller.
    pub(crate) async fn remove_controlled(
        &self,
        controller: &Controller,
        raw_name: &str,
    ) -> Result<(), AdminError> {
        let name = normalize_name(raw_name);
        let state = controller.state();
        if !state.members.contains_key(&name) {
            return Err(AdminError::node_missing(&name));
        }
        if state.data_leader.as_deref() == Some(name.as_str()) {
            self.transfer_before_removal(controller, &state, &name).await?;
        }
        let state = controller.state();
        let Some(leader) = state.data_leader.clone() else {
            return Err(AdminError::controller_unavailable("the cluster has no leader"));
        };
        if leader == controller.identity.name {
            return self.remove_here(&name).await;
        }
        let address = state.members.get(&leader).map(|member| member.peer_address.clone());
        let address = address.ok_or_else(|| AdminError::controller_unavailable("no leader"))?;
        match wire::call(&address, &Request::RemoveMember { name: name.clone() }).await {
            Ok(response) => response.into_result().map(|_| ()),
            Err(error) => Err(AdminError::leader_unreachable(&error.to_string())),
        }
    }

    /// Answers `RemoveMember` on the data leader.
    pub(crate) async fn answer_remove(&self, name: &str) -> Response {
        let outcome = match self.controller() {
            Some(controller) => self.remove_controlled(&controller, name).await,
            None => Err(AdminError::controller_unavailable("no controller here")),
        };
        match outcome {
            Ok(()) => Response::default(),
            Err(error) => Response::error(&error),
        }
    }

    /// Hands the leadership to a voter in sync everywhere, and waits until it leads.
    async fn transfer_before_removal(
        &self,
        controller: &Controller,
        state: &ClusterState,
        leader: &str,
    ) -> Result<(), AdminError> {
        let successor = state
            .members
            .iter()
            .filter(|(name, member)| *name != leader && member.kind == MemberKind::Voter)
            .map(|(name, _)| name)
            .find(|name| state.partitions.iter().all(|partition| partition.in_sync.contains(name)))
            .cloned()
            .ok_or_else(|| {
                AdminError::controller_refused(&format!(
                    "{leader} leads and no other voter is in sync to take over"
                ))
            })?;
        tracing::info!(leader, successor, "removing the leader: transferring first");
        self.transfer_leadership(&successor).await?;
        let started = tokio::time::Instant::now();
        while controller.state().data_leader.as_deref() == Some(leader) {
            if started.elapsed() > TRANSFER_WAIT {
                return Err(AdminError::controller_unavailable("the transfer did not take effect"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// On the data leader: commits the removal, stops streaming to the member, tells it.
    async fn remove_here(&self, name: &str) -> Result<(), AdminError> {
        self.propose_anywhere(Command::Remove { name: name.to_string() }).await?;
        let member = self.forget_member(name);
        self.handle.broadcast(|| ControlMessage::MemberGone { name: name.to_string() });
        if let Some(address) = member {
            let epoch = self.leader_epoch().map_or(0, |epoch| epoch.0);
            let request = Request::ChangeRole { role: Role::Admin.name().to_string(), epoch };
            if let Err(error) = wire::call(&address, &request).await {
                tracing::warn!(name, %error, "the removed node did not confirm it left");
            }
        }
        tracing::info!(name, "node removed from the cluster");
        Ok(())
    }

    /// On the controller's leader: takes out of Raft every node whose member the controller
    /// no longer has.
    pub(crate) async fn dismiss_removed(&self, controller: &Controller, state: &ClusterState) {
        let (_, nodes) = controller.raft_members();
        for (id, node) in nodes {
            if state.members.contains_key(&node.name) || id == controller.identity.node_id {
                continue;
            }
            tracing::info!(name = node.name, id, "a removed member leaves the controller");
            if let Err(error) = controller.dismiss(id).await {
                let name = node.name;
                tracing::warn!(%error, name, "cannot take a removed member out of Raft");
            }
        }
    }

    /// A removed member: back to admin mode, out of the cluster for good (its controller's
    /// files go, so it may join a cluster again as a new node).
    pub(crate) async fn leave_controlled_cluster(&self) {
        if self.controller().is_some() {
            tracing::warn!("this node was removed from its cluster");
            self.forget_controller().await;
        }
    }

    /// The member's address if it was alive, after taking it out of the membership table.
    fn forget_member(&self, name: &str) -> Option<String> {
        let removed = self.remove_from_membership(name)?;
        (removed.status == NodeStatus::Alive).then_some(removed.address)
    }
}
