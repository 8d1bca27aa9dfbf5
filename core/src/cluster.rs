//! Cluster roles, their transitions, the admin API's error codes, and the leader's membership
//! table: the sans-IO part of the control plane, following Infinity's cluster API (tag
//! v0.6.0-dev3). Times are passed in ([`Now`]); nothing here reads a clock. Timeouts run on the
//! monotonic clock only: a wall clock stepped forward or back must neither expire every member
//! at once nor stop expiring them.

use std::collections::BTreeMap;
use std::fmt;

use crate::replication::mutations::{Mutation, Mutations};
use crate::replication::Moment;

/// The two clocks the control thread reads: the wall clock (Unix milliseconds) for what is
/// shown, and a monotonic one for what expires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    pub wall_ms: u64,
    pub moment: Moment,
}

/// Followers a leader accepts: the documented four (the reference admitted only three).
pub const FOLLOWERS_MAX: usize = 4;
/// Learners a leader accepts.
pub const LEARNERS_MAX: usize = 255;
/// Node names are shorter than this.
pub const NAME_BYTES_LIMIT: usize = 65536;

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Standalone,
    Leader,
    Follower,
    Learner,
}

impl Role {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Standalone => "standalone",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Learner => "learner",
        }
    }

    /// Parses a role name, ignoring case.
    ///
    /// # Errors
    ///
    /// 8007 `Invalid node role <name>` for anything else.
    pub fn parse(text: &str) -> Result<Role, AdminError> {
        let lowered = text.to_lowercase();
        Ok(match lowered.as_str() {
            "admin" => Role::Admin,
            "standalone" => Role::Standalone,
            "leader" => Role::Leader,
            "follower" => Role::Follower,
            "learner" => Role::Learner,
            _ => return Err(AdminError::invalid_role(&lowered)),
        })
    }

    /// Leader, follower or learner.
    #[must_use]
    pub fn is_cluster(self) -> bool {
        matches!(self, Role::Leader | Role::Follower | Role::Learner)
    }

    /// Follower or learner.
    #[must_use]
    pub fn is_replica(self) -> bool {
        matches!(self, Role::Follower | Role::Learner)
    }
}

/// A node's connection status as its leader (or its replica) sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Alive,
    Timeout,
    LostConnection,
    Removed,
    Invalid,
}

impl NodeStatus {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            NodeStatus::Alive => "alive",
            NodeStatus::Timeout => "timeout",
            NodeStatus::LostConnection => "lost connection",
            NodeStatus::Removed => "removed",
            NodeStatus::Invalid => "invalid",
        }
    }

    /// The status a name stands for; `Invalid` for unknown names.
    #[must_use]
    pub fn from_name(name: &str) -> NodeStatus {
        match name {
            "alive" => NodeStatus::Alive,
            "timeout" => NodeStatus::Timeout,
            "lost connection" => NodeStatus::LostConnection,
            "removed" => NodeStatus::Removed,
            _ => NodeStatus::Invalid,
        }
    }
}

/// An admin API error: Infinity's code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminError {
    pub code: u32,
    pub message: String,
}

impl fmt::Display for AdminError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for AdminError {}

fn error(code: u32, message: String) -> AdminError {
    AdminError { code, message }
}

impl AdminError {
    #[must_use]
    pub fn invalid_json(detail: &str) -> AdminError {
        error(3067, detail.to_string())
    }
    /// A query parameter that does not parse (Strata's own routes; the reference has none).
    #[must_use]
    pub fn invalid_parameter(name: &str, value: &str) -> AdminError {
        error(3067, format!("Invalid value '{value}' for query parameter '{name}'"))
    }
    #[must_use]
    pub fn field_required(field: &str) -> AdminError {
        error(3076, format!("Field '{field}' is required"))
    }
    #[must_use]
    pub fn invalid_role(role: &str) -> AdminError {
        error(8007, format!("Invalid node role {role}"))
    }
    #[must_use]
    pub fn empty_name() -> AdminError {
        error(3042, "Empty column name.".into())
    }
    #[must_use]
    pub fn name_too_long() -> AdminError {
        error(3046, format!("Given column name length exceeds {NAME_BYTES_LIMIT}"))
    }
    #[must_use]
    pub fn invalid_name(name: &str) -> AdminError {
        error(3005, format!("{name} is a invalid column name"))
    }
    #[must_use]
    pub fn invalid_address(address: &str) -> AdminError {
        error(7016, format!("Invalid server address: {address}"))
    }
    /// 7024: a cluster role on a node without shared storage.
    #[must_use]
    pub fn needs_shared_storage() -> AdminError {
        error(7024, "Expect storage type: shared storage, actual storage type: local".into())
    }
    /// 7038: a cluster role on a node without a cluster secret that does not allow insecure
    /// peers.
    #[must_use]
    pub fn needs_cluster_secret() -> AdminError {
        error(
            7038,
            "A cluster role needs a cluster secret: set [security] cluster_secret (or \
             cluster_secret_file) to the secret every member shares, or set [security] \
             allow_insecure_peers = true to let any host that reaches the peer port take part"
                .into(),
        )
    }
    #[must_use]
    pub fn same_address_as_leader(ip: &str, port: &str) -> AdminError {
        error(
            7016,
            format!(
                "Invalid server address: Follower or learner peer server address {ip}: {port} \
                 are same as leader"
            ),
        )
    }
    #[must_use]
    pub fn cannot_connect(address: &str, reason: &str) -> AdminError {
        error(7018, format!("Can't connect server: {address}, {reason}"))
    }
    #[must_use]
    pub fn node_missing(name: &str) -> AdminError {
        error(7019, format!("Node doesn't exist: {name}"))
    }
    #[must_use]
    pub fn duplicate_node(name: &str) -> AdminError {
        error(7020, format!("Duplicate node: {name}"))
    }
    #[must_use]
    pub fn leader_unreachable(reason: &str) -> AdminError {
        error(7021, format!("Can't connect to leader: {reason}"))
    }
    #[must_use]
    pub fn not_registered(name: &str) -> AdminError {
        error(7025, format!("Not registered node: {name}"))
    }
    #[must_use]
    pub fn too_many_followers(limit: usize) -> AdminError {
        error(7027, format!("Too many followers, limit: {limit}"))
    }
    #[must_use]
    pub fn too_many_learners(limit: usize) -> AdminError {
        error(7028, format!("Too many learner, limit: {limit}"))
    }
    /// 7031: the promotion guard refused to make this node leader. When `forceable`, the
    /// message says that `"force": true` overrides it, at the price it tells.
    #[must_use]
    pub fn promotion_refused(reason: &str, forceable: bool) -> AdminError {
        let advice = if forceable {
            ". Promote a member of that set, or set \"force\": true to lead anyway and lose what \
             this node lacks"
        } else {
            ""
        };
        error(7031, format!("Promotion refused: {reason}{advice}"))
    }
    /// 7032: a member refused or did not answer a phase of the promotion; nothing leads at the
    /// new epoch.
    #[must_use]
    pub fn promotion_failed(member: &str, reason: &str) -> AdminError {
        error(7032, format!("Promotion failed: {member}: {reason}"))
    }
    /// 7032 as a member answers it: why this member refused a promotion's phase (the
    /// promoting node names the member).
    #[must_use]
    pub fn phase_refused(reason: &str) -> AdminError {
        error(7032, reason.to_string())
    }
    /// 7033: a leader whose epoch is older than one this node has seen.
    #[must_use]
    pub fn stale_leader(leader_epoch: u64, seen: u64) -> AdminError {
        error(
            7033,
            format!(
                "Stale leader: its epoch {leader_epoch} is older than epoch {seen}, which this \
                 node has seen"
            ),
        )
    }
    /// 7034: the controller refused a change (another cluster, a taken name, too many
    /// followers, ...): `reason` says which rule.
    #[must_use]
    pub fn controller_refused(reason: &str) -> AdminError {
        error(7034, format!("Controller refused: {reason}"))
    }
    /// 7035: the controller could not be reached or could not commit (no majority of its
    /// voters answers); nothing changed, or the change may still commit: look again.
    #[must_use]
    pub fn controller_unavailable(reason: &str) -> AdminError {
        error(7035, format!("Controller unavailable: {reason}"))
    }
    /// 7037: no job by that id.
    /// The admin API asks for `Authorization: Bearer <admin_token>` (HTTP 401).
    #[must_use]
    pub fn unauthorized(token_given: bool) -> AdminError {
        let message = if token_given {
            "Unauthorized: the bearer token is not this node's admin_token"
        } else {
            "Unauthorized: send the admin token as Authorization: Bearer <token>"
        };
        error(7040, message.to_string())
    }
    #[must_use]
    pub fn no_such_job(id: &str) -> AdminError {
        error(7037, format!("No such job: {id}"))
    }
    /// 7036: the node belongs to a cluster with a controller, which sets its role.
    #[must_use]
    pub fn controlled(name: &str) -> AdminError {
        error(
            7036,
            format!(
                "This node is {name}, a member of a cluster with automatic failover: the \
                 controller sets its role; remove it from the cluster first"
            ),
        )
    }
    /// A leader's refusal, passed on by the node that asked it.
    #[must_use]
    pub fn from_leader(refusal: &AdminError) -> AdminError {
        error(refusal.code, format!("From leader: {}", refusal.message))
    }
    #[must_use]
    pub fn not_leader_register() -> AdminError {
        error(8007, "Attempt to register with a non-leader node".into())
    }
    #[must_use]
    pub fn cannot_remove_self(name: &str) -> AdminError {
        error(8007, format!("Can't remove current node: {name}"))
    }
    #[must_use]
    pub fn cannot_remove_in_mode(role: Role) -> AdminError {
        error(8007, format!("Can't remove node in {} mode", role.name()))
    }
    #[must_use]
    pub fn node_info_updated(name: &str) -> AdminError {
        error(8009, format!("Node info updated: {name}"))
    }
    #[must_use]
    pub fn only_maintenance() -> AdminError {
        error(2005, "Only maintenance mode supports ADMIN command".into())
    }
    /// The reference says "Infinity is starting"; the code is what clients check.
    #[must_use]
    pub fn starting() -> AdminError {
        error(2007, "Node is starting: no cluster role is set yet".into())
    }
    #[must_use]
    pub fn no_such_variable(name: &str) -> AdminError {
        error(3027, format!("No such system variable: {name}"))
    }
    #[must_use]
    pub fn show_nodes_cluster_only() -> AdminError {
        error(3032, "'ADMIN SHOW NODES' only works in cluster mode".into())
    }
    #[must_use]
    pub fn show_node_cluster_only() -> AdminError {
        error(3032, "SHOW NODE only works in cluster mode".into())
    }
    /// A transition the role state machine refuses.
    #[must_use]
    pub fn cannot_switch(from: Role, to: Role) -> AdminError {
        match (from, to) {
            (Role::Standalone, _) => {
                error(8007, "Can't switch from standalone to cluster mode".into())
            }
            (Role::Leader, _) => error(8007, "Can't switch role from leader to standalone".into()),
            (Role::Learner, Role::Leader) => {
                error(7026, "Can't switch from learner to leader".into())
            }
            (_, Role::Standalone) => error(8007, "Can't switch follower role to standalone".into()),
            _ => error(
                7026,
                format!("Can't switch node role: from {} to {}", from.name(), to.name()),
            ),
        }
    }
}

/// What a role change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Same role: success, nothing changes (even with another name or address).
    Unchanged,
    Change,
}

/// Whether a node in `from` may switch to `to` (Infinity's `ChangeServerRole` table).
///
/// # Errors
///
/// The refusal, with its reference code (7026 or 8007).
pub fn check_transition(from: Role, to: Role) -> Result<Transition, AdminError> {
    if from == to {
        return Ok(Transition::Unchanged);
    }
    let allowed = match from {
        Role::Admin => true,
        Role::Standalone => to == Role::Admin,
        Role::Leader => to != Role::Standalone,
        Role::Follower => matches!(to, Role::Admin | Role::Leader),
        Role::Learner => to == Role::Admin,
    };
    if allowed {
        Ok(Transition::Change)
    } else {
        Err(AdminError::cannot_switch(from, to))
    }
}

/// Checks a node name: non-empty, shorter than 65536 bytes, `[A-Za-z_][A-Za-z0-9_]*`.
///
/// # Errors
///
/// 3042 empty, 3046 too long, 3005 other characters.
pub fn validate_name(name: &str) -> Result<(), AdminError> {
    if name.is_empty() {
        return Err(AdminError::empty_name());
    }
    if name.len() >= NAME_BYTES_LIMIT {
        return Err(AdminError::name_too_long());
    }
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|byte| byte.is_ascii_alphabetic() || byte == b'_');
    if !first_ok || !bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_') {
        return Err(AdminError::invalid_name(name));
    }
    Ok(())
}

/// Node names are compared lowercased, as the reference does.
#[must_use]
pub fn normalize_name(name: &str) -> String {
    name.to_lowercase()
}

/// An IPv4 address and port, as a node's peer address is written (`a.b.c.d:port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddress {
    pub octets: [u8; 4],
    pub port: u16,
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.octets;
        write!(formatter, "{a}.{b}.{c}.{d}:{}", self.port)
    }
}

/// Parses `a.b.c.d:port` (1–3 digits per octet, at most 255; 1–5 digits of port, at most
/// 65535), as the reference's address check does.
///
/// # Errors
///
/// 7016 `Invalid server address: <text>`.
pub fn parse_address(text: &str) -> Result<PeerAddress, AdminError> {
    let invalid = || AdminError::invalid_address(text);
    let (host, port) = text.split_once(':').ok_or_else(invalid)?;
    let digits = |part: &str, most: usize| {
        !part.is_empty() && part.len() <= most && part.bytes().all(|byte| byte.is_ascii_digit())
    };
    let octets: Vec<&str> = host.split('.').collect();
    if octets.len() != 4 || !octets.iter().all(|octet| digits(octet, 3)) || !digits(port, 5) {
        return Err(invalid());
    }
    let mut parsed = [0u8; 4];
    for (slot, octet) in parsed.iter_mut().zip(&octets) {
        *slot = octet.parse().map_err(|_| invalid())?;
    }
    let port: u16 = port.parse().map_err(|_| invalid())?;
    Ok(PeerAddress { octets: parsed, port })
}

/// One row of a node listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub role: Role,
    pub status: NodeStatus,
    pub address: String,
    pub heartbeats: u64,
    pub last_update_ms: u64,
    /// Records the node has yet to acknowledge, over all partitions (leader's view).
    pub lag: Option<u64>,
}

/// A follower or learner registered with the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub heartbeats: u64,
    /// Wall-clock time of the last registration or heartbeat (shown in listings).
    pub last_update_ms: u64,
    /// Monotonic time of the same (what expiry reads).
    pub last_seen: Moment,
    pub status: NodeStatus,
    pub lag: Option<u64>,
}

impl Member {
    #[must_use]
    pub fn row(&self) -> NodeRow {
        NodeRow {
            name: self.name.clone(),
            role: self.role,
            status: self.status,
            address: self.address.clone(),
            heartbeats: self.heartbeats,
            last_update_ms: self.last_update_ms,
            lag: self.lag,
        }
    }
}

/// What a heartbeat did to its sender's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// The member was `timeout` or `lost connection` and is `alive` again.
    pub returned: bool,
}

/// The leader's table of followers and learners.
#[derive(Clone, Debug)]
pub struct Membership {
    leader_name: String,
    leader_address: String,
    followers_max: usize,
    learners_max: usize,
    members: BTreeMap<String, Member>,
    /// When `expire` last ran (monotonic): a longer gap than half the timeout means this
    /// node itself stood still (paused, starved), and its members' silence meanwhile is not
    /// theirs.
    last_check: Option<Moment>,
}

impl Membership {
    #[must_use]
    pub fn new(
        leader_name: String,
        leader_address: String,
        followers_max: usize,
        learners_max: usize,
    ) -> Membership {
        Membership {
            leader_name,
            leader_address,
            followers_max,
            learners_max,
            members: BTreeMap::new(),
            last_check: None,
        }
    }

    #[must_use]
    pub fn leader_name(&self) -> &str {
        &self.leader_name
    }

    #[must_use]
    pub fn leader_address(&self) -> &str {
        &self.leader_address
    }

    /// Registers a follower or learner. A name already registered is refused while that member
    /// is alive at another address; a member that timed out or lost its connection, or that
    /// registers again from the same address (it restarted), is replaced.
    ///
    /// # Errors
    ///
    /// 8007 for another role, 7020 the leader's or an alive member's name, 7016 the leader's
    /// own address, 7027/7028 when the followers or learners are full.
    pub fn register(
        &mut self,
        name: &str,
        role: Role,
        address: &str,
        now: Now,
    ) -> Result<(), AdminError> {
        if !role.is_replica() {
            return Err(AdminError::invalid_role(role.name()));
        }
        if name == self.leader_name {
            return Err(AdminError::duplicate_node(name));
        }
        if address == self.leader_address {
            let (ip, port) = address.rsplit_once(':').unwrap_or((address, ""));
            return Err(AdminError::same_address_as_leader(ip, port));
        }
        let taken = self
            .members
            .get(name)
            .is_some_and(|member| member.status == NodeStatus::Alive && member.address != address);
        if taken {
            return Err(AdminError::duplicate_node(name));
        }
        let others = self.members.values().filter(|member| member.name != name);
        let same_role = others.filter(|member| member.role == role).count();
        match role {
            Role::Follower if same_role >= self.followers_max => {
                return Err(AdminError::too_many_followers(self.followers_max));
            }
            Role::Learner if same_role >= self.learners_max => {
                return Err(AdminError::too_many_learners(self.learners_max));
            }
            _ => {}
        }
        let member = Member {
            name: name.to_string(),
            role,
            address: address.to_string(),
            heartbeats: 0,
            last_update_ms: now.wall_ms,
            last_seen: now.moment,
            status: NodeStatus::Alive,
            lag: None,
        };
        self.members.insert(name.to_string(), member);
        Ok(())
    }

    /// Counts a heartbeat; a member that had timed out is alive again.
    ///
    /// # Errors
    ///
    /// 7025 for an unknown or removed name, 8009 when the address changed.
    pub fn heartbeat(
        &mut self,
        name: &str,
        address: &str,
        now: Now,
    ) -> Result<HeartbeatOutcome, AdminError> {
        let member = self.members.get_mut(name).ok_or_else(|| AdminError::not_registered(name))?;
        if member.status == NodeStatus::Removed {
            return Err(AdminError::not_registered(name));
        }
        if member.address != address {
            return Err(AdminError::node_info_updated(name));
        }
        member.heartbeats += 1;
        member.last_update_ms = now.wall_ms;
        member.last_seen = now.moment;
        let returned = member.status != NodeStatus::Alive;
        member.status = NodeStatus::Alive;
        Ok(HeartbeatOutcome { returned })
    }

    /// Marks every alive member silent for more than `timeout_ms` on the monotonic clock as
    /// `timeout`; returns them. Called periodically: when the previous call is more than half
    /// the timeout ago, this node itself stood still (a pause, a starved process) with the
    /// members' heartbeats unread in its sockets, so nobody expires and every alive member
    /// gets a whole timeout from now.
    pub fn expire(&mut self, now: Now, timeout_ms: u64, mutations: Mutations) -> Vec<String> {
        let wall = mutations.has(Mutation::WallClockTimeouts);
        let stood_still =
            self.last_check.is_some_and(|last| now.moment.since(last) > timeout_ms / 2);
        self.last_check = Some(now.moment);
        if stood_still && !wall {
            for member in self.members.values_mut() {
                member.last_seen = member.last_seen.max(now.moment);
            }
            return Vec::new();
        }
        let mut expired = Vec::new();
        for member in self.members.values_mut() {
            let silent_ms = if wall {
                now.wall_ms.saturating_sub(member.last_update_ms)
            } else {
                now.moment.since(member.last_seen)
            };
            if member.status == NodeStatus::Alive && silent_ms > timeout_ms {
                member.status = NodeStatus::Timeout;
                expired.push(member.name.clone());
            }
        }
        expired
    }

    /// Sets a member's status; unknown names are ignored.
    pub fn mark(&mut self, name: &str, status: NodeStatus) {
        if let Some(member) = self.members.get_mut(name) {
            member.status = status;
        }
    }

    pub fn set_lag(&mut self, name: &str, lag: Option<u64>) {
        if let Some(member) = self.members.get_mut(name) {
            member.lag = lag;
        }
    }

    /// Removes a member.
    ///
    /// # Errors
    ///
    /// 7019 for an unknown name.
    pub fn remove(&mut self, name: &str) -> Result<Member, AdminError> {
        self.members.remove(name).ok_or_else(|| AdminError::node_missing(name))
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    /// Members in name order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    #[must_use]
    pub fn followers(&self) -> Vec<&Member> {
        self.members.values().filter(|member| member.role == Role::Follower).collect()
    }
}

#[cfg(test)]
mod tests;
