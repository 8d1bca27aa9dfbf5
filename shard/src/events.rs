//! The node's notable moments, timestamped, for `GET /debug/events`: syncs and appends slower
//! than [`SLOW_MICROS`], segment rolls, snapshots, replica streams starting and ending. A load
//! tool (`strata bench --events-from`) reads them while it runs and puts them on its latency
//! timeline, so a stall and what the node did at that moment show side by side.
//!
//! Events are the exceptions; what happens on every round (group-commit frames, syncs) is
//! counted in the node's counters, which the endpoint reads at the same time. On a disk whose
//! syncs are often slow there can be hundreds of events a second: the log keeps the newest
//! [`EVENTS_MAX`], and a reader that falls behind learns how many it missed.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_core::ids::PartitionId;

/// Events kept; older ones are dropped first.
pub const EVENTS_MAX: usize = 4096;
/// Events one read returns at most.
pub const EVENTS_PER_READ_MAX: usize = 1024;
/// A WAL append or sync taking longer than this is an event.
pub const SLOW_MICROS: u64 = 2_000;
/// Longest `detail` text kept, in bytes.
const DETAIL_BYTES_MAX: usize = 200;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A WAL sync (fdatasync) longer than [`SLOW_MICROS`], by the partition that ran it (the
    /// shard's other partitions sharing it waited for the same flush).
    SlowSync,
    /// A WAL append longer than [`SLOW_MICROS`] (durable when it returns in direct I/O mode).
    SlowAppend,
    /// The log moved to a new segment, during an append (its duration).
    SegmentRoll,
    /// A spare segment, written ahead of the next roll, began (detail `started`) or was
    /// written (`written`, with its duration, noticed at the partition's next append).
    SegmentPrewrite,
    /// A snapshot serialized on the shard thread (its duration) before being written.
    SnapshotEncoded,
    /// A snapshot written to the partition's log directory (its duration).
    Snapshot,
    /// As leader: a replica's stream of a partition started.
    ReplicaConnected,
    /// As leader: a replica's connection ended.
    ReplicaDisconnected,
    /// As replica: a connection to the leader was set up.
    LeaderConnected,
    /// As replica: the connection to the leader ended.
    LeaderDisconnected,
}

impl EventKind {
    /// The name `GET /debug/events` gives the kind.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            EventKind::SlowSync => "slow_sync",
            EventKind::SlowAppend => "slow_append",
            EventKind::SegmentRoll => "segment_roll",
            EventKind::SegmentPrewrite => "segment_prewrite",
            EventKind::SnapshotEncoded => "snapshot_encoded",
            EventKind::Snapshot => "snapshot",
            EventKind::ReplicaConnected => "replica_connected",
            EventKind::ReplicaDisconnected => "replica_disconnected",
            EventKind::LeaderConnected => "leader_connected",
            EventKind::LeaderDisconnected => "leader_disconnected",
        }
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedEvent {
    /// Numbers events in the order they were recorded, from 0, without gaps.
    pub sequence: u64,
    /// When the event ended (or happened), in microseconds since the Unix epoch.
    pub unix_us: u64,
    pub kind: EventKind,
    pub partition: Option<PartitionId>,
    /// How long it took (0 for moments).
    pub micros: u64,
    /// Free text: a peer's name, a reason, a size.
    pub detail: String,
}

/// Events from a given sequence number on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<TimedEvent>,
    /// The sequence number to ask for next.
    pub next_sequence: u64,
    /// Events between the one asked for and the first returned that the log no longer holds.
    pub dropped: u64,
}

/// The bounded event log. Writers are shard threads on rare occasions, readers the admin API.
#[derive(Debug, Default)]
pub struct EventLog {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<TimedEvent>,
    next_sequence: u64,
}

impl EventLog {
    /// Records an event that ends now.
    pub fn record(
        &self,
        kind: EventKind,
        partition: Option<PartitionId>,
        duration: Duration,
        detail: impl Into<String>,
    ) {
        let mut detail = detail.into();
        truncate_at_char(&mut detail, DETAIL_BYTES_MAX);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let mut ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sequence = ring.next_sequence;
        ring.next_sequence += 1;
        if ring.events.len() == EVENTS_MAX {
            ring.events.pop_front();
        }
        ring.events.push_back(TimedEvent {
            sequence,
            unix_us: unix_micros(SystemTime::now()),
            kind,
            partition,
            micros,
            detail,
        });
        debug_assert!(ring.events.len() <= EVENTS_MAX);
    }

    /// Records `kind` if `duration` is longer than [`SLOW_MICROS`].
    pub fn record_if_slow(
        &self,
        kind: EventKind,
        partition: PartitionId,
        duration: Duration,
        detail: impl FnOnce() -> String,
    ) {
        if duration > Duration::from_micros(SLOW_MICROS) {
            self.record(kind, Some(partition), duration, detail());
        }
    }

    /// Up to [`EVENTS_PER_READ_MAX`] events from sequence number `since` on.
    #[must_use]
    pub fn since(&self, since: u64) -> EventPage {
        let ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let oldest = ring.events.front().map_or(ring.next_sequence, |event| event.sequence);
        let first = since.clamp(oldest, ring.next_sequence);
        let skip = (first - oldest) as usize;
        let events: Vec<TimedEvent> =
            ring.events.iter().skip(skip).take(EVENTS_PER_READ_MAX).cloned().collect();
        let next_sequence = events.last().map_or(first, |event| event.sequence + 1);
        EventPage { events, next_sequence, dropped: first - since.min(first) }
    }
}

/// Microseconds since the Unix epoch (0 for a clock before it).
#[must_use]
pub fn unix_micros(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn truncate_at_char(text: &mut String, bytes: usize) {
    if text.len() > bytes {
        let mut end = bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(log: &EventLog, count: usize) {
        for index in 0..count {
            let partition = Some(PartitionId(index as u32));
            log.record(EventKind::SlowSync, partition, Duration::from_millis(3), "");
        }
    }

    #[test]
    fn a_reader_gets_events_in_order_from_where_it_left_off() {
        let log = EventLog::default();
        record(&log, 3);
        let page = log.since(0);
        assert_eq!(page.events.iter().map(|event| event.sequence).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!((page.next_sequence, page.dropped), (3, 0));
        assert_eq!(page.events[1].micros, 3000);
        assert!(log.since(3).events.is_empty());
        assert_eq!(log.since(3).next_sequence, 3);
        record(&log, 1);
        let page = log.since(3);
        assert_eq!((page.events.len(), page.events[0].sequence, page.next_sequence), (1, 3, 4));
    }

    #[test]
    fn the_log_keeps_the_newest_events_and_says_how_many_a_reader_missed() {
        let log = EventLog::default();
        record(&log, EVENTS_MAX + 10);
        let page = log.since(0);
        assert_eq!(page.dropped, 10);
        assert_eq!(page.events.len(), EVENTS_PER_READ_MAX);
        assert_eq!(page.events[0].sequence, 10);
        let page = log.since(page.next_sequence);
        assert_eq!(page.dropped, 0);
        assert_eq!(page.events[0].sequence, 10 + EVENTS_PER_READ_MAX as u64);
        // A sequence number from the future reads nothing and is not moved back.
        let future = log.since(u64::MAX);
        assert!(future.events.is_empty());
        assert_eq!(future.next_sequence, (EVENTS_MAX + 10) as u64);
    }

    #[test]
    fn only_slow_operations_are_recorded_and_details_are_bounded() {
        let log = EventLog::default();
        let partition = PartitionId(1);
        log.record_if_slow(
            EventKind::SlowSync,
            partition,
            Duration::from_micros(1999),
            String::new,
        );
        assert!(log.since(0).events.is_empty());
        log.record_if_slow(EventKind::SlowSync, partition, Duration::from_micros(2500), || {
            "é".repeat(DETAIL_BYTES_MAX)
        });
        let page = log.since(0);
        assert_eq!(page.events.len(), 1);
        assert!(page.events[0].detail.len() <= DETAIL_BYTES_MAX);
        assert_eq!(page.events[0].kind.name(), "slow_sync");
    }
}
