//! `--timeline`: latency per 100 ms interval of the run, beside what the nodes reported in the
//! same intervals (`--events-from`), and the intervals that stand out ("stalls").
//!
//! Each load thread records every reply in the interval in which it arrived, in its own
//! [`ThreadTimeline`]; the threads' timelines are merged at the end, as their other statistics
//! are. [`build`] then lines the merged latency up with the nodes' counters and events.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::events::{NodeEvent, NodeRecord};
use super::LATENCY_US_MAX;

/// The length of one interval of the timeline.
pub const TIMELINE_INTERVAL: Duration = Duration::from_millis(100);
/// The most intervals a timeline holds: one hour. `--timeline` accepts at most
/// [`TIMELINE_SECONDS_MAX`] of `--duration-seconds`; the replies still in flight at the deadline
/// of such a run, and anything later, count in the last interval.
pub const TIMELINE_INTERVALS_MAX: usize = 36_000;
/// The longest run `--timeline` accepts: what [`TIMELINE_INTERVALS_MAX`] intervals cover.
pub const TIMELINE_SECONDS_MAX: u64 = 3_600;
/// Intervals need less precision than the whole run: two digits keep their histograms small
/// (they also grow only as far as the slowest reply of the interval).
const INTERVAL_SIGNIFICANT_DIGITS: u8 = 2;
/// An interval is a stall when its p99 is above this many times the whole run's p99 ...
const STALL_P99_FACTOR: f64 = 2.0;
/// ... or its slowest reply above this many times the whole run's p99.
const STALL_MAX_FACTOR: f64 = 3.0;
/// A stall lists the events from as far back as its slowest request was sent, at least the
/// interval before it, at most this many intervals before it.
const STALL_LOOKBACK_INTERVALS_MAX: usize = 10;
/// Events shown per interval in the text table; the rest are counted ("+3 more").
const TEXT_EVENTS_PER_INTERVAL_MAX: usize = 8;
/// Stalls listed in the text summary; the JSON form has them all.
const TEXT_STALLS_MAX: usize = 50;
/// Text width of one node's `rounds/syncs/wait` column, its separating spaces included.
const NODE_COLUMN_WIDTH: usize = 23;

const _: () = assert!(
    TIMELINE_INTERVALS_MAX as u128 * TIMELINE_INTERVAL.as_millis()
        == TIMELINE_SECONDS_MAX as u128 * 1000
);

/// The interval a moment belongs to, `offset` after the start of the run; moments after the
/// last interval belong to the last one.
pub(super) fn interval_index(offset: Duration) -> usize {
    let index = offset.as_millis() / TIMELINE_INTERVAL.as_millis();
    usize::try_from(index).unwrap_or(usize::MAX).min(TIMELINE_INTERVALS_MAX - 1)
}

fn new_interval_histogram() -> Histogram<u32> {
    Histogram::new(INTERVAL_SIGNIFICANT_DIGITS).expect("two significant digits are valid")
}

/// One load thread's latency per interval, in microseconds.
pub(super) struct ThreadTimeline {
    /// The start of the measured run, shared by every thread.
    start: Instant,
    /// One histogram per interval, up to the last interval with a reply.
    intervals: Vec<Histogram<u32>>,
}

impl ThreadTimeline {
    pub(super) fn new(start: Instant) -> Self {
        ThreadTimeline { start, intervals: Vec::new() }
    }

    /// Records one reply that arrived at `received_at` after `latency_us`.
    pub(super) fn record(&mut self, received_at: Instant, latency_us: u64) {
        let index = interval_index(received_at.saturating_duration_since(self.start));
        let histogram = self.interval_mut(index);
        // The histogram grows to any value up to the bound, so recording cannot fail; if it
        // did, the value would count as the largest one it holds.
        if histogram.record(latency_us.min(LATENCY_US_MAX)).is_err() {
            histogram.saturating_record(latency_us);
        }
    }

    /// Adds `other`'s replies, interval by interval.
    pub(super) fn merge(&mut self, other: &ThreadTimeline) {
        for (index, histogram) in other.intervals.iter().enumerate() {
            self.interval_mut(index).add(histogram).expect("interval histograms grow as needed");
        }
    }

    /// The start of the run the intervals count from.
    pub(super) fn start(&self) -> Instant {
        self.start
    }

    /// Replies recorded in each interval so far.
    pub(super) fn intervals(&self) -> &[Histogram<u32>] {
        &self.intervals
    }

    fn interval_mut(&mut self, index: usize) -> &mut Histogram<u32> {
        if index >= self.intervals.len() {
            self.intervals.resize_with(index + 1, new_interval_histogram);
        }
        &mut self.intervals[index]
    }
}

/// The timeline of a run, in `--json` as the report's `timeline`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    /// The length of every interval.
    pub interval_ms: u64,
    /// The start of the run in Unix time (microseconds); node events are placed relative to it.
    pub start_unix_us: u64,
    /// Every interval from the start of the run to its last reply.
    pub intervals: Vec<TimelineInterval>,
    /// The nodes of `--events-from`, in the order given (`n0`, `n1`, ... in the text form).
    pub nodes: Vec<TimelineNode>,
    /// Indexes of the intervals whose p99 is above twice the run's p99, or whose slowest reply
    /// is above three times the run's p99.
    pub stalls: Vec<usize>,
}

/// One interval of the timeline: the replies that arrived in it and what each node reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineInterval {
    /// Start of the interval, since the start of the run.
    pub start_ms: u64,
    /// Replies received in the interval.
    pub replies: u64,
    /// Latency percentiles (milliseconds) of the requests whose replies arrived in the
    /// interval, resolved to two significant digits; zero without replies.
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// One entry per node of [`Timeline::nodes`], in the same order.
    pub nodes: Vec<IntervalNode>,
}

/// What one node reported for one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IntervalNode {
    /// How much each of the node's counters grew, from the polls taken in this interval; empty
    /// when no poll of the node succeeded in it.
    pub counters: BTreeMap<String, u64>,
    /// The node's events whose time falls in this interval.
    pub events: Vec<NodeEvent>,
}

/// A node of `--events-from` and how polling it went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineNode {
    /// The admin HTTP address, as given.
    pub address: String,
    /// The first error polling the node, if any; polling went on after it.
    pub events_error: Option<String>,
    /// Events of the run that were never seen: skipped by the node's answers (its buffer had
    /// already dropped them) or beyond what one run keeps per node.
    pub dropped: u64,
}

/// Lines up the merged latency of the threads with the nodes' polls. `elapsed` is the measured
/// time of the run, `run_p99_ms` the p99 of the whole run (the reference for stalls).
pub(super) fn build(
    latency: Option<&ThreadTimeline>,
    nodes: Vec<NodeRecord>,
    elapsed: Duration,
    start_unix_us: u64,
    run_p99_ms: f64,
) -> Timeline {
    let histograms = latency.map_or(&[][..], ThreadTimeline::intervals);
    let count = interval_count(elapsed, histograms.len());
    let mut intervals: Vec<TimelineInterval> = (0..count)
        .map(|index| latency_interval(index, histograms.get(index), nodes.len()))
        .collect();
    for (node_index, node) in nodes.iter().enumerate() {
        place_node(&mut intervals, node_index, node, start_unix_us);
    }
    let stalls = find_stalls(&intervals, run_p99_ms);
    let nodes = nodes
        .into_iter()
        .map(|node| TimelineNode {
            address: node.address,
            events_error: node.error,
            dropped: node.dropped,
        })
        .collect();
    Timeline {
        interval_ms: TIMELINE_INTERVAL.as_millis() as u64,
        start_unix_us,
        intervals,
        nodes,
        stalls,
    }
}

/// Intervals from the start to the end of the run (at least one), and at least up to the last
/// one with a reply.
fn interval_count(elapsed: Duration, with_replies: usize) -> usize {
    let interval_us = TIMELINE_INTERVAL.as_micros();
    let covering = elapsed.as_micros().div_ceil(interval_us);
    let covering = usize::try_from(covering).unwrap_or(usize::MAX);
    covering.max(with_replies).clamp(1, TIMELINE_INTERVALS_MAX)
}

fn latency_interval(
    index: usize,
    histogram: Option<&Histogram<u32>>,
    nodes: usize,
) -> TimelineInterval {
    let mut interval = TimelineInterval {
        start_ms: index as u64 * TIMELINE_INTERVAL.as_millis() as u64,
        replies: 0,
        p50: 0.0,
        p99: 0.0,
        max: 0.0,
        nodes: vec![IntervalNode::default(); nodes],
    };
    if let Some(histogram) = histogram.filter(|histogram| !histogram.is_empty()) {
        let milliseconds = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        interval.replies = histogram.len();
        interval.p50 = milliseconds(0.5);
        interval.p99 = milliseconds(0.99);
        interval.max = histogram.max() as f64 / 1000.0;
    }
    interval
}

/// Adds node `node_index`'s counter increases and events to the intervals they fall in; what
/// falls after the last interval goes into the last one, events before the start are not part
/// of the run and are left out.
fn place_node(
    intervals: &mut [TimelineInterval],
    node_index: usize,
    node: &NodeRecord,
    start_unix_us: u64,
) {
    let last = intervals.len() - 1;
    for (taken_at, deltas) in &node.deltas {
        let counters = &mut intervals[interval_index(*taken_at).min(last)].nodes[node_index];
        for (name, delta) in deltas {
            let total = counters.counters.entry(name.clone()).or_default();
            *total = total.saturating_add(*delta);
        }
    }
    for event in &node.events {
        let Some(offset_us) = event.unix_us.checked_sub(start_unix_us) else { continue };
        let index = interval_index(Duration::from_micros(offset_us)).min(last);
        intervals[index].nodes[node_index].events.push(event.clone());
    }
}

/// The intervals whose p99 is above [`STALL_P99_FACTOR`] times `run_p99_ms` or whose slowest
/// reply is above [`STALL_MAX_FACTOR`] times it.
pub(super) fn find_stalls(intervals: &[TimelineInterval], run_p99_ms: f64) -> Vec<usize> {
    if run_p99_ms.is_nan() || run_p99_ms <= 0.0 {
        return Vec::new();
    }
    let is_stall = |interval: &TimelineInterval| {
        interval.replies > 0
            && (interval.p99 > STALL_P99_FACTOR * run_p99_ms
                || interval.max > STALL_MAX_FACTOR * run_p99_ms)
    };
    intervals
        .iter()
        .enumerate()
        .filter(|(_, interval)| is_stall(interval))
        .map(|(index, _)| index)
        .collect()
}

/// The intervals whose events a stall lists: back to when its slowest request was sent (at
/// least the interval before, at most [`STALL_LOOKBACK_INTERVALS_MAX`]), up to the stall.
pub(super) fn stall_window(intervals: &[TimelineInterval], index: usize) -> Range<usize> {
    let interval_ms = TIMELINE_INTERVAL.as_millis() as f64;
    let slowest = intervals.get(index).map_or(0.0, |interval| interval.max);
    let lookback = (slowest / interval_ms).ceil() as usize;
    let lookback = lookback.clamp(1, STALL_LOOKBACK_INTERVALS_MAX);
    index.saturating_sub(lookback)..(index + 1).min(intervals.len())
}

impl Timeline {
    /// The text form: a legend of the nodes, one line per interval, then the stalls.
    #[must_use]
    pub fn to_text(&self, run_p99_ms: f64) -> String {
        let mut text = self.legend();
        text.push_str(&self.header());
        for interval in &self.intervals {
            text.push_str(&self.interval_line(interval));
        }
        text.push_str(&self.stalls_text(run_p99_ms));
        text
    }

    fn legend(&self) -> String {
        let mut legend = format!("timeline     {} ms intervals\n", self.interval_ms);
        if self.nodes.is_empty() {
            return legend;
        }
        let names: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| match &node.events_error {
                Some(error) => format!("n{index}={} (error: {error})", node.address),
                None => format!("n{index}={}", node.address),
            })
            .collect();
        legend.push_str(&format!("nodes        {}\n", names.join("  ")));
        legend
    }

    fn header(&self) -> String {
        let mut header =
            format!("{:>6}{:>10}{:>9}{:>9}{:>9}", "t(s)", "replies", "p50 ms", "p99 ms", "max ms");
        for index in 0..self.nodes.len() {
            header.push_str(&format!(
                "{:>NODE_COLUMN_WIDTH$}",
                format!("n{index} rounds/syncs/wait")
            ));
        }
        if !self.nodes.is_empty() {
            header.push_str("   events");
        }
        header.push('\n');
        header
    }

    fn interval_line(&self, interval: &TimelineInterval) -> String {
        let seconds = interval.start_ms as f64 / 1000.0;
        let mut line = format!("{seconds:>6.1}{:>10}", interval.replies);
        for value in [interval.p50, interval.p99, interval.max] {
            if interval.replies == 0 {
                line.push_str(&format!("{:>9}", "-"));
            } else {
                line.push_str(&format!("{value:>9.3}"));
            }
        }
        for node in &interval.nodes {
            line.push_str(&format!("{:>NODE_COLUMN_WIDTH$}", node_rounds(&node.counters)));
        }
        let events = self.events_text(interval);
        if !events.is_empty() {
            line.push_str("   ");
            line.push_str(&events);
        }
        line.push('\n');
        line
    }

    /// The events of one interval in short form, at most [`TEXT_EVENTS_PER_INTERVAL_MAX`].
    fn events_text(&self, interval: &TimelineInterval) -> String {
        let events: Vec<String> = interval
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(index, node)| {
                node.events.iter().map(move |event| short_event(index, event))
            })
            .collect();
        let mut text = events
            .iter()
            .take(TEXT_EVENTS_PER_INTERVAL_MAX)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if events.len() > TEXT_EVENTS_PER_INTERVAL_MAX {
            text.push_str(&format!(", +{} more", events.len() - TEXT_EVENTS_PER_INTERVAL_MAX));
        }
        text
    }

    fn stalls_text(&self, run_p99_ms: f64) -> String {
        if self.stalls.is_empty() {
            return format!(
                "stalls       none (no interval with p99 above {:.3} ms or max above {:.3} ms)\n",
                STALL_P99_FACTOR * run_p99_ms,
                STALL_MAX_FACTOR * run_p99_ms,
            );
        }
        let mut text = format!(
            "stalls       {} intervals with p99 above {:.3} ms ({STALL_P99_FACTOR}x the run's) \
             or max above {:.3} ms ({STALL_MAX_FACTOR}x)\n",
            self.stalls.len(),
            STALL_P99_FACTOR * run_p99_ms,
            STALL_MAX_FACTOR * run_p99_ms,
        );
        for &index in self.stalls.iter().take(TEXT_STALLS_MAX) {
            text.push_str(&self.stall_line(index));
        }
        if self.stalls.len() > TEXT_STALLS_MAX {
            let more = self.stalls.len() - TEXT_STALLS_MAX;
            text.push_str(&format!("  ... {more} more (--json lists them all)\n"));
        }
        text
    }

    fn stall_line(&self, index: usize) -> String {
        let Some(interval) = self.intervals.get(index) else { return String::new() };
        let mut line = format!(
            "{:>6.1} s  replies {}  p99 {:.3} ms  max {:.3} ms",
            interval.start_ms as f64 / 1000.0,
            interval.replies,
            interval.p99,
            interval.max,
        );
        if self.nodes.is_empty() {
            line.push('\n');
            return line;
        }
        let mut events = Vec::new();
        for earlier in &self.intervals[stall_window(&self.intervals, index)] {
            let seconds = earlier.start_ms as f64 / 1000.0;
            for (node_index, node) in earlier.nodes.iter().enumerate() {
                for event in &node.events {
                    events.push(format!("{} at {seconds:.1} s", short_event(node_index, event)));
                }
            }
        }
        if events.is_empty() {
            line.push_str(": no node events then\n");
        } else {
            line.push_str(&format!(": {}\n", events.join(", ")));
        }
        line
    }
}

/// `frames_written/syncs/wait` of one interval, where wait is the mean time in ms a leader's
/// durable rounds waited for its followers (`-` when it measured none: not a leader, or no
/// commit); `-` without a poll in the interval.
pub(super) fn node_rounds(counters: &BTreeMap<String, u64>) -> String {
    if counters.is_empty() {
        return "-".to_owned();
    }
    let value = |name: &str| counters.get(name).map_or("?".to_owned(), u64::to_string);
    let waits = counters.get("replication_waits").copied().unwrap_or(0);
    let wait = match counters.get("replication_wait_us") {
        Some(micros) if waits > 0 => format!("{:.1}", *micros as f64 / waits as f64 / 1000.0),
        _ => "-".to_owned(),
    };
    format!("{}/{}/{wait}", value("frames_written"), value("syncs"))
}

/// An event in short form: `n1 slow_sync p3 4.5ms`.
fn short_event(node_index: usize, event: &NodeEvent) -> String {
    let mut text = format!("n{node_index} {}", event.kind);
    if let Some(partition) = event.partition {
        text.push_str(&format!(" p{partition}"));
    }
    if event.micros > 0 {
        text.push(' ');
        text.push_str(&short_duration(event.micros));
    }
    text
}

/// `4.5ms` from 100 µs up, `45us` below.
fn short_duration(micros: u64) -> String {
    if micros < 100 {
        format!("{micros}us")
    } else {
        format!("{:.1}ms", micros as f64 / 1000.0)
    }
}
