//! Client commands: parsed and checked from RESP arguments, with Redis's error texts.

use std::fmt::Write as _;

mod bits;
mod keys;
pub mod table;

pub use bits::{
    BitOperator, BitRange, BitUnit, FieldAction, FieldOperation, FieldType, LcsReply, Overflow,
    BIT_OFFSET_MAX,
};
pub use keys::{ObjectQuestion, ScanCursor, SCAN_COUNT_DEFAULT};
pub use table::{arity_allows, declared_arity};

/// A command error, as the text after `-` in a RESP error reply (`ERR ...`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl CommandError {
    #[must_use]
    pub fn syntax() -> CommandError {
        CommandError("ERR syntax error".into())
    }

    #[must_use]
    pub fn not_integer() -> CommandError {
        CommandError("ERR value is not an integer or out of range".into())
    }

    #[must_use]
    pub fn arity(name: &str) -> CommandError {
        CommandError(format!("ERR wrong number of arguments for '{name}' command"))
    }

    /// Whether this is an error about a subcommand's name or its number of arguments, which
    /// Redis finds while looking the command up (before checking authentication).
    #[must_use]
    pub fn is_subcommand_lookup(&self) -> bool {
        let text = self.0.as_str();
        let subcommand_arity =
            text.starts_with("ERR wrong number of arguments for '") && text.contains('|');
        subcommand_arity || text.starts_with("ERR unknown subcommand '")
    }
}

/// A user and password, from `AUTH [username] password` (no user: the default user) or from
/// `HELLO`'s `AUTH` option. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<Vec<u8>>,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let username = self.username.as_deref().map(String::from_utf8_lossy);
        formatter.debug_struct("Credentials").field("username", &username).finish_non_exhaustive()
    }
}

/// When SET writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetCondition {
    Always,
    /// NX: only if the key does not exist.
    IfAbsent,
    /// XX: only if the key exists.
    IfPresent,
}

/// The expiry SET gives the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetExpiry {
    /// No option: the key loses any expiry.
    None,
    /// KEEPTTL.
    Keep,
    /// EX/PX: milliseconds from now.
    RelativeMs(u64),
    /// EXAT/PXAT: Unix milliseconds.
    AbsoluteMs(u64),
}

/// What GETEX does to the key's expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetExpiry {
    /// No option: the expiry stays.
    Unchanged,
    /// PERSIST: the key loses its expiry.
    Persist,
    /// EX/PX/EXAT/PXAT (`option`, lower case) with its argument, read as a number only once
    /// the key is found: Redis answers nil for a missing key whatever the argument.
    At { option: &'static str, argument: Vec<u8> },
}

/// EXPIRE's NX/XX/GT/LT options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpireCondition {
    Always,
    IfNoExpiry,
    IfHasExpiry,
    /// GT: only if the key has an expiry and the new one is later (XX adds nothing to GT).
    IfGreater,
    /// LT: only if the new expiry is earlier; no expiry counts as infinitely late.
    IfLess,
    /// XX LT: only if the key has an expiry and the new one is earlier.
    IfHasExpiryAndLess,
}

/// The command that asked for a SET (a byte, not a string: commands are moved on every
/// command's way and must stay small).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetName {
    Set,
    SetEx,
    PSetEx,
}

impl SetName {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SetName::Set => "set",
            SetName::SetEx => "setex",
            SetName::PSetEx => "psetex",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
}

/// A command that runs on one partition: every key it names lives there. Multi-key commands
/// are split per partition by the router before they get here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyCommand {
    Get {
        key: Vec<u8>,
    },
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        condition: SetCondition,
        expiry: SetExpiry,
        get: bool,
        /// The command called, for its errors.
        command: SetName,
    },
    /// GETDEL.
    GetDelete {
        key: Vec<u8>,
    },
    /// GETEX.
    GetExpire {
        key: Vec<u8>,
        expiry: GetExpiry,
    },
    /// GETRANGE and SUBSTR: Redis's inclusive, negative-from-the-end offsets.
    GetRange {
        key: Vec<u8>,
        start: i64,
        end: i64,
    },
    /// SETRANGE: `offset` is not negative.
    SetRange {
        key: Vec<u8>,
        offset: u64,
        value: Vec<u8>,
    },
    /// INCRBYFLOAT: the increment as the client wrote it (see [`crate::float`]).
    IncrementByFloat {
        key: Vec<u8>,
        increment: Vec<u8>,
    },
    /// TYPE.
    Type {
        key: Vec<u8>,
    },
    /// TOUCH: how many of the keys exist (split per partition as EXISTS).
    Touch {
        keys: Vec<Vec<u8>>,
    },
    /// EXPIRETIME and PEXPIRETIME.
    ExpireTime {
        key: Vec<u8>,
        unit: TimeUnit,
    },
    /// RENAME and RENAMENX (`only_if_absent`): both keys in one hash slot.
    Rename {
        source: Vec<u8>,
        destination: Vec<u8>,
        only_if_absent: bool,
    },
    /// COPY: both keys in one hash slot.
    Copy {
        source: Vec<u8>,
        destination: Vec<u8>,
        replace: bool,
    },
    /// SETBIT: `offset` is at most [`BIT_OFFSET_MAX`].
    SetBit {
        key: Vec<u8>,
        offset: u64,
        bit: bool,
    },
    GetBit {
        key: Vec<u8>,
        offset: u64,
    },
    /// BITCOUNT: Redis answers 0 for a missing key before it reads the range, so the range is
    /// kept with its error, if any, to be answered only when the key exists.
    BitCount {
        key: Vec<u8>,
        range: Result<BitRange, CommandError>,
    },
    /// BITPOS: as BITCOUNT, the range (or its error) counts only when the key exists.
    BitPosition {
        key: Vec<u8>,
        bit: bool,
        range: Result<BitRange, CommandError>,
    },
    /// BITOP: every key in one hash slot.
    BitOperation {
        operator: BitOperator,
        destination: Vec<u8>,
        sources: Vec<Vec<u8>>,
    },
    /// BITFIELD, and BITFIELD_RO (`read_only`: GETs only).
    BitField {
        key: Vec<u8>,
        operations: Vec<FieldOperation>,
        read_only: bool,
    },
    /// LCS: both keys in one hash slot.
    Lcs {
        first: Vec<u8>,
        second: Vec<u8>,
        reply: LcsReply,
    },
    /// MSETNX: every key in one hash slot, so all or none are set, atomically.
    MultiSetIfAbsent {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    GetSet {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    SetNx {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        keys: Vec<Vec<u8>>,
    },
    Exists {
        keys: Vec<Vec<u8>>,
    },
    MultiSet {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    MultiGet {
        keys: Vec<Vec<u8>>,
    },
    IncrementBy {
        key: Vec<u8>,
        delta: i64,
    },
    Append {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Strlen {
        key: Vec<u8>,
    },
    Expire {
        key: Vec<u8>,
        amount: i64,
        unit: TimeUnit,
        absolute: bool,
        condition: ExpireCondition,
    },
    Ttl {
        key: Vec<u8>,
        unit: TimeUnit,
    },
    Persist {
        key: Vec<u8>,
    },
    /// Run on every partition; the replies are summed.
    DbSize,
    /// Run on every partition for INFO, never sent by a client: the keys it holds now,
    /// without waiting for a commit (INFO must answer while commits stall), or its WAL failure.
    Status,
    /// Run on every partition.
    FlushAll,
    /// KEYS: run on every partition, the keys gathered.
    Keys {
        pattern: Vec<u8>,
    },
    /// SCAN, on the cursor's partition: its keys from the cursor's bucket on. `other_type`: TYPE
    /// named a type other than string, so no key qualifies.
    Scan {
        cursor: ScanCursor,
        count: usize,
        pattern: Option<Vec<u8>>,
        other_type: bool,
    },
    /// RANDOMKEY: run on every partition, each naming a key chosen from `seed` with its count
    /// of keys; the router picks one in proportion.
    RandomKey {
        seed: u64,
    },
    /// OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT.
    Object {
        key: Vec<u8>,
        question: ObjectQuestion,
    },
}

/// Commands about the connection or the node, answered without touching a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeCommand {
    Ping {
        message: Option<Vec<u8>>,
    },
    Echo {
        message: Vec<u8>,
    },
    Info {
        sections: Vec<String>,
    },
    Select {
        database: i64,
    },
    /// SWAPDB: only `SWAPDB 0 0` is not out of range.
    SwapDb {
        first: i32,
        second: i32,
    },
    /// MOVE key db: database 0 is the key's own.
    Move {
        database: i32,
    },
    /// COMMAND and its subcommands.
    Command(CommandQuery),
    ConfigGet {
        patterns: Vec<String>,
    },
    /// CONFIG SET name value [name value ...]: names as given.
    ConfigSet {
        settings: Vec<(String, Vec<u8>)>,
    },
    ConfigResetStat,
    ConfigRewrite,
    ClientSetName {
        name: Vec<u8>,
    },
    ClientGetName,
    ClientSetInfo,
    ClientId,
    /// AUTH: authenticates the connection with the credentials.
    Auth {
        credentials: Credentials,
    },
    /// HELLO [protover [AUTH username password] [SETNAME name]]: only protocol 2 parses.
    Hello {
        version: Option<i64>,
        credentials: Option<Credentials>,
        name: Option<Vec<u8>>,
    },
    /// WAITAOF numlocal numreplicas timeout: every earlier write of the connection is already
    /// durable here and on every in-sync follower when this is answered.
    WaitAof {
        local: i64,
        replicas: i64,
        timeout_ms: i64,
    },
    Quit,
    /// OBJECT HELP.
    ObjectHelp,
    /// TIME: the node's clock, seconds and microseconds.
    Time,
    /// CLUSTER and its subcommands: the slot map of a node whose shards have client ports of
    /// their own (`crate::slot_map`); refused as Redis refuses them without cluster support
    /// otherwise.
    Cluster(ClusterQuery),
    /// READONLY and READWRITE, which cluster clients send: every shard serves reads.
    ReadOnly,
    ReadWrite,
}

/// What CLUSTER is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterQuery {
    Help,
    Info,
    MyId,
    Nodes,
    Slots,
    Shards,
    KeySlot { key: Vec<u8> },
}

/// What COMMAND is asked (see [`table`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandQuery {
    /// COMMAND: every command.
    All,
    Count,
    /// COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern].
    List {
        filter: Option<ListFilter>,
    },
    /// COMMAND INFO [name ...]: none names every command.
    Info {
        names: Vec<Vec<u8>>,
    },
    /// COMMAND DOCS [name ...]: none names every command.
    Docs {
        names: Vec<Vec<u8>>,
    },
    /// COMMAND GETKEYS command [argument ...].
    GetKeys {
        arguments: Vec<Vec<u8>>,
    },
}

/// COMMAND LIST's FILTERBY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListFilter {
    Module(Vec<u8>),
    Category(Vec<u8>),
    Pattern(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Key(KeyCommand),
    Node(NodeCommand),
}

impl KeyCommand {
    /// Whether the command may change state (refused on read-only replicas).
    #[must_use]
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            KeyCommand::Get { .. }
                | KeyCommand::Exists { .. }
                | KeyCommand::MultiGet { .. }
                | KeyCommand::Strlen { .. }
                | KeyCommand::Ttl { .. }
                | KeyCommand::GetRange { .. }
                | KeyCommand::Type { .. }
                | KeyCommand::Touch { .. }
                | KeyCommand::ExpireTime { .. }
                | KeyCommand::GetBit { .. }
                | KeyCommand::BitCount { .. }
                | KeyCommand::BitPosition { .. }
                | KeyCommand::BitField { read_only: true, .. }
                | KeyCommand::Lcs { .. }
                | KeyCommand::DbSize
                | KeyCommand::Status
                | KeyCommand::Keys { .. }
                | KeyCommand::Scan { .. }
                | KeyCommand::RandomKey { .. }
                | KeyCommand::Object { .. }
        )
    }

    /// The first key the command names, if any: it decides the partition of one-key commands.
    #[must_use]
    pub fn first_key(&self) -> Option<&[u8]> {
        match self {
            KeyCommand::Get { key }
            | KeyCommand::Set { key, .. }
            | KeyCommand::GetSet { key, .. }
            | KeyCommand::SetNx { key, .. }
            | KeyCommand::IncrementBy { key, .. }
            | KeyCommand::Append { key, .. }
            | KeyCommand::Strlen { key }
            | KeyCommand::Expire { key, .. }
            | KeyCommand::Ttl { key, .. }
            | KeyCommand::Persist { key }
            | KeyCommand::GetDelete { key }
            | KeyCommand::GetExpire { key, .. }
            | KeyCommand::GetRange { key, .. }
            | KeyCommand::SetRange { key, .. }
            | KeyCommand::IncrementByFloat { key, .. }
            | KeyCommand::Type { key }
            | KeyCommand::Object { key, .. }
            | KeyCommand::ExpireTime { key, .. }
            | KeyCommand::SetBit { key, .. }
            | KeyCommand::GetBit { key, .. }
            | KeyCommand::BitCount { key, .. }
            | KeyCommand::BitPosition { key, .. }
            | KeyCommand::BitField { key, .. } => Some(key),
            KeyCommand::Rename { source, .. } | KeyCommand::Copy { source, .. } => Some(source),
            KeyCommand::BitOperation { destination, .. } => Some(destination),
            KeyCommand::Lcs { first, .. } => Some(first),
            KeyCommand::MultiSetIfAbsent { pairs } => pairs.first().map(|(key, _)| key.as_slice()),
            KeyCommand::Delete { keys }
            | KeyCommand::Exists { keys }
            | KeyCommand::Touch { keys }
            | KeyCommand::MultiGet { keys } => keys.first().map(Vec::as_slice),
            KeyCommand::MultiSet { pairs } => pairs.first().map(|(key, _)| key.as_slice()),
            KeyCommand::DbSize
            | KeyCommand::Status
            | KeyCommand::FlushAll
            | KeyCommand::Keys { .. }
            | KeyCommand::Scan { .. }
            | KeyCommand::RandomKey { .. } => None,
        }
    }
}

impl KeyCommand {
    /// Every key the command names, in the order of its arguments.
    #[must_use]
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            KeyCommand::Rename { source, destination, .. }
            | KeyCommand::Copy { source, destination, .. } => vec![source, destination],
            KeyCommand::MultiSetIfAbsent { pairs } | KeyCommand::MultiSet { pairs } => {
                pairs.iter().map(|(key, _)| key.as_slice()).collect()
            }
            KeyCommand::Delete { keys }
            | KeyCommand::Exists { keys }
            | KeyCommand::Touch { keys }
            | KeyCommand::MultiGet { keys } => keys.iter().map(Vec::as_slice).collect(),
            other => other.first_key().into_iter().collect(),
        }
    }
}

/// Longer command names are unknown without a look.
const COMMAND_NAME_BYTES_MAX: usize = 16;

/// Parses a command from its arguments (`arguments[0]` is the name, any case).
pub fn parse(arguments: &[&[u8]]) -> Result<Command, CommandError> {
    let Some(first) = arguments.first() else {
        return Err(CommandError("ERR empty command".into()));
    };
    // Lower-case the name on the stack: this runs for every command.
    let mut buffer = [0u8; COMMAND_NAME_BYTES_MAX];
    let name = if first.len() <= COMMAND_NAME_BYTES_MAX {
        buffer[..first.len()].copy_from_slice(first);
        buffer[..first.len()].make_ascii_lowercase();
        std::str::from_utf8(&buffer[..first.len()]).unwrap_or("")
    } else {
        ""
    };
    let rest = &arguments[1..];
    match name {
        "get" | "set" | "getset" | "setnx" | "del" | "unlink" | "exists" | "mset" | "mget" => {
            parse_string_command(name, rest).map(Command::Key)
        }
        "incr" | "incrby" | "decr" | "decrby" | "append" | "strlen" => {
            parse_string_command(name, rest).map(Command::Key)
        }
        "setex" | "psetex" | "getdel" | "getex" | "getrange" | "substr" | "setrange"
        | "incrbyfloat" => parse_more_string_command(name, rest).map(Command::Key),
        "rename" | "renamenx" | "copy" | "msetnx" => {
            parse_slot_command(name, rest).map(Command::Key)
        }
        "setbit" | "getbit" | "bitcount" | "bitpos" | "bitop" | "bitfield" | "bitfield_ro"
        | "lcs" => bits::parse_bit_command(name, rest).map(Command::Key),
        "type" => {
            exact(name, rest, 1).map(|()| Command::Key(KeyCommand::Type { key: rest[0].to_vec() }))
        }
        "touch" => at_least(name, rest, 1)
            .map(|()| Command::Key(KeyCommand::Touch { keys: owned_keys(rest) })),
        "expiretime" | "pexpiretime" => exact(name, rest, 1).map(|()| {
            let unit =
                if name == "expiretime" { TimeUnit::Seconds } else { TimeUnit::Milliseconds };
            Command::Key(KeyCommand::ExpireTime { key: rest[0].to_vec(), unit })
        }),
        "expire" | "pexpire" | "expireat" | "pexpireat" | "ttl" | "pttl" | "persist" => {
            parse_expiry_command(name, rest).map(Command::Key)
        }
        "dbsize" => exact(name, rest, 0).map(|()| Command::Key(KeyCommand::DbSize)),
        "keys" => keys::parse_keys(rest),
        "scan" => keys::parse_scan(rest),
        "randomkey" => keys::parse_random_key(rest),
        "object" => keys::parse_object(rest),
        "flushall" | "flushdb" => parse_flush(name, rest),
        _ => parse_node_command(name, arguments).map(Command::Node),
    }
}

fn exact(name: &str, rest: &[&[u8]], count: usize) -> Result<(), CommandError> {
    if rest.len() == count {
        Ok(())
    } else {
        Err(CommandError::arity(name))
    }
}

/// Parses a command whose arguments are owned (a large request, taken out of the input as it
/// arrived: [`crate::resp::LargeCommand`]), moving the values of SET, SETEX, PSETEX, GETSET,
/// SETNX, MSET and MSETNX into the command instead of copying them, so that a large write is
/// held once, not twice, until its records are written. Answers exactly as [`parse`] does.
///
/// # Errors
///
/// As [`parse`].
pub fn parse_owned(mut arguments: Vec<Vec<u8>>) -> Result<Command, CommandError> {
    let positions = value_positions(&arguments);
    // The parser never reads these values, so it parses the same with them left empty.
    let values: Vec<Vec<u8>> =
        positions.clone().map(|index| std::mem::take(&mut arguments[index])).collect();
    let slices: Vec<&[u8]> = arguments.iter().map(Vec::as_slice).collect();
    let mut command = parse(&slices)?;
    let mut slots = value_slots(&mut command);
    debug_assert_eq!(slots.len(), values.len(), "moved values against the parsed command's");
    if slots.len() != values.len() {
        // Not the command the name announced: cannot happen, but then copy as `parse` does.
        for (index, value) in positions.zip(values) {
            arguments[index] = value;
        }
        let slices: Vec<&[u8]> = arguments.iter().map(Vec::as_slice).collect();
        return parse(&slices);
    }
    for (slot, value) in slots.iter_mut().zip(values) {
        debug_assert!(slot.is_empty());
        **slot = value;
    }
    Ok(command)
}

/// Where the values [`parse_owned`] moves are among `arguments` (the name first), for
/// commands whose arity is right; none otherwise (the parser then answers the arity error).
fn value_positions(arguments: &[Vec<u8>]) -> std::iter::StepBy<std::ops::Range<usize>> {
    let count = arguments.len();
    let is = |name: &str| arguments[0].eq_ignore_ascii_case(name.as_bytes());
    let range = match arguments.first() {
        Some(_) if (is("set") && count >= 3) || ((is("getset") || is("setnx")) && count == 3) => {
            2..3
        }
        Some(_) if (is("setex") || is("psetex")) && count == 4 => 3..4,
        Some(_) if (is("mset") || is("msetnx")) && count >= 3 && count % 2 == 1 => 2..count,
        _ => 0..0,
    };
    range.step_by(2)
}

/// The values of a parsed command that [`parse_owned`] fills, in argument order.
fn value_slots(command: &mut Command) -> Vec<&mut Vec<u8>> {
    match command {
        Command::Key(
            KeyCommand::Set { value, .. }
            | KeyCommand::GetSet { value, .. }
            | KeyCommand::SetNx { value, .. },
        ) => vec![value],
        Command::Key(KeyCommand::MultiSet { pairs } | KeyCommand::MultiSetIfAbsent { pairs }) => {
            pairs.iter_mut().map(|(_, value)| value).collect()
        }
        _ => Vec::new(),
    }
}

fn at_least(name: &str, rest: &[&[u8]], count: usize) -> Result<(), CommandError> {
    if rest.len() >= count {
        Ok(())
    } else {
        Err(CommandError::arity(name))
    }
}

fn owned_keys(rest: &[&[u8]]) -> Vec<Vec<u8>> {
    rest.iter().map(|key| key.to_vec()).collect()
}

/// A database index as Redis reads one (an integer that fits an `int`).
fn database_index(word: &[u8]) -> Option<i32> {
    parse_integer(word).ok().and_then(|index| i32::try_from(index).ok())
}

/// Parses a decimal i64 as Redis does: no spaces, no leading '+', no leading zeros.
pub fn parse_integer(bytes: &[u8]) -> Result<i64, CommandError> {
    let text = std::str::from_utf8(bytes).map_err(|_| CommandError::not_integer())?;
    let leading_zero = text.len() > 1 && text.starts_with('0');
    let malformed =
        text.is_empty() || text.starts_with('+') || leading_zero || text.starts_with("-0");
    if malformed {
        return Err(CommandError::not_integer());
    }
    text.parse::<i64>().map_err(|_| CommandError::not_integer())
}

fn parse_string_command(name: &str, rest: &[&[u8]]) -> Result<KeyCommand, CommandError> {
    let key = || rest[0].to_vec();
    match name {
        "get" => exact(name, rest, 1).map(|()| KeyCommand::Get { key: key() }),
        "set" => at_least(name, rest, 2).and_then(|()| parse_set(rest)),
        "getset" => exact(name, rest, 2)
            .map(|()| KeyCommand::GetSet { key: key(), value: rest[1].to_vec() }),
        "setnx" => {
            exact(name, rest, 2).map(|()| KeyCommand::SetNx { key: key(), value: rest[1].to_vec() })
        }
        "del" | "unlink" => {
            at_least(name, rest, 1).map(|()| KeyCommand::Delete { keys: owned_keys(rest) })
        }
        "exists" => at_least(name, rest, 1).map(|()| KeyCommand::Exists { keys: owned_keys(rest) }),
        "mget" => at_least(name, rest, 1).map(|()| KeyCommand::MultiGet { keys: owned_keys(rest) }),
        "mset" => {
            if rest.is_empty() || !rest.len().is_multiple_of(2) {
                return Err(CommandError::arity(name));
            }
            let pairs = rest.chunks_exact(2).map(|pair| (pair[0].to_vec(), pair[1].to_vec()));
            Ok(KeyCommand::MultiSet { pairs: pairs.collect() })
        }
        "incr" | "decr" => exact(name, rest, 1).map(|()| KeyCommand::IncrementBy {
            key: key(),
            delta: if name == "incr" { 1 } else { -1 },
        }),
        "incrby" | "decrby" => {
            exact(name, rest, 2)?;
            let amount = parse_integer(rest[1])?;
            let delta = if name == "incrby" { Some(amount) } else { amount.checked_neg() };
            let delta = delta.ok_or_else(|| CommandError("ERR decrement would overflow".into()))?;
            Ok(KeyCommand::IncrementBy { key: key(), delta })
        }
        "append" => exact(name, rest, 2)
            .map(|()| KeyCommand::Append { key: key(), value: rest[1].to_vec() }),
        "strlen" => exact(name, rest, 1).map(|()| KeyCommand::Strlen { key: key() }),
        _ => unreachable!("dispatched by name"),
    }
}

/// SET's options, as Redis takes them: an option may repeat (the last expiry wins) but not
/// meet a conflicting one (NX with XX, two kinds of expiry, KEEPTTL with an expiry); every
/// option is read before the expiry's number is, so a syntax error comes first.
fn parse_set(rest: &[&[u8]]) -> Result<KeyCommand, CommandError> {
    let options = parse_extended_options(&rest[2..], true)?;
    let expiry = match options.expiry {
        Some((option, argument)) => parse_set_expiry(&option, argument, "set")?,
        None if options.keep => SetExpiry::Keep,
        None => SetExpiry::None,
    };
    Ok(KeyCommand::Set {
        key: rest[0].to_vec(),
        value: rest[1].to_vec(),
        condition: options.condition,
        expiry,
        get: options.get,
        command: SetName::Set,
    })
}

/// SET's and GETEX's options, read as Redis reads them.
struct ExtendedOptions<'a> {
    condition: SetCondition,
    get: bool,
    /// KEEPTTL (SET).
    keep: bool,
    /// PERSIST (GETEX).
    persist: bool,
    /// The expiry option (lower case) and its argument, not yet read as a number.
    expiry: Option<(String, &'a [u8])>,
}

/// NX, XX, GET and KEEPTTL belong to SET, PERSIST to GETEX; an option may repeat, but not
/// meet one it conflicts with, and an expiry option needs an argument after it.
fn parse_extended_options<'a>(
    options: &[&'a [u8]],
    for_set: bool,
) -> Result<ExtendedOptions<'a>, CommandError> {
    let mut parsed = ExtendedOptions {
        condition: SetCondition::Always,
        get: false,
        keep: false,
        persist: false,
        expiry: None,
    };
    let mut index = 0;
    while index < options.len() {
        let option = String::from_utf8_lossy(options[index]).to_ascii_lowercase();
        let has_next = index + 1 < options.len();
        match option.as_str() {
            "nx" if for_set && parsed.condition != SetCondition::IfPresent => {
                parsed.condition = SetCondition::IfAbsent;
            }
            "xx" if for_set && parsed.condition != SetCondition::IfAbsent => {
                parsed.condition = SetCondition::IfPresent;
            }
            "get" if for_set => parsed.get = true,
            "keepttl" if for_set && parsed.expiry.is_none() => parsed.keep = true,
            "persist" if !for_set && parsed.expiry.is_none() => parsed.persist = true,
            "ex" | "px" | "exat" | "pxat"
                if !parsed.keep
                    && !parsed.persist
                    && has_next
                    && parsed.expiry.as_ref().is_none_or(|(kind, _)| *kind == option) =>
            {
                index += 1;
                parsed.expiry = Some((option, options[index]));
            }
            _ => return Err(CommandError::syntax()),
        }
        index += 1;
    }
    Ok(parsed)
}

/// Redis Cluster's refusal of a command whose keys lie in several hash slots.
#[must_use]
pub fn cross_slot() -> CommandError {
    CommandError("CROSSSLOT Keys in request don't hash to the same slot".into())
}

/// Refuses keys that do not all hash to one slot (`{tag}`s make them).
fn one_slot<'a>(mut keys: impl Iterator<Item = &'a [u8]>) -> Result<(), CommandError> {
    let Some(first) = keys.next().map(crate::slot::key_slot) else { return Ok(()) };
    if keys.all(|key| crate::slot::key_slot(key) == first) {
        Ok(())
    } else {
        Err(cross_slot())
    }
}

/// RENAME, RENAMENX, COPY and MSETNX: atomic within one partition, so their keys must share
/// a hash slot, as in Redis Cluster; that is checked right after the arity.
fn parse_slot_command(name: &str, rest: &[&[u8]]) -> Result<KeyCommand, CommandError> {
    if name == "msetnx" {
        if rest.is_empty() || !rest.len().is_multiple_of(2) {
            return Err(CommandError::arity(name));
        }
        one_slot(rest.iter().step_by(2).copied())?;
        let pairs = rest.chunks_exact(2).map(|pair| (pair[0].to_vec(), pair[1].to_vec()));
        return Ok(KeyCommand::MultiSetIfAbsent { pairs: pairs.collect() });
    }
    if name == "copy" {
        at_least(name, rest, 2)?;
    } else {
        exact(name, rest, 2)?;
    }
    one_slot(rest[..2].iter().copied())?;
    let (source, destination) = (rest[0].to_vec(), rest[1].to_vec());
    if name != "copy" {
        let only_if_absent = name == "renamenx";
        return Ok(KeyCommand::Rename { source, destination, only_if_absent });
    }
    let mut replace = false;
    let mut index = 2;
    while index < rest.len() {
        let option = rest[index].to_ascii_lowercase();
        match option.as_slice() {
            b"replace" => replace = true,
            b"db" if index + 1 < rest.len() => {
                index += 1;
                let database = parse_integer(rest[index])?;
                if database != 0 {
                    return Err(CommandError("ERR DB index is out of range".into()));
                }
            }
            _ => return Err(CommandError::syntax()),
        }
        index += 1;
    }
    Ok(KeyCommand::Copy { source, destination, replace })
}

/// SETEX, PSETEX, GETDEL, GETEX, GETRANGE, SUBSTR, SETRANGE, INCRBYFLOAT.
fn parse_more_string_command(name: &str, rest: &[&[u8]]) -> Result<KeyCommand, CommandError> {
    let key = || rest[0].to_vec();
    match name {
        "setex" | "psetex" => {
            exact(name, rest, 3)?;
            let (option, command) =
                if name == "setex" { ("ex", SetName::SetEx) } else { ("px", SetName::PSetEx) };
            let expiry = parse_set_expiry(option, rest[1], command.as_str())?;
            let value = rest[2].to_vec();
            let condition = SetCondition::Always;
            Ok(KeyCommand::Set { key: key(), value, condition, expiry, get: false, command })
        }
        "getdel" => exact(name, rest, 1).map(|()| KeyCommand::GetDelete { key: key() }),
        "getex" => {
            at_least(name, rest, 1)?;
            let options = parse_extended_options(&rest[1..], false)?;
            let expiry = match options.expiry {
                Some((option, argument)) => {
                    let option = match option.as_str() {
                        "ex" => "ex",
                        "px" => "px",
                        "exat" => "exat",
                        _ => "pxat",
                    };
                    GetExpiry::At { option, argument: argument.to_vec() }
                }
                None if options.persist => GetExpiry::Persist,
                None => GetExpiry::Unchanged,
            };
            Ok(KeyCommand::GetExpire { key: key(), expiry })
        }
        "getrange" | "substr" => {
            exact(name, rest, 3)?;
            let (start, end) = (parse_integer(rest[1])?, parse_integer(rest[2])?);
            Ok(KeyCommand::GetRange { key: key(), start, end })
        }
        "setrange" => {
            exact(name, rest, 3)?;
            let offset = u64::try_from(parse_integer(rest[1])?)
                .map_err(|_| CommandError("ERR offset is out of range".into()))?;
            Ok(KeyCommand::SetRange { key: key(), offset, value: rest[2].to_vec() })
        }
        "incrbyfloat" => exact(name, rest, 2)
            .map(|()| KeyCommand::IncrementByFloat { key: key(), increment: rest[1].to_vec() }),
        _ => unreachable!("dispatched by name"),
    }
}

/// The latest time a key may expire at, in Unix milliseconds (Redis's `LLONG_MAX`).
pub const EXPIRE_AT_MS_MAX: u64 = i64::MAX as u64;

/// Redis's error for an expiry that is not positive or whose absolute time overflows, naming
/// the command called.
#[must_use]
pub fn invalid_expire_time(command: &str) -> CommandError {
    CommandError(format!("ERR invalid expire time in '{command}' command"))
}

/// The expiry of SET's (or GETEX's) `option` (`ex`, `px`, `exat`, `pxat`) and its argument.
///
/// # Errors
///
/// Not an integer, not positive, or past Redis's limit, named after `command`.
pub fn parse_set_expiry(
    option: &str,
    argument: &[u8],
    command: &str,
) -> Result<SetExpiry, CommandError> {
    let amount = parse_integer(argument)?;
    let invalid = || invalid_expire_time(command);
    if amount <= 0 {
        return Err(invalid());
    }
    let amount = amount as u64;
    let milliseconds = |value: u64| {
        value.checked_mul(1000).filter(|value| *value <= EXPIRE_AT_MS_MAX).ok_or_else(invalid)
    };
    Ok(match option {
        "ex" => SetExpiry::RelativeMs(milliseconds(amount)?),
        "px" => SetExpiry::RelativeMs(amount),
        "exat" => SetExpiry::AbsoluteMs(milliseconds(amount)?),
        _ => SetExpiry::AbsoluteMs(amount),
    })
}

fn parse_expiry_command(name: &str, rest: &[&[u8]]) -> Result<KeyCommand, CommandError> {
    match name {
        "ttl" | "pttl" => exact(name, rest, 1).map(|()| KeyCommand::Ttl {
            key: rest[0].to_vec(),
            unit: if name == "ttl" { TimeUnit::Seconds } else { TimeUnit::Milliseconds },
        }),
        "persist" => exact(name, rest, 1).map(|()| KeyCommand::Persist { key: rest[0].to_vec() }),
        _ => {
            at_least(name, rest, 2)?;
            // Redis reads the options before the time.
            let condition = parse_expire_conditions(&rest[2..])?;
            let amount = parse_integer(rest[1])?;
            let unit =
                if name.starts_with('p') { TimeUnit::Milliseconds } else { TimeUnit::Seconds };
            let absolute = name.ends_with("at");
            Ok(KeyCommand::Expire { key: rest[0].to_vec(), amount, unit, absolute, condition })
        }
    }
}

/// EXPIRE's options, combined as Redis allows: NX alone; GT or LT, each optionally with XX.
fn parse_expire_conditions(options: &[&[u8]]) -> Result<ExpireCondition, CommandError> {
    let (mut absent, mut present, mut greater, mut less) = (false, false, false, false);
    for option in options {
        match option.to_ascii_lowercase().as_slice() {
            b"nx" => absent = true,
            b"xx" => present = true,
            b"gt" => greater = true,
            b"lt" => less = true,
            _ => {
                let text = String::from_utf8_lossy(option);
                return Err(CommandError(format!("ERR Unsupported option {text}")));
            }
        }
    }
    if absent && (present || greater || less) {
        return Err(CommandError(
            "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if greater && less {
        return Err(CommandError(
            "ERR GT and LT options at the same time are not compatible".into(),
        ));
    }
    Ok(match (absent, present, greater, less) {
        (true, ..) => ExpireCondition::IfNoExpiry,
        (_, _, true, _) => ExpireCondition::IfGreater,
        (_, true, _, true) => ExpireCondition::IfHasExpiryAndLess,
        (_, _, _, true) => ExpireCondition::IfLess,
        (_, true, ..) => ExpireCondition::IfHasExpiry,
        _ => ExpireCondition::Always,
    })
}

fn parse_flush(name: &str, rest: &[&[u8]]) -> Result<Command, CommandError> {
    match rest {
        [] => Ok(Command::Key(KeyCommand::FlushAll)),
        [mode] if mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async") => {
            Ok(Command::Key(KeyCommand::FlushAll))
        }
        [_] => Err(CommandError::syntax()),
        _ => Err(CommandError::arity(name)),
    }
}

fn lowercase_strings(rest: &[&[u8]]) -> Vec<String> {
    rest.iter().map(|item| String::from_utf8_lossy(item).to_ascii_lowercase()).collect()
}

fn parse_node_command(name: &str, arguments: &[&[u8]]) -> Result<NodeCommand, CommandError> {
    let rest = &arguments[1..];
    match name {
        "ping" => match rest {
            [] => Ok(NodeCommand::Ping { message: None }),
            [message] => Ok(NodeCommand::Ping { message: Some(message.to_vec()) }),
            _ => Err(CommandError::arity(name)),
        },
        "echo" => exact(name, rest, 1).map(|()| NodeCommand::Echo { message: rest[0].to_vec() }),
        "info" => Ok(NodeCommand::Info { sections: lowercase_strings(rest) }),
        "select" => {
            exact(name, rest, 1)?;
            Ok(NodeCommand::Select { database: parse_integer(rest[0])? })
        }
        // One database: SWAPDB and MOVE are parsed as Redis parses them, then refused as a
        // Redis with `databases 1` refuses them.
        "swapdb" => {
            exact(name, rest, 2)?;
            let index = |word: &[u8], which: &str| {
                database_index(word)
                    .ok_or_else(|| CommandError(format!("ERR invalid {which} DB index")))
            };
            let first = index(rest[0], "first")?;
            let second = index(rest[1], "second")?;
            Ok(NodeCommand::SwapDb { first, second })
        }
        "move" => {
            exact(name, rest, 2)?;
            let database = database_index(rest[1]).ok_or_else(CommandError::not_integer)?;
            Ok(NodeCommand::Move { database })
        }
        "command" => parse_command_query(rest).map(NodeCommand::Command),
        "config" => parse_config(rest),
        "client" => parse_client(rest),
        "auth" => parse_auth(rest),
        "hello" => parse_hello(rest),
        "quit" => Ok(NodeCommand::Quit),
        "time" => exact(name, rest, 0).map(|()| NodeCommand::Time),
        "cluster" => parse_cluster(rest).map(NodeCommand::Cluster),
        "readonly" => exact(name, rest, 0).map(|()| NodeCommand::ReadOnly),
        "readwrite" => exact(name, rest, 0).map(|()| NodeCommand::ReadWrite),
        "waitaof" => {
            exact(name, rest, 3)?;
            let [local, replicas, timeout_ms] = [rest[0], rest[1], rest[2]].map(parse_integer);
            let (local, replicas, timeout_ms) = (local?, replicas?, timeout_ms?);
            if local < 0 || replicas < 0 || timeout_ms < 0 {
                return Err(CommandError("ERR timeout is negative".into()));
            }
            Ok(NodeCommand::WaitAof { local, replicas, timeout_ms })
        }
        _ => Err(unknown_command(arguments)),
    }
}

fn parse_config(rest: &[&[u8]]) -> Result<NodeCommand, CommandError> {
    let Some(subcommand) = rest.first() else {
        return Err(CommandError::arity("config"));
    };
    let given = String::from_utf8_lossy(subcommand);
    match given.to_ascii_lowercase().as_str() {
        "get" if rest.len() >= 2 => {
            Ok(NodeCommand::ConfigGet { patterns: lowercase_strings(&rest[1..]) })
        }
        "get" => Err(CommandError::arity("config|get")),
        "set" if rest.len() >= 3 && rest.len() % 2 == 1 => {
            let settings = rest[1..]
                .chunks_exact(2)
                .map(|pair| (String::from_utf8_lossy(pair[0]).into_owned(), pair[1].to_vec()));
            Ok(NodeCommand::ConfigSet { settings: settings.collect() })
        }
        "set" if rest.len() >= 3 => Err(CommandError::syntax()),
        "set" => Err(CommandError::arity("config|set")),
        "resetstat" if rest.len() == 1 => Ok(NodeCommand::ConfigResetStat),
        "rewrite" if rest.len() == 1 => Ok(NodeCommand::ConfigRewrite),
        "resetstat" | "rewrite" => {
            Err(CommandError::arity(&format!("config|{}", given.to_ascii_lowercase())))
        }
        _ => Err(unknown_subcommand(&given, "CONFIG")),
    }
}

/// CLUSTER's subcommands served, with Redis 7.0's arities.
fn parse_cluster(rest: &[&[u8]]) -> Result<ClusterQuery, CommandError> {
    let Some(subcommand) = rest.first() else {
        return Err(CommandError::arity("cluster"));
    };
    let given = String::from_utf8_lossy(subcommand);
    let subcommand = given.to_ascii_lowercase();
    let query = match (subcommand.as_str(), &rest[1..]) {
        ("help", []) => ClusterQuery::Help,
        ("info", []) => ClusterQuery::Info,
        ("myid", []) => ClusterQuery::MyId,
        ("nodes", []) => ClusterQuery::Nodes,
        ("slots", []) => ClusterQuery::Slots,
        ("shards", []) => ClusterQuery::Shards,
        ("keyslot", [key]) => ClusterQuery::KeySlot { key: key.to_vec() },
        ("help" | "info" | "myid" | "nodes" | "slots" | "shards" | "keyslot", _) => {
            return Err(CommandError::arity(&format!("cluster|{subcommand}")));
        }
        _ => return Err(unknown_subcommand(&given, "CLUSTER")),
    };
    Ok(query)
}

/// COMMAND's subcommands, with Redis 7.0's arities (`command|count` takes no argument,
/// `command|getkeys` a command and at least one argument).
fn parse_command_query(rest: &[&[u8]]) -> Result<CommandQuery, CommandError> {
    let Some(subcommand) = rest.first() else {
        return Ok(CommandQuery::All);
    };
    let given = String::from_utf8_lossy(subcommand);
    let subcommand = given.to_ascii_lowercase();
    let arguments = &rest[1..];
    match (subcommand.as_str(), arguments.len()) {
        ("count", 0) => Ok(CommandQuery::Count),
        ("list", _) => parse_list_filter(arguments).map(|filter| CommandQuery::List { filter }),
        ("info", _) => Ok(CommandQuery::Info { names: owned_keys(arguments) }),
        ("docs", _) => Ok(CommandQuery::Docs { names: owned_keys(arguments) }),
        ("getkeys", 2..) => Ok(CommandQuery::GetKeys { arguments: owned_keys(arguments) }),
        ("count" | "getkeys", _) => Err(CommandError::arity(&format!("command|{subcommand}"))),
        _ => Err(unknown_subcommand(&given, "COMMAND")),
    }
}

/// COMMAND LIST's `FILTERBY MODULE|ACLCAT|PATTERN argument`, or nothing.
fn parse_list_filter(arguments: &[&[u8]]) -> Result<Option<ListFilter>, CommandError> {
    match arguments {
        [] => Ok(None),
        [filterby, kind, argument] if filterby.eq_ignore_ascii_case(b"filterby") => {
            let argument = argument.to_vec();
            match kind.to_ascii_lowercase().as_slice() {
                b"module" => Ok(Some(ListFilter::Module(argument))),
                b"aclcat" => Ok(Some(ListFilter::Category(argument))),
                b"pattern" => Ok(Some(ListFilter::Pattern(argument))),
                _ => Err(CommandError::syntax()),
            }
        }
        _ => Err(CommandError::syntax()),
    }
}

fn parse_client(rest: &[&[u8]]) -> Result<NodeCommand, CommandError> {
    let Some(subcommand) = rest.first() else {
        return Err(CommandError::arity("client"));
    };
    let given = String::from_utf8_lossy(subcommand);
    let subcommand = given.to_ascii_lowercase();
    match (subcommand.as_str(), rest.len()) {
        ("setname", 2) => Ok(NodeCommand::ClientSetName { name: client_name(rest[1])? }),
        ("getname", 1) => Ok(NodeCommand::ClientGetName),
        ("id", 1) => Ok(NodeCommand::ClientId),
        ("setinfo", 3) => Ok(NodeCommand::ClientSetInfo),
        ("setname" | "getname" | "id" | "setinfo", _) => {
            Err(CommandError::arity(&format!("client|{subcommand}")))
        }
        _ => Err(unknown_subcommand(&given, "CLIENT")),
    }
}

/// A name for CLIENT SETNAME or HELLO's SETNAME option: printable, without spaces.
fn client_name(name: &[u8]) -> Result<Vec<u8>, CommandError> {
    if name.iter().any(|&byte| byte <= b' ' || byte > b'~') {
        return Err(CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    Ok(name.to_vec())
}

/// AUTH password, or AUTH username password.
fn parse_auth(rest: &[&[u8]]) -> Result<NodeCommand, CommandError> {
    let (username, password) = match rest {
        [] => return Err(CommandError::arity("auth")),
        [password] => (None, password),
        [username, password] => (Some(username.to_vec()), password),
        _ => return Err(CommandError::syntax()),
    };
    Ok(NodeCommand::Auth { credentials: Credentials { username, password: password.to_vec() } })
}

/// HELLO [protover [AUTH username password] [SETNAME name]], checked in Redis's order: the
/// version first (only 2 is spoken here), then the options.
fn parse_hello(rest: &[&[u8]]) -> Result<NodeCommand, CommandError> {
    let Some((version, options)) = rest.split_first() else {
        return Ok(NodeCommand::Hello { version: None, credentials: None, name: None });
    };
    let version = parse_integer(version).map_err(|_| {
        CommandError("ERR Protocol version is not an integer or out of range".into())
    })?;
    if version != 2 {
        return Err(CommandError("NOPROTO unsupported protocol version".into()));
    }
    let (mut credentials, mut name) = (None, None);
    let mut index = 0;
    while index < options.len() {
        let option = options[index];
        let more = options.len() - index - 1;
        if option.eq_ignore_ascii_case(b"auth") && more >= 2 {
            let username = Some(options[index + 1].to_vec());
            credentials = Some(Credentials { username, password: options[index + 2].to_vec() });
            index += 3;
        } else if option.eq_ignore_ascii_case(b"setname") && more >= 1 {
            name = Some(client_name(options[index + 1])?);
            index += 2;
        } else {
            let option = String::from_utf8_lossy(option);
            return Err(CommandError(format!("ERR Syntax error in HELLO option '{option}'")));
        }
    }
    Ok(NodeCommand::Hello { version: Some(version), credentials, name })
}

fn unknown_subcommand(subcommand: &str, command: &str) -> CommandError {
    CommandError(format!("ERR unknown subcommand '{subcommand}'. Try {command} HELP."))
}

/// Redis's text for an unknown command, quoting up to the first arguments.
#[must_use]
pub fn unknown_command(arguments: &[&[u8]]) -> CommandError {
    let mut text =
        format!("ERR unknown command '{}', with args beginning with: ", printable(arguments[0]));
    for argument in arguments.iter().skip(1).take(16) {
        let _ = write!(text, "'{}' ", printable(argument));
    }
    CommandError(text)
}

fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(128)]);
    text.chars().map(|character| if character.is_control() { ' ' } else { character }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(line: &str) -> Result<Command, CommandError> {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        parse(&words)
    }

    /// The values of large writes are moved, not copied, and every command parses as with
    /// borrowed arguments.
    #[test]
    fn owned_arguments_move_their_values() {
        let value = vec![b'v'; 4096];
        let address = value.as_ptr();
        let arguments = vec![b"MSET".to_vec(), b"a".to_vec(), b"1".to_vec(), b"b".to_vec(), value];
        let Ok(Command::Key(KeyCommand::MultiSet { pairs })) = parse_owned(arguments) else {
            panic!("not an MSET");
        };
        assert_eq!(pairs[0], (b"a".to_vec(), b"1".to_vec()));
        assert_eq!(pairs[1].1.as_ptr(), address);
        let value = vec![b'w'; 4096];
        let address = value.as_ptr();
        let arguments = vec![b"set".to_vec(), b"k".to_vec(), value, b"PX".to_vec(), b"5".to_vec()];
        let Ok(Command::Key(KeyCommand::Set { value, expiry, .. })) = parse_owned(arguments) else {
            panic!("not a SET");
        };
        assert_eq!((value.as_ptr(), expiry), (address, SetExpiry::RelativeMs(5)));
    }

    proptest::proptest! {
        #[test]
        fn owned_arguments_parse_as_borrowed_ones(
            name in proptest::sample::select(vec![
                "SET", "set", "GETSET", "setnx", "SETEX", "psetex", "MSET", "msetnx", "APPEND",
                "GET", "del", "PING",
            ]),
            rest in proptest::collection::vec(
                proptest::sample::select(vec![
                    "k", "{k}x", "v", "", "EX", "px", "NX", "XX", "GET", "KEEPTTL", "10", "-1",
                    "0", "EXAT",
                ]),
                0..7,
            ),
        ) {
            let mut arguments = vec![name.as_bytes().to_vec()];
            arguments.extend(rest.iter().map(|word| word.as_bytes().to_vec()));
            let slices: Vec<&[u8]> = arguments.iter().map(Vec::as_slice).collect();
            let borrowed = parse(&slices);
            proptest::prop_assert_eq!(parse_owned(arguments.clone()), borrowed);
        }
    }

    #[test]
    fn set_options_parse_like_redis() {
        let command = parse_words("SET k v NX PX 100 GET").unwrap();
        let Command::Key(KeyCommand::Set { condition, expiry, get, .. }) = command else {
            panic!("not a SET");
        };
        assert_eq!(condition, SetCondition::IfAbsent);
        assert_eq!(expiry, SetExpiry::RelativeMs(100));
        assert!(get);
        assert_eq!(parse_words("SET k v NX XX").unwrap_err(), CommandError::syntax());
        assert_eq!(parse_words("SET k v EX").unwrap_err(), CommandError::syntax());
        assert_eq!(
            parse_words("SET k v EX 0").unwrap_err().0,
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(parse_words("SET k v EX x").unwrap_err(), CommandError::not_integer());
        assert_eq!(
            parse_words("SET k").unwrap_err().0,
            "ERR wrong number of arguments for 'set' command"
        );
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_integer(b"-12").unwrap(), -12);
        assert_eq!(parse_integer(b"0").unwrap(), 0);
        for bad in ["", "+1", "01", " 1", "1 ", "1.5", "99999999999999999999", "-0"] {
            assert!(parse_integer(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cluster_subcommands_parse_with_redis_errors() {
        let query = |line: &str| match parse_words(line) {
            Ok(Command::Node(NodeCommand::Cluster(query))) => Ok(query),
            Ok(other) => panic!("{line}: {other:?}"),
            Err(error) => Err(error.0),
        };
        assert_eq!(query("CLUSTER slots"), Ok(ClusterQuery::Slots));
        assert_eq!(query("cluster NODES"), Ok(ClusterQuery::Nodes));
        assert_eq!(
            query("CLUSTER KEYSLOT {a}b"),
            Ok(ClusterQuery::KeySlot { key: b"{a}b".to_vec() })
        );
        assert_eq!(
            query("CLUSTER").unwrap_err(),
            "ERR wrong number of arguments for 'cluster' command"
        );
        assert_eq!(
            query("CLUSTER SLOTS x").unwrap_err(),
            "ERR wrong number of arguments for 'cluster|slots' command"
        );
        assert_eq!(
            query("CLUSTER KEYSLOT").unwrap_err(),
            "ERR wrong number of arguments for 'cluster|keyslot' command"
        );
        assert_eq!(
            query("CLUSTER Foo").unwrap_err(),
            "ERR unknown subcommand 'Foo'. Try CLUSTER HELP."
        );
        assert_eq!(parse_words("READONLY").unwrap(), Command::Node(NodeCommand::ReadOnly));
        assert!(parse_words("READWRITE x").is_err());
    }

    #[test]
    fn unknown_command_text_matches_redis() {
        assert_eq!(
            parse_words("FOO a b").unwrap_err().0,
            "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
        );
    }

    #[test]
    fn multi_key_commands_keep_key_order() {
        let Command::Key(command) = parse_words("MSET a 1 b 2").unwrap() else { panic!() };
        assert_eq!(command.first_key(), Some(&b"a"[..]));
        assert!(command.is_write());
        assert!(parse_words("MSET a 1 b").is_err());
        assert_eq!(
            parse_words("DECRBY k -9223372036854775808").unwrap_err().0,
            "ERR decrement would overflow"
        );
    }

    #[test]
    fn auth_and_hello_parse_like_redis() {
        let Command::Node(NodeCommand::Auth { credentials }) = parse_words("AUTH pass").unwrap()
        else {
            panic!("not AUTH");
        };
        assert_eq!((credentials.username, credentials.password), (None, b"pass".to_vec()));
        let parsed = parse_words("auth someone hunter2").unwrap();
        let Command::Node(NodeCommand::Auth { credentials }) = parsed else { panic!() };
        assert_eq!(credentials.username.as_deref(), Some(&b"someone"[..]));
        let shown = format!("{credentials:?}");
        assert!(shown.contains("someone"), "{shown}");
        assert!(!shown.contains("hunter2"), "Debug shows the password: {shown}");
        assert_eq!(parse_words("AUTH").unwrap_err(), CommandError::arity("auth"));
        assert_eq!(parse_words("AUTH a b c").unwrap_err(), CommandError::syntax());
        let parsed = parse_words("HELLO 2 SETNAME app AUTH default pass").unwrap();
        let Command::Node(NodeCommand::Hello { version, credentials, name }) = parsed else {
            panic!("not HELLO");
        };
        assert_eq!(version, Some(2));
        assert_eq!(credentials.unwrap().password, b"pass");
        assert_eq!(name.as_deref(), Some(&b"app"[..]));
        let errors = [
            ("HELLO 3 AUTH default pass", "NOPROTO unsupported protocol version"),
            ("HELLO x", "ERR Protocol version is not an integer or out of range"),
            ("HELLO 2 AUTH default", "ERR Syntax error in HELLO option 'AUTH'"),
            ("HELLO 2 SETNAME", "ERR Syntax error in HELLO option 'SETNAME'"),
            ("HELLO 2 foo", "ERR Syntax error in HELLO option 'foo'"),
        ];
        for (line, text) in errors {
            assert_eq!(parse_words(line).unwrap_err().0, text, "{line}");
        }
    }

    #[test]
    fn every_command_in_the_table_parses() {
        for command in table::served() {
            assert_eq!(declared_arity(command.name), Some(command.arity));
        }
        assert_eq!(declared_arity("foo"), None);
        assert!(arity_allows(2, 2));
        assert!(!arity_allows(2, 3));
        assert!(arity_allows(-3, 3));
        assert!(arity_allows(-3, 9));
        assert!(!arity_allows(-3, 2));
        assert!(CommandError::arity("config|get").is_subcommand_lookup());
        assert!(!CommandError::arity("get").is_subcommand_lookup());
        assert_eq!(
            parse_words("CONFIG Foo").unwrap_err().0,
            "ERR unknown subcommand 'Foo'. Try CONFIG HELP."
        );
    }
}
