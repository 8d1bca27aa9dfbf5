//! What the nemesis asks of a cluster with automatic failover through its admin API: remove a
//! member (`DELETE /admin/node/NAME`, any member passes it to the controller), hand the
//! leadership over (`POST /admin/leader/transfer`), and who leads the controller's Raft.

use std::time::Duration;

use serde_json::json;

use crate::admin::{self, AdminReply};
use crate::cluster::Cluster;

/// How long a planned transfer may take: the leader waits up to 5 s for the target to catch
/// up, then commits the change through the controller.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a removal may take: the data leader commits it, and hands over first when it is
/// the one removed.
pub const REMOVAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a change asked of the cluster did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The member asked did not answer (in time).
    #[error("{member} did not answer: {reason}")]
    Unanswered { member: String, reason: String },
    /// The member asked answered with an error.
    #[error("{member} refused {code}: {text}")]
    Refused { member: String, code: i64, text: String },
}

impl Cluster {
    /// Removes node `index` from the cluster, asking member `via` (which passes it to the
    /// controller); it is not given a role again until `removed` is cleared.
    ///
    /// # Errors
    ///
    /// When `via` does not answer or the controller refuses (the last voter, too few voters
    /// left for `min_insync_replicas`).
    pub fn remove_through(&mut self, index: usize, via: usize) -> Result<(), MembershipError> {
        let path = format!("/admin/node/{}", self.nodes[index].name);
        self.ask(via, "DELETE", &path, None, REMOVAL_TIMEOUT)?;
        let node = &mut self.nodes[index];
        node.removed = true;
        node.member = false;
        self.publish();
        Ok(())
    }

    /// Asks member `via` to hand the data leadership over to node `to`; the new leader's name.
    ///
    /// # Errors
    ///
    /// When `via` does not answer, or the transfer is refused or fails (the target not in
    /// sync, or not caught up within 5 s).
    pub fn transfer(&self, to: usize, via: usize) -> Result<String, MembershipError> {
        let body = json!({ "to": self.nodes[to].name }).to_string();
        let path = "/admin/leader/transfer";
        let reply = self.ask(via, "POST", path, Some(&body), TRANSFER_TIMEOUT)?;
        Ok(reply.json["leader"].as_str().unwrap_or_default().to_string())
    }

    /// The node leading the controller's Raft, as member `via` last heard (`GET
    /// /admin/nodes`, `controller_leader`); None during an election or without an answer.
    #[must_use]
    pub fn controller_leader(&self, via: usize) -> Option<usize> {
        let reply = self.status(via, "/admin/nodes").ok().filter(AdminReply::ok)?;
        let name = reply.json["controller_leader"].as_str()?.to_string();
        self.nodes.iter().position(|node| node.name == name)
    }

    fn ask(
        &self,
        via: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<AdminReply, MembershipError> {
        let member = self.nodes[via].name.clone();
        let port = self.nodes[via].http_port;
        let reply = admin::request(port, method, path, body, timeout)
            .map_err(|reason| MembershipError::Unanswered { member: member.clone(), reason })?;
        if !reply.ok() {
            let code = reply.code().unwrap_or(-1);
            let text = reply.text.trim().to_string();
            return Err(MembershipError::Refused { member, code, text });
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_member_and_the_code() {
        let error = MembershipError::Refused { member: "n2".into(), code: 7034, text: "no".into() };
        assert_eq!(error.to_string(), "n2 refused 7034: no");
    }
}
