//! The controller on Raft: openraft orders and keeps the commands of
//! `strata_core::controller` (the pure decisions) on every voter, durably; this module is
//! the edge around it: the type configuration, the log and snapshot files under
//! `<data_dir>/controller/` (`store`), the state machine that applies committed commands
//! (`machine`), Raft's messages on the peer port (`network`), and the runtime that proposes
//! commands and carries out their effects (`runtime`).

pub(crate) mod machine;
pub(crate) mod network;
pub(crate) mod runtime;
pub(crate) mod store;

use serde::{Deserialize, Serialize};
use strata_core::controller::{Command, Effect, Refusal};

openraft::declare_raft_types!(
    /// The controller's Raft types: commands of `strata_core::controller` in the log, node
    /// ids of 64 bits (random, made with the controller's directory), nodes addressed by
    /// their peer address.
    pub Types:
        D = Command,
        R = Answer,
        NodeId = u64,
        Node = ControllerNode,
);

/// A member as Raft addresses it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerNode {
    pub name: String,
    pub peer_address: String,
}

/// What applying one command gave: its effects, or why it was refused (the state unchanged).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer(pub Result<Vec<Effect>, Refusal>);

/// A snapshot of the controller's state as it travels and rests: the machine's own encoding.
pub type SnapshotBytes = Vec<u8>;
