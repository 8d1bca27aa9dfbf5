//! Recent events, for the console: role changes of this node, members joining, leaving,
//! timing out and coming back, failovers and leader changes, refused role changes and writes
//! refused for lack of in-sync members. The control thread records each where it happens;
//! the newest [`EVENTS_MAX`] are kept.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{json, Value};

/// Events kept; older ones are dropped.
pub(crate) const EVENTS_MAX: usize = 200;

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// This node's role changed.
    Role,
    /// A member joined, left, timed out, came back or was removed.
    Member,
    /// The controller replaced a leader, or a planned transfer moved it.
    Failover,
    /// A role change, promotion, transfer or removal was refused, or writes were.
    Refusal,
}

impl EventKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::Role => "role",
            EventKind::Member => "member",
            EventKind::Failover => "failover",
            EventKind::Refusal => "refusal",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Event {
    /// Numbers events in the order they were recorded, from 1.
    sequence: u64,
    wall_ms: u64,
    kind: EventKind,
    text: String,
}

#[derive(Debug, Default)]
struct Ring {
    recorded: u64,
    events: VecDeque<Event>,
}

/// The newest events, shared by the control thread's tasks. The lock is held only to push or
/// copy, never across an await.
#[derive(Debug, Default)]
pub(crate) struct Events {
    ring: Mutex<Ring>,
}

impl Events {
    /// Records an event, now.
    pub(crate) fn record(&self, kind: EventKind, text: impl Into<String>) {
        self.record_at(crate::roles::now_ms(), kind, text.into());
    }

    fn record_at(&self, wall_ms: u64, kind: EventKind, text: String) {
        let mut ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.recorded += 1;
        let sequence = ring.recorded;
        if ring.events.len() == EVENTS_MAX {
            ring.events.pop_front();
        }
        ring.events.push_back(Event { sequence, wall_ms, kind, text });
        debug_assert!(ring.events.len() <= EVENTS_MAX);
    }

    /// Every event kept, newest first, as the console shows them.
    pub(crate) fn json(&self) -> Value {
        let ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let events = ring.events.iter().rev().map(|event| {
            json!({
                "sequence": event.sequence,
                "time_ms": event.wall_ms,
                "kind": event.kind.name(),
                "text": event.text,
            })
        });
        Value::Array(events.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_newest_first_and_the_ring_is_bounded() {
        let events = Events::default();
        for index in 0..(EVENTS_MAX + 7) {
            events.record_at(index as u64, EventKind::Member, format!("event {index}"));
        }
        let json = events.json();
        let listed = json.as_array().expect("an array");
        assert_eq!(listed.len(), EVENTS_MAX);
        assert_eq!(listed[0]["text"], format!("event {}", EVENTS_MAX + 6));
        assert_eq!(listed[0]["sequence"], EVENTS_MAX as u64 + 7);
        assert_eq!(listed[0]["kind"], "member");
        assert_eq!(listed[EVENTS_MAX - 1]["text"], "event 7", "the oldest seven were dropped");
    }

    #[test]
    fn each_kind_has_its_name() {
        let events = Events::default();
        for kind in [EventKind::Role, EventKind::Member, EventKind::Failover, EventKind::Refusal] {
            events.record(kind, kind.name());
        }
        let json = events.json();
        let names: Vec<&str> =
            json.as_array().unwrap().iter().filter_map(|event| event["kind"].as_str()).collect();
        assert_eq!(names, ["refusal", "failover", "member", "role"]);
    }
}
