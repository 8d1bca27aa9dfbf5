//! The command table: every command this server answers, described as Redis 7 describes it
//! (arity, flags, legacy key positions, ACL categories, tips, key specs, docs summary). COMMAND
//! and its subcommands answer from it, the checks made before authentication read its
//! arities, and INFO commandstats counts by its names.
//!
//! The rows (`table/rows.rs`) hold Redis 7's own values, read from a `redis-server` with
//! `COMMAND INFO` and `COMMAND DOCS`. A row is served, and shown, only if the parser knows its
//! name (and a subcommand's): rows may come before the commands they describe.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::command::{CommandError, CommandQuery, ListFilter};
use crate::resp;

mod rows;

pub use rows::COMMANDS;

/// One command or subcommand (`config|get`), as `COMMAND INFO` and `COMMAND DOCS` show it.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower case; a subcommand is `container|name`.
    pub name: &'static str,
    /// Arguments, the name included; a negative arity is a minimum.
    pub arity: i64,
    pub flags: &'static [&'static str],
    /// The legacy key positions: first key, last key (negative: from the end), step.
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    pub categories: &'static [&'static str],
    pub tips: &'static [&'static str],
    pub key_specs: &'static [KeySpec],
    pub subcommands: &'static [CommandSpec],
    pub summary: &'static str,
    pub since: &'static str,
    pub group: &'static str,
    pub complexity: &'static str,
    pub deprecation: Option<Deprecation>,
}

/// A key spec that finds its keys from a fixed index over a range, the only kind the commands
/// served here need (Redis's `begin_search` of type `index`, `find_keys` of type `range`).
#[derive(Debug)]
pub struct KeySpec {
    pub notes: Option<&'static str>,
    pub flags: &'static [&'static str],
    /// The argument of the first key.
    pub index: i64,
    /// The last key, relative to `index` when not negative, else counted from the end.
    pub last_key: i64,
    pub step: i64,
    /// With a negative `last_key`: the keys are 1/limit of the remaining arguments.
    pub limit: i64,
}

/// Why a command's docs call it deprecated.
#[derive(Debug)]
pub struct Deprecation {
    pub since: &'static str,
    pub replaced_by: &'static str,
}

/// A command's place in [`all`]: top-level commands first, in table order, then each
/// container's subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(pub u16);

/// Longer command names are unknown without a look.
const NAME_BYTES_MAX: usize = 32;

/// Every command and subcommand, in [`CommandId`] order.
#[must_use]
pub fn all() -> &'static [&'static CommandSpec] {
    &index().all
}

/// The command or subcommand `id` names.
#[must_use]
pub fn spec(id: CommandId) -> &'static CommandSpec {
    all()[usize::from(id.0)]
}

/// Every [`CommandId`], served or not.
pub fn ids() -> impl Iterator<Item = CommandId> {
    (0..count()).map(|position| CommandId(u16::try_from(position).unwrap_or(u16::MAX)))
}

/// How many commands and subcommands there are: the bound of [`CommandId`].
#[must_use]
pub fn count() -> usize {
    all().len()
}

struct Index {
    all: Vec<&'static CommandSpec>,
    /// Whether [`crate::command::parse`] knows each command of `all`.
    served: Vec<bool>,
    /// The served commands by name: looked up for every command a client sends, so one hash
    /// of the name and one comparison.
    by_name: HashMap<&'static [u8], CommandId, foldhash::fast::FixedState>,
}

/// Whether the parser knows the command or subcommand `name` (`container|sub`).
fn parser_knows(name: &str) -> bool {
    let words: Vec<&[u8]> = name.split('|').map(str::as_bytes).collect();
    match crate::command::parse(&words) {
        Ok(_) => true,
        Err(error) => {
            !error.0.starts_with("ERR unknown command") && !error.0.starts_with("ERR unknown subc")
        }
    }
}

/// Whether the command is served here (see the module's summary).
#[must_use]
pub fn is_served(id: CommandId) -> bool {
    index().served[usize::from(id.0)]
}

/// The served top-level commands, in table order (COMMAND, COMMAND LIST, COMMAND COUNT).
pub fn served() -> impl Iterator<Item = &'static CommandSpec> {
    let index = index();
    COMMANDS.iter().enumerate().filter(|(position, _)| index.served[*position]).map(|(_, c)| c)
}

/// The served subcommands of `command`.
fn served_subcommands(command: &CommandSpec) -> Vec<&'static CommandSpec> {
    let subcommands = command.subcommands.iter();
    subcommands.filter(|sub| find(sub.name.as_bytes()).is_some()).collect()
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut all: Vec<&'static CommandSpec> = COMMANDS.iter().collect();
        for command in COMMANDS {
            all.extend(command.subcommands.iter());
        }
        let served: Vec<bool> = all.iter().map(|spec| parser_knows(spec.name)).collect();
        let by_name = all
            .iter()
            .enumerate()
            .filter(|(position, _)| served[*position])
            .map(|(position, spec)| {
                let id = u16::try_from(position).expect("fewer than 65536 commands");
                (spec.name.as_bytes(), CommandId(id))
            })
            .collect();
        Index { all, served, by_name }
    })
}

/// The served command named `name` (any case; `container|sub` for a subcommand).
#[must_use]
pub fn find(name: &[u8]) -> Option<CommandId> {
    let mut buffer = [0u8; NAME_BYTES_MAX];
    let lowered = buffer.get_mut(..name.len())?;
    // A byte loop rather than a copy then a pass: names are a few bytes, a call to memmove
    // costs more than the loop.
    for (target, byte) in lowered.iter_mut().zip(name) {
        *target = byte.to_ascii_lowercase();
    }
    index().by_name.get(&*lowered).copied()
}

/// The command `arguments` call: a container's subcommand when the container has any and a
/// subcommand is given (as Redis looks commands up); `None` for an unknown command or
/// subcommand.
#[must_use]
pub fn lookup(arguments: &[&[u8]]) -> Option<CommandId> {
    let id = find(arguments.first()?)?;
    let command = spec(id);
    if command.subcommands.is_empty() {
        return Some(id);
    }
    let Some(subcommand) = arguments.get(1) else { return Some(id) };
    let length = command.name.len() + 1 + subcommand.len();
    let mut buffer = [0u8; NAME_BYTES_MAX];
    let name = buffer.get_mut(..length)?;
    name[..command.name.len()].copy_from_slice(command.name.as_bytes());
    name[command.name.len()] = b'|';
    name[command.name.len() + 1..].copy_from_slice(subcommand);
    find(name)
}

/// The arity of the command `name` (lower case); `None` for an unknown command.
#[must_use]
pub fn declared_arity(name: &str) -> Option<i64> {
    find(name.as_bytes()).map(|id| spec(id).arity)
}

/// Whether `count` arguments (the name included) fit a command table `arity`.
#[must_use]
pub fn arity_allows(arity: i64, count: usize) -> bool {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    if arity >= 0 {
        count == arity
    } else {
        count >= -arity
    }
}

impl CommandSpec {
    /// Whether the command names keys (it has a key spec), as Redis decides for GETKEYS.
    #[must_use]
    pub fn has_keys(&self) -> bool {
        !self.key_specs.is_empty()
    }

    /// The positions of the keys in `arguments` (the name at 0), found with the key specs as
    /// Redis finds them: a position past the arguments is left out.
    #[must_use]
    pub fn key_positions(&self, count: usize) -> Vec<usize> {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let mut positions = Vec::new();
        for key_spec in self.key_specs {
            let first = key_spec.index;
            let last = if key_spec.last_key >= 0 {
                first + key_spec.last_key
            } else if key_spec.limit <= 1 {
                count + key_spec.last_key
            } else {
                first + ((count - first) / key_spec.limit + key_spec.last_key)
            };
            let step = usize::try_from(key_spec.step.max(1)).unwrap_or(1);
            for position in (first..=last).step_by(step) {
                if (first..count).contains(&position) {
                    positions.push(usize::try_from(position).unwrap_or(0));
                }
            }
        }
        positions
    }
}

/// COMMAND GETKEYS: the keys of the command in `arguments`, found with the table, or Redis's
/// errors for an unknown command, one without keys, or a wrong number of arguments.
///
/// # Errors
/// As Redis words them.
pub fn get_keys<'a>(arguments: &[&'a [u8]]) -> Result<Vec<&'a [u8]>, CommandError> {
    let Some(id) = lookup(arguments) else {
        return Err(CommandError("ERR Invalid command specified".into()));
    };
    let command = spec(id);
    if !command.has_keys() {
        return Err(CommandError("ERR The command has no key arguments".into()));
    }
    if !arity_allows(command.arity, arguments.len()) {
        return Err(CommandError("ERR Invalid number of arguments specified for command".into()));
    }
    let positions = command.key_positions(arguments.len());
    if positions.is_empty() {
        return Err(CommandError("ERR Invalid arguments specified for command".into()));
    }
    Ok(positions.into_iter().map(|position| arguments[position]).collect())
}

/// The reply to COMMAND or one of its subcommands.
pub fn answer(output: &mut Vec<u8>, query: &CommandQuery) {
    match query {
        CommandQuery::All => {
            let commands: Vec<&CommandSpec> = served().collect();
            resp::encode_array_header(output, commands.len());
            for command in commands {
                encode_info(output, command);
            }
        }
        CommandQuery::Count => {
            resp::encode_integer(output, i64::try_from(served().count()).unwrap_or(0));
        }
        CommandQuery::List { filter } => answer_list(output, filter.as_ref()),
        CommandQuery::Info { names } if names.is_empty() => answer(output, &CommandQuery::All),
        CommandQuery::Info { names } => {
            resp::encode_array_header(output, names.len());
            for name in names {
                match find(name) {
                    Some(id) => encode_info(output, spec(id)),
                    None => resp::encode_null(output),
                }
            }
        }
        CommandQuery::Docs { names } => answer_docs(output, names),
        CommandQuery::GetKeys { arguments } => {
            let arguments: Vec<&[u8]> = arguments.iter().map(Vec::as_slice).collect();
            match get_keys(&arguments) {
                Ok(keys) => {
                    resp::encode_array_header(output, keys.len());
                    for key in keys {
                        resp::encode_bulk(output, key);
                    }
                }
                Err(error) => resp::encode_error(output, &error.0),
            }
        }
    }
}

/// COMMAND LIST: the names of every served command and subcommand, or those the filter keeps
/// (no module is loaded here, so a MODULE filter keeps none).
fn answer_list(output: &mut Vec<u8>, filter: Option<&ListFilter>) {
    let keeps = |command: &CommandSpec| match filter {
        None => true,
        Some(ListFilter::Module(_)) => false,
        Some(ListFilter::Category(category)) => command.categories.iter().any(|name| {
            name.strip_prefix('@')
                .is_some_and(|name| name.as_bytes().eq_ignore_ascii_case(category))
        }),
        Some(ListFilter::Pattern(pattern)) => {
            crate::glob::matches(pattern, command.name.as_bytes())
        }
    };
    let names: Vec<&str> = all()
        .iter()
        .enumerate()
        .filter(|(position, command)| index().served[*position] && keeps(command))
        .map(|(_, command)| command.name)
        .collect();
    resp::encode_array_header(output, names.len());
    for name in names {
        resp::encode_bulk(output, name.as_bytes());
    }
}

/// COMMAND DOCS: a map (a flat array in RESP2) from each known name to its docs; unknown
/// names are left out, no names means every command.
fn answer_docs(output: &mut Vec<u8>, names: &[Vec<u8>]) {
    let commands: Vec<&CommandSpec> = if names.is_empty() {
        served().collect()
    } else {
        names.iter().filter_map(|name| find(name)).map(spec).collect()
    };
    resp::encode_array_header(output, commands.len() * 2);
    for command in commands {
        resp::encode_bulk(output, command.name.as_bytes());
        encode_docs(output, command);
    }
}

/// Writes `command` as one entry of `COMMAND INFO`'s reply (RESP2: maps are flat arrays).
pub fn encode_info(output: &mut Vec<u8>, command: &CommandSpec) {
    resp::encode_array_header(output, 10);
    resp::encode_bulk(output, command.name.as_bytes());
    resp::encode_integer(output, command.arity);
    encode_statuses(output, command.flags);
    resp::encode_integer(output, command.first_key);
    resp::encode_integer(output, command.last_key);
    resp::encode_integer(output, command.step);
    encode_statuses(output, command.categories);
    resp::encode_array_header(output, command.tips.len());
    for tip in command.tips {
        resp::encode_bulk(output, tip.as_bytes());
    }
    resp::encode_array_header(output, command.key_specs.len());
    for key_spec in command.key_specs {
        encode_key_spec(output, key_spec);
    }
    let subcommands = served_subcommands(command);
    resp::encode_array_header(output, subcommands.len());
    for subcommand in subcommands {
        encode_info(output, subcommand);
    }
}

fn encode_statuses(output: &mut Vec<u8>, words: &[&str]) {
    resp::encode_array_header(output, words.len());
    for word in words {
        resp::encode_simple(output, word);
    }
}

fn encode_key_spec(output: &mut Vec<u8>, key_spec: &KeySpec) {
    resp::encode_array_header(output, if key_spec.notes.is_some() { 8 } else { 6 });
    if let Some(notes) = key_spec.notes {
        resp::encode_bulk(output, b"notes");
        resp::encode_bulk(output, notes.as_bytes());
    }
    resp::encode_bulk(output, b"flags");
    encode_statuses(output, key_spec.flags);
    resp::encode_bulk(output, b"begin_search");
    encode_search(output, "index", &[("index", key_spec.index)]);
    resp::encode_bulk(output, b"find_keys");
    let range = [("lastkey", key_spec.last_key), ("keystep", key_spec.step)];
    encode_search(output, "range", &[range[0], range[1], ("limit", key_spec.limit)]);
}

/// `[type, <kind>, spec, [name, value, ...]]`.
fn encode_search(output: &mut Vec<u8>, kind: &str, fields: &[(&str, i64)]) {
    resp::encode_array_header(output, 4);
    resp::encode_bulk(output, b"type");
    resp::encode_bulk(output, kind.as_bytes());
    resp::encode_bulk(output, b"spec");
    resp::encode_array_header(output, fields.len() * 2);
    for (name, value) in fields {
        resp::encode_bulk(output, name.as_bytes());
        resp::encode_integer(output, *value);
    }
}

/// Writes `command`'s docs, the value of its entry in `COMMAND DOCS`'s map: summary, since,
/// group, complexity, deprecation and subcommands (Redis's `arguments` and `history` are
/// not kept here).
pub fn encode_docs(output: &mut Vec<u8>, command: &CommandSpec) {
    let deprecated = command.deprecation.is_some();
    let subcommands = served_subcommands(command);
    let fields = 4 + if deprecated { 3 } else { 0 } + usize::from(!subcommands.is_empty());
    resp::encode_array_header(output, fields * 2);
    for (name, value) in [
        ("summary", command.summary),
        ("since", command.since),
        ("group", command.group),
        ("complexity", command.complexity),
    ] {
        resp::encode_bulk(output, name.as_bytes());
        resp::encode_bulk(output, value.as_bytes());
    }
    if let Some(deprecation) = &command.deprecation {
        resp::encode_bulk(output, b"doc_flags");
        encode_statuses(output, &["deprecated"]);
        resp::encode_bulk(output, b"deprecated_since");
        resp::encode_bulk(output, deprecation.since.as_bytes());
        resp::encode_bulk(output, b"replaced_by");
        resp::encode_bulk(output, deprecation.replaced_by.as_bytes());
    }
    if !subcommands.is_empty() {
        resp::encode_bulk(output, b"subcommands");
        resp::encode_array_header(output, subcommands.len() * 2);
        for subcommand in subcommands {
            resp::encode_bulk(output, subcommand.name.as_bytes());
            encode_docs(output, subcommand);
        }
    }
}

#[cfg(test)]
mod tests;
