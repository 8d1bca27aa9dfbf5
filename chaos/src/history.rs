//! The history of a chaos run: every operation a client sent, when it was sent, when (if ever)
//! it was answered, and what the answer was. Written as JSON lines (one [`Operation`] a line,
//! in the order operations were invoked) and read back by the checker.
//!
//! Three workloads share it:
//! - **registers**: `Get`, `Set` and `Incr` on a few hundred keys, sent to the leader; checked
//!   for linearizability key by key;
//! - **appends**: `Append` of values unique in the whole run to a few keys, and `ReadAppends` of
//!   them; checked for loss (every acknowledged value is there in the end), duplication and
//!   invention (nothing appears that no client appended);
//! - **replica reads**: `Incr` of counters on the leader and `Get` of them on followers and
//!   learners; a replica may lag but must serve only committed values and never go back on one
//!   connection.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// What one client asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `GET key`.
    Get { key: String },
    /// `SET key value`.
    Set { key: String, value: i64 },
    /// `INCR key` (a missing key counts as 0).
    Incr { key: String },
    /// `APPEND key "<element> "`: `element` is unique in the whole run and holds no space.
    Append { key: String, element: String },
    /// `GET key` of an append key: the elements appended so far, space-separated.
    ReadAppends { key: String },
}

impl Action {
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Action::Get { key }
            | Action::Set { key, .. }
            | Action::Incr { key }
            | Action::Append { key, .. }
            | Action::ReadAppends { key } => key,
        }
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect (or, for a read, read) and answered `answer`: `Get` the integer or
    /// `Missing`; `Set` `Missing` (an OK); `Incr` the new value; `Append` the new length;
    /// `ReadAppends` the text or `Missing`.
    Done { answer: Value },
    /// It surely did not take effect: the server refused it before doing anything (e.g.
    /// `-READONLY` from a replica asked to write). Only errors known to mean that count here.
    Refused { error: String },
    /// It may or may not have taken effect: a timeout, a lost connection, or an error sent
    /// after the write may already be in a log (e.g. a leader stepping down while it waited).
    Unknown { error: String },
}

/// A value in an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    Missing,
    Integer(i64),
    Text(String),
}

/// Where a client sent its operations: the leader, or a follower or learner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Leader,
    Replica,
}

/// When an operation ran: while the nemesis was at work, or in the final reads after every
/// fault healed (these show what survived).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Run,
    Final,
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Position in invocation order, from 0.
    pub index: u64,
    /// The client connection that sent it (a client sends one operation at a time; it opens
    /// a new connection after an error, with a new number).
    pub client: u32,
    /// The node the client was connected to, and what it was to the client.
    pub node: String,
    pub target: Target,
    pub phase: Phase,
    /// Microseconds since the run started.
    pub invoked_us: u64,
    /// `None` when no answer came (the outcome is then `Unknown`).
    pub completed_us: Option<u64>,
    #[serde(flatten)]
    pub action: Action,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading the history: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {error}")]
    Line { line: usize, error: serde_json::Error },
}

/// Writes `operations` as JSON lines.
///
/// # Errors
///
/// The writer's error.
pub fn write_history(
    operations: &[Operation],
    mut writer: impl Write,
) -> Result<(), std::io::Error> {
    for operation in operations {
        serde_json::to_writer(&mut writer, operation)?;
        writer.write_all(b"\n")?;
    }
    writer.flush()
}

/// Reads a history written by [`write_history`]; blank lines are skipped.
///
/// # Errors
///
/// A read error, or the first line that is not an operation.
pub fn read_history(reader: impl BufRead) -> Result<Vec<Operation>, HistoryError> {
    let mut operations = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let operation = serde_json::from_str(&line)
            .map_err(|error| HistoryError::Line { line: number + 1, error })?;
        operations.push(operation);
    }
    Ok(operations)
}

#[cfg(test)]
impl Operation {
    /// An operation of client 1 on the leader `n1`, in the run phase, for tests.
    pub(crate) fn sample(action: Action, outcome: Outcome, times_us: (u64, u64)) -> Operation {
        Operation {
            index: 0,
            client: 1,
            node: "n1".into(),
            target: Target::Leader,
            phase: Phase::Run,
            invoked_us: times_us.0,
            completed_us: Some(times_us.1),
            action,
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(action: Action, outcome: Outcome) -> Operation {
        Operation::sample(action, outcome, (10, 25))
    }

    #[test]
    fn operations_survive_a_round_trip_through_json_lines() {
        let operations = vec![
            operation(
                Action::Set { key: "r1".into(), value: 4 },
                Outcome::Done { answer: Value::Missing },
            ),
            operation(Action::Incr { key: "c1".into() }, Outcome::Unknown { error: "t".into() }),
            operation(
                Action::ReadAppends { key: "a1".into() },
                Outcome::Done { answer: Value::Text("x1 x2 ".into()) },
            ),
        ];
        let mut bytes = Vec::new();
        write_history(&operations, &mut bytes).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().next().unwrap().contains("\"action\":\"set\""), "{text}");
        assert_eq!(read_history(bytes.as_slice()).unwrap(), operations);
    }

    #[test]
    fn a_bad_line_is_named() {
        let error = read_history("{}\n".as_bytes()).unwrap_err();
        assert!(error.to_string().starts_with("line 1:"), "{error}");
    }
}
