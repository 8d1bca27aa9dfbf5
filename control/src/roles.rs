//! The node's cluster role and what changing it does: the leader's membership table, the
//! replica's view of its leader, heartbeats, timeouts, and the orders sent to the shards.
//!
//! All of it runs on the control thread. The state sits behind a std mutex that is never held
//! across an await; role changes are serialized by an async lock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_core::cluster::{
    check_transition, normalize_name, parse_address, validate_name, AdminError, Membership,
    NodeRow, NodeStatus, Now, Role, Transition, FOLLOWERS_MAX, LEARNERS_MAX,
};
use strata_core::handshake::ClusterSecret;
use strata_core::peer::ReplicaKind;
use strata_core::replication::mutations::Mutations;
use strata_core::replication::promotion::Guard;
use strata_core::replication::{Member, Moment};
use strata_core::Epoch;
use strata_shard::{ControlMessage, LeaderSettings, NodeHandle, ServingMode};

use crate::events::EventKind;
use crate::json::SetRole;
use crate::wire::{self, PeerNode, Request, Response, WireError};

/// How often the leader checks for members whose heartbeats stopped.
const TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// A leader asks its silent members for their epoch every this many rounds of its watch.
const PROBE_EVERY_ROUNDS: u64 = 5;
/// Silent members asked per round, at most.
const PROBED_MEMBERS_MAX: usize = 8;
/// How long a new replica's role change waits for its partitions to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);
/// How long a leader waits for its controller to apply the join of a node registering.
const MEMBER_APPLY_WAIT: Duration = Duration::from_secs(2);

/// What the control thread is told at start.
pub struct ControlConfig {
    /// This node's peer address as other nodes reach it (`peer_ip:peer_port`).
    pub advertised_address: String,
    /// The role the node starts in: admin or standalone.
    pub initial_role: Role,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// `[cluster] min_insync_replicas`: members (the leader included) an in-sync set keeps;
    /// with fewer in sync, a leader refuses writes.
    pub min_insync_replicas: usize,
    /// Every config option as name → text, for `GET /admin/configs`.
    pub configs: Vec<(String, String)>,
    /// Where the data epoch is kept.
    pub data_dir: PathBuf,
    pub version: String,
    /// The state of the archive and the uploader, for `GET /admin/storage`; `None` when
    /// nothing is archived.
    pub storage_status: Option<StorageStatus>,
    /// The archive, when the node has one: a leader tells registering nodes its prefix, a
    /// new replica bootstraps from it.
    pub archive: Option<crate::archive::ArchiveAccess>,
    /// `[cluster] failover`: by a person (manual) or by the controller (automatic).
    pub failover: crate::failover::Failover,
    /// `[cluster] failover_timeout`: how long the data leader may go unconfirmed before the
    /// controller replaces it (its lease is two thirds of it).
    pub failover_timeout: Duration,
    /// `[cluster] name`: the human part of a new cluster's tag.
    pub cluster_name: String,
    /// `[security] admin_token`: the bearer token the admin API asks for; `None` asks none.
    pub admin_token: Option<String>,
    /// `[security] admin_tls`: the admin API is served over TLS with this configuration.
    pub admin_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `[security] tls_ca_file`'s certificates: what the members' admin APIs are trusted by
    /// when this node calls them over HTTPS (`POST /admin/cluster/init`).
    pub admin_ca: Option<Vec<ureq::tls::Certificate<'static>>>,
    /// `[security] cluster_secret`: proven on every peer connection, both ways
    /// (`strata_core::handshake`); `None` proves nothing.
    pub cluster_secret: Option<ClusterSecret>,
    /// `[security] allow_insecure_peers`: without a secret, the node may still take a cluster
    /// role and its peer port takes connections from other nodes without one; otherwise it
    /// refuses both.
    pub allow_insecure_peers: bool,
    /// `[security] peer_tls`: peer connections are TLS both ways, every node's certificate
    /// checked against the cluster's CA.
    pub peer_tls: Option<strata_shard::PeerTls>,
}

/// Reports the archive's state as JSON.
pub type StorageStatus = std::sync::Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What a replica knows of its leader.
#[derive(Clone, Debug)]
struct LeaderView {
    name: String,
    address: String,
    status: NodeStatus,
    update_ms: u64,
}

struct State {
    role: Role,
    name: String,
    /// Incremented at every role change: background loops of an older session end.
    session: u64,
    membership: Option<Membership>,
    leader: Option<LeaderView>,
    own_status: NodeStatus,
    heartbeats_sent: u64,
    others: Vec<PeerNode>,
    others_update_ms: u64,
    /// The epoch this node leads at.
    leader_epoch: Option<Epoch>,
}

pub struct Control {
    pub(crate) config: ControlConfig,
    /// Opens this node's peer connections, proving the cluster secret on each.
    pub(crate) dialer: wire::Dialer,
    pub(crate) handle: NodeHandle,
    state: Mutex<State>,
    pub(crate) role_change: tokio::sync::Mutex<()>,
    /// The controller, once this node is in a cluster with automatic failover.
    controller: Mutex<Option<Arc<crate::controller::runtime::Controller>>>,
    /// How the last promotion the controller appointed this node to went, while it matters:
    /// under way, or failed (`LeaderStatus` answers it).
    promotion: Mutex<Option<&'static str>>,
    /// When ([`strata_shard::monotonic_ms`]) this node, leading the controller, last
    /// confirmed the data leader's lease (or appointed a leader).
    lease_confirmed: std::sync::atomic::AtomicU64,
    /// A planned leader transfer is under way here: the lease is not renewed.
    transferring: std::sync::atomic::AtomicBool,
    /// On the controller's leader: the data leader it is replacing, to which it confirms no
    /// lease meanwhile.
    replacing: Mutex<Option<String>>,
    /// Removals under way here: a member that sees its own removal waits for them to end
    /// before it leaves (it may be running the removal of itself).
    pub(crate) removals_running: std::sync::atomic::AtomicU32,
    /// The process was told to stop: `/readyz` answers 503 from then on.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Data leaders this node's controller replaced after losing them (`GET /metrics`).
    pub(crate) failovers: std::sync::atomic::AtomicU64,
    /// Recent events, for the console.
    pub(crate) events: crate::events::Events,
    /// The console's throughput and latency samples (`Control::series`).
    pub(crate) series: Mutex<crate::series::Series>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Both clocks: the wall clock for what is shown, the monotonic one (from the process's first
/// reading) for what expires.
pub(crate) fn now() -> Now {
    Now { wall_ms: now_ms(), moment: Moment(strata_shard::monotonic_ms()) }
}

impl Control {
    pub fn new(config: ControlConfig, handle: NodeHandle) -> Arc<Control> {
        let state = State {
            role: config.initial_role,
            name: String::new(),
            session: 0,
            membership: None,
            leader: None,
            own_status: NodeStatus::Alive,
            heartbeats_sent: 0,
            others: Vec::new(),
            others_update_ms: 0,
            leader_epoch: None,
        };
        Arc::new(Control {
            dialer: wire::Dialer::new(config.cluster_secret.clone(), config.peer_tls.as_ref()),
            config,
            handle,
            state: Mutex::new(state),
            role_change: tokio::sync::Mutex::new(()),
            controller: Mutex::new(None),
            promotion: Mutex::new(None),
            lease_confirmed: std::sync::atomic::AtomicU64::new(0),
            transferring: std::sync::atomic::AtomicBool::new(false),
            replacing: Mutex::new(None),
            removals_running: std::sync::atomic::AtomicU32::new(0),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            failovers: std::sync::atomic::AtomicU64::new(0),
            events: crate::events::Events::default(),
            series: Mutex::new(crate::series::Series::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn controller_slot(
        &self,
    ) -> MutexGuard<'_, Option<Arc<crate::controller::runtime::Controller>>> {
        self.controller.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn promotion(&self) -> Option<&'static str> {
        *self.promotion.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_promotion(&self, status: Option<&'static str>) {
        *self.promotion.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = status;
    }

    pub(crate) fn replacing(&self) -> Option<String> {
        self.replacing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(crate) fn set_replacing(&self, leader: Option<String>) {
        *self.replacing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = leader;
    }

    pub(crate) fn transferring(&self) -> bool {
        self.transferring.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_transferring(&self, transferring: bool) {
        self.transferring.store(transferring, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn lease_confirmed_ms(&self) -> u64 {
        self.lease_confirmed.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn note_lease_confirmed(&self) {
        let now = strata_shard::monotonic_ms();
        self.lease_confirmed.fetch_max(now, std::sync::atomic::Ordering::AcqRel);
    }

    /// The epoch this node leads at, if it leads.
    pub(crate) fn leader_epoch(&self) -> Option<Epoch> {
        self.state().leader_epoch
    }

    /// The peer address of the leader this replica follows.
    pub(crate) fn leader_address(&self) -> Option<String> {
        self.state().leader.as_ref().map(|leader| leader.address.clone())
    }

    pub(crate) fn role(&self) -> Role {
        self.state().role
    }

    /// What `/readyz` decides from.
    pub(crate) fn observed_health(&self) -> crate::health::Observed {
        let (role, leader_status) = {
            let state = self.state();
            (state.role, state.leader.as_ref().map(|leader| leader.status))
        };
        let shared = &self.handle.shared;
        crate::health::Observed {
            role,
            shutting_down: self.shutting_down.load(std::sync::atomic::Ordering::Acquire),
            leader_status,
            partitions: self.handle.partition_count as usize,
            caught_up_partitions: shared.caught_up_partitions(),
            refusing_partitions: shared.refusing_partitions(),
            lease_expired: shared.lease_expired(),
        }
    }

    // ----- role changes -----

    /// `POST /admin/node/current`. Validation errors change nothing; a change that fails
    /// half-way (a registration the leader refused after this node left its old role) leaves
    /// the node in admin mode, as the reference does.
    ///
    /// A new follower or learner answers once it caught up (bounded), waiting without the
    /// role-change lock: a promotion elsewhere must be able to fence it meanwhile, or a leader
    /// that dies during a catch-up would block every failover until the wait ends.
    /// Answers the id of the job that follows a join through the controller, if one started.
    pub(crate) async fn set_role(
        self: &Arc<Self>,
        request: SetRole,
    ) -> Result<Option<u64>, AdminError> {
        if request.role.is_cluster() {
            self.check_peer_security()?;
        }
        let automatic = self.config.failover == crate::failover::Failover::Automatic;
        if automatic && (request.role.is_cluster() || self.controller().is_some()) {
            if request.role.is_cluster() && self.config.archive.is_none() {
                return Err(AdminError::needs_shared_storage());
            }
            return self.set_controlled_role(&request).await;
        }
        let following = self.change_role(request).await?;
        if let Some(session) = following {
            self.wait_for_catch_up(session).await;
        }
        Ok(None)
    }

    /// A cluster role needs the cluster secret, or `allow_insecure_peers`: without either, the
    /// node's peer port takes no connection and it opens none worth opening.
    pub(crate) fn check_peer_security(&self) -> Result<(), AdminError> {
        if self.config.cluster_secret.is_none() && !self.config.allow_insecure_peers {
            return Err(AdminError::needs_cluster_secret());
        }
        Ok(())
    }

    /// The role change itself, under the role-change lock; answers the new replica session to
    /// wait for, if the node now follows a leader.
    async fn change_role(self: &Arc<Self>, request: SetRole) -> Result<Option<u64>, AdminError> {
        let _serialized = self.role_change.lock().await;
        let from = self.role();
        if check_transition(from, request.role)? == Transition::Unchanged {
            return Ok(None);
        }
        let cluster_role = matches!(request.role, Role::Leader | Role::Follower | Role::Learner);
        if cluster_role && self.config.archive.is_none() {
            return Err(AdminError::needs_shared_storage());
        }
        match request.role {
            Role::Admin => {
                self.become_admin(true).await;
                Ok(None)
            }
            Role::Standalone => {
                self.enter(Role::Standalone, String::new(), ServingMode::Standalone);
                self.handle.broadcast(|| ControlMessage::Standalone);
                Ok(None)
            }
            Role::Leader => {
                let name = required_name(request.name.as_deref())?;
                let guard = if request.force {
                    Guard::Forced { salt: crate::promotion::random() }
                } else {
                    Guard::Checked
                };
                self.become_leader(name, guard).await.map(|()| None)
            }
            Role::Follower | Role::Learner => {
                let name = required_name(request.name.as_deref())?;
                let address = request
                    .address
                    .as_deref()
                    .ok_or_else(|| AdminError::field_required("address"))?;
                parse_address(address)?;
                self.become_replica(request.role, name, address.to_string()).await.map(Some)
            }
        }
    }

    /// Records the new role and serving mode and starts a new session.
    fn enter(&self, role: Role, name: String, mode: ServingMode) -> u64 {
        let mut state = self.state();
        state.role = role;
        state.name = name;
        state.session += 1;
        state.membership = None;
        state.leader = None;
        state.own_status = NodeStatus::Alive;
        state.heartbeats_sent = 0;
        state.others.clear();
        state.leader_epoch = None;
        self.handle.shared.set_lease_deadline(u64::MAX);
        self.handle.shared.set_mode(mode);
        tracing::info!(role = role.name(), "role changed");
        self.events.record(EventKind::Role, role_text(role, &state.name));
        state.session
    }

    /// Before the process stops: a replica unregisters from its leader.
    pub(crate) async fn leave_cluster(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::Release);
        let _serialized = self.role_change.lock().await;
        if self.role().is_replica() {
            tracing::info!("leaving the cluster before stopping");
            self.become_admin(true).await;
        }
    }

    /// Leaves any cluster role. A replica tells its leader it leaves when `notify_leader`.
    pub(crate) async fn become_admin(&self, notify_leader: bool) {
        let (from, leader, name) = {
            let state = self.state();
            (state.role, state.leader.clone(), state.name.clone())
        };
        self.enter(Role::Admin, String::new(), ServingMode::Admin);
        match from {
            Role::Leader => self.handle.broadcast(|| ControlMessage::Idle),
            Role::Follower | Role::Learner => {
                self.handle.broadcast(|| ControlMessage::Idle);
                let alive = leader.as_ref().is_some_and(|view| view.status == NodeStatus::Alive);
                if let (true, true, Some(view)) = (notify_leader, alive, leader) {
                    let request = Request::Unregister { name, epoch: self.handle.shared.epoch().0 };
                    if let Err(error) = self.dialer.call(&view.address, &request).await {
                        tracing::warn!(%error, "could not tell the leader this node leaves");
                    }
                }
            }
            Role::Admin | Role::Standalone => {}
        }
    }

    /// Promotes this node (the guard and both phases, `promote`), then leads every
    /// partition at the new epoch.
    pub(crate) async fn become_leader(
        self: &Arc<Self>,
        name: String,
        guard: Guard,
    ) -> Result<(), AdminError> {
        self.check_peer_security()?;
        let plan = self.promote(&name, guard).await?;
        let session = self.enter(Role::Leader, name.clone(), ServingMode::Leader);
        let settings = LeaderSettings {
            me: Member { name: name.clone(), address: self.config.advertised_address.clone() },
            min_insync: self.config.min_insync_replicas,
            progress_timeout_ms: u64::try_from(self.config.heartbeat_timeout.as_millis())
                .unwrap_or(u64::MAX),
            controlled: self.config.failover == crate::failover::Failover::Automatic,
        };
        if let Err(reason) = self.handle.lead(plan.epoch, &plan.sets, &settings).await {
            self.enter(Role::Admin, String::new(), ServingMode::Admin);
            self.handle.broadcast(|| ControlMessage::Idle);
            return Err(AdminError::promotion_failed(&name, &reason));
        }
        let membership = Membership::new(
            name,
            self.config.advertised_address.clone(),
            FOLLOWERS_MAX,
            LEARNERS_MAX,
        );
        {
            let mut state = self.state();
            state.membership = Some(membership);
            state.leader_epoch = Some(plan.epoch);
        }
        tracing::info!(epoch = plan.epoch.0, "this node leads the cluster");
        tokio::spawn(Arc::clone(self).watch_members(session));
        Ok(())
    }

    /// A newer epoch exists: a node that leads an older one stops leading at once.
    pub(crate) async fn step_down_for(&self, epoch: Epoch) {
        let _serialized = self.role_change.lock().await;
        let older = self.state().leader_epoch.is_some_and(|own| own < epoch);
        if !older {
            return;
        }
        tracing::warn!(epoch = epoch.0, "a member has seen a newer epoch: this node stops leading");
        self.handle.broadcast(|| ControlMessage::StepDown { epoch });
        self.enter(Role::Admin, String::new(), ServingMode::Admin);
        self.handle.broadcast(|| ControlMessage::Idle);
    }

    /// The name this node goes by and whether it is a learner (for promotions' reports).
    pub(crate) fn identity(&self) -> (String, bool) {
        let (name, learner) = {
            let state = self.state();
            (state.name.clone(), state.role == Role::Learner)
        };
        if name.is_empty() {
            if let Some(controller) = self.controller() {
                return (controller.identity.name.clone(), learner);
            }
        }
        (name, learner)
    }

    /// Peer addresses of the members this node heard of: its leader, the others its leader
    /// listed, its own members when it leads.
    pub(crate) fn peer_addresses(&self) -> Vec<String> {
        let state = self.state();
        let mut addresses: Vec<String> =
            state.others.iter().map(|node| node.address.clone()).collect();
        addresses.extend(state.leader.as_ref().map(|leader| leader.address.clone()));
        if let Some(membership) = &state.membership {
            addresses.extend(membership.members().map(|member| member.address.clone()));
        }
        addresses
    }

    pub(crate) async fn become_replica(
        self: &Arc<Self>,
        role: Role,
        name: String,
        leader_address: String,
    ) -> Result<u64, AdminError> {
        self.check_peer_security()?;
        let from = self.role();
        if from == Role::Leader && leader_address == self.config.advertised_address {
            let (ip, port) = leader_address.rsplit_once(':').unwrap_or((&leader_address, ""));
            return Err(AdminError::same_address_as_leader(ip, port));
        }
        if from == Role::Leader {
            // The reference lets a leader join another leader; it stops leading first.
            self.enter(Role::Admin, String::new(), ServingMode::Admin);
            self.handle.broadcast(|| ControlMessage::Idle);
        }
        let seen = self.handle.shared.epoch();
        let request = Request::Register {
            name: name.clone(),
            role: role.name().to_string(),
            address: self.config.advertised_address.clone(),
            version: self.config.version.clone(),
            partitions: self.handle.partition_count,
            epoch: seen.0,
        };
        let response = match self.dialer.call(&leader_address, &request).await {
            Ok(response) => response.into_result().map_err(|error| AdminError::from_leader(&error)),
            Err(WireError::Io(error)) => {
                Err(AdminError::cannot_connect(&leader_address, &error.to_string()))
            }
            Err(error) => Err(AdminError::leader_unreachable(&error.to_string())),
        };
        let response = response.and_then(|response| match response.epoch {
            Some(epoch) if epoch < seen.0 => Err(AdminError::stale_leader(epoch, seen.0)),
            _ => Ok(response),
        });
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                if from == Role::Leader {
                    tracing::warn!(%error, "registration failed; the node is in admin mode");
                }
                return Err(error);
            }
        };
        let leader: SocketAddr =
            leader_address.parse().map_err(|_| AdminError::invalid_address(&leader_address))?;
        let session = self.enter(role, name.clone(), ServingMode::Replica);
        self.state().leader = Some(LeaderView {
            name: response.leader_name.clone(),
            address: leader_address.clone(),
            status: NodeStatus::Alive,
            update_ms: now_ms(),
        });
        let kind =
            if role == Role::Follower { ReplicaKind::Follower } else { ReplicaKind::Learner };
        let interval = response
            .heartbeat_interval_ms
            .filter(|milliseconds| *milliseconds > 0)
            .map_or(self.config.heartbeat_interval, Duration::from_millis);
        tokio::spawn(Arc::clone(self).send_heartbeats(session, interval));
        if let Some(archive) = &self.config.archive {
            if !response.archive_prefix.is_empty() {
                crate::archive::bootstrap(archive, &self.handle, &response.archive_prefix).await;
            }
        }
        let leader_shards = response.shards;
        let member = Member { name: name.clone(), address: self.config.advertised_address.clone() };
        self.handle.broadcast(|| ControlMessage::Follow {
            leader,
            member: member.clone(),
            kind,
            leader_shards,
        });
        Ok(session)
    }

    /// Waits (bounded) until every partition streams from the leader and holds durably what
    /// the leader had when its stream started, so that the role change returns with the
    /// replica's data in place, as the reference's synchronous log sync does.
    pub(crate) async fn wait_for_catch_up(&self, session: u64) {
        let started = tokio::time::Instant::now();
        let all = self.handle.partition_count as usize;
        while self.handle.shared.caught_up_partitions() < all {
            if self.state().session != session {
                return;
            }
            if started.elapsed() > CATCH_UP_WAIT {
                let shared = &self.handle.shared;
                tracing::warn!(
                    partitions = all,
                    streaming = shared.streaming_partitions(),
                    caught_up = shared.caught_up_partitions(),
                    "partitions still catching up; the role change returns anyway"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ----- background loops -----

    /// Leader: marks members whose heartbeats stopped as `timeout` and stops waiting for them;
    /// refreshes each member's replication lag.
    async fn watch_members(self: Arc<Self>, session: u64) {
        let timeout_ms = self.config.heartbeat_timeout.as_millis() as u64;
        let mut rounds = 0u64;
        loop {
            tokio::time::sleep(TIMEOUT_CHECK_INTERVAL).await;
            let progress = self.handle.shared.progress();
            let expired = {
                let mut state = self.state();
                if state.session != session {
                    return;
                }
                let Some(membership) = state.membership.as_mut() else { return };
                let names: Vec<String> =
                    membership.members().map(|member| member.name.clone()).collect();
                for name in names {
                    let lags: Vec<u64> = progress
                        .iter()
                        .filter(|((replica, _), _)| *replica == name)
                        .map(|(_, entry)| entry.leader_lsn.0.saturating_sub(entry.acked_lsn.0))
                        .collect();
                    let lag = if lags.is_empty() { None } else { Some(lags.iter().sum()) };
                    membership.set_lag(&name, lag);
                }
                membership.expire(now(), timeout_ms, Mutations::in_force())
            };
            for name in expired {
                tracing::warn!(name, "no heartbeat within the timeout: member marked timeout");
                self.events.record(EventKind::Member, format!("{name} timed out: no heartbeat"));
                self.handle.broadcast(|| ControlMessage::MemberGone { name: name.clone() });
            }
            rounds += 1;
            if rounds.is_multiple_of(PROBE_EVERY_ROUNDS) {
                self.probe_silent_members(session);
            }
        }
    }

    /// A leader asks the members that stopped heartbeating what epoch they have seen: one
    /// that accepted a newer epoch means another node was promoted, and this one steps down.
    fn probe_silent_members(self: &Arc<Self>, session: u64) {
        let (silent, own_epoch) = {
            let state = self.state();
            let Some(membership) = &state.membership else { return };
            let silent: Vec<String> = membership
                .members()
                .filter(|member| member.status != NodeStatus::Alive)
                .take(PROBED_MEMBERS_MAX)
                .map(|member| member.address.clone())
                .collect();
            (silent, state.leader_epoch)
        };
        let Some(own_epoch) = own_epoch else { return };
        for address in silent {
            let control = Arc::clone(self);
            tokio::spawn(async move {
                let request = Request::ReplicationState {};
                let Ok(response) = control.dialer.call(&address, &request).await else {
                    return;
                };
                let newest =
                    response.partitions.iter().map(|partition| partition.fence).max().unwrap_or(0);
                if newest > own_epoch.0 && control.state().session == session {
                    control.step_down_for(Epoch(newest)).await;
                }
            });
        }
    }

    /// Replica: heartbeats to the leader every `interval` until the session changes.
    async fn send_heartbeats(self: Arc<Self>, session: u64, interval: Duration) {
        let mut connection: Option<wire::PeerConnection> = None;
        loop {
            tokio::time::sleep(interval).await;
            let (request, address) = {
                let state = self.state();
                if state.session != session {
                    return;
                }
                let Some(leader) = &state.leader else { return };
                let request = Request::Heartbeat {
                    name: state.name.clone(),
                    role: state.role.name().to_string(),
                    address: self.config.advertised_address.clone(),
                    epoch: self.handle.shared.epoch().0,
                };
                (request, leader.address.clone())
            };
            let outcome = heartbeat_once(&self.dialer, &mut connection, &address, &request).await;
            self.record_heartbeat(session, outcome);
        }
    }

    fn record_heartbeat(&self, session: u64, outcome: Result<Response, WireError>) {
        let mut state = self.state();
        if state.session != session {
            return;
        }
        let now = now_ms();
        let seen = self.handle.shared.epoch().0;
        let status = match outcome {
            // A leader older than an epoch this node has fenced is not this node's leader.
            Ok(response) if response.epoch.is_some_and(|epoch| epoch < seen) => NodeStatus::Timeout,
            Ok(response) if response.error_code == 0 => {
                state.heartbeats_sent += 1;
                state.own_status = NodeStatus::from_name(&response.sender_status);
                state.others = response.nodes;
                state.others_update_ms = now;
                NodeStatus::Alive
            }
            Ok(response) if response.error_code == 7025 => NodeStatus::LostConnection,
            Ok(_) | Err(_) => NodeStatus::Timeout,
        };
        if let Some(leader) = state.leader.as_mut() {
            if status == NodeStatus::Alive {
                leader.update_ms = now;
            }
            if leader.status != status {
                tracing::info!(leader = leader.name, status = status.name(), "leader status");
                let text = format!("the leader {} is {}", leader.name, status.name());
                self.events.record(EventKind::Member, text);
            }
            leader.status = status;
        }
    }

    // ----- peer requests -----

    /// A leader that hears of an epoch newer than its own steps down and refuses the request.
    async fn newer_than_own(&self, epoch: u64) -> Option<Response> {
        let own = self.state().leader_epoch?;
        if epoch <= own.0 {
            return None;
        }
        self.step_down_for(Epoch(epoch)).await;
        Some(Response::error(&AdminError::stale_leader(own.0, epoch)))
    }

    /// In a cluster with a controller, only its members register with the leader: a node
    /// removed while it was paused or cut off would otherwise be listed again, until it
    /// learns of its removal and leaves, then as lost for good. A member whose join the
    /// controller committed a moment ago may not be applied here yet: it is waited for.
    async fn unknown_to_controller(&self, name: &str) -> Option<Response> {
        let controller = self.controller()?;
        let started = tokio::time::Instant::now();
        while !controller.state().members.contains_key(name) {
            if started.elapsed() >= MEMBER_APPLY_WAIT {
                let reason = format!("{name} is no member of this cluster");
                tracing::info!(name, "a registration refused: not a member (removed?)");
                return Some(Response::error(&AdminError::controller_refused(&reason)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Promotion, phase one, on this member: every partition fences itself at `epoch`. A
    /// leader of an older epoch stops leading.
    async fn answer_accept_epoch(
        &self,
        epoch: Epoch,
        basis: Vec<crate::wire::WireBasis>,
        candidate: &str,
    ) -> Response {
        let _serialized = self.role_change.lock().await;
        let basis = crate::promotion::basis_from_wire(basis);
        match self.handle.accept_epoch(epoch, &basis).await {
            Ok(()) => {
                if self.role() == Role::Leader {
                    tracing::warn!(
                        candidate,
                        epoch = epoch.0,
                        "another member is promoted: this node stops leading"
                    );
                    self.enter(Role::Admin, String::new(), ServingMode::Admin);
                    self.handle.broadcast(|| ControlMessage::Idle);
                }
                Response::default()
            }
            Err(reason) => Response::error(&AdminError::phase_refused(&reason)),
        }
    }

    /// Answers a control request from another node.
    pub(crate) async fn answer(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Register { name, role, address, version, partitions, epoch } => {
                if let Some(refusal) = self.newer_than_own(epoch).await {
                    return refusal;
                }
                if let Some(refusal) = self.unknown_to_controller(&name).await {
                    return refusal;
                }
                self.register(&name, &role, &address, &version, partitions)
                    .unwrap_or_else(|error| Response::error(&error))
            }
            Request::Heartbeat { name, address, epoch, .. } => {
                if let Some(refusal) = self.newer_than_own(epoch).await {
                    return refusal;
                }
                self.heartbeat(&name, &address)
            }
            Request::ReplicationState {} => self.answer_replication_state().await,
            Request::JoinController { .. } => self.answer_join(request).await,
            Request::TransferLeadership { to, job } => self.answer_transfer(&to, job).await,
            Request::RemoveMember { name } => self.answer_remove(&name).await,
            Request::ControllerPropose { .. } => self.answer_propose(request).await,
            Request::LeaderStatus {} => self.leader_status().await,
            Request::ConfirmLease { name, epoch } => self.answer_confirm_lease(&name, epoch).await,
            Request::AcceptEpoch { epoch, basis, candidate } => {
                self.answer_accept_epoch(Epoch(epoch), basis, &candidate).await
            }
            Request::InstallSets { sets, .. } => match crate::promotion::sets_from_wire(sets) {
                Ok(sets) => match self.handle.install_sets(&sets).await {
                    Ok(()) => Response::default(),
                    Err(reason) => Response::error(&AdminError::phase_refused(&reason)),
                },
                Err(reason) => Response::error(&AdminError::invalid_json(&reason)),
            },
            Request::Unregister { name, epoch } => {
                if let Some(refusal) = self.newer_than_own(epoch).await {
                    return refusal;
                }
                match self.unregister(&name) {
                    Ok(()) => Response::default(),
                    Err(error) => Response::error(&error),
                }
            }
            Request::ChangeRole { role, epoch } => {
                if Role::parse(&role).ok() != Some(Role::Admin) {
                    return Response::error(&AdminError::invalid_role(&role));
                }
                let seen = self.handle.shared.epoch().0;
                if epoch < seen {
                    return Response::error(&AdminError::stale_leader(epoch, seen));
                }
                // A node running its own removal leaves once that ends, when its controller
                // shows the removal (`carry_out`).
                if self.removals_running.load(std::sync::atomic::Ordering::Acquire) > 0 {
                    return Response::default();
                }
                let _serialized = self.role_change.lock().await;
                if self.role().is_replica() {
                    tracing::warn!("the leader removed this node from the cluster");
                    self.become_admin(false).await;
                }
                self.leave_controlled_cluster().await;
                Response::default()
            }
        }
    }

    fn register(
        &self,
        name: &str,
        role: &str,
        address: &str,
        version: &str,
        partitions: u32,
    ) -> Result<Response, AdminError> {
        let mut state = self.state();
        let leader_name = state.name.clone();
        let Some(membership) = state.membership.as_mut() else {
            return Err(AdminError::not_leader_register());
        };
        let role = Role::parse(role)?;
        validate_name(name)?;
        parse_address(address)?;
        if major_minor(version) != major_minor(&self.config.version) {
            return Err(AdminError {
                code: 7029,
                message: format!(
                    "Incompatible version: {version}, leader runs {}",
                    self.config.version
                ),
            });
        }
        if partitions != self.handle.partition_count {
            return Err(AdminError {
                code: 7030,
                message: format!(
                    "Partition count differs: {partitions}, the leader has {}",
                    self.handle.partition_count
                ),
            });
        }
        let returning = membership.get(name).is_some();
        membership.register(name, role, address, now())?;
        tracing::info!(name, role = role.name(), address, returning, "node registered");
        let verb = if returning { "came back" } else { "joined" };
        let text = format!("{name} {verb} as {} from {address}", role.name());
        self.events.record(EventKind::Member, text);
        let epoch = state.leader_epoch.map(|epoch| epoch.0);
        drop(state);
        Ok(Response {
            epoch,
            leader_name,
            heartbeat_interval_ms: Some(self.config.heartbeat_interval.as_millis() as u64),
            archive_prefix: self
                .config
                .archive
                .as_ref()
                .map(|archive| archive.prefix())
                .unwrap_or_default(),
            shards: Some(self.handle.shard_count()),
            ..Response::default()
        })
    }

    fn heartbeat(&self, name: &str, address: &str) -> Response {
        let mut state = self.state();
        let Some(membership) = state.membership.as_mut() else {
            let mut response = Response::error(&AdminError::not_leader_register());
            response.sender_status = NodeStatus::Removed.name().to_string();
            return response;
        };
        match membership.heartbeat(name, address, now()) {
            Ok(outcome) => {
                if outcome.returned {
                    tracing::info!(name, "member heartbeats again: alive");
                    self.events.record(EventKind::Member, format!("{name} heartbeats again"));
                }
                let nodes = membership
                    .members()
                    .filter(|member| member.name != name)
                    .map(|member| PeerNode {
                        name: member.name.clone(),
                        role: member.role.name().to_string(),
                        status: member.status.name().to_string(),
                        address: member.address.clone(),
                        heartbeats: member.heartbeats,
                    })
                    .collect();
                Response {
                    sender_status: NodeStatus::Alive.name().to_string(),
                    nodes,
                    epoch: state.leader_epoch.map(|epoch| epoch.0),
                    ..Response::default()
                }
            }
            Err(error) => {
                let mut response = Response::error(&error);
                response.sender_status = NodeStatus::LostConnection.name().to_string();
                response
            }
        }
    }

    fn unregister(&self, name: &str) -> Result<(), AdminError> {
        let mut state = self.state();
        let Some(membership) = state.membership.as_mut() else {
            return Err(AdminError::not_leader_register());
        };
        membership.remove(name).map_err(|_| AdminError {
            code: 7019,
            message: format!("Node doesn't exist: Attempt to remove non-exist node: {name}"),
        })?;
        drop(state);
        tracing::info!(name, "node unregistered");
        self.events.record(EventKind::Member, format!("{name} left the cluster"));
        self.handle.broadcast(|| ControlMessage::MemberGone { name: name.to_string() });
        Ok(())
    }

    /// Whether `name` may open replication streams: an alive member of this leader.
    pub(crate) fn may_stream(&self, name: &str) -> bool {
        let state = self.state();
        state
            .membership
            .as_ref()
            .and_then(|membership| membership.get(name))
            .is_some_and(|member| member.status == NodeStatus::Alive)
    }

    // ----- listing and removal -----

    /// `DELETE /admin/node/{name}` on the leader.
    /// `DELETE /admin/node/{name}`; with a controller, a job whose id is answered.
    pub(crate) async fn remove(&self, raw_name: &str) -> Result<Option<u64>, AdminError> {
        if let Some(controller) = self.controller() {
            return self.remove_as_job(&controller, raw_name).await.map(Some);
        }
        self.remove_manually(raw_name).await.map(|()| None)
    }

    async fn remove_manually(&self, raw_name: &str) -> Result<(), AdminError> {
        let name = normalize_name(raw_name);
        let member = {
            let mut state = self.state();
            if !state.name.is_empty() && state.name == name {
                return Err(AdminError::cannot_remove_self(&name));
            }
            if state.role != Role::Leader {
                return Err(AdminError::cannot_remove_in_mode(state.role));
            }
            let membership = state.membership.as_mut().expect("a leader has a membership");
            membership.remove(&name)?
        };
        self.handle.broadcast(|| ControlMessage::MemberGone { name: name.clone() });
        if member.status == NodeStatus::Alive {
            let epoch = self.state().leader_epoch.map_or(0, |epoch| epoch.0);
            let request = Request::ChangeRole { role: Role::Admin.name().to_string(), epoch };
            if let Err(error) = self.dialer.call(&member.address, &request).await {
                tracing::warn!(name, %error, "the removed node did not confirm it left");
            }
        }
        tracing::info!(name, "node removed");
        Ok(())
    }

    /// Takes `name` out of this leader's membership table, if it is there.
    pub(crate) fn remove_from_membership(
        &self,
        name: &str,
    ) -> Option<strata_core::cluster::Member> {
        let mut state = self.state();
        state.membership.as_mut().and_then(|membership| membership.remove(name).ok())
    }

    /// Rows for `GET /admin/nodes`: this node first, then (on a replica) the leader, then the
    /// others by name.
    pub(crate) fn rows(&self) -> Result<Vec<NodeRow>, AdminError> {
        let state = self.state();
        match state.role {
            Role::Admin => return Err(AdminError::starting()),
            Role::Standalone => return Err(AdminError::show_nodes_cluster_only()),
            _ => {}
        }
        let now = now_ms();
        let mut rows = vec![NodeRow {
            name: state.name.clone(),
            role: state.role,
            status: if state.role == Role::Leader { NodeStatus::Alive } else { state.own_status },
            address: self.config.advertised_address.clone(),
            heartbeats: if state.role == Role::Leader { 0 } else { state.heartbeats_sent },
            last_update_ms: now,
            lag: None,
        }];
        if let Some(membership) = &state.membership {
            rows.extend(membership.members().map(strata_core::cluster::Member::row));
        }
        if let Some(leader) = &state.leader {
            rows.push(NodeRow {
                name: leader.name.clone(),
                role: Role::Leader,
                status: leader.status,
                address: leader.address.clone(),
                heartbeats: 0,
                last_update_ms: leader.update_ms,
                lag: None,
            });
            let mut others: Vec<&PeerNode> = state.others.iter().collect();
            others.sort_by(|left, right| left.name.cmp(&right.name));
            rows.extend(others.into_iter().map(|node| NodeRow {
                name: node.name.clone(),
                role: Role::parse(&node.role).unwrap_or(Role::Learner),
                status: NodeStatus::from_name(&node.status),
                address: node.address.clone(),
                heartbeats: node.heartbeats,
                last_update_ms: state.others_update_ms,
                lag: None,
            }));
        }
        Ok(rows)
    }

    /// `GET /admin/node/{name}`: on a replica the leader is looked up first, then this node,
    /// then the others.
    pub(crate) fn row(&self, raw_name: &str) -> Result<NodeRow, AdminError> {
        if matches!(self.role(), Role::Admin | Role::Standalone) {
            return Err(AdminError::show_node_cluster_only());
        }
        let name = normalize_name(raw_name);
        let rows = self.rows()?;
        rows.into_iter().find(|row| row.name == name).ok_or_else(|| AdminError::node_missing(&name))
    }
}

/// The console's words for a role change: `this node is now follower "ron"`.
fn role_text(role: Role, name: &str) -> String {
    if name.is_empty() {
        format!("this node is now {}", role.name())
    } else {
        format!("this node is now {} \"{name}\"", role.name())
    }
}

fn required_name(name: Option<&str>) -> Result<String, AdminError> {
    let name = name.ok_or_else(|| AdminError::field_required("name"))?;
    validate_name(name)?;
    Ok(normalize_name(name))
}

fn major_minor(version: &str) -> (&str, &str) {
    let mut parts = version.split('.');
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

/// One heartbeat over a kept connection, reconnecting when it broke.
async fn heartbeat_once(
    dialer: &wire::Dialer,
    connection: &mut Option<wire::PeerConnection>,
    address: &str,
    request: &Request,
) -> Result<Response, WireError> {
    if connection.is_none() {
        *connection = Some(dialer.connect(address).await?);
    }
    let stream = connection.as_mut().expect("connected above");
    let outcome = wire::exchange(stream, request).await;
    if outcome.is_err() {
        *connection = None;
    }
    outcome
}
