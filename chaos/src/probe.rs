//! What a node says it is: the mode and data epoch of `INFO replication` (`strata_mode`,
//! `data_epoch`), asked on its client port as any client may. With automatic failover the
//! clients find the leader this way (the node in mode `Leader` with the highest epoch) and
//! the replicas to read from, and the harness learns who leads.

use std::time::Duration;

use crate::client::{Reply, RespConnection};

/// How long a probe may take to connect and to be answered: short, so that a paused or
/// isolated node costs a client little.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// A node's serving mode (`strata_mode` in `INFO replication`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No role yet (just started, removed): it answers key commands with `-LOADING`.
    Admin,
    Standalone,
    Leader,
    /// A follower or a learner.
    Replica,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        match text {
            "Admin" => Some(Mode::Admin),
            "Standalone" => Some(Mode::Standalone),
            "Leader" => Some(Mode::Leader),
            "Replica" => Some(Mode::Replica),
            _ => None,
        }
    }
}

/// What a node answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serving {
    pub mode: Mode,
    /// The epoch it leads at, or the highest it saw on its leader's frames.
    pub epoch: u64,
}

/// Asks the node at client port `port`; None when it does not answer within
/// [`PROBE_TIMEOUT`] or answers something else.
#[must_use]
pub fn ask(port: u16) -> Option<Serving> {
    let mut connection = RespConnection::connect_within(port, PROBE_TIMEOUT, PROBE_TIMEOUT).ok()?;
    let Ok(Reply::Bulk(Some(text))) = connection.command(&["INFO", "replication"]) else {
        return None;
    };
    parse(&String::from_utf8_lossy(&text))
}

/// The mode and epoch of an `INFO replication` text.
fn parse(text: &str) -> Option<Serving> {
    let field = |name: &str| {
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    };
    let mode = Mode::parse(field("strata_mode")?)?;
    let epoch = field("data_epoch")?.parse().ok()?;
    Some(Serving { mode, epoch })
}

/// The newest leader among `answers` (node, what it said): the one in mode `Leader` with the
/// highest epoch (an old leader may still say it leads until it hears of the new one).
#[must_use]
pub fn newest_leader<T: Copy>(answers: &[(T, Serving)]) -> Option<T> {
    answers
        .iter()
        .filter(|(_, serving)| serving.mode == Mode::Leader)
        .max_by_key(|(_, serving)| serving.epoch)
        .map(|(node, _)| *node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_and_epoch_are_read_from_the_replication_section() {
        let text = "# Replication\r\nrole:slave\r\nstrata_mode:Replica\r\ndata_epoch:7\r\n\r\n";
        assert_eq!(parse(text), Some(Serving { mode: Mode::Replica, epoch: 7 }));
        assert_eq!(parse("# Replication\r\nrole:master\r\n"), None);
    }

    #[test]
    fn the_newest_leader_has_the_highest_epoch() {
        let serving = |mode, epoch| Serving { mode, epoch };
        let answers = [
            (1, serving(Mode::Leader, 3)),
            (2, serving(Mode::Leader, 4)),
            (3, serving(Mode::Replica, 9)),
        ];
        assert_eq!(newest_leader(&answers), Some(2));
        assert_eq!(newest_leader(&answers[2..]), None);
    }
}
