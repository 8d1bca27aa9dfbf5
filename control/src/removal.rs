//! Removing a member of a cluster with a controller (`DELETE /admin/node/{name}`), as
//! Klustron's remove peer does, without editing any config: the data leader commits
//! `Remove` through the controller (it refuses the last voter, or a removal that would leave
//! a set below `min_insync_replicas`), stops streaming to the member, and tells it to go back
//! to admin mode, where it forgets the cluster. Removing the data leader transfers the
//! leadership first. The controller's leader drops a removed member from Raft by itself
//! (`Control::dismiss_removed`), so a removal half done by a crash completes.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use strata_core::cluster::{normalize_name, AdminError, Role};
use strata_core::controller::{ClusterState, Command, JobKind, MemberKind};
use strata_shard::ControlMessage;

use crate::controller::runtime::Controller;
use crate::roles::Control;
use crate::wire::{Request, Response};

/// How long a removed member that does not hold its removal yet stays in the controller's
/// Raft (milliseconds).
const DISMISS_GRACE_MS: u64 = 10_000;

/// A removed member still in Raft: the log index applied when its removal was first seen
/// here (it holds the removal once it matched that far), and when (monotonic ms).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dismissal {
    applied: u64,
    since: u64,
}

/// Counts a removal under way on this node while it lives.
struct RemovalRunning<'control> {
    control: &'control Control,
}

impl<'control> RemovalRunning<'control> {
    fn new(control: &'control Control) -> RemovalRunning<'control> {
        control.removals_running.fetch_add(1, Ordering::AcqRel);
        RemovalRunning { control }
    }
}

impl Drop for RemovalRunning<'_> {
    fn drop(&mut self) {
        self.control.removals_running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long the data leader asked to remove its predecessor waits to see the hand-over.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a removed member leading the controller's Raft tries to hand that over.
const HAND_OVER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

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
        let _running = RemovalRunning::new(self);
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
            return self.remove_here(controller, &name).await;
        }
        let address = state.members.get(&leader).map(|member| member.peer_address.clone());
        let address = address.ok_or_else(|| AdminError::controller_unavailable("no leader"))?;
        match self.dialer.call(&address, &Request::RemoveMember { name: name.clone() }).await {
            Ok(response) => response.into_result().map(|_| ()),
            Err(error) => Err(AdminError::leader_unreachable(&error.to_string())),
        }
    }

    /// Answers `RemoveMember` on the data leader.
    pub(crate) async fn answer_remove(&self, name: &str) -> Response {
        let _running = RemovalRunning::new(self);
        let outcome = match self.controller() {
            Some(controller) => {
                // Asked by the leader being removed, once it handed over to this node: this
                // node's view of the controller may lag that hand-over by a moment.
                let started = tokio::time::Instant::now();
                while controller.state().data_leader.as_deref() == Some(name)
                    && started.elapsed() < APPLY_WAIT
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                self.remove_controlled(&controller, name).await
            }
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
    /// It is told at the address the controller has for it, whether this leader lists it
    /// alive or not (it may not have registered here yet); one that does not hear leaves
    /// when its controller applies the removal (`carry_out`).
    async fn remove_here(&self, controller: &Controller, name: &str) -> Result<(), AdminError> {
        let address =
            controller.state().members.get(name).map(|member| member.peer_address.clone());
        self.propose_anywhere(Command::Remove { name: name.to_string() }).await?;
        self.remove_from_membership(name);
        self.handle.broadcast(|| ControlMessage::MemberGone { name: name.to_string() });
        if let Some(address) = address {
            let epoch = controller.state().leader_epoch.0;
            let request = Request::ChangeRole { role: Role::Admin.name().to_string(), epoch };
            let answer = self.dialer.call(&address, &request).await;
            if let Err(error) = answer.map_err(|error| error.to_string()).and_then(|response| {
                response.into_result().map(|_| ()).map_err(|error| error.message)
            }) {
                tracing::warn!(name, %error, "the removed node did not confirm it left");
            }
        }
        tracing::info!(name, "node removed from the cluster");
        let text = format!("{name} was removed from the cluster");
        self.events.record(crate::events::EventKind::Member, text);
        Ok(())
    }

    /// A member whose controller applied its removal: out of the cluster for good, as if the
    /// leader's message had reached it.
    pub(crate) async fn leave_when_removed(&self) {
        if self.removals_running.load(Ordering::Acquire) > 0 {
            return;
        }
        // Leading the controller's Raft, it hands that over first: the others need not wait
        // for an election (nor, with an even number of voters left, lack a majority for one).
        if let Some(controller) = self.controller() {
            let started = tokio::time::Instant::now();
            while controller.leads() && started.elapsed() < HAND_OVER_WAIT {
                controller.hand_off_leadership().await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        let _serialized = self.role_change.lock().await;
        tracing::warn!("the controller removed this node from the cluster");
        let text = "the controller removed this node from the cluster";
        self.events.record(crate::events::EventKind::Member, text);
        if self.role() != Role::Admin {
            self.become_admin(false).await;
        }
        self.leave_controlled_cluster().await;
    }

    /// On the controller's leader: takes out of Raft every node whose member the controller
    /// no longer has. When this member is the one removed, it hands the leadership of Raft
    /// over instead (a leader does not take itself out), and leaves once it applied the
    /// removal.
    ///
    /// A removed member stays in Raft until it holds the removal (it then leaves by itself,
    /// told or not), or for [`DISMISS_GRACE_MS`] at most: one paused or cut off when it was
    /// removed would otherwise never learn it.
    pub(crate) async fn dismiss_removed(
        &self,
        controller: &Controller,
        state: &ClusterState,
        pending: &mut BTreeMap<u64, Dismissal>,
    ) {
        let (_, nodes) = controller.raft_members();
        pending.retain(|id, _| nodes.contains_key(id));
        let now = strata_shard::monotonic_ms();
        for (id, node) in nodes {
            if state.members.contains_key(&node.name) {
                pending.remove(&id);
                continue;
            }
            if id == controller.identity.node_id {
                controller.hand_off_leadership().await;
                continue;
            }
            let removal = *pending
                .entry(id)
                .or_insert(Dismissal { applied: controller.applied_index(), since: now });
            let holds_removal = controller.matched_index(id) >= removal.applied;
            if !holds_removal && now.saturating_sub(removal.since) < DISMISS_GRACE_MS {
                continue;
            }
            pending.remove(&id);
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
}
