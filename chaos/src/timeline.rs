//! The nemesis timeline: every fault and every operator action, with when it began and ended
//! (microseconds since the run started), written as JSON lines (`nemesis.jsonl`). Problems the
//! harness saw in Strata itself (a node that exited by itself, one that did not restart, a
//! cluster that did not recover) are events too, and make the run fail.

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

/// One fault, operator action or problem.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub start_us: u64,
    /// None while it lasts (and for a fault never healed).
    pub end_us: Option<u64>,
    /// `kill`, `pause`, `promote`, `repoint`, `crash`, `problem`, ...
    pub fault: String,
    pub node: String,
    /// What happened, e.g. the admin API's answer.
    pub detail: String,
}

/// The events of one run.
pub struct Timeline {
    start: Instant,
    pub events: Vec<Event>,
    /// What went wrong in Strata, in sentences; any makes the verdict FAIL.
    pub problems: Vec<String>,
}

impl Timeline {
    #[must_use]
    pub fn new(start: Instant) -> Timeline {
        Timeline { start, events: Vec::new(), problems: Vec::new() }
    }

    /// Microseconds since the run started.
    #[must_use]
    pub fn elapsed_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Enters an event that begins now; its number, for [`Timeline::end`].
    pub fn begin(&mut self, fault: &str, node: &str, detail: &str) -> usize {
        self.events.push(Event {
            start_us: self.elapsed_us(),
            end_us: None,
            fault: fault.into(),
            node: node.into(),
            detail: detail.into(),
        });
        self.events.len() - 1
    }

    /// Ends event `number` now, adding `detail` to what it says when not empty.
    pub fn end(&mut self, number: usize, detail: &str) {
        let now = self.elapsed_us();
        if let Some(event) = self.events.get_mut(number) {
            event.end_us = Some(now);
        }
        self.note(number, detail);
    }

    /// Adds `detail` to what event `number` says, when not empty, without ending it.
    pub fn note(&mut self, number: usize, detail: &str) {
        let Some(event) = self.events.get_mut(number) else { return };
        if !detail.is_empty() {
            if !event.detail.is_empty() {
                event.detail.push_str("; ");
            }
            event.detail.push_str(detail);
        }
    }

    /// Records a problem seen in Strata.
    pub fn problem(&mut self, node: &str, text: String) {
        let number = self.begin("problem", node, &text);
        self.end(number, "");
        eprintln!("chaos: problem: {text}");
        self.problems.push(text);
    }

    /// Events of kind `fault` so far.
    #[must_use]
    pub fn count(&self, fault: &str) -> usize {
        self.events.iter().filter(|event| event.fault == fault).count()
    }

    /// Writes every event as a JSON line.
    ///
    /// # Errors
    ///
    /// The writer's error.
    pub fn write(&self, mut writer: impl Write) -> std::io::Result<()> {
        for event in &self.events {
            serde_json::to_writer(&mut writer, event)?;
            writer.write_all(b"\n")?;
        }
        writer.flush()
    }
}
