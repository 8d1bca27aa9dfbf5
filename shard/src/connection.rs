//! One client connection: reads pipelined RESP, routes each command to the partition that owns
//! its keys, and writes the replies in order once each is committed.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use crate::buffers;
use crate::node::Origin;
use crate::tls::StreamIo;
use strata_core::auth::{self, AuthError};
use strata_core::command::table::{self, CommandId};
use strata_core::command::{self, Command, CommandError, Credentials, KeyCommand, NodeCommand};
use strata_core::resp;
use strata_core::PartitionId;

use crate::cluster::ServingMode;
use crate::reply::{self, Merge};
use crate::shard::{now_ms, Mesh, Outbox, Pending, Shard};
use crate::walk::ScanWalk;

/// Commands taken from the input before their replies are written: bounds the memory one
/// pipelining client can hold.
const PIPELINE_COMMANDS_MAX: usize = 1024;
/// Most bytes of input a connection holds while a request is incomplete (Redis's
/// client-query-buffer-limit plays this part); beyond it the connection is closed.
const QUERY_BUFFER_BYTES_MAX: usize = 128 * 1024 * 1024;
/// An incomplete command that has buffered this many bytes is taken out of the input argument
/// by argument as it arrives ([`resp::LargeCommand`]) instead of waiting there whole: a large
/// request is then held once, in its own values, and the input stays small.
const LARGE_COMMAND_BYTES: usize = 4 * buffers::CHUNK_BYTES;

/// What one round of parsing and answering left behind.
struct Round {
    /// A protocol error, after which the connection closes.
    protocol_error: Option<resp::RespError>,
    /// The round stopped at its command limit with complete commands still in the input.
    more_in_input: bool,
}

/// A reply being assembled: from one partition or from several.
pub(crate) enum Item {
    Now(Vec<u8>),
    One(Pending),
    Many {
        parts: Vec<Pending>,
        merge: Merge,
    },
    /// SCAN, which may go on from one partition to the next (boxed: items are moved for every
    /// command, and must stay small).
    Scan(Box<ScanWalk>),
}

/// How a command of a round counts in INFO commandstats.
#[derive(Clone, Copy)]
enum Accounting {
    /// Not a command of the table (unknown), or refused before it ran: counted already.
    Done,
    /// It ran: its share of the round's time is added, and once answered it is counted as a
    /// call, and as failed if the answer is an error.
    Called(CommandId),
}

/// Per-connection state that commands can change.
pub(crate) struct Session {
    pub(crate) client_id: u64,
    /// Accepted on this shard's own port (`shard_port_base`).
    pub(crate) own_port: bool,
    /// The connection's local address, if known.
    pub(crate) local_address: Option<std::net::SocketAddr>,
    pub(crate) name: Option<Vec<u8>>,
    pub(crate) quit: bool,
    /// Whether commands run: from the start without `requirepass`, else after AUTH (or HELLO
    /// with AUTH) succeeds. A failed attempt changes nothing, as in Redis.
    pub(crate) authenticated: bool,
}

impl Session {
    /// Checks AUTH's or HELLO's credentials; success authenticates the connection, wrong
    /// credentials are counted.
    pub(crate) fn authenticate(
        &mut self,
        mesh: &Mesh,
        credentials: &Credentials,
    ) -> Result<(), AuthError> {
        let result = auth::authenticate(mesh.password.as_ref(), credentials);
        match result {
            Ok(()) => self.authenticated = true,
            Err(AuthError::WrongPassword) => {
                mesh.counters.authentication_failures.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        result
    }
}

/// Serves one client until it quits, closes, or breaks the protocol. Its buffers come from
/// the shard's pool and go back to it whenever the connection waits with nothing to do
/// (`crate::buffers`).
pub(crate) async fn serve(shard: Rc<Shard>, mut stream: impl StreamIo, origin: Origin) {
    let authenticated = shard.mesh.password.is_none();
    let mut session = Session {
        client_id: origin.client_id,
        own_port: origin.own_port,
        local_address: origin.local_address,
        name: None,
        quit: false,
        authenticated,
    };
    let mut input: Vec<u8> = Vec::new();
    let mut output: Vec<u8> = Vec::new();
    let mut large: Option<Box<resp::LargeCommand>> = None;
    loop {
        if !input.is_empty() && output.capacity() == 0 {
            output = shard.buffers.take();
        }
        // Boxed: the round's state is allocated while it runs, not held by an idle connection.
        let round =
            Box::pin(process(&shard, &mut session, &mut input, &mut large, &mut output)).await;
        let mut protocol_error = round.protocol_error.map(|error| format!("ERR {error}"));
        let held = input.len() + large.as_ref().map_or(0, |command| command.taken_bytes());
        if protocol_error.is_none() && held > QUERY_BUFFER_BYTES_MAX {
            protocol_error = Some(format!(
                "ERR Protocol error: a request of more than {QUERY_BUFFER_BYTES_MAX} bytes"
            ));
        }
        if let Some(error) = &protocol_error {
            resp::encode_error(&mut output, error);
        }
        if !output.is_empty() {
            let (result, buffer) = stream.write_from(output).await;
            output = buffer;
            output.clear();
            if result.is_err() {
                break;
            }
        }
        buffers::release_if_empty(&shard.buffers, &mut output);
        if session.quit || protocol_error.is_some() {
            break;
        }
        if round.more_in_input {
            // The round stopped at its command limit: the rest is already here, so answer it
            // before waiting for the client, which may be waiting for these replies.
            continue;
        }
        if input.is_empty() {
            // Nothing pending: wait for the client without holding a buffer.
            buffers::release_if_empty(&shard.buffers, &mut input);
            if stream.wait_readable().await.is_err() {
                break;
            }
        }
        buffers::prepare_read(&shard.buffers, &mut input);
        let (result, buffer) = stream.read_into(input).await;
        input = buffer;
        match result {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    shard.buffers.give_back(input);
    shard.buffers.give_back(output);
    shard.mesh.counters.connections_current.fetch_sub(1, Ordering::Relaxed);
}

/// Parses the complete commands in `input` (at most a round's worth), routes them, and appends
/// their replies in order. A large command being taken (`large`) goes first; a command that
/// stays incomplete past [`LARGE_COMMAND_BYTES`] becomes one.
async fn process(
    shard: &Rc<Shard>,
    session: &mut Session,
    input: &mut Vec<u8>,
    large: &mut Option<Box<resp::LargeCommand>>,
    output: &mut Vec<u8>,
) -> Round {
    let limits = shard.mesh.options.resp_limits;
    let started = std::time::Instant::now();
    let mut items = Vec::new();
    let mut consumed = 0;
    let mut protocol_error = None;
    let mut arguments = Vec::new();
    let mut outbox = Outbox::default();
    if let Some(command) = large.as_mut() {
        match command.feed(input, &limits) {
            Ok(fed) => {
                consumed = fed.consumed;
                if fed.complete {
                    let arguments = large.take().expect("a large command").into_arguments();
                    items.push(dispatch_owned(shard, &mut outbox, session, arguments));
                }
            }
            Err(error) => protocol_error = Some(error),
        }
    }
    while large.is_none()
        && protocol_error.is_none()
        && items.len() < PIPELINE_COMMANDS_MAX
        && !session.quit
    {
        match resp::parse_command(&input[consumed..], &limits, &mut arguments) {
            Ok(resp::Parsed::Incomplete) => {
                if input.len() - consumed >= LARGE_COMMAND_BYTES && input[consumed] == b'*' {
                    match resp::LargeCommand::start(&input[consumed..], &limits) {
                        Ok(Some((command, fed))) => {
                            consumed += fed.consumed;
                            *large = Some(Box::new(command));
                            // All of it cannot be here: `parse_command` found it incomplete.
                            debug_assert!(!fed.complete);
                        }
                        Ok(None) => {}
                        Err(error) => protocol_error = Some(error),
                    }
                }
                break;
            }
            Ok(resp::Parsed::Complete { consumed: length }) => {
                let start = consumed;
                consumed += length;
                let slices =
                    crate::reply::argument_slices(&input[start..start + length], &arguments);
                if slices.is_empty() {
                    continue;
                }
                items.push(dispatch(shard, &mut outbox, session, &slices));
            }
            Err(error) => {
                protocol_error = Some(error);
                break;
            }
        }
    }
    let more_in_input =
        items.len() == PIPELINE_COMMANDS_MAX && large.is_none() && consumed < input.len();
    input.drain(..consumed);
    buffers::free_if_large_and_empty(input);
    share_round_time(shard, &items, started.elapsed());
    shard.mesh.counters.commands_processed.fetch_add(items.len() as u64, Ordering::Relaxed);
    let commands = items.len() as u64;
    for (item, accounting) in items {
        let reply_start = output.len();
        match item {
            Item::Now(bytes) => output.extend_from_slice(&bytes),
            Item::One(pending) => reply::encode_answer(output, &pending.resolve(shard).await),
            Item::Many { parts, merge } => {
                let mut answers = Vec::with_capacity(parts.len());
                for part in parts {
                    answers.push(part.resolve(shard).await);
                }
                reply::encode_merged(output, &merge, answers, shard);
            }
            Item::Scan(walk) => walk.finish(shard, output).await,
        }
        let reply = &output[reply_start..];
        shard.metrics().count_if_error(reply);
        // Counted once answered, as Redis counts a call once run: INFO's own call is not in
        // its commandstats.
        if let Accounting::Called(id) = accounting {
            shard.metrics().count_call(id);
            if reply.first() == Some(&b'-') {
                shard.metrics().count_failed(id);
            }
        }
    }
    if commands > 0 {
        let elapsed = crate::metrics::micros(started.elapsed());
        shard.metrics().reply_latency_us.record(elapsed, commands);
    }
    Round { protocol_error, more_in_input }
}

/// Adds the time of the round's parsing and executing here (`elapsed`), split evenly among
/// the commands that ran, to their commandstats: one clock read per round, not per command.
/// Their parts run by other shards are timed there (`Shard::serve_requests`).
fn share_round_time(shard: &Shard, items: &[(Item, Accounting)], elapsed: std::time::Duration) {
    let called = items.iter().filter(|(_, accounting)| matches!(accounting, Accounting::Called(_)));
    let count = called.clone().count() as u64;
    if count == 0 {
        return;
    }
    let share = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX) / count;
    for (_, accounting) in called {
        if let Accounting::Called(id) = accounting {
            shard.metrics().add_command_time(*id, share);
        }
    }
}

fn dispatch(
    shard: &Shard,
    outbox: &mut Outbox,
    session: &mut Session,
    arguments: &[&[u8]],
) -> (Item, Accounting) {
    let parsed = if session.authenticated {
        command::parse(arguments)
    } else {
        auth::parse_unauthenticated(arguments)
    };
    dispatch_parsed(shard, outbox, session, table::lookup(arguments), parsed)
}

/// As [`dispatch`], for the owned arguments of a large command: their values move into the
/// command ([`command::parse_owned`]).
fn dispatch_owned(
    shard: &Shard,
    outbox: &mut Outbox,
    session: &mut Session,
    arguments: Vec<Vec<u8>>,
) -> (Item, Accounting) {
    let slices: Vec<&[u8]> = arguments.iter().map(Vec::as_slice).collect();
    if !session.authenticated {
        return dispatch(shard, outbox, session, &slices);
    }
    let id = table::lookup(&slices);
    drop(slices);
    dispatch_parsed(shard, outbox, session, id, command::parse_owned(arguments))
}

fn dispatch_parsed(
    shard: &Shard,
    outbox: &mut Outbox,
    session: &mut Session,
    id: Option<CommandId>,
    parsed: Result<Command, CommandError>,
) -> (Item, Accounting) {
    shard.metrics().count_command(crate::metrics::CommandKind::of(&parsed));
    let Some(id) = id else {
        // Unknown to the table: an unknown command or subcommand, counted in errorstats only.
        let item = match parsed {
            Err(error) => Item::Now(reply::error_bytes(&error)),
            Ok(command) => run(shard, outbox, session, command),
        };
        return (item, Accounting::Done);
    };
    match parsed {
        Err(error) if is_rejection(&error) => {
            shard.metrics().count_rejected(id);
            (Item::Now(reply::error_bytes(&error)), Accounting::Done)
        }
        Err(error) => (Item::Now(reply::error_bytes(&error)), Accounting::Called(id)),
        Ok(Command::Key(key_command)) => {
            outbox.command = Some(id);
            match route(shard, outbox, key_command) {
                refused @ Item::Now(_) => {
                    shard.metrics().count_rejected(id);
                    (refused, Accounting::Done)
                }
                item => (item, Accounting::Called(id)),
            }
        }
        Ok(Command::Node(node_command)) => {
            (node(shard, outbox, session, node_command), Accounting::Called(id))
        }
    }
}

fn run(shard: &Shard, outbox: &mut Outbox, session: &mut Session, command: Command) -> Item {
    match command {
        Command::Node(node_command) => node(shard, outbox, session, node_command),
        Command::Key(key_command) => route(shard, outbox, key_command),
    }
}

/// Whether Redis refuses a command with `error` before running it (its `rejected_calls`):
/// a wrong number of arguments, keys in several slots, no authentication. Other errors of
/// the parser (options, numbers) Redis finds while running it (`failed_calls`).
fn is_rejection(error: &CommandError) -> bool {
    let text = error.0.as_str();
    text.starts_with("ERR wrong number of arguments")
        || text.starts_with("CROSSSLOT ")
        || text.starts_with("NOAUTH ")
}

/// Why this node does not run `command` in its current mode, as a Redis error reply.
fn refusal(shard: &Shard, command: &KeyCommand) -> Option<Item> {
    let text: &[u8] = match shard.mesh.shared.mode() {
        ServingMode::Leader if shard.mesh.shared.lease_expired() => {
            b"-TRYAGAIN this leader lost touch with the controller and may have been replaced\r\n"
        }
        ServingMode::Standalone | ServingMode::Leader => return None,
        ServingMode::Admin => {
            b"-LOADING the node is in admin mode: set its role through the admin API first\r\n"
        }
        ServingMode::Replica if command.is_write() => {
            b"-READONLY You can't write against a read only replica.\r\n"
        }
        ServingMode::Replica => return None,
    };
    Some(Item::Now(text.to_vec()))
}

/// Sends a key command to its partitions: one, or split per partition for multi-key commands.
fn route(shard: &Shard, outbox: &mut Outbox, command: KeyCommand) -> Item {
    if let Some(refused) = refusal(shard, &command) {
        return refused;
    }
    let now = now_ms();
    match command {
        KeyCommand::DbSize => broadcast(shard, outbox, &KeyCommand::DbSize, Merge::Sum, now),
        KeyCommand::FlushAll => broadcast(shard, outbox, &KeyCommand::FlushAll, Merge::AllOk, now),
        KeyCommand::Delete { keys } => {
            split_keys(shard, outbox, keys, now, |keys| KeyCommand::Delete { keys }, Merge::Sum)
        }
        KeyCommand::Exists { keys } => {
            split_keys(shard, outbox, keys, now, |keys| KeyCommand::Exists { keys }, Merge::Sum)
        }
        KeyCommand::Touch { keys } => {
            split_keys(shard, outbox, keys, now, |keys| KeyCommand::Touch { keys }, Merge::Sum)
        }
        KeyCommand::MultiGet { keys } => split_multi_get(shard, outbox, keys, now),
        KeyCommand::MultiSet { pairs } => split_multi_set(shard, outbox, pairs, now),
        KeyCommand::Keys { pattern } => {
            broadcast(shard, outbox, &KeyCommand::Keys { pattern }, Merge::Concatenate, now)
        }
        KeyCommand::Scan { cursor, count, pattern, other_type } => {
            Item::Scan(Box::new(ScanWalk::start(shard, outbox, cursor, count, pattern, other_type)))
        }
        KeyCommand::RandomKey { .. } => {
            let mut parts = Vec::new();
            for partition in 0..shard.mesh.options.partition_count {
                let command = KeyCommand::RandomKey { seed: rand::random() };
                parts.push(shard.submit(outbox, PartitionId(partition), command, now));
            }
            Item::Many { parts, merge: Merge::RandomKey { roll: rand::random() } }
        }
        single => {
            let key = single.first_key().expect("one-key commands name a key");
            let partition = shard.mesh.partition_of(key);
            Item::One(shard.submit(outbox, partition, single, now))
        }
    }
}

fn broadcast(
    shard: &Shard,
    outbox: &mut Outbox,
    command: &KeyCommand,
    merge: Merge,
    now: u64,
) -> Item {
    let mut parts = Vec::new();
    for partition in 0..shard.mesh.options.partition_count {
        parts.push(shard.submit(outbox, PartitionId(partition), command.clone(), now));
    }
    Item::Many { parts, merge }
}

/// Items grouped by partition, and where each item went: (group index, index in the group).
type Grouped<T> = (Vec<(PartitionId, Vec<T>)>, Vec<(usize, usize)>);

/// Groups items by partition, keeping their order inside each group. Returns the groups and,
/// for every item, (group index, index within the group).
fn group_by_partition<T>(shard: &Shard, items: Vec<T>, key: impl Fn(&T) -> &[u8]) -> Grouped<T> {
    let mut groups: Vec<(PartitionId, Vec<T>)> = Vec::new();
    let mut positions = Vec::with_capacity(items.len());
    for item in items {
        let partition = shard.mesh.partition_of(key(&item));
        let group = match groups.iter().position(|(owner, _)| *owner == partition) {
            Some(index) => index,
            None => {
                groups.push((partition, Vec::new()));
                groups.len() - 1
            }
        };
        positions.push((group, groups[group].1.len()));
        groups[group].1.push(item);
    }
    (groups, positions)
}

fn split_keys(
    shard: &Shard,
    outbox: &mut Outbox,
    keys: Vec<Vec<u8>>,
    now: u64,
    build: impl Fn(Vec<Vec<u8>>) -> KeyCommand,
    merge: Merge,
) -> Item {
    let (groups, _) = group_by_partition(shard, keys, |key| key);
    let mut parts = Vec::with_capacity(groups.len());
    for (partition, keys) in groups {
        parts.push(shard.submit(outbox, partition, build(keys), now));
    }
    Item::Many { parts, merge }
}

fn split_multi_get(shard: &Shard, outbox: &mut Outbox, keys: Vec<Vec<u8>>, now: u64) -> Item {
    let (groups, positions) = group_by_partition(shard, keys, |key| key);
    let mut parts = Vec::with_capacity(groups.len());
    for (partition, keys) in groups {
        parts.push(shard.submit(outbox, partition, KeyCommand::MultiGet { keys }, now));
    }
    Item::Many { parts, merge: Merge::MultiGet { positions } }
}

fn split_multi_set(
    shard: &Shard,
    outbox: &mut Outbox,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    now: u64,
) -> Item {
    let (groups, _) = group_by_partition(shard, pairs, |(key, _)| key);
    let mut parts = Vec::with_capacity(groups.len());
    for (partition, pairs) in groups {
        parts.push(shard.submit(outbox, partition, KeyCommand::MultiSet { pairs }, now));
    }
    Item::Many { parts, merge: Merge::AllOk }
}

fn node(shard: &Shard, outbox: &mut Outbox, session: &mut Session, command: NodeCommand) -> Item {
    match command {
        NodeCommand::Info { sections } => {
            let now = now_ms();
            match broadcast(shard, outbox, &KeyCommand::Status, Merge::Sum, now) {
                Item::Many { parts, .. } => Item::Many { parts, merge: Merge::Info { sections } },
                other => other,
            }
        }
        NodeCommand::Quit => {
            session.quit = true;
            Item::Now(b"+OK\r\n".to_vec())
        }
        NodeCommand::Auth { credentials } => {
            match session.authenticate(&shard.mesh, &credentials) {
                Ok(()) => Item::Now(b"+OK\r\n".to_vec()),
                Err(error) => Item::Now(reply::error_bytes(&error.into())),
            }
        }
        other => Item::Now(reply::node_reply(shard, session, other)),
    }
}
