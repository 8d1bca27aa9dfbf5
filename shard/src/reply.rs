//! Encoding answers as RESP replies, merging the parts of multi-partition commands, and the
//! replies of node commands (PING, INFO, CONFIG GET, CLIENT, HELLO, COMMAND).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use strata_core::auth;
use strata_core::command::table;
use strata_core::command::{CommandError, Credentials, NodeCommand, ScanCursor};
use strata_core::partition::Answer;
use strata_core::resp;

use crate::cluster::ServingMode;
use crate::connection::Session;
use crate::metrics::StatsBaseline;
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
    /// Every part's keys, one after the other (KEYS).
    Concatenate,
    /// RANDOMKEY: the key of the part that `roll` falls in, the parts weighted by their keys.
    RandomKey { roll: u64 },
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
        Answer::Counts { keys, .. } => resp::encode_integer(output, *keys as i64),
        Answer::Scanned(page) => {
            encode_scan_page(output, page.next.map_or(0, ScanCursor::encode), &page.keys);
        }
        Answer::Sampled(sample) => encode_answer(output, &Answer::Bulk(sample.0.clone())),
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
        Merge::Concatenate => {
            let total = answers.iter().map(|answer| bulks(answer).len()).sum();
            resp::encode_array_header(output, total);
            for key in answers.iter().flat_map(bulks).flatten() {
                resp::encode_bulk(output, key);
            }
        }
        Merge::RandomKey { roll } => {
            encode_answer(output, &Answer::Bulk(pick_random(&answers, *roll)))
        }
        Merge::Info { sections } => {
            let failed = answers.iter().filter(|answer| matches!(answer, Answer::Error(_))).count();
            let text = info_text(shard, sections, key_counts(&answers), failed);
            resp::encode_bulk(output, text.as_bytes());
        }
    }
}

fn bulks(answer: &Answer) -> &[Option<Vec<u8>>] {
    match answer {
        Answer::Bulks(values) => values,
        other => unreachable!("a part of KEYS answered {other:?}"),
    }
}

/// SCAN's reply: the cursor as a bulk string, then the keys.
pub(crate) fn encode_scan_page(output: &mut Vec<u8>, cursor: u64, keys: &[Vec<u8>]) {
    resp::encode_array_header(output, 2);
    resp::encode_bulk(output, cursor.to_string().as_bytes());
    resp::encode_array_header(output, keys.len());
    for key in keys {
        resp::encode_bulk(output, key);
    }
}

/// The key of the part `roll` falls in when each part weighs its count of keys; a part whose
/// keys have all expired gives way to any that has a key.
fn pick_random(answers: &[Answer], roll: u64) -> Option<Vec<u8>> {
    let sampled: Vec<(&Option<Vec<u8>>, u64)> = answers
        .iter()
        .filter_map(|answer| match answer {
            Answer::Sampled(sample) => Some((&sample.0, sample.1 as u64)),
            _ => None,
        })
        .collect();
    let total: u64 = sampled.iter().map(|(_, keys)| keys).sum();
    if total == 0 {
        return None;
    }
    let mut target = roll % total;
    for (key, keys) in &sampled {
        if target < *keys && key.is_some() {
            return (*key).clone();
        }
        target = target.saturating_sub(*keys);
    }
    sampled.iter().find_map(|(key, _)| (*key).clone())
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

/// The keys and the keys with an expiry time, summed over the partitions' status answers.
fn key_counts(answers: &[Answer]) -> (usize, usize) {
    answers.iter().fold((0, 0), |(keys, expires), answer| match answer {
        Answer::Counts { keys: more, expires: more_expires } => {
            (keys + more, expires + more_expires)
        }
        _ => (keys, expires),
    })
}

/// The sections INFO prints with no argument or `default`, as Redis 7 (no modules here).
const DEFAULT_SECTIONS: [&str; 10] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "errorstats",
    "cluster",
    "keyspace",
];

/// Whether INFO `sections` (lower case) print the section `name`: `default` (or none) the
/// default ones, `all` and `everything` those and commandstats, other words their section.
fn wants(sections: &[String], name: &str) -> bool {
    let default = DEFAULT_SECTIONS.contains(&name);
    let wanted = |section: &str| match section {
        "default" => default,
        "all" | "everything" => default || name == "commandstats",
        other => other == name,
    };
    if sections.is_empty() {
        wanted("default")
    } else {
        sections.iter().any(|section| wanted(section))
    }
}

/// `keys` counts the keys, and the keys with an expiry time, of the partitions that answered
/// (without waiting for a commit: `KeyCommand::Status`); `failed_partitions` answered with
/// their WAL failure.
fn info_text(
    shard: &Shard,
    sections: &[String],
    (keys, expires): (usize, usize),
    failed_partitions: usize,
) -> String {
    let mesh = &shard.mesh;
    let options = &mesh.options;
    let counters = &mesh.counters;
    let baseline = mesh.metrics.baseline();
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
        crate::memory::section(&mut text);
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
        // Counted since CONFIG RESETSTAT.
        let base = &baseline.counters;
        let hops = mesh.metrics.counters();
        let since = |counter: &AtomicU64, at_reset: u64| {
            counter.load(Ordering::Relaxed).saturating_sub(at_reset)
        };
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\nexpired_keys:{}\r\nacl_access_denied_auth:{}\r\n\
             shard_hops:{}\r\nshard_messages:{}\r\nshard_wakeups:{}\r\n\r\n",
            since(&counters.connections_received, base.connections_received),
            since(&counters.commands_processed, base.commands_processed),
            since(&counters.connections_rejected, base.connections_rejected),
            since(&counters.expired_keys, base.expired_keys),
            since(&counters.authentication_failures, base.authentication_failures),
            hops.shard_hops.saturating_sub(base.shard_hops),
            hops.shard_messages.saturating_sub(base.shard_messages),
            hops.shard_wakeups.saturating_sub(base.shard_wakeups),
        );
    }
    if wants(sections, "replication") {
        replication_section(&mut text, shard);
    }
    if wants(sections, "cpu") {
        cpu_section(&mut text);
    }
    if wants(sections, "commandstats") {
        commandstats_section(&mut text, shard, &baseline);
    }
    if wants(sections, "errorstats") {
        errorstats_section(&mut text, shard, &baseline);
    }
    if wants(sections, "cluster") {
        let enabled = u8::from(options.shard_port_base.is_some());
        let _ = write!(text, "# Cluster\r\ncluster_enabled:{enabled}\r\n\r\n");
    }
    if wants(sections, "keyspace") {
        text.push_str("# Keyspace\r\n");
        if keys > 0 {
            let _ = write!(text, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
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

/// INFO's commandstats section, as Redis writes it: per command that ran or was refused since
/// the start (or CONFIG RESETSTAT), its calls, time, refusals and failures. `usec` is the time
/// the shards' threads spent parsing and executing it (see `connection::share_round_time`).
fn commandstats_section(text: &mut String, shard: &Shard, baseline: &StatsBaseline) {
    text.push_str("# Commandstats\r\n");
    for id in table::ids() {
        let since = baseline.commands.get(usize::from(id.0)).copied().unwrap_or_default();
        let stat = shard.mesh.metrics.command_stat(id).since(since);
        if stat.calls == 0 && stat.rejected == 0 && stat.failed == 0 {
            continue;
        }
        let usec = stat.nanos / 1000;
        let per_call = if stat.calls == 0 { 0.0 } else { usec as f64 / stat.calls as f64 };
        let _ = write!(
            text,
            "cmdstat_{}:calls={},usec={usec},usec_per_call={per_call:.2},rejected_calls={},\
             failed_calls={}\r\n",
            table::spec(id).name,
            stat.calls,
            stat.rejected,
            stat.failed,
        );
    }
    text.push_str("\r\n");
}

/// INFO's errorstats section: error replies by their first word, summed over the shards
/// (words other than the ones counted apart are `errorstat_OTHER`).
fn errorstats_section(text: &mut String, shard: &Shard, baseline: &StatsBaseline) {
    text.push_str("# Errorstats\r\n");
    for kind in crate::metrics::ErrorKind::ALL {
        let count = shard.mesh.metrics.errors(kind).saturating_sub(baseline.errors[kind as usize]);
        if count > 0 {
            let word = kind.name().to_ascii_uppercase();
            let _ = write!(text, "errorstat_{word}:count={count}\r\n");
        }
    }
    text.push_str("\r\n");
}

/// OBJECT HELP's lines, in Redis's shape (subcommands, then what each answers).
const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    The encoding Redis would give the key's value: int, embstr or raw.",
    "FREQ <key>",
    "    Refused: no LFU maxmemory policy, so access frequency is not tracked.",
    "IDLETIME <key>",
    "    Seconds since the key was last read or written (1 s resolution).",
    "REFCOUNT <key>",
    "    References to the key's value: always 1 here.",
    "HELP",
    "    Prints this help.",
];

/// An array of simple strings, as Redis's HELP replies are.
fn encode_lines(output: &mut Vec<u8>, lines: &[&str]) {
    resp::encode_array_header(output, lines.len());
    for line in lines {
        resp::encode_simple(output, line);
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
        NodeCommand::Command(query) => table::answer(&mut output, &query),
        NodeCommand::ConfigGet { patterns } => crate::config::get(&mut output, shard, &patterns),
        NodeCommand::ConfigSet { settings } => crate::config::set(&mut output, shard, &settings),
        NodeCommand::ConfigResetStat => {
            shard.mesh.metrics.reset_info_stats();
            resp::encode_simple(&mut output, "OK");
        }
        NodeCommand::ConfigRewrite => crate::config::rewrite(&mut output, shard),
        NodeCommand::WaitAof { .. } => wait_aof_reply(&mut output, shard),
        NodeCommand::ClientSetName { name } => {
            session.name = if name.is_empty() { None } else { Some(name) };
            resp::encode_simple(&mut output, "OK");
        }
        NodeCommand::ClientGetName => match &session.name {
            Some(name) => resp::encode_bulk(&mut output, name),
            None => resp::encode_null(&mut output),
        },
        NodeCommand::ClientSetInfo => resp::encode_simple(&mut output, "OK"),
        NodeCommand::ObjectHelp => encode_lines(&mut output, OBJECT_HELP),
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
        NodeCommand::Cluster(query) => crate::slots::answer(&mut output, shard, session, query),
        NodeCommand::ReadOnly | NodeCommand::ReadWrite => {
            crate::slots::read_mode(&mut output, shard)
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
