//! Real partitions, as root: an nftables table of the run's own on the loopback's input hook,
//! whose rules drop every TCP packet to or from a node's ports (client, admin, peer, and the
//! proxies it reaches its leaders through). Unlike the proxies, this cuts the clients and the
//! operator off too, and drops packets the way a network does: connection attempts go
//! unanswered, established connections stall and TCP retransmits until the rules go.
//!
//! Every node listens on ports of its own on 127.0.0.1, so a node's ports name the traffic to
//! it. The traffic from it is another matter: a connection it opens leaves from 127.0.0.1 and
//! an ephemeral port, whoever opens it (the kernel picks 127.0.0.1 as the source whatever
//! 127.0.0.x the destination is, and `strata` binds no outgoing socket). So with automatic
//! failover, where members talk to each other directly at the addresses they advertise, each
//! node runs under a group id of its own ([`Firewall::create_marking`]): a rule on the output
//! hook marks every connection a node opens with its group id (`ct mark`), and the rules on
//! the input hook name a connection by that mark and the port it was opened to. That is how
//! one pair of nodes is cut ([`Block`]) and how an isolated node loses the connections it
//! opened. Without marks (manual failover), an isolated node's direct connections to the
//! addresses other members advertise (promotion requests it sends as a candidate) are not cut,
//! and no operator can ask an isolated node to run one.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Tables made by this process so far, for unique names when several runs share it.
static TABLES_MADE: AtomicU32 = AtomicU32::new(0);

/// Sets of group ids handed out by this process so far, for the same reason.
static GROUP_SETS_MADE: AtomicU32 = AtomicU32::new(0);

/// The lowest group id handed out: far above the ids a system gives its groups.
const FIRST_GROUP: u32 = 1 << 30;

/// Nodes in one set of group ids at most.
const GROUPS_PER_SET: u32 = 16;

/// Why nft did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// `nft` could not be run (not installed).
    #[error("nft: {0}")]
    Unavailable(#[from] std::io::Error),
    /// `nft` ran and refused the script (not root, no nf_tables, a syntax error).
    #[error("nft {table}: {message}")]
    Refused { table: String, message: String },
}

/// The packets of one direction of the connections a node opened to one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// The mark (group id) of the node that opened the connections.
    pub opener: u32,
    /// The port they were opened to.
    pub port: u16,
    /// The opener's packets (`true`), or the answers to it (`false`).
    pub from_opener: bool,
}

impl Block {
    /// Both directions of the connections `opener` opened to `port`.
    #[must_use]
    pub fn connections(opener: u32, port: u16) -> [Block; 2] {
        [Block { opener, port, from_opener: true }, Block { opener, port, from_opener: false }]
    }

    /// Every packet node `source` sends node `target`, given each one's mark and peer port:
    /// on the connections `source` opened to `target`, and the answers on those `target`
    /// opened to `source`.
    #[must_use]
    pub fn sent(source: (u32, u16), target: (u32, u16)) -> [Block; 2] {
        let (source_mark, source_port) = source;
        let (target_mark, target_port) = target;
        [
            Block { opener: source_mark, port: target_port, from_opener: true },
            Block { opener: target_mark, port: source_port, from_opener: false },
        ]
    }

    fn rule(&self, table: &str, verdict: Verdict) -> String {
        let direction = if self.from_opener { "original" } else { "reply" };
        format!(
            "add rule inet {table} input meta l4proto tcp ct mark {} ct direction {direction} \
             ct original proto-dst {} {}\n",
            self.opener,
            self.port,
            verdict.text()
        )
    }
}

/// What a rule does to the packets it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dropped: nothing arrives, TCP retransmits.
    Drop,
    /// Answered with a TCP reset: the connection fails at once.
    Reset,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Drop => "drop",
            Verdict::Reset => "reject with tcp reset",
        }
    }
}

/// The run's nftables table; deleted when dropped.
pub struct Firewall {
    table: String,
    /// Whether the output chain marks the connections each node opens.
    marking: bool,
}

impl Firewall {
    /// Creates the table with an empty input chain.
    ///
    /// # Errors
    ///
    /// When `nft` is missing or refuses (not root, no nf_tables).
    pub fn create() -> Result<Firewall, FirewallError> {
        Firewall::create_marking(&[])
    }

    /// Creates the table with an empty input chain and, when `groups` is not empty, an output
    /// chain marking every connection opened by a process of one of `groups` with that group
    /// id (so that [`Block`]s and [`Firewall::isolate_marked`] can name it).
    ///
    /// # Errors
    ///
    /// When `nft` is missing or refuses (not root, no nf_tables or conntrack).
    pub fn create_marking(groups: &[u32]) -> Result<Firewall, FirewallError> {
        let number = TABLES_MADE.fetch_add(1, Ordering::Relaxed);
        let table = format!("strata_chaos_{}_{number}", std::process::id());
        let firewall = Firewall { table, marking: !groups.is_empty() };
        let table = &firewall.table;
        let input = "{ type filter hook input priority 0; policy accept; }";
        let mut script = format!("add table inet {table}\nadd chain inet {table} input {input}\n");
        if firewall.marking {
            let output = "{ type filter hook output priority 0; policy accept; }";
            script.push_str(&format!("add chain inet {table} output {output}\n"));
            for group in groups {
                script.push_str(&format!(
                    "add rule inet {table} output ct state new meta skgid {group} \
                     ct mark set {group}\n"
                ));
            }
        }
        firewall.run(&script)?;
        Ok(firewall)
    }

    /// Group ids for `count` nodes (16 at most), unique to this process and call (sixteen
    /// calls apart), far from the ids a system uses.
    #[must_use]
    pub fn groups(count: usize) -> Vec<u32> {
        assert!(count <= GROUPS_PER_SET as usize, "{count} nodes in one set of groups");
        let process = std::process::id() % (1 << 22);
        let set = GROUP_SETS_MADE.fetch_add(1, Ordering::Relaxed) % GROUPS_PER_SET;
        let base = FIRST_GROUP + (process << 8) + set * GROUPS_PER_SET;
        (0..GROUPS_PER_SET).take(count).map(|index| base + index).collect()
    }

    /// Drops every TCP packet to or from `ports` on the loopback, until [`Firewall::heal`].
    ///
    /// # Errors
    ///
    /// When `nft` refuses.
    pub fn isolate(&self, ports: &[u16]) -> Result<(), FirewallError> {
        if ports.is_empty() {
            return Ok(());
        }
        let set: Vec<String> = ports.iter().map(u16::to_string).collect();
        let set = set.join(", ");
        self.run(&format!(
            "add rule inet {table} input tcp dport {{ {set} }} drop\n\
             add rule inet {table} input tcp sport {{ {set} }} drop\n",
            table = self.table
        ))
    }

    /// Drops every TCP packet to or from `ports` and every packet of the connections the
    /// node marked `mark` opened, until [`Firewall::heal`].
    ///
    /// # Errors
    ///
    /// When `nft` refuses.
    pub fn isolate_marked(&self, ports: &[u16], mark: u32) -> Result<(), FirewallError> {
        assert!(self.marking, "a node's connections are marked only with groups");
        self.isolate(ports)?;
        let table = &self.table;
        self.run(&format!("add rule inet {table} input meta l4proto tcp ct mark {mark} drop\n"))
    }

    /// Applies `verdict` to the packets of `blocks`, until [`Firewall::heal`].
    ///
    /// # Errors
    ///
    /// When `nft` refuses.
    pub fn block(&self, blocks: &[Block], verdict: Verdict) -> Result<(), FirewallError> {
        assert!(self.marking, "a node's connections are marked only with groups");
        let script: String = blocks.iter().map(|block| block.rule(&self.table, verdict)).collect();
        if script.is_empty() {
            return Ok(());
        }
        self.run(&script)
    }

    /// Drops the first packet of every new connection the node marked `mark` opens to `port`
    /// (connection attempts go unanswered), while the connections it opened before go on,
    /// until [`Firewall::heal`].
    ///
    /// # Errors
    ///
    /// When `nft` refuses.
    pub fn refuse_new(&self, mark: u32, port: u16) -> Result<(), FirewallError> {
        assert!(self.marking, "a node's connections are marked only with groups");
        self.run(&format!(
            "add rule inet {} input meta l4proto tcp ct state new ct mark {mark} \
             ct original proto-dst {port} drop\n",
            self.table
        ))
    }

    /// Removes every rule of the input chain: packets flow again (connections stay marked).
    ///
    /// # Errors
    ///
    /// When `nft` refuses.
    pub fn heal(&self) -> Result<(), FirewallError> {
        self.run(&format!("flush chain inet {} input\n", self.table))
    }

    /// Runs an nft script (`nft -f -`).
    fn run(&self, script: &str) -> Result<(), FirewallError> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if output.status.success() {
            Ok(())
        } else {
            let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
            Err(FirewallError::Refused { table: self.table.clone(), message })
        }
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = self.run(&format!("delete table inet {}\n", self.table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn connects(port: u16) -> bool {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
    }

    /// Needs root and nftables (`scripts/setup.sh` installs it); says so and passes
    /// otherwise, as the harness then leaves the fault out.
    #[test]
    fn isolated_ports_take_no_connection_until_healed() {
        let firewall = match Firewall::create() {
            Ok(firewall) => firewall,
            Err(error) => {
                eprintln!("skipped: {error}");
                return;
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let other_port = other.local_addr().unwrap().port();
        assert!(connects(port));
        firewall.isolate(&[port]).unwrap();
        assert!(!connects(port), "an isolated port took a connection");
        assert!(connects(other_port), "another port was cut too");
        firewall.heal().unwrap();
        assert!(connects(port), "the port stayed cut after healing");
    }

    /// Whether a process of group `group` connects to `port` (bash's `/dev/tcp`, 1 s at most).
    fn connects_as(group: u32, port: u16) -> bool {
        use std::os::unix::process::CommandExt;
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        Command::new("timeout")
            .args(["1", "bash", "-c", &script])
            .gid(group)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Needs root, nftables and conntrack; says so and passes otherwise.
    #[test]
    fn blocks_name_the_connections_one_group_opened() {
        let groups = Firewall::groups(2);
        let firewall = match Firewall::create_marking(&groups) {
            Ok(firewall) => firewall,
            Err(error) => {
                eprintln!("skipped: {error}");
                return;
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(connects_as(groups[0], port) && connects_as(groups[1], port));
        firewall.block(&Block::connections(groups[0], port), Verdict::Drop).unwrap();
        assert!(!connects_as(groups[0], port), "the blocked group connected");
        assert!(connects_as(groups[1], port), "another group was cut too");
        firewall.heal().unwrap();
        firewall.refuse_new(groups[0], port).unwrap();
        assert!(!connects_as(groups[0], port), "a new connection of the refused group passed");
        assert!(connects_as(groups[1], port), "another group was refused too");
        firewall.heal().unwrap();
        firewall.isolate_marked(&[], groups[1]).unwrap();
        assert!(connects_as(groups[0], port), "the other group stayed cut after healing");
        assert!(!connects_as(groups[1], port), "an isolated group connected");
    }
}
