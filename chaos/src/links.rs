//! The peer links between the nodes, and the faults on them, whichever way the cluster's
//! members reach each other.
//!
//! With manual failover the operator names the harness's proxies as each replica's leader,
//! so a link is a proxy ([`crate::proxy`]). With automatic failover members talk to each other
//! at the addresses they advertise (the controller records them), which no proxy stands in;
//! a link is then a set of nftables rules ([`crate::firewall`]) naming the connections each
//! node opens by the group id its process runs under. Those rules drop packets or reset
//! connections; they cannot delay them, so delays are proxy faults only.

use crate::cluster::{Cluster, Failover};
use crate::firewall::{Block, FirewallError, Verdict};
use crate::proxy::Mode;

/// Why a link fault could not be thrown or healed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Automatic failover without root or nftables: no rules to cut a link with.
    #[error("no firewall in this run (it needs root and nftables)")]
    NoFirewall,
    /// A node whose connections are not marked (it runs under no group of its own).
    #[error("{0} runs under no group of its own")]
    Unmarked(String),
    /// A mode the firewall cannot give (delays need the proxies).
    #[error("the firewall cannot give a link the mode {0:?}")]
    Unsupported(Mode),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

impl Cluster {
    /// Sets the peer links of `node` (with every other node, or with `peer` only) to `mode`,
    /// as seen by `node` (`HoldForward`: what `node` sends is held).
    ///
    /// # Errors
    ///
    /// With automatic failover: no firewall, a delay, or nft refusing.
    pub fn partition(
        &mut self,
        node: usize,
        peer: Option<usize>,
        mode: Mode,
    ) -> Result<(), LinkError> {
        if self.settings.failover == Failover::Manual {
            match peer {
                Some(peer) => self.network.cut_between(node, peer, mode),
                None => self.network.isolate(node, mode),
            }
            return Ok(());
        }
        let peers: Vec<usize> = match peer {
            Some(peer) => vec![peer],
            None => (0..self.nodes.len()).filter(|&other| other != node).collect(),
        };
        let verdict = match mode {
            Mode::Cut => Verdict::Reset,
            Mode::Blackhole | Mode::HoldForward | Mode::HoldBackward => Verdict::Drop,
            Mode::Pass => return Ok(()),
            Mode::Delay(_) => return Err(LinkError::Unsupported(mode)),
        };
        let mut blocks = Vec::new();
        for peer in peers {
            let (outgoing, incoming) = (self.marked(node)?, self.marked(peer)?);
            if mode != Mode::HoldBackward {
                blocks.extend(Block::sent(outgoing, incoming));
            }
            if mode != Mode::HoldForward {
                blocks.extend(Block::sent(incoming, outgoing));
            }
        }
        self.firewall.as_ref().ok_or(LinkError::NoFirewall)?.block(&blocks, verdict)?;
        Ok(())
    }

    /// Drops every packet of the connections `opener` opens to `target`'s peer port, both
    /// ways, and nothing else: `opener` stops streaming from `target` (and its calls to it
    /// fail), while what `target` asks of `opener` on connections of its own still passes.
    ///
    /// # Errors
    ///
    /// No firewall, an unmarked node, or nft refusing.
    pub fn cut_connections(&mut self, opener: usize, target: usize) -> Result<(), LinkError> {
        let (mark, _) = self.marked(opener)?;
        let port = self.nodes[target].peer_port;
        let firewall = self.firewall.as_ref().ok_or(LinkError::NoFirewall)?;
        firewall.block(&Block::connections(mark, port), Verdict::Drop)?;
        Ok(())
    }

    /// Drops every new connection `opener` opens to `target`'s peer port, and nothing else:
    /// what it asks `target` on a connection of its own fails (a replication report, a phase
    /// of a promotion), while the connections it holds already (its controller's Raft
    /// messages) go on.
    ///
    /// # Errors
    ///
    /// No firewall, an unmarked node, or nft refusing.
    pub fn refuse_new_connections(
        &mut self,
        opener: usize,
        target: usize,
    ) -> Result<(), LinkError> {
        let (mark, _) = self.marked(opener)?;
        let port = self.nodes[target].peer_port;
        let firewall = self.firewall.as_ref().ok_or(LinkError::NoFirewall)?;
        firewall.refuse_new(mark, port)?;
        Ok(())
    }

    /// Every link passes again (the proxies, or the firewall's rules: those of an isolation
    /// too, which never overlaps a partition).
    ///
    /// # Errors
    ///
    /// When nft refuses.
    pub fn heal_links(&mut self) -> Result<(), LinkError> {
        self.network.heal();
        if self.settings.failover == Failover::Automatic {
            if let Some(firewall) = &self.firewall {
                firewall.heal()?;
            }
            for node in &mut self.nodes {
                node.isolated = false;
            }
        }
        Ok(())
    }

    /// Node `index`'s mark and peer port.
    fn marked(&self, index: usize) -> Result<(u32, u16), LinkError> {
        let node = &self.nodes[index];
        let mark = node.group.ok_or_else(|| LinkError::Unmarked(node.name.clone()))?;
        Ok((mark, node.peer_port))
    }
}
