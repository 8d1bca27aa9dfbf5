//! A violation told so that a person can start from it: the operations of its window, each
//! with its client, node, times and answer, and the faults and operator actions under way
//! between the first invocation and the last answer of the window.

use std::fmt::Write;

use crate::check::Violation;
use crate::history::{Action, Operation, Outcome, Value};
use crate::timeline::Event;

/// Operations of a window shown at most; the rest are counted.
const SHOWN_OPERATIONS_MAX: usize = 12;

/// The lines that tell `violation`, the first naming the check, key and message.
#[must_use]
pub fn violation_lines(
    violation: &Violation,
    operations: &[Operation],
    events: &[Event],
) -> Vec<String> {
    let mut lines = vec![format!(
        "chaos: violation [{}] {}: {}",
        violation.check, violation.key, violation.message
    )];
    let window: Vec<&Operation> =
        violation.window.iter().filter_map(|&index| find(operations, index)).collect();
    for operation in window.iter().take(SHOWN_OPERATIONS_MAX) {
        lines.push(format!("chaos:   {}", describe(operation)));
    }
    if window.len() > SHOWN_OPERATIONS_MAX {
        lines.push(format!("chaos:   … and {} more", window.len() - SHOWN_OPERATIONS_MAX));
    }
    let Some(from_us) = window.iter().map(|operation| operation.invoked_us).min() else {
        return lines;
    };
    let to_us = window.iter().map(|operation| end_us(operation)).max().unwrap_or(from_us);
    let active: Vec<String> = events
        .iter()
        .filter(|event| event.start_us <= to_us && event.end_us.is_none_or(|end| end >= from_us))
        .map(describe_event)
        .collect();
    if active.is_empty() {
        lines.push("chaos:   no fault or operator action under way then".into());
    } else {
        lines.push(format!("chaos:   under way then: {}", active.join("; ")));
    }
    lines
}

/// The operation with `index`: at that position when the history is in order, else searched.
fn find(operations: &[Operation], index: u64) -> Option<&Operation> {
    let position = usize::try_from(index).ok()?;
    match operations.get(position) {
        Some(operation) if operation.index == index => Some(operation),
        _ => operations.iter().find(|operation| operation.index == index),
    }
}

/// When an operation ended, or (no answer) when it began.
fn end_us(operation: &Operation) -> u64 {
    operation.completed_us.unwrap_or(operation.invoked_us)
}

fn seconds(microseconds: u64) -> String {
    format!("{:.3}", microseconds as f64 / 1e6)
}

/// `op 12 client 3 on n1 (leader) 1.000–1.002 s: INCR c0 → 5`.
fn describe(operation: &Operation) -> String {
    let ended = operation.completed_us.map_or_else(|| "…".to_string(), seconds);
    let mut text = format!(
        "op {} client {} on {} ({:?}) {}–{ended} s: {} → ",
        operation.index,
        operation.client,
        operation.node,
        operation.target,
        seconds(operation.invoked_us),
        action_text(&operation.action),
    );
    let _ = match &operation.outcome {
        Outcome::Done { answer } => write!(text, "{}", value_text(answer)),
        Outcome::Refused { error } => write!(text, "refused ({error})"),
        Outcome::Unknown { error } => write!(text, "unknown ({error})"),
    };
    text
}

fn action_text(action: &Action) -> String {
    match action {
        Action::Get { key } | Action::ReadAppends { key } => format!("GET {key}"),
        Action::Set { key, value } => format!("SET {key} {value}"),
        Action::Incr { key } => format!("INCR {key}"),
        Action::Append { key, element } => format!("APPEND {key} {element}"),
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Missing => "nil/OK".into(),
        Value::Integer(number) => number.to_string(),
        Value::Text(text) if text.len() > 60 => format!("\"…{}\"", &text[text.len() - 60..]),
        Value::Text(text) => format!("\"{text}\""),
    }
}

/// `stale-promotion n2 5.660–10.330 s (detail)`.
fn describe_event(event: &Event) -> String {
    let ended = event.end_us.map_or_else(|| "…".to_string(), seconds);
    let mut text = format!("{} {} {}–{ended} s", event.fault, event.node, seconds(event.start_us));
    if !event.detail.is_empty() {
        let detail: String = event.detail.chars().take(80).collect();
        let _ = write!(text, " ({detail})");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(fault: &str, start_us: u64, end_us: Option<u64>) -> Event {
        Event { start_us, end_us, fault: fault.into(), node: "n2".into(), detail: String::new() }
    }

    #[test]
    fn a_violation_shows_its_operations_and_the_faults_under_way() {
        let done = |value| Outcome::Done { answer: Value::Integer(value) };
        let mut operations = vec![
            Operation::sample(Action::Incr { key: "c0".into() }, done(7), (1_000_000, 1_002_000)),
            Operation::sample(Action::Incr { key: "c0".into() }, done(3), (5_000_000, 5_001_000)),
        ];
        operations[1].index = 1;
        let violation = Violation {
            check: "linearizable",
            key: "c0".into(),
            message: "no order explains it".into(),
            window: vec![0, 1],
        };
        let events = [
            event("kill", 0, Some(500_000)),
            event("pause", 900_000, Some(2_000_000)),
            event("partition", 4_000_000, None),
            event("isolate", 6_000_000, Some(7_000_000)),
        ];
        let lines = violation_lines(&violation, &operations, &events);
        assert_eq!(lines[0], "chaos: violation [linearizable] c0: no order explains it");
        assert!(lines[1].contains("op 0 client 1 on n1 (Leader) 1.000–1.002 s: INCR c0 → 7"));
        assert!(lines[2].contains("op 1"), "{lines:?}");
        let under_way = &lines[3];
        assert!(under_way.contains("pause n2 0.900–2.000 s"), "{under_way}");
        assert!(under_way.contains("partition n2 4.000–… s"), "{under_way}");
        assert!(!under_way.contains("kill") && !under_way.contains("isolate"), "{under_way}");
    }
}
