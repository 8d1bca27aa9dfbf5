//! Automatic failover (`[cluster] failover = "automatic"`): the node's part in a cluster run
//! by the controller.
//!
//! - **Init and join.** Infinity's role calls still make the cluster: `leader` on a node that
//!   never was in one starts a controller of one voter and commits `Init`; `follower` or
//!   `learner` with an address asks that member to admit it (`JoinController`, forwarded to
//!   the member leading the controller), which commits `Join` and adds the node to Raft.
//! - **Following the controller.** Every member watches the applied state: the member named
//!   data leader promotes itself at the controller's epoch (the promotion guard and both
//!   phases, as a manual promotion), every other member follows it. A restarted member finds
//!   its identity in its data directory and does the same, with no admin call.
//! - **Watching the data leader.** The member leading the controller's Raft asks the data
//!   leader every [`PROBE_INTERVAL`] whether it leads. A leader that is gone (nothing listens
//!   on its peer port), that says its promotion failed, or that has not renewed its lease for
//!   `failover_timeout` is replaced: the member asks every member for its replication state,
//!   picks the voter with the most durable records that the promotion guard accepts, and
//!   commits `Appoint` (a compare-and-set on the leader epoch).
//! - **The lease.** The data leader confirms every [`LEASE_RENEW_INTERVAL`] with the
//!   controller's leader (which confirms its own leadership with a majority first) that it
//!   still leads at its epoch. Its shards answer `-TRYAGAIN` once the lease, counted from
//!   before the confirmation was asked, has run out. The lease is shorter than
//!   `failover_timeout`, and the timeout is counted from the last confirmation the
//!   controller's leader gave (or from when it became leader), so a replaced leader has
//!   stopped serving before its successor is appointed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_core::cluster::{AdminError, Role};
use strata_core::controller::{
    hex_identifier, plan_succession, Applicant, ClusterState, ClusterTag, Command, JobKind,
    MemberKind, Refusal,
};
use strata_core::replication::mutations::Mutations;
use strata_core::replication::promotion::{Guard, MemberReport};
use strata_core::replication::InSyncSet;
use strata_core::{Epoch, PartitionId};
use strata_shard::{monotonic_ms, ControlMessage};

use crate::controller::network::{RaftEnvelope, RaftResponse};
use crate::controller::runtime::{self, Controller, Identity, Opening, ProposeError};
use crate::controller::Answer;
use crate::json::SetRole;
use crate::roles::Control;
use crate::wire::{self, Request, Response, WireError};

/// How often the controller's leader asks the data leader whether it leads.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a probe of the data leader may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// How often the data leader renews its lease.
const LEASE_RENEW_INTERVAL: Duration = Duration::from_millis(100);
/// How long a member waits before trying again an order of the controller that failed
/// (following a leader that does not lead yet).
const RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// The data leader mirrors its in-sync sets to the controller every this many lease
/// renewals.
const MIRROR_EVERY_ROUNDS: u64 = 5;
/// How long the controller waits before appointing again a member whose appointed promotion
/// just failed, per failure in a row (up to 8).
const APPOINTMENT_BACKOFF_MS: u64 = 200;
/// How often the data leader, when it leads the controller's Raft too, tries to hand that
/// over (milliseconds).
const HAND_OFF_INTERVAL_MS: u64 = 2000;
/// How often a member checks whether the leader the controller named leads yet.
const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long a controller whose Raft stopped waits before it is opened again, and the most
/// it waits between later tries.
const REOPEN_FIRST_DELAY: Duration = Duration::from_millis(200);
const REOPEN_LONGEST_DELAY: Duration = Duration::from_secs(5);
/// A reopened controller that runs this long before it stops again starts its delays over;
/// one that stops sooner (its disk is still full) waits longer each time.
const REOPEN_STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a proposal forwarded while the controller's leader changes is tried again.
const PROPOSE_RETRY: Duration = Duration::from_secs(3);
/// How long a join is asked again while the controller has no leader (an election takes a
/// heartbeat timeout and a vote) or does not answer in time (admitting a member to Raft
/// waits for it to catch up on the controller's log).
const JOIN_RETRY: Duration = Duration::from_secs(20);
/// How long the job of a join follows the member's catch-up at most.
const JOIN_JOB_LIMIT: Duration = Duration::from_secs(600);
/// How long a role call that makes or joins a cluster waits for the node to take its role.
const ROLE_WAIT: Duration = Duration::from_secs(20);

/// Whether failover is left to a person or done by the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failover {
    /// As in Infinity: a person promotes a follower (guarded) and re-points the others.
    Manual,
    /// The Raft controller elects a new leader when the data leader is lost.
    Automatic,
}

/// What the data leader says when the controller's leader asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaderHealth {
    /// It leads at the controller's epoch, or is promoting itself to.
    Serving,
    /// Nothing listens on its peer port: the process is gone.
    Gone,
    /// Its promotion at the controller's epoch failed.
    Failed,
    /// No answer, or it does not lead (yet): replaced only once its lease surely ran out.
    Unknown,
}

/// What a member answers to `LeaderStatus`.
pub(crate) const STATUS_LEADING: &str = "leading";
pub(crate) const STATUS_PROMOTING: &str = "promoting";
pub(crate) const STATUS_FAILED: &str = "failed";
pub(crate) const STATUS_IDLE: &str = "idle";

impl Control {
    /// The controller this node runs, if it is in a cluster with automatic failover.
    pub(crate) fn controller(&self) -> Option<Arc<Controller>> {
        self.controller_slot().clone()
    }

    /// At start: a node that was a member of a cluster with a controller opens it again and
    /// follows it. A damaged controller log stops the process (exit code 5), as a damaged WAL
    /// does: starting without it could vote twice or forget a committed change.
    pub(crate) async fn resume_controller(self: &Arc<Self>) {
        if self.config.failover != Failover::Automatic {
            return;
        }
        let identity = match runtime::read_identity(&self.config.data_dir) {
            Ok(Some(identity)) => identity,
            Ok(None) => return,
            Err(reason) => stop_on_damage(&reason),
        };
        if let Err(refusal) = self.check_peer_security() {
            tracing::error!(name = %identity.name, %refusal, "cannot rejoin the cluster");
            return;
        }
        tracing::info!(name = %identity.name, "rejoining the cluster this node belongs to");
        if let Err(reason) = self.start_controller(identity).await {
            stop_on_damage(&reason);
        }
    }

    async fn start_controller(
        self: &Arc<Self>,
        identity: Identity,
    ) -> Result<Arc<Controller>, String> {
        let data_dir = &self.config.data_dir;
        let controller = Controller::open(data_dir, identity, self.dialer.clone(), Opening::Start)
            .await
            .map_err(|error| error.to_string())?;
        let controller = Arc::new(controller);
        *self.controller_slot() = Some(Arc::clone(&controller));
        self.run_controller(&controller, REOPEN_FIRST_DELAY);
        Ok(controller)
    }

    /// The loops of the controller in the slot: following it, watching the data leader,
    /// keeping the lease, and opening it again (after `reopen_delay`) should its Raft stop.
    fn run_controller(self: &Arc<Self>, controller: &Arc<Controller>, reopen_delay: Duration) {
        tokio::spawn(Arc::clone(self).follow_controller(Arc::clone(controller)));
        tokio::spawn(Arc::clone(self).watch_data_leader(Arc::clone(controller)));
        tokio::spawn(Arc::clone(self).keep_lease(Arc::clone(controller)));
        tokio::spawn(Arc::clone(self).reopen_when_stopped(Arc::clone(controller), reopen_delay));
    }

    /// When the controller's Raft stops by itself (openraft stops for good when a file cannot
    /// be written: a full disk, an I/O error), the node would serve on with a frozen view of
    /// the cluster, and the controller would have one voter less. Instead, the controller is
    /// opened again from its files (what they hold was all this member ever acknowledged),
    /// retrying with a growing delay until it can; damaged files stop the node as at start.
    ///
    /// Opened again, it never resumes leading the controller's Raft by itself: a member whose
    /// disk is still full would otherwise come back as leader at once, fail its first write,
    /// stop, and come back again, its heartbeats keeping the others from electing a leader
    /// that can commit. And a controller that stops again soon waits longer each time.
    async fn reopen_when_stopped(self: Arc<Self>, controller: Arc<Controller>, delay: Duration) {
        let opened = tokio::time::Instant::now();
        let Some(reason) = controller.stopped().await else { return };
        tracing::error!(%reason, "the controller stopped; opening it again from its files");
        let _ = controller.raft.shutdown().await;
        let mut delay =
            if opened.elapsed() >= REOPEN_STABLE_AFTER { REOPEN_FIRST_DELAY } else { delay };
        loop {
            tokio::time::sleep(delay).await;
            if !self.controller().is_some_and(|current| Arc::ptr_eq(&current, &controller)) {
                return;
            }
            let identity = controller.identity.clone();
            let opening = Opening::AfterFailure;
            match Controller::open(&self.config.data_dir, identity, self.dialer.clone(), opening)
                .await
            {
                Ok(reopened) => {
                    let reopened = Arc::new(reopened);
                    {
                        let mut slot = self.controller_slot();
                        if !slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, &controller)) {
                            return;
                        }
                        *slot = Some(Arc::clone(&reopened));
                    }
                    self.run_controller(&reopened, (delay * 2).min(REOPEN_LONGEST_DELAY));
                    tracing::info!("the controller runs again");
                    return;
                }
                Err(runtime::OpenError::Damaged(reason)) => stop_on_damage(&reason),
                Err(runtime::OpenError::Unavailable(reason)) => {
                    tracing::warn!(%reason, "the controller cannot be opened yet");
                    delay = (delay * 2).min(REOPEN_LONGEST_DELAY);
                }
            }
        }
    }

    /// `POST /admin/node/current` with a cluster role, in automatic mode.
    pub(crate) async fn set_controlled_role(
        self: &Arc<Self>,
        request: &SetRole,
    ) -> Result<Option<u64>, AdminError> {
        if let Some(controller) = self.controller() {
            return self.answer_member_role_call(&controller, request).await.map(|()| None);
        }
        let name = request.name.clone().ok_or_else(|| AdminError::field_required("name"))?;
        strata_core::cluster::validate_name(&name)?;
        match request.role {
            Role::Leader => self.initialize_cluster(&name).await.map(|()| None),
            Role::Follower | Role::Learner => {
                let address =
                    request.address.clone().ok_or_else(|| AdminError::field_required("address"))?;
                strata_core::cluster::parse_address(&address)?;
                self.join_cluster(request.role, &name, &address).await
            }
            Role::Admin | Role::Standalone => Ok(None),
        }
    }

    /// A role call on a node that is a member already: the same role changes nothing; a call
    /// to join another cluster is put to that cluster, which refuses it naming both tags;
    /// anything else is refused (the controller sets this node's role).
    async fn answer_member_role_call(
        &self,
        controller: &Controller,
        request: &SetRole,
    ) -> Result<(), AdminError> {
        let name = controller.identity.name.clone();
        if request.name.as_deref() == Some(name.as_str()) && self.role() == request.role {
            return Ok(());
        }
        let (Role::Follower | Role::Learner, Some(address)) = (request.role, &request.address)
        else {
            return Err(AdminError::controlled(&name));
        };
        let state = controller.state();
        let ours = state.members.values().any(|member| member.peer_address == *address);
        if ours {
            return Err(AdminError::controlled(&name));
        }
        let identity = &controller.identity;
        let join = Request::JoinController {
            name: name.clone(),
            address: self.config.advertised_address.clone(),
            role: request.role.name().to_string(),
            version: self.config.version.clone(),
            node_id: identity.node_id,
            incarnation: identity.incarnation,
            metadata_version: state.metadata_version,
            tag_id: state.tag.as_ref().map(|tag| format!("{:032x}", tag.id)),
            hops: 0,
        };
        match self.dialer.call(address, &join).await {
            Ok(response) => match response.into_result() {
                Ok(_) => Err(AdminError::controlled(&name)),
                Err(error) => Err(AdminError::from_leader(&error)),
            },
            Err(error) => Err(AdminError::cannot_connect(address, &error.to_string())),
        }
    }

    /// Makes a new cluster led by this node: a controller of one voter, then `Init`.
    async fn initialize_cluster(self: &Arc<Self>, name: &str) -> Result<(), AdminError> {
        let identity = runtime::create_identity(&self.config.data_dir, name)
            .map_err(|reason| AdminError::controller_unavailable(&reason))?;
        let applicant = self.applicant(&identity, MemberKind::Voter);
        let controller = self
            .start_controller(identity)
            .await
            .map_err(|reason| AdminError::controller_unavailable(&reason))?;
        controller
            .initialize(controller.node(&self.config.advertised_address))
            .await
            .map_err(|reason| AdminError::controller_unavailable(&reason))?;
        let tag = ClusterTag { name: self.config.cluster_name.clone(), id: random_tag_id() };
        tracing::info!(%tag, "a new cluster: this node leads it");
        let init = Command::Init {
            tag,
            leader: applicant,
            partitions: self.handle.partition_count,
            min_insync: self.config.min_insync_replicas,
        };
        let answer = propose_with_retry(&controller, init).await?;
        answer.0.map_err(|refusal| AdminError::controller_refused(&refusal.to_string()))?;
        self.wait_for_role(Role::Leader).await
    }

    /// Joins the cluster `address` belongs to, in `role`; answers once the node has its role,
    /// with the id of the job that follows its catch-up (a job the controller could not
    /// record is only logged: the join stands).
    async fn join_cluster(
        self: &Arc<Self>,
        role: Role,
        name: &str,
        address: &str,
    ) -> Result<Option<u64>, AdminError> {
        if address == self.config.advertised_address {
            let (ip, port) = address.rsplit_once(':').unwrap_or((address, ""));
            return Err(AdminError::same_address_as_leader(ip, port));
        }
        let identity = runtime::create_identity(&self.config.data_dir, name)
            .map_err(|reason| AdminError::controller_unavailable(&reason))?;
        let request = Request::JoinController {
            name: name.to_string(),
            address: self.config.advertised_address.clone(),
            role: role.name().to_string(),
            version: self.config.version.clone(),
            node_id: identity.node_id,
            incarnation: identity.incarnation,
            metadata_version: 0,
            tag_id: None,
            hops: 0,
        };
        self.start_controller(identity)
            .await
            .map_err(|reason| AdminError::controller_unavailable(&reason))?;
        if let Err(error) = self.ask_to_join(address, &request).await {
            self.forget_controller().await;
            return Err(error);
        }
        let job = match self.start_job(self.job_record(JobKind::Join, name, "admitted")).await {
            Ok(id) => {
                tokio::spawn(Arc::clone(self).follow_join(id, name.to_string(), role));
                Some(id)
            }
            Err(error) => {
                tracing::warn!(%error, "the join's job could not be recorded");
                None
            }
        };
        self.wait_for_role(role).await.map(|()| job)
    }

    /// The job of a join, until the member is in every in-sync set the controller recorded
    /// (a follower) or has caught up on every partition (a learner), for
    /// [`JOIN_JOB_LIMIT`] at most.
    async fn follow_join(self: Arc<Self>, id: u64, name: String, role: Role) {
        let started = tokio::time::Instant::now();
        let mut following = false;
        let outcome = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Some(controller) = self.controller() else {
                break Some("the node left the cluster".to_string());
            };
            if !following && self.role() == role {
                following = true;
                let progress = "following the leader, catching up".to_string();
                if let Err(error) =
                    self.propose_anywhere(Command::AdvanceJob { id, progress }).await
                {
                    tracing::debug!(%error, id, "the join's progress was not recorded");
                }
            }
            let shared = &self.handle.shared;
            // A follower may lead by now (a transfer): in its own sets, it is done too.
            let done = match role {
                Role::Follower => {
                    let state = controller.state();
                    state.partitions.iter().all(|partition| partition.in_sync.contains(&name))
                }
                _ => {
                    let streaming = shared.streaming_partitions();
                    following && streaming > 0 && shared.caught_up_partitions() == streaming
                }
            };
            if done {
                break None;
            }
            if started.elapsed() > JOIN_JOB_LIMIT {
                break Some(format!("not caught up after {} s", JOIN_JOB_LIMIT.as_secs()));
            }
        };
        self.finish_job(id, outcome).await;
    }

    /// Puts `request` (a join) to the member at `address`; asks again, for [`JOIN_RETRY`] at
    /// most, while the controller elects a leader (the one that led it may be the node joining
    /// again after losing its data): nothing was committed meanwhile.
    async fn ask_to_join(&self, address: &str, request: &Request) -> Result<(), AdminError> {
        let started = tokio::time::Instant::now();
        loop {
            // A join that got no answer in time, or that the controller could not settle
            // (no leader yet, a leader that changed or failed on the way), is asked again:
            // the same node joining again keeps its place, so a join that did commit unseen
            // is taken once more.
            let outcome = match self.dialer.call(address, request).await {
                Ok(response) => response
                    .into_result()
                    .map(|_| ())
                    .map_err(|error| AdminError::from_leader(&error)),
                Err(WireError::Io(error)) => {
                    return Err(AdminError::cannot_connect(address, &error.to_string()));
                }
                Err(error @ WireError::Timeout(_)) => {
                    Err(AdminError::leader_unreachable(&error.to_string()))
                }
                Err(error) => return Err(AdminError::leader_unreachable(&error.to_string())),
            };
            match outcome {
                Err(error) if join_unsettled(&error) && started.elapsed() < JOIN_RETRY => {
                    tracing::info!(%error, "the join is not settled yet: asked again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// A join that failed: the node is in no cluster again.
    pub(crate) async fn forget_controller(&self) {
        let controller = self.controller_slot().take();
        if let Some(controller) = controller {
            let _ = controller.raft.shutdown().await;
        }
        let directory = runtime::directory(&self.config.data_dir);
        if let Err(error) = std::fs::remove_dir_all(&directory) {
            tracing::warn!(%error, "cannot remove the controller directory of a failed join");
        }
    }

    fn applicant(&self, identity: &Identity, kind: MemberKind) -> Applicant {
        Applicant {
            name: identity.name.clone(),
            peer_address: self.config.advertised_address.clone(),
            kind,
            incarnation: identity.incarnation,
            version: self.config.version.clone(),
            metadata_version: 0,
        }
    }

    /// Waits (bounded) until the node has taken `role` at the controller's order, and, for
    /// a replica, caught up.
    async fn wait_for_role(&self, role: Role) -> Result<(), AdminError> {
        let started = tokio::time::Instant::now();
        while self.role() != role {
            if started.elapsed() > ROLE_WAIT {
                let reason = format!("the node did not become {} in time", role.name());
                return Err(AdminError::controller_unavailable(&reason));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Answers one message of the controller's Raft from another member.
    pub(crate) async fn answer_raft(&self, payload: &[u8]) -> RaftResponse {
        let envelope = match serde_json::from_slice::<RaftEnvelope>(payload) {
            Ok(envelope) => envelope,
            Err(error) => return RaftResponse::Refused(format!("bad Raft message: {error}")),
        };
        let Some(controller) = self.controller() else { return RaftResponse::NoController };
        if envelope.to != controller.identity.node_id {
            let (to, me) = (envelope.to, controller.identity.node_id);
            return RaftResponse::Refused(format!("this is Raft member {me}, not {to}"));
        }
        controller.answer(envelope.message).await
    }

    /// Answers `JoinController`: admits the node if this member leads the controller, else
    /// passes the request to the member that does.
    pub(crate) async fn answer_join(&self, request: Request) -> Response {
        let Request::JoinController {
            name,
            address,
            role,
            version,
            node_id,
            incarnation,
            metadata_version,
            tag_id,
            ..
        } = request.clone()
        else {
            return Response::error(&AdminError::invalid_json("not a join"));
        };
        let Some(controller) = self.controller() else {
            return Response::error(&AdminError::not_leader_register());
        };
        if !controller.leads() {
            return forward_to_leader(&controller, &request).await;
        }
        let kind = match Role::parse(&role) {
            Ok(Role::Follower) => MemberKind::Voter,
            Ok(Role::Learner) => MemberKind::Learner,
            _ => return Response::error(&AdminError::invalid_role(&role)),
        };
        let applicant = Applicant {
            name: name.clone(),
            peer_address: address.clone(),
            kind,
            incarnation,
            version,
            metadata_version,
        };
        let tag_id = match tag_id.as_deref().map(hex_identifier::parse).transpose() {
            Ok(tag_id) => tag_id,
            Err(reason) => return Response::error(&AdminError::invalid_json(&reason)),
        };
        let join = Command::Join { tag_id, applicant };
        let outcome = match controller.propose(join).await {
            Ok(Answer(Ok(_))) => Ok(()),
            Ok(Answer(Err(refusal))) => Err(refused(&refusal)),
            // The leadership moved meanwhile (a hand-over): nothing committed, ask the new one.
            Err(ProposeError::NotLeader { .. }) => {
                return forward_once_led(&controller, &request).await
            }
            Err(error) => Err(unavailable(&error)),
        };
        if let Err(error) = outcome {
            return Response::error(&error);
        }
        let node = crate::controller::ControllerNode { name: name.clone(), peer_address: address };
        let (_, nodes) = controller.raft_members();
        let older: Vec<u64> = nodes
            .iter()
            .filter(|(id, known)| known.name == name && **id != node_id)
            .map(|(id, _)| *id)
            .collect();
        match controller.admit(node_id, node, kind == MemberKind::Voter).await {
            Ok(()) => {}
            // The join is committed; the new leader takes it again (the same node keeps its
            // place) and admits it to Raft.
            Err(ProposeError::NotLeader { .. }) => {
                return forward_once_led(&controller, &request).await
            }
            Err(error) => return Response::error(&unavailable(&error)),
        }
        for id in older {
            tracing::info!(name, id, "the member came back with new data: its old Raft id goes");
            if let Err(error) = controller.dismiss(id).await {
                tracing::warn!(%error, "could not remove a member's old Raft id");
            }
        }
        tracing::info!(name, role, "the controller admitted a member");
        let text = format!("the controller admitted {name} as {role}");
        self.events.record(crate::events::EventKind::Member, text);
        Response::default()
    }

    /// What `GET /admin/nodes` adds in a cluster with a controller.
    pub(crate) fn controller_view(&self) -> Option<ControllerView> {
        let controller = self.controller()?;
        let state = controller.state();
        let (voters, nodes) = controller.raft_members();
        let voter_names = nodes
            .iter()
            .filter(|(id, _)| voters.contains(id))
            .map(|(_, node)| node.name.clone())
            .collect();
        let in_sync = state
            .members
            .keys()
            .filter(|name| {
                state.partitions.iter().all(|partition| partition.in_sync.contains(name))
            })
            .cloned()
            .collect();
        Some(ControllerView {
            tag: state.tag.clone(),
            data_leader: state.data_leader.clone(),
            leader_epoch: state.leader_epoch,
            controller_leader: controller.leader().map(|(_, node)| node.name),
            voters: voter_names,
            in_sync,
            members: state.members.into_iter().map(|(name, member)| (name, member.kind)).collect(),
        })
    }

    /// Commits `command` at the controller's leader, wherever it is.
    pub(crate) async fn propose_anywhere(&self, command: Command) -> Result<(), AdminError> {
        let Some(controller) = self.controller() else {
            return Err(AdminError::controller_unavailable("this node is in no cluster"));
        };
        if controller.leads() {
            match controller.propose(command.clone()).await {
                Ok(Answer(Ok(_))) => return Ok(()),
                Ok(Answer(Err(refusal))) => return Err(refused(&refusal)),
                // The leadership moved meanwhile (the data leader hands it off): nothing was
                // committed, so the new leader is asked below.
                Err(ProposeError::NotLeader { .. }) => {}
                Err(error) => return Err(unavailable(&error)),
            }
        }
        // While the controller's leader changes (it left, it stopped), the forward finds no
        // leader or one that no longer leads: nothing was committed, so it is asked again.
        let request = Request::ControllerPropose { command, hops: 0 };
        let started = tokio::time::Instant::now();
        loop {
            let response = forward_to_leader(&controller, &request).await;
            let outcome = response.into_result().map(|_| ());
            match outcome {
                Err(error) if not_committed(&error) && started.elapsed() < PROPOSE_RETRY => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Answers `ControllerPropose`: commits it here, or passes it to the controller's leader.
    pub(crate) async fn answer_propose(&self, request: Request) -> Response {
        let Some(controller) = self.controller() else {
            return Response::error(&AdminError::controller_unavailable("no controller here"));
        };
        if !controller.leads() {
            return forward_to_leader(&controller, &request).await;
        }
        let Request::ControllerPropose { command, .. } = &request else {
            return Response::error(&AdminError::invalid_json("not a proposal"));
        };
        match controller.propose(command.clone()).await {
            Ok(Answer(Ok(_))) => Response::default(),
            Ok(Answer(Err(refusal))) => Response::error(&refused(&refusal)),
            // The leadership moved between the check and the proposal: nothing was committed,
            // so the new leader is asked (within the forwarding hops), as `propose_anywhere`
            // does. Answering the error instead failed an operator's removal asked of another
            // member while the controller's leader changed.
            Err(ProposeError::NotLeader { .. }) => forward_to_leader(&controller, &request).await,
            Err(error) => Response::error(&unavailable(&error)),
        }
    }

    /// The data leader tells the controller the in-sync sets it recorded where they differ
    /// from the controller's (the controller shows them and keeps them for the record; the
    /// sets members recorded stay what a successor is checked against).
    async fn mirror_in_sync_sets(&self, controller: &Controller, name: &str, epoch: Epoch) {
        let state = controller.state();
        if state.data_leader.as_deref() != Some(name) || state.leader_epoch != epoch {
            return;
        }
        for report in self.handle.report().await {
            let Some(set) = &report.in_sync else { continue };
            let Some(record) = state.partitions.get(report.partition.0 as usize) else { continue };
            let names = leader_first(set);
            // The version this leader recorded, as the members did: the controller keeps the
            // newest it is told (`RecordInSync`), whatever versions it missed in between.
            if set.leader_epoch != epoch || set.isr_epoch <= record.isr_epoch {
                continue;
            }
            let command = Command::RecordInSync {
                partition: report.partition,
                epoch,
                version: set.isr_epoch,
                in_sync: names,
            };
            if let Err(error) = self.propose_anywhere(command).await {
                tracing::debug!(%error, partition = report.partition.0, "in-sync set not mirrored");
                return;
            }
        }
    }

    /// A partition leading here asks the controller to record a new version of its in-sync
    /// set (a compare-and-set on the version, at this leader's epoch); once it did, the
    /// partition may let the version take effect. Nothing is answered on a failure: the
    /// partition asks again a second later, while it still leads.
    pub(crate) async fn record_in_sync(self: Arc<Self>, partition: PartitionId, set: InSyncSet) {
        let (leader_epoch, isr_epoch) = set.version();
        let command = Command::RecordInSync {
            partition,
            epoch: leader_epoch,
            version: isr_epoch,
            in_sync: leader_first(&set),
        };
        match self.propose_anywhere(command).await {
            Ok(()) => {
                let recorded =
                    || ControlMessage::InSyncRecorded { partition, leader_epoch, isr_epoch };
                self.handle.broadcast(recorded);
            }
            Err(error) => {
                let partition_number = partition.0;
                tracing::info!(%error, partition_number, %set, "the controller refused the set");
                // It holds this version or a later one of this epoch (it changed the set
                // itself, as when it removed a member): the leader numbers its set above.
                let Some(controller) = self.controller() else { return };
                let state = controller.state();
                let Some(record) = state.partitions.get(partition.0 as usize) else { return };
                if state.leader_epoch == leader_epoch && record.isr_epoch >= isr_epoch {
                    let recorded = record.isr_epoch;
                    self.handle.broadcast(|| ControlMessage::InSyncRefused {
                        partition,
                        leader_epoch,
                        isr_epoch,
                        recorded,
                    });
                }
            }
        }
    }

    // ----- following the controller -----

    /// Carries out the controller's state on this member for as long as it runs: leads when
    /// named data leader, follows the data leader otherwise.
    async fn follow_controller(self: Arc<Self>, controller: Arc<Controller>) {
        let mut applied = controller.watch();
        let mut progress = Carried::default();
        loop {
            if !self.controller().is_some_and(|current| Arc::ptr_eq(&current, &controller)) {
                return;
            }
            let state = applied.borrow_and_update().state.clone();
            self.carry_out(&controller, &state, &mut progress).await;
            let _ = tokio::time::timeout(FOLLOW_POLL_INTERVAL, applied.changed()).await;
        }
    }

    async fn carry_out(
        self: &Arc<Self>,
        controller: &Controller,
        state: &ClusterState,
        carried: &mut Carried,
    ) {
        let me = controller.identity.name.clone();
        let listed = state.members.get(&me);
        if listed.is_some_and(|record| record.incarnation == controller.identity.incarnation) {
            carried.listed = true;
        } else if listed.is_none() && carried.listed {
            // Removed: whether or not the removal's message reached it.
            self.leave_when_removed().await;
            return;
        }
        let (Some(member), Some(leader)) = (listed, state.data_leader.clone()) else {
            return;
        };
        let epoch = state.leader_epoch;
        if leader == me {
            // A node leads an epoch once: one that has seen it already (it led it and then
            // restarted, or its promotion to it failed half-way) waits to be replaced.
            if self.highest_fence().await >= epoch || carried.tried == Some(epoch) {
                return;
            }
            carried.tried = Some(epoch);
            self.lead_appointed(&controller.identity, epoch).await;
            return;
        }
        let Some(address) = state.members.get(&leader).map(|record| record.peer_address.clone())
        else {
            return;
        };
        let role = if member.kind == MemberKind::Voter { Role::Follower } else { Role::Learner };
        // Following this leader at this epoch already. A leader appointed again (it restarted
        // and was the best choice) keeps its address but must be registered with afresh.
        let following =
            self.role() == role && self.leader_address().as_deref() == Some(address.as_str());
        if following && carried.followed == Some((leader.clone(), epoch)) {
            return;
        }
        // Follow the new leader once it leads: leaving the old one earlier would change its
        // in-sync sets under the new leader's promotion, which then fails its
        // compare-and-set.
        if !leads_at(&self.dialer, &address, epoch).await {
            return;
        }
        match self.repoint(role, &me, &address).await {
            Ok(()) => carried.followed = Some((leader, epoch)),
            Err(error) => {
                tracing::debug!(%error, leader, "cannot follow the new leader yet; trying again");
            }
        }
    }

    /// Promotes this node, appointed at `epoch`: the promotion guard and both phases, at
    /// exactly that epoch; then it serves once the controller confirmed its lease.
    async fn lead_appointed(self: &Arc<Self>, identity: &Identity, epoch: Epoch) {
        tracing::info!(epoch = epoch.0, "the controller appointed this node leader");
        self.set_promotion(Some(STATUS_PROMOTING));
        let outcome = {
            let _serialized = self.role_change.lock().await;
            self.become_leader(identity.name.clone(), Guard::Appointed { at_least: epoch }).await
        };
        match outcome {
            Ok(()) => {
                // No lease until the controller confirms one: `enter` left it unlimited.
                self.handle.shared.set_lease_deadline(0);
                self.set_promotion(None);
                if let Some(controller) = self.controller() {
                    self.renew_lease(&controller, &identity.name, epoch).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, epoch = epoch.0, "the appointed promotion failed");
                let text = format!("the appointed promotion failed: {}", error.message);
                self.events.record(crate::events::EventKind::Refusal, text);
                self.set_promotion(Some(STATUS_FAILED));
            }
        }
    }

    /// Follows the leader at `address` in `role`, leaving whatever this node did before.
    async fn repoint(
        self: &Arc<Self>,
        role: Role,
        name: &str,
        address: &str,
    ) -> Result<(), AdminError> {
        let session = {
            let _serialized = self.role_change.lock().await;
            if self.role() != Role::Admin {
                self.become_admin(false).await;
            }
            self.become_replica(role, name.to_string(), address.to_string()).await?
        };
        tracing::info!(leader = address, role = role.name(), "following the controller's leader");
        let _ = session;
        Ok(())
    }

    // ----- watching the data leader -----

    /// On the member leading the controller's Raft: replaces a data leader that is lost.
    async fn watch_data_leader(self: Arc<Self>, controller: Arc<Controller>) {
        let timeout_ms = self.failover_timeout_ms();
        let mut leading_since: Option<u64> = None;
        let mut handed_off_at = 0u64;
        let mut backoff = AppointmentBackoff::default();
        let mut dismissals = BTreeMap::new();
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            if !self.controller().is_some_and(|current| Arc::ptr_eq(&current, &controller)) {
                return;
            }
            if !controller.leads() {
                leading_since = None;
                continue;
            }
            let since = *leading_since.get_or_insert_with(monotonic_ms);
            let state = controller.state();
            self.dismiss_removed(&controller, &state, &mut dismissals).await;
            let Some(leader) = state.data_leader.clone() else { continue };
            if leader == controller.identity.name
                && monotonic_ms().saturating_sub(handed_off_at) > HAND_OFF_INTERVAL_MS
                && self.role() == Role::Leader
            {
                handed_off_at = monotonic_ms();
                if controller.hand_off_leadership().await {
                    tracing::info!("the controller's leadership goes to another voter");
                    continue;
                }
            }
            let health = self.probe_leader(&controller, &state, &leader).await;
            let confirmed = self.lease_confirmed_ms().max(since);
            let silent_too_long = monotonic_ms().saturating_sub(confirmed) > timeout_ms;
            let replace = match health {
                LeaderHealth::Serving => false,
                LeaderHealth::Gone | LeaderHealth::Failed => true,
                LeaderHealth::Unknown => silent_too_long,
            };
            if !replace {
                continue;
            }
            tracing::warn!(
                leader,
                ?health,
                epoch = state.leader_epoch.0,
                "the data leader is lost"
            );
            if health == LeaderHealth::Failed {
                backoff.note_failed(&leader);
            }
            backoff.appointed = None;
            // No lease is confirmed to the leader being replaced from here on: confirmations
            // read the committed state, which names it until the appointment commits.
            self.set_replacing(Some(leader.clone()));
            let outcome = self.fail_over(&controller, &state, &backoff).await;
            self.set_replacing(None);
            match outcome {
                Ok(appointed) => {
                    tracing::warn!(appointed, "the controller appointed a new data leader");
                    let text = format!("failover: {leader} lost, {appointed} appointed leader");
                    self.events.record(crate::events::EventKind::Failover, text);
                    self.failovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    backoff.appointed = Some(appointed);
                    self.fail_jobs_of(&leader).await;
                    // The new leader gets a whole timeout to promote itself.
                    self.note_lease_confirmed();
                }
                Err(reason) => {
                    tracing::warn!(%reason, "no leader could be appointed yet");
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
            }
        }
    }

    async fn probe_leader(
        &self,
        controller: &Controller,
        state: &ClusterState,
        leader: &str,
    ) -> LeaderHealth {
        let status = if leader == controller.identity.name {
            Ok(self.leader_status().await)
        } else {
            let Some(record) = state.members.get(leader) else { return LeaderHealth::Gone };
            let call = self.dialer.call(&record.peer_address, &Request::LeaderStatus {});
            match tokio::time::timeout(PROBE_TIMEOUT, call).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(WireError::Io(error)))
                    if error.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    return LeaderHealth::Gone
                }
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("no answer".to_string()),
            }
        };
        match status {
            Ok(response) => {
                let epoch = response.epoch.unwrap_or(0);
                let current = state.leader_epoch.0;
                match response.sender_status.as_str() {
                    STATUS_LEADING if epoch == current => LeaderHealth::Serving,
                    STATUS_PROMOTING => LeaderHealth::Serving,
                    STATUS_FAILED => LeaderHealth::Failed,
                    // It has seen its epoch and does not lead it: it restarted, or stepped
                    // down.
                    STATUS_IDLE if epoch >= current => LeaderHealth::Failed,
                    _ => LeaderHealth::Unknown,
                }
            }
            Err(_) => LeaderHealth::Unknown,
        }
    }

    /// Answers `LeaderStatus`: whether this node leads and at which epoch, or how its last
    /// appointed promotion went; otherwise the highest epoch it has seen.
    pub(crate) async fn leader_status(&self) -> Response {
        let leading = self.leader_epoch().filter(|_| self.role() == Role::Leader);
        let (status, epoch) = match (leading, self.promotion()) {
            (_, Some(status)) => (status, self.highest_fence().await),
            (Some(epoch), None) => (STATUS_LEADING, epoch),
            (None, None) => (STATUS_IDLE, self.highest_fence().await),
        };
        Response { sender_status: status.to_string(), epoch: Some(epoch.0), ..Response::default() }
    }

    /// The highest epoch any partition here recorded as its fence: a node that led an epoch,
    /// or accepted one, has it.
    async fn highest_fence(&self) -> Epoch {
        let reports = self.handle.report().await;
        reports.iter().map(|report| report.fence).max().unwrap_or_default()
    }

    /// Appoints the best member the promotion guard accepts
    /// (`strata_core::controller::plan_succession`); answers its name.
    async fn fail_over(
        &self,
        controller: &Controller,
        state: &ClusterState,
        backoff: &AppointmentBackoff,
    ) -> Result<String, String> {
        let reports = self.member_reports(controller, state).await;
        let appoint = plan_succession(state, &reports, Mutations::in_force())
            .map_err(|nobody| nobody.to_string())?;
        let Command::Appoint { leader, .. } = &appoint else {
            unreachable!("plan_succession answers an appointment")
        };
        let leader = leader.clone();
        if backoff.holds(&leader) {
            return Err(format!(
                "{leader}'s promotion just failed: waiting before trying it again"
            ));
        }
        match controller.propose(appoint).await {
            Ok(Answer(Ok(_))) => Ok(leader),
            Ok(Answer(Err(refusal))) => Err(refusal.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Every member's replication report (this one's too); members that do not answer in
    /// time are left out.
    async fn member_reports(
        &self,
        controller: &Controller,
        state: &ClusterState,
    ) -> Vec<MemberReport> {
        let me = controller.identity.name.clone();
        let learner =
            state.members.get(&me).is_some_and(|member| member.kind == MemberKind::Learner);
        let mut reports = vec![self.own_report(&me, learner).await];
        let addresses = state
            .members
            .iter()
            .filter(|(name, _)| **name != me)
            .map(|(name, member)| (name.clone(), member.peer_address.clone()))
            .collect();
        reports.extend(self.reports_from(addresses).await);
        reports
    }

    // ----- the lease -----

    /// While this node leads under the controller, renews its lease; a leader the controller
    /// no longer names loses it at once.
    async fn keep_lease(self: Arc<Self>, controller: Arc<Controller>) {
        let mut rounds = 0u64;
        loop {
            rounds += 1;
            tokio::time::sleep(LEASE_RENEW_INTERVAL).await;
            if !self.controller().is_some_and(|current| Arc::ptr_eq(&current, &controller)) {
                return;
            }
            let (Role::Leader, Some(epoch)) = (self.role(), self.leader_epoch()) else {
                continue;
            };
            if self.transferring() {
                continue;
            }
            let name = controller.identity.name.clone();
            if self.renew_lease(&controller, &name, epoch).await
                && rounds.is_multiple_of(MIRROR_EVERY_ROUNDS)
            {
                self.mirror_in_sync_sets(&controller, &name, epoch).await;
            }
        }
    }

    /// Asks the controller's leader to confirm this node leads at `epoch`, and sets the lease
    /// from before it asked; a refusal ends the lease at once. Answers whether it was renewed.
    async fn renew_lease(&self, controller: &Controller, name: &str, epoch: Epoch) -> bool {
        let asked_at = monotonic_ms();
        match self.confirm_lease(controller, name, epoch).await {
            Ok(()) => {
                self.handle.shared.set_lease_deadline(asked_at + self.lease_duration());
                true
            }
            Err(LeaseRefusal::Replaced(reason)) => {
                tracing::warn!(%reason, "the controller no longer names this node leader");
                let text = "the controller no longer names this node leader";
                self.events.record(crate::events::EventKind::Failover, text);
                self.handle.shared.set_lease_deadline(0);
                false
            }
            Err(LeaseRefusal::Unconfirmed(reason)) => {
                tracing::debug!(%reason, "lease not renewed");
                false
            }
        }
    }

    async fn confirm_lease(
        &self,
        controller: &Controller,
        name: &str,
        epoch: Epoch,
    ) -> Result<(), LeaseRefusal> {
        if controller.leads() {
            let state = controller.confirmed_state().await.map_err(LeaseRefusal::Unconfirmed)?;
            self.note_lease_confirmed();
            return check_leader(&state, name, epoch);
        }
        let Some((_, leader)) = controller.leader() else {
            return Err(LeaseRefusal::Unconfirmed("no controller leader known".into()));
        };
        let request = Request::ConfirmLease { name: name.to_string(), epoch: epoch.0 };
        let call = self.dialer.call(&leader.peer_address, &request);
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(Ok(response)) if response.error_code == 0 => Ok(()),
            Ok(Ok(response)) if response.sender_status == STATUS_IDLE => {
                Err(LeaseRefusal::Replaced(response.error_message))
            }
            Ok(Ok(response)) => Err(LeaseRefusal::Unconfirmed(response.error_message)),
            Ok(Err(error)) => Err(LeaseRefusal::Unconfirmed(error.to_string())),
            Err(_) => Err(LeaseRefusal::Unconfirmed("no answer".into())),
        }
    }

    /// Answers `ConfirmLease` on the controller's leader.
    pub(crate) async fn answer_confirm_lease(&self, name: &str, epoch: u64) -> Response {
        let Some(controller) = self.controller() else {
            return Response::error(&AdminError::controller_unavailable("no controller here"));
        };
        if !controller.leads() {
            return Response::error(&AdminError::controller_unavailable("not its leader"));
        }
        if self.replacing().as_deref() == Some(name) {
            return Response::error(&AdminError::controller_unavailable("being replaced"));
        }
        let state = match controller.confirmed_state().await {
            Ok(state) => state,
            Err(reason) => return Response::error(&AdminError::controller_unavailable(&reason)),
        };
        match check_leader(&state, name, Epoch(epoch)) {
            Ok(()) => {
                self.note_lease_confirmed();
                Response::default()
            }
            Err(LeaseRefusal::Replaced(reason)) => {
                let mut response = Response::error(&AdminError::controller_refused(&reason));
                response.sender_status = STATUS_IDLE.to_string();
                response
            }
            Err(LeaseRefusal::Unconfirmed(reason)) => {
                Response::error(&AdminError::controller_unavailable(&reason))
            }
        }
    }

    /// The lease a confirmation gives: two thirds of `failover_timeout`.
    fn lease_duration(&self) -> u64 {
        self.failover_timeout_ms() * 2 / 3
    }

    fn failover_timeout_ms(&self) -> u64 {
        u64::try_from(self.config.failover_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The controller's state as the admin API shows it.
pub(crate) struct ControllerView {
    pub tag: Option<ClusterTag>,
    pub data_leader: Option<String>,
    pub leader_epoch: Epoch,
    /// The member leading the controller's Raft, as this member last heard.
    pub controller_leader: Option<String>,
    /// Members voting in the controller's Raft.
    pub voters: std::collections::BTreeSet<String>,
    /// Members in the controller's in-sync set of every partition.
    pub in_sync: std::collections::BTreeSet<String>,
    pub members: Vec<(String, MemberKind)>,
}

/// Whether the member at `address` says it leads at `epoch` or later.
async fn leads_at(dialer: &wire::Dialer, address: &str, epoch: Epoch) -> bool {
    let call = dialer.call(address, &Request::LeaderStatus {});
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(Ok(response)) => {
            response.sender_status == STATUS_LEADING && response.epoch >= Some(epoch.0)
        }
        _ => false,
    }
}

/// After an appointee's promotion failed, the same member is not appointed again for a
/// while: the controller's leader and the appointee may reach different members, so the
/// appointee's own guard refuses what the leader's accepted, and appointing it again at once
/// would only burn epochs.
#[derive(Default)]
struct AppointmentBackoff {
    /// The member this controller leader appointed last.
    appointed: Option<String>,
    /// The member whose promotion failed, when, and how often in a row.
    failed: Option<(String, u64, u32)>,
}

impl AppointmentBackoff {
    /// Whether appointing `candidate` waits: its appointed promotion failed just now.
    fn holds(&self, candidate: &str) -> bool {
        let Some((name, at, times)) = &self.failed else { return false };
        let wait = APPOINTMENT_BACKOFF_MS.saturating_mul(u64::from(*times).min(8));
        name == candidate && monotonic_ms().saturating_sub(*at) < wait
    }

    /// `appointee` says it failed: counted when this controller leader appointed it (a
    /// leader that restarted says so too, and is no reason to wait).
    fn note_failed(&mut self, appointee: &str) {
        if self.appointed.as_deref() != Some(appointee) {
            return;
        }
        let times = match &self.failed {
            Some((name, _, times)) if name == appointee => times + 1,
            _ => 1,
        };
        self.failed = Some((appointee.to_string(), monotonic_ms(), times));
    }
}

/// What this member did of the controller's orders, so that it does each once.
#[derive(Default)]
struct Carried {
    /// The epoch it last tried to lead (a node leads one epoch at most once).
    tried: Option<Epoch>,
    /// The leader and epoch it last followed.
    followed: Option<(String, Epoch)>,
    /// Whether the controller's state listed this member (this incarnation): once it no
    /// longer does, the member was removed.
    listed: bool,
}

/// Why a lease was not renewed.
enum LeaseRefusal {
    /// The controller names another leader or epoch: stop now.
    Replaced(String),
    /// No confirmation (no majority, no answer): the lease runs out by itself.
    Unconfirmed(String),
}

fn check_leader(state: &ClusterState, name: &str, epoch: Epoch) -> Result<(), LeaseRefusal> {
    if state.data_leader.as_deref() == Some(name) && state.leader_epoch == epoch {
        return Ok(());
    }
    Err(LeaseRefusal::Replaced(format!(
        "the controller names {} at epoch {}",
        state.data_leader.as_deref().unwrap_or("nobody"),
        state.leader_epoch
    )))
}

fn refused(refusal: &Refusal) -> AdminError {
    AdminError::controller_refused(&refusal.to_string())
}

fn unavailable(error: &ProposeError) -> AdminError {
    AdminError::controller_unavailable(&error.to_string())
}

/// Times a request is passed on towards the controller's leader at most: views of who leads
/// are stale for a moment around an election, and two members must not pass it back and
/// forth.
const FORWARD_HOPS_MAX: u8 = 2;

/// Passes `request` to the member leading the controller's Raft, counting the hop.
/// The names of a set's members as the controller keeps them: the leader first.
fn leader_first(set: &InSyncSet) -> Vec<String> {
    let mut names = vec![set.leader.clone()];
    let followers = set.members.iter().map(|member| &member.name);
    names.extend(followers.filter(|name| **name != set.leader).cloned());
    names
}

/// Passes `request` to the controller's leader once another member leads it (a hand-over
/// under way), waiting [`PROPOSE_RETRY`] at most.
async fn forward_once_led(controller: &Controller, request: &Request) -> Response {
    let started = tokio::time::Instant::now();
    loop {
        let other =
            controller.leader().is_some_and(|(_, node)| node.name != controller.identity.name);
        if other || started.elapsed() > PROPOSE_RETRY {
            return forward_to_leader(controller, request).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a join's answer leaves it to be asked again: no answer in time, or the
/// controller unavailable (refusals, which say why the join cannot be, are final).
fn join_unsettled(error: &AdminError) -> bool {
    let unavailable = AdminError::controller_unavailable("").code;
    let unreachable = AdminError::leader_unreachable("").code;
    error.code == unavailable || error.code == unreachable
}

/// Whether a forwarded proposal surely was not committed: no leader to take it, or a member
/// that does not lead (or runs no controller) refused it before proposing.
fn not_committed(error: &AdminError) -> bool {
    const BEFORE_PROPOSING: [&str; 5] = [
        "no controller here",
        "no leader elected yet",
        "the leader is moving",
        "refused",
        "does not lead the controller",
    ];
    error.code == AdminError::controller_unavailable("").code
        && BEFORE_PROPOSING.iter().any(|reason| error.message.contains(reason))
}

async fn forward_to_leader(controller: &Controller, request: &Request) -> Response {
    let mut request = request.clone();
    let hops = match &mut request {
        Request::JoinController { hops, .. } | Request::ControllerPropose { hops, .. } => hops,
        _ => &mut 0,
    };
    if *hops >= FORWARD_HOPS_MAX {
        return Response::error(&AdminError::controller_unavailable("the leader is moving"));
    }
    *hops += 1;
    let Some((_, leader)) = controller.leader() else {
        return Response::error(&AdminError::controller_unavailable("no leader elected yet"));
    };
    if leader.name == controller.identity.name {
        return Response::error(&AdminError::controller_unavailable("the leader is moving"));
    }
    match controller.dialer.call(&leader.peer_address, &request).await {
        Ok(response) => response,
        Err(error) => Response::error(&AdminError::controller_unavailable(&error.to_string())),
    }
}

/// Proposes `command` on this member, waiting (bounded) for it to lead the controller: right
/// after `initialize` its election takes a moment.
async fn propose_with_retry(
    controller: &Controller,
    command: Command,
) -> Result<Answer, AdminError> {
    let started = tokio::time::Instant::now();
    loop {
        match controller.propose(command.clone()).await {
            Ok(answer) => return Ok(answer),
            Err(ProposeError::NotLeader { .. }) if started.elapsed() < ROLE_WAIT => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(unavailable(&error)),
        }
    }
}

/// 128 random bits for a new cluster's tag.
fn random_tag_id() -> u128 {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes)).is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        return nanos ^ u128::from(std::process::id());
    }
    u128::from_le_bytes(bytes)
}

/// A controller whose files are damaged must not run: stop the process.
fn stop_on_damage(reason: &str) -> ! {
    tracing::error!(reason, "the controller's files are damaged; the node stops");
    eprintln!("strata: the controller's files are damaged: {reason}");
    std::process::exit(5)
}

#[cfg(test)]
mod proposal_tests {
    use super::*;

    /// A member that lost the controller's leadership between its check and its proposal
    /// committed nothing: whoever forwarded the proposal asks again instead of failing the
    /// operator's request (seen in CI: a removal asked of a learner while the leadership moved).
    #[test]
    fn a_proposal_refused_for_lost_leadership_was_not_committed() {
        let lost = unavailable(&ProposeError::NotLeader { leader: None });
        assert!(not_committed(&lost), "{}", lost.message);
        let other = AdminError::controller_unavailable("the command timed out");
        assert!(!not_committed(&other));
    }
}
