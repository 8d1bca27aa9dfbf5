//! Encoding answers as RESP replies, merging the parts of multi-partition commands, and the
//! replies of node commands (PING, INFO, CONFIG GET, CLIENT, HELLO, COMMAND).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use strata_core::auth;
use strata_core::command::{CommandError, Credentials, NodeCommand, COMMAND_TABLE};
use strata_core::partition::Answer;
use strata_core::resp;

use crate::cluster::ServingMode;
use crate::connection::Session;
use crate::shard::Shard;

/// How the answers of a command's parts become one reply.
pub(crate) enum Merge {
    /// Integers added (DEL, EXISTS, DBSIZE).
    Sum,
    /// OK when every part is OK (MSET, FLUSHALL).
    AllOk,
    /// Values put back in the order of the keys (MGET).
    MultiGet { positions: Vec<(usize, usize)> },
    /// INFO, with the key count summed from the parts.
    Info { sections: Vec<String> },
}

/// The bytes of each parsed argument; `input` is the slice the parser was given.
pub(crate) fn argument_slices<'a>(
    input: &'a [u8],
    arguments: &'a [resp::Argument],
) -> Vec<&'a [u8]> {
    arguments.iter().map(|argument| argument.bytes(input)).collect()
}

pub(crate) fn error_bytes(error: &CommandError) -> Vec<u8> {
    let mut output = Vec::with_capacity(error.0.len() + 3);
    resp::encode_error(&mut output, &error.0);
    output
}

pub(crate) fn encode_answer(output: &mut Vec<u8>, answer: &Answer) {
    match answer {
        Answer::Ok => resp::encode_simple(output, "OK"),
        Answer::Status(status) => resp::encode_simple(output, status),
        Answer::Integer(value) => resp::encode_integer(output, *value),
        Answer::Bulk(Some(value)) => resp::encode_bulk(output, value),
        Answer::Bulk(None) => resp::encode_null(output),
        Answer::Bulks(values) => {
            resp::encode_array_header(output, values.len());
            for value in values {
                match value {
                    Some(value) => resp::encode_bulk(output, value),
                    None => resp::encode_null(output),
                }
            }
        }
        Answer::Array(answers) => {
            resp::encode_array_header(output, answers.len());
            for answer in answers {
                encode_answer(output, answer);
            }
        }
        Answer::Error(error) => resp::encode_error(output, &error.0),
    }
}

fn first_error(answers: &[Answer]) -> Option<&Answer> {
    answers.iter().find(|answer| matches!(answer, Answer::Error(_)))
}

pub(crate) fn encode_merged(
    output: &mut Vec<u8>,
    merge: &Merge,
    answers: Vec<Answer>,
    shard: &Shard,
) {
    // INFO answers even when partitions do not: after a WAL failure is when it is needed.
    let answered_by_all = !matches!(merge, Merge::Info { .. });
    if let Some(error) = first_error(&answers).filter(|_| answered_by_all) {
        encode_answer(output, error);
        return;
    }
    match merge {
        Merge::Sum => resp::encode_integer(output, integer_sum(&answers)),
        Merge::AllOk => resp::encode_simple(output, "OK"),
        Merge::MultiGet { positions } => {
            let groups: Vec<&Vec<Option<Vec<u8>>>> = answers
                .iter()
                .map(|answer| match answer {
                    Answer::Bulks(values) => values,
                    other => unreachable!("MGET part answered {other:?}"),
                })
                .collect();
            resp::encode_array_header(output, positions.len());
            for &(group, index) in positions {
                match &groups[group][index] {
                    Some(value) => resp::encode_bulk(output, value),
                    None => resp::encode_null(output),
                }
            }
        }
        Merge::Info { sections } => {
            let failed = answers.iter().filter(|answer| matches!(answer, Answer::Error(_))).count();
            let text = info_text(shard, sections, integer_sum(&answers), failed);
            resp::encode_bulk(output, text.as_bytes());
        }
    }
}

/// The sum of the integer answers (others count 0).
fn integer_sum(answers: &[Answer]) -> i64 {
    answers
        .iter()
        .map(|answer| match answer {
            Answer::Integer(value) => *value,
            _ => 0,
        })
        .sum()
}

fn wants(sections: &[String], name: &str) -> bool {
    sections.is_empty()
        || sections.iter().any(|section| {
            section == name || section == "all" || section == "everything" || section == "default"
        })
}

/// `keys` counts the keys of the partitions that answered (without waiting for a commit:
/// `KeyCommand::Status`); `failed_partitions` answered with their WAL failure.
fn info_text(shard: &Shard, sections: &[String], keys: i64, failed_partitions: usize) -> String {
    let mesh = &shard.mesh;
    let options = &mesh.options;
    let counters = &mesh.counters;
    let mut text = String::new();
    if wants(sections, "server") {
        let _ = write!(
            text,
            "# Server\r\nredis_version:7.2.0\r\nstrata_version:{}\r\nredis_mode:standalone\r\n\
             os:{} {}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\
             shards:{}\r\npartitions:{}\r\nconfig_file:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            options.client_address.port(),
            mesh.started.elapsed().as_secs(),
            options.shard_count,
            options.partition_count,
            options.config_file,
        );
    }
    if wants(sections, "clients") {
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            counters.connections_current.load(Ordering::Relaxed),
            options.connections_max,
        );
    }
    if wants(sections, "memory") {
        let _ = write!(text, "# Memory\r\nused_memory_rss:{}\r\n\r\n", resident_bytes());
    }
    if wants(sections, "persistence") {
        let _ = write!(
            text,
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nwal_flush:{}\r\n\
             wal_frames_written:{}\r\n\
             wal_syncs:{}\r\nwal_fdatasyncs:{}\r\nwal_failed_partitions:{}\r\n\
             aof_last_write_status:{}\r\nsnapshots_written:{}\r\n\r\n",
            options.durability.name(),
            counters.frames_written.load(Ordering::Relaxed),
            counters.syncs.load(Ordering::Relaxed),
            counters.fdatasyncs.load(Ordering::Relaxed),
            failed_partitions,
            if failed_partitions == 0 { "ok" } else { "err" },
            counters.snapshots_written.load(Ordering::Relaxed),
        );
    }
    if wants(sections, "stats") {
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\nacl_access_denied_auth:{}\r\n\r\n",
            counters.connections_received.load(Ordering::Relaxed),
            counters.commands_processed.load(Ordering::Relaxed),
            counters.connections_rejected.load(Ordering::Relaxed),
            counters.authentication_failures.load(Ordering::Relaxed),
        );
    }
    if wants(sections, "replication") {
        replication_section(&mut text, shard);
    }
    if wants(sections, "cpu") {
        cpu_section(&mut text);
    }
    if wants(sections, "errorstats") {
        errorstats_section(&mut text, shard);
    }
    if wants(sections, "keyspace") {
        text.push_str("# Keyspace\r\n");
        if keys > 0 {
            let _ = write!(text, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
        }
    }
    // Sections are separated by a blank line; as in Redis, none follows the last.
    if text.ends_with("\r\n\r\n") {
        text.truncate(text.len() - 2);
    }
    text
}

/// INFO's cpu section: the CPU seconds of the process, its children and the shard thread that
/// answers (getrusage), as Redis's.
fn cpu_section(text: &mut String) {
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    let usage = |who| {
        // SAFETY: getrusage writes one rusage into the zeroed value it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let done = unsafe { libc::getrusage(who, &raw mut usage) } == 0;
        if done {
            (seconds(usage.ru_stime), seconds(usage.ru_utime))
        } else {
            (0.0, 0.0)
        }
    };
    let (system, user) = usage(libc::RUSAGE_SELF);
    let (children_system, children_user) = usage(libc::RUSAGE_CHILDREN);
    // Redis's main thread runs the commands: here, the shard thread answering.
    let (thread_system, thread_user) = usage(libc::RUSAGE_THREAD);
    let _ = write!(
        text,
        "# CPU\r\nused_cpu_sys:{system:.6}\r\nused_cpu_user:{user:.6}\r\n\
         used_cpu_sys_children:{children_system:.6}\r\n\
         used_cpu_user_children:{children_user:.6}\r\n\
         used_cpu_sys_main_thread:{thread_system:.6}\r\n\
         used_cpu_user_main_thread:{thread_user:.6}\r\n\r\n"
    );
}

/// INFO's errorstats section: error replies by their first word, summed over the shards
/// (words other than the ones counted apart are `errorstat_OTHER`).
fn errorstats_section(text: &mut String, shard: &Shard) {
    text.push_str("# Errorstats\r\n");
    for kind in crate::metrics::ErrorKind::ALL {
        let count: u64 =
            shard.mesh.metrics.shards().iter().map(|metrics| metrics.errors(kind)).sum();
        if count > 0 {
            let word = kind.name().to_ascii_uppercase();
            let _ = write!(text, "errorstat_{word}:count={count}\r\n");
        }
    }
    text.push_str("\r\n");
}

/// The process's resident set size in bytes, from /proc (0 where unavailable).
pub(crate) fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1).and_then(|field| field.parse::<u64>().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_bytes).unwrap_or(4096)
}

/// CONFIG GET answers: what redis-benchmark and common tools ask for.
fn config_values(shard: &Shard) -> Vec<(&'static str, String)> {
    let options = &shard.mesh.options;
    let appendfsync = match options.durability {
        crate::options::Durability::SyncEachBatch => "always",
        crate::options::Durability::SyncEverySecond => "everysec",
        crate::options::Durability::WriteOnly => "no",
    };
    vec![
        ("appendonly", "yes".into()),
        ("appendfsync", appendfsync.into()),
        ("save", String::new()),
        ("databases", "1".into()),
        ("maxmemory", "0".into()),
        ("maxclients", options.connections_max.to_string()),
        ("port", options.client_address.port().to_string()),
        ("bind", options.client_address.ip().to_string()),
        ("dir", options.data_dir.display().to_string()),
        ("proto-max-bulk-len", options.resp_limits.bulk_bytes_max.to_string()),
        ("cluster-enabled", "no".into()),
    ]
}

/// Glob matching with `*` and `?`, as CONFIG GET patterns use.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_matches(&pattern[1..], text)
                || (!text.is_empty() && glob_matches(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob_matches(&pattern[1..], &text[1..]),
        (Some(expected), Some(actual)) if expected == actual => {
            glob_matches(&pattern[1..], &text[1..])
        }
        _ => false,
    }
}

fn command_reply(output: &mut Vec<u8>, subcommand: Option<&str>) {
    match subcommand {
        None => {
            resp::encode_array_header(output, COMMAND_TABLE.len());
            for &(name, arity, first, last, step) in COMMAND_TABLE {
                resp::encode_array_header(output, 6);
                resp::encode_bulk(output, name.as_bytes());
                resp::encode_integer(output, arity);
                resp::encode_array_header(output, 0);
                resp::encode_integer(output, first);
                resp::encode_integer(output, last);
                resp::encode_integer(output, step);
            }
        }
        Some("count") => resp::encode_integer(output, COMMAND_TABLE.len() as i64),
        // redis-cli asks for DOCS to offer hints; an empty map is a valid answer.
        Some("docs" | "info") => resp::encode_array_header(output, 0),
        Some(other) => resp::encode_error(
            output,
            &format!("ERR unknown subcommand '{other}'. Try COMMAND HELP."),
        ),
    }
}

pub(crate) fn node_reply(shard: &Shard, session: &mut Session, command: NodeCommand) -> Vec<u8> {
    let mut output = Vec::new();
    match command {
        NodeCommand::Ping { message: None } => resp::encode_simple(&mut output, "PONG"),
        NodeCommand::Ping { message: Some(message) } | NodeCommand::Echo { message } => {
            resp::encode_bulk(&mut output, &message);
        }
        NodeCommand::Select { database: 0 } | NodeCommand::SwapDb { first: 0, second: 0 } => {
            resp::encode_simple(&mut output, "OK");
        }
        NodeCommand::Move { database: 0 } => {
            resp::encode_error(&mut output, "ERR source and destination objects are the same");
        }
        NodeCommand::SwapDb { .. } | NodeCommand::Move { .. } => {
            resp::encode_error(&mut output, "ERR DB index is out of range");
        }
        NodeCommand::Select { .. } => {
            resp::encode_error(&mut output, "ERR DB index is out of range")
        }
        NodeCommand::CommandInfo { subcommand } => {
            command_reply(&mut output, subcommand.as_deref())
        }
        NodeCommand::ConfigGet { patterns } => {
            let values = config_values(shard);
            let matched: Vec<&(&str, String)> = values
                .iter()
                .filter(|(name, _)| {
                    patterns.iter().any(|pattern| glob_matches(pattern.as_bytes(), name.as_bytes()))
                })
                .collect();
            resp::encode_array_header(&mut output, matched.len() * 2);
            for (name, value) in matched {
                resp::encode_bulk(&mut output, name.as_bytes());
                resp::encode_bulk(&mut output, value.as_bytes());
            }
        }
        NodeCommand::WaitAof { .. } => wait_aof_reply(&mut output, shard),
        NodeCommand::ConfigSet => {
            resp::encode_error(
                &mut output,
                "ERR CONFIG SET is not supported; edit the config file and restart",
            );
        }
        NodeCommand::ClientSetName { name } => {
            session.name = if name.is_empty() { None } else { Some(name) };
            resp::encode_simple(&mut output, "OK");
        }
        NodeCommand::ClientGetName => match &session.name {
            Some(name) => resp::encode_bulk(&mut output, name),
            None => resp::encode_null(&mut output),
        },
        NodeCommand::ClientSetInfo => resp::encode_simple(&mut output, "OK"),
        NodeCommand::Time => {
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            resp::encode_array_header(&mut output, 2);
            resp::encode_bulk(&mut output, since_epoch.as_secs().to_string().as_bytes());
            resp::encode_bulk(&mut output, since_epoch.subsec_micros().to_string().as_bytes());
        }
        NodeCommand::ClientId => resp::encode_integer(&mut output, session.client_id as i64),
        NodeCommand::Hello { credentials, name, .. } => {
            hello(&mut output, shard, session, credentials.as_ref(), name);
        }
        NodeCommand::Info { .. } | NodeCommand::Quit | NodeCommand::Auth { .. } => {
            unreachable!("handled by the connection")
        }
    }
    output
}

/// HELLO in Redis's order: authenticate with the AUTH option if given, refuse a connection
/// still unauthenticated, then take the name and answer.
fn hello(
    output: &mut Vec<u8>,
    shard: &Shard,
    session: &mut Session,
    credentials: Option<&Credentials>,
    name: Option<Vec<u8>>,
) {
    if let Some(credentials) = credentials {
        if let Err(error) = session.authenticate(&shard.mesh, credentials) {
            resp::encode_error(output, &error.to_string());
            return;
        }
    }
    if !session.authenticated {
        resp::encode_error(output, auth::HELLO_NO_AUTH);
        return;
    }
    if let Some(name) = name {
        session.name = if name.is_empty() { None } else { Some(name) };
    }
    hello_reply(output, session);
}

fn hello_reply(output: &mut Vec<u8>, session: &Session) {
    resp::encode_array_header(output, 14);
    for (name, value) in [("server", "redis"), ("version", "7.2.0")] {
        resp::encode_bulk(output, name.as_bytes());
        resp::encode_bulk(output, value.as_bytes());
    }
    resp::encode_bulk(output, b"proto");
    resp::encode_integer(output, 2);
    resp::encode_bulk(output, b"id");
    resp::encode_integer(output, session.client_id as i64);
    for (name, value) in [("mode", "standalone"), ("role", "master")] {
        resp::encode_bulk(output, name.as_bytes());
        resp::encode_bulk(output, value.as_bytes());
    }
    resp::encode_bulk(output, b"modules");
    resp::encode_array_header(output, 0);
}

/// INFO's replication section in Redis's words (`role:master`/`slave`), plus the node's own
/// mode, data epoch and the replicas streaming from it.
fn replication_section(text: &mut String, shard: &Shard) {
    let shared = &shard.mesh.shared;
    let mode = shared.mode();
    let role = if mode == ServingMode::Replica { "slave" } else { "master" };
    let _ = write!(text, "# Replication\r\nrole:{role}\r\nstrata_mode:{mode:?}\r\n");
    let _ = write!(text, "data_epoch:{}\r\n", shared.epoch());
    let counters = &shard.mesh.counters;
    let _ = write!(
        text,
        "refusing_partitions:{}\r\nrecords_discarded:{}\r\nsnapshots_installed:{}\r\n",
        shared.refusing_partitions(),
        counters.records_discarded.load(std::sync::atomic::Ordering::Relaxed),
        counters.snapshots_installed.load(std::sync::atomic::Ordering::Relaxed),
    );
    if mode == ServingMode::Replica {
        let streaming = shared.streaming_partitions();
        let all = shard.mesh.options.partition_count as usize;
        let caught_up = shared.caught_up_partitions();
        let link = if streaming == all { "up" } else { "down" };
        let syncing = u8::from(caught_up < all);
        let _ = write!(text, "master_link_status:{link}\r\nmaster_sync_in_progress:{syncing}\r\n");
        let _ = write!(
            text,
            "streaming_partitions:{streaming}\r\ncaught_up_partitions:{caught_up}\r\n"
        );
    }
    // Per replica, over its partitions: kind, whether all are in sync, records not acknowledged.
    let mut replicas: std::collections::BTreeMap<String, (&str, bool, u64)> = Default::default();
    for ((name, _), progress) in shared.progress() {
        let kind = match progress.kind {
            strata_core::peer::ReplicaKind::Follower => "follower",
            strata_core::peer::ReplicaKind::Learner => "learner",
        };
        let entry = replicas.entry(name).or_insert((kind, true, 0));
        entry.1 &= progress.in_sync;
        entry.2 += progress.leader_lsn.0.saturating_sub(progress.acked_lsn.0);
    }
    let _ = write!(text, "connected_slaves:{}\r\n", replicas.len());
    for (index, (name, (kind, in_sync, lag))) in replicas.iter().enumerate() {
        let state = if *in_sync { "online" } else { "catching_up" };
        let _ = write!(text, "slave{index}:name={name},kind={kind},state={state},lag={lag}\r\n");
    }
    text.push_str("\r\n");
}

/// WAITAOF: replies are sent in order and a write's reply waits for its commit, so by now every
/// earlier write of this connection is durable here (FlushAtOnce) and on every in-sync
/// follower: no waiting is left to do.
fn wait_aof_reply(output: &mut Vec<u8>, shard: &Shard) {
    let shared = &shard.mesh.shared;
    if shared.mode() == ServingMode::Replica {
        resp::encode_error(
            output,
            "ERR WAITAOF cannot be used with replica instances. Please also note that writes to \
             replicas are just local and are not propagated.",
        );
        return;
    }
    let local =
        i64::from(shard.mesh.options.durability == crate::options::Durability::SyncEachBatch);
    resp::encode_array_header(output, 2);
    resp::encode_integer(output, local);
    resp::encode_integer(output, shared.in_sync_followers() as i64);
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn glob_patterns_match_like_redis() {
        assert!(glob_matches(b"*", b"save"));
        assert!(glob_matches(b"append*", b"appendfsync"));
        assert!(glob_matches(b"sa?e", b"save"));
        assert!(!glob_matches(b"save", b"saves"));
        assert!(!glob_matches(b"x*", b"save"));
    }
}
