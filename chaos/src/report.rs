//! The report page of a chaos run: one self-contained HTML file (inline CSS and SVG, no script,
//! nothing fetched when it is viewed) that shows how the run went.
//!
//! From the top: the verdict on a green (PASS) or red (FAIL) band, the caller's summary lines,
//! a throughput chart, a latency chart and a table of the timeline. Both charts share the time
//! axis (seconds since the run started) and show the timeline on it:
//! - a fault that lasts (its end after its start, or no end: then it lasts to the end of the
//!   run) is a translucent band, one colour per kind, with a tooltip and, when there is room,
//!   its kind and node written at the top;
//! - operator actions and problems (`promote`, `repoint`, `leader-lost`, `join`, `problem`),
//!   changes of leader seen with automatic failover (`leader`), and faults without length are
//!   thin vertical lines at their start (problems in red). An operator action is a line even
//!   when it took a while: its length is in its tooltip and the table.
//!
//! The page does not grow with the history: operations are counted in buckets of one second
//! (wider for runs longer than 1200 seconds), in one pass, and each chart draws one
//! point per bucket and series.

use std::fmt::{self, Write as _};
use std::path::Path;

use crate::history::{Action, Operation, Outcome, Phase};
use crate::timeline::Event;

/// The most points a series has; a longer run gets buckets wider than a second.
const POINTS_MAX: u64 = 1200;

const MICROS_PER_SECOND: u64 = 1_000_000;

/// Chart geometry, in pixels: the SVG's size and the plot area inside it.
const CHART_WIDTH: f64 = 1100.0;
const CHART_HEIGHT: f64 = 300.0;
const PLOT_LEFT: f64 = 64.0;
const PLOT_RIGHT: f64 = 1084.0;
const PLOT_TOP: f64 = 30.0;
const PLOT_BOTTOM: f64 = 258.0;

/// Event kinds drawn as lines at their start whatever their length: operator actions, changes
/// of leader and problems.
const MARK_KINDS: [&str; 6] = ["promote", "repoint", "leader-lost", "join", "leader", "problem"];

/// Lowest and (at least) highest latency on the latency chart's logarithmic axis, in ms.
const LATENCY_BOTTOM_MS: f64 = 0.1;
const LATENCY_TOP_MS_MIN: f64 = 10_000.0;

/// Approximate width of one character of an SVG label, in pixels, to tell whether it fits.
const LABEL_CHARACTER_WIDTH: f64 = 6.5;

/// What the page shows.
pub struct Page<'a> {
    /// The verdict line, e.g. `chaos: PASS seed=1 ops=228628 faults=10`.
    pub verdict: &'a str,
    /// Lines shown under the verdict, as they are.
    pub summary: &'a [String],
    pub operations: &'a [Operation],
    pub events: &'a [Event],
}

/// Writes the run's report page.
///
/// # Errors
///
/// The file system's error.
pub fn write_html(path: &Path, page: &Page<'_>) -> std::io::Result<()> {
    std::fs::write(path, render(page))
}

/// The page as a string (write_html writes this).
#[must_use]
pub fn render(page: &Page<'_>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_page(&mut out, page);
    out
}

fn write_page(out: &mut String, page: &Page<'_>) -> fmt::Result {
    let run_end_us = run_end_us(page.operations, page.events);
    let buckets = bucket_operations(page.operations, run_end_us);
    let overlay = Overlay::new(page.events, run_end_us);
    write_head(out, page.verdict)?;
    write_verdict(out, page.verdict, page.summary)?;
    let width = bucket_note(buckets.width_s);
    writeln!(out, "<h2>Throughput: operations per second{width}</h2>")?;
    write_chart(out, &throughput_chart(&buckets), &overlay)?;
    writeln!(out, "<h2>Latency of completed operations: ms, logarithmic{width}</h2>")?;
    write_chart(out, &latency_chart(&buckets), &overlay)?;
    write_event_table(out, page.events)?;
    out.write_str("</body>\n</html>\n")
}

/// What a chart's title says of buckets wider than a second.
fn bucket_note(width_s: u64) -> String {
    if width_s > 1 {
        format!(" (buckets of {width_s} s)")
    } else {
        String::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Counting.

/// The latest moment of any operation or event, in µs since the run started.
fn run_end_us(operations: &[Operation], events: &[Event]) -> u64 {
    let operations_end = operations
        .iter()
        .map(|operation| operation.completed_us.unwrap_or(0).max(operation.invoked_us))
        .max();
    let events_end = events.iter().map(|event| event.end_us.unwrap_or(0).max(event.start_us)).max();
    operations_end.unwrap_or(0).max(events_end.unwrap_or(0))
}

/// What an operation counts as on the throughput chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    /// A `Set`, `Incr` or `Append` that was done.
    Write,
    /// A `Get` or `ReadAppends` that was done.
    Read,
    Refused,
    Unknown,
}

fn category(operation: &Operation) -> Category {
    match (&operation.outcome, &operation.action) {
        (Outcome::Refused { .. }, _) => Category::Refused,
        (Outcome::Unknown { .. }, _) => Category::Unknown,
        (Outcome::Done { .. }, Action::Get { .. } | Action::ReadAppends { .. }) => Category::Read,
        (
            Outcome::Done { .. },
            Action::Set { .. } | Action::Incr { .. } | Action::Append { .. },
        ) => Category::Write,
    }
}

/// The moment an operation is counted at: its completion, or its invocation if none came.
fn counted_at_us(operation: &Operation) -> u64 {
    operation.completed_us.unwrap_or(operation.invoked_us)
}

/// How long a completed operation took, in µs (at most `u32::MAX`, about 71 minutes).
fn latency_us(operation: &Operation) -> Option<u32> {
    let completed = operation.completed_us?;
    let elapsed = completed.saturating_sub(operation.invoked_us);
    Some(u32::try_from(elapsed).unwrap_or(u32::MAX))
}

/// Latency percentiles of one bucket's completed operations, in µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Latency {
    p50_us: u32,
    p99_us: u32,
    max_us: u32,
}

impl Latency {
    /// The percentiles of `values` (reordered), or None when there are none.
    fn of(values: &mut [u32]) -> Option<Latency> {
        Some(Latency {
            p50_us: percentile(values, 50)?,
            p99_us: percentile(values, 99)?,
            max_us: values.iter().copied().max()?,
        })
    }
}

/// The nearest-rank `percent` percentile of `values` (reordered), or None when empty.
fn percentile(values: &mut [u32], percent: usize) -> Option<u32> {
    let rank = values.len().saturating_mul(percent).div_ceil(100).max(1);
    let index = rank - 1;
    if index >= values.len() {
        return None;
    }
    let (_, value, _) = values.select_nth_unstable(index);
    Some(*value)
}

/// The operations of one stretch of time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Bucket {
    writes: u64,
    reads: u64,
    refused: u64,
    unknown: u64,
    /// None when no operation completed in it.
    latency: Option<Latency>,
}

/// The run cut into buckets of equal width, from time 0.
#[derive(Clone, Debug, PartialEq)]
struct Buckets {
    width_s: u64,
    buckets: Vec<Bucket>,
    /// Where the final phase began, in seconds.
    final_start_s: Option<f64>,
}

impl Buckets {
    /// The time the buckets cover, in seconds.
    fn duration_s(&self) -> f64 {
        seconds_of(self.width_s) * seconds_of(self.buckets.len() as u64)
    }

    /// The middle of bucket `index`, in seconds.
    fn middle_s(&self, index: usize) -> f64 {
        (index as f64 + 0.5) * seconds_of(self.width_s)
    }
}

/// The width of the buckets of a run that ends at `end_us`: one second, or as many as keep
/// the bucket count at most [`POINTS_MAX`].
fn bucket_width_s(end_us: u64) -> u64 {
    let seconds = end_us / MICROS_PER_SECOND + 1;
    seconds.div_ceil(POINTS_MAX)
}

/// Counts `operations` in buckets, in one pass; `end_us` is the end of the run.
fn bucket_operations(operations: &[Operation], end_us: u64) -> Buckets {
    let width_s = bucket_width_s(end_us);
    let width_us = width_s.saturating_mul(MICROS_PER_SECOND);
    let count = usize::try_from((end_us / MICROS_PER_SECOND + 1).div_ceil(width_s)).unwrap_or(1);
    let last = count - 1;
    let mut buckets = vec![Bucket::default(); count];
    let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); count];
    let mut final_start_us: Option<u64> = None;
    for operation in operations {
        let index = usize::try_from(counted_at_us(operation) / width_us).unwrap_or(last).min(last);
        let category = category(operation);
        count_operation(&mut buckets[index], category);
        if category == Category::Write || category == Category::Read {
            latencies[index].extend(latency_us(operation));
        }
        if operation.phase == Phase::Final {
            let start = final_start_us.unwrap_or(u64::MAX).min(operation.invoked_us);
            final_start_us = Some(start);
        }
    }
    for (bucket, mut values) in buckets.iter_mut().zip(latencies) {
        bucket.latency = Latency::of(&mut values);
    }
    Buckets { width_s, buckets, final_start_s: final_start_us.map(microseconds_to_seconds) }
}

fn count_operation(bucket: &mut Bucket, category: Category) {
    let counter = match category {
        Category::Write => &mut bucket.writes,
        Category::Read => &mut bucket.reads,
        Category::Refused => &mut bucket.refused,
        Category::Unknown => &mut bucket.unknown,
    };
    *counter += 1;
}

/// Seconds as a float (exact: a run's seconds fit in an f64's 52 bits).
fn seconds_of(whole_seconds: u64) -> f64 {
    whole_seconds as f64
}

/// Microseconds as seconds.
fn microseconds_to_seconds(microseconds: u64) -> f64 {
    microseconds as f64 / 1e6
}

// ---------------------------------------------------------------------------------------------
// Charts.

/// One line of a chart: a value (or a gap) per bucket, at the bucket's middle.
struct Series {
    name: &'static str,
    colour: &'static str,
    /// (seconds, value) points; None breaks the line.
    points: Vec<Option<(f64, f64)>>,
}

/// How values map to heights.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scale {
    /// From 0 to `top`, a tick every `step`.
    Linear { top: f64, step: f64 },
    /// From [`LATENCY_BOTTOM_MS`] to `top`, a tick every power of ten.
    Logarithmic { top: f64 },
}

impl Scale {
    /// The height in pixels of `value`, kept inside the plot.
    fn y(self, value: f64) -> f64 {
        let fraction = match self {
            Scale::Linear { top, .. } => value / top,
            Scale::Logarithmic { top } => {
                let bottom = LATENCY_BOTTOM_MS.log10();
                (value.max(LATENCY_BOTTOM_MS).log10() - bottom) / (top.log10() - bottom)
            }
        };
        PLOT_BOTTOM - fraction.clamp(0.0, 1.0) * (PLOT_BOTTOM - PLOT_TOP)
    }

    /// The ticks of the y axis: value and label.
    fn ticks(self) -> Vec<(f64, String)> {
        match self {
            Scale::Linear { top, step } => (0..)
                .map(|number: u32| f64::from(number) * step)
                .take_while(|value| *value <= top * 1.000_001)
                .map(|value| (value, format_number(value)))
                .collect(),
            Scale::Logarithmic { top } => (-1..)
                .map(|power| 10f64.powi(power))
                .take_while(|value| *value <= top * 1.000_001)
                .map(|value| (value, format_number(value)))
                .collect(),
        }
    }
}

/// A tick label: no decimals for whole numbers, one otherwise (ticks are round numbers).
fn format_number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// A linear scale from 0 whose top is a round number at or above `maximum` (and at least 5),
/// with about five whole-number ticks.
fn linear_scale(maximum: f64) -> Scale {
    let maximum = if maximum.is_finite() { maximum.max(5.0) } else { 5.0 };
    let rough = maximum / 5.0;
    // A finite maximum is below 2^1024: the power of ten fits.
    let magnitude = 10f64.powi(rough.log10().floor() as i32);
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    Scale::Linear { top: (maximum / step).ceil() * step, step }
}

/// A logarithmic scale up to 10 s, or the next power of ten above `maximum_ms`.
fn logarithmic_scale(maximum_ms: f64) -> Scale {
    let mut top = LATENCY_TOP_MS_MIN;
    while top < maximum_ms && top < 1e12 {
        top *= 10.0;
    }
    Scale::Logarithmic { top }
}

/// What one chart draws.
struct Chart {
    label: &'static str,
    scale: Scale,
    series: Vec<Series>,
    /// The x axis: how long, and where the final phase began, in seconds.
    duration_s: f64,
    final_start_s: Option<f64>,
}

/// Operations per second, by category.
fn throughput_chart(buckets: &Buckets) -> Chart {
    let width_s = seconds_of(buckets.width_s);
    let series_of = |name, colour, count: fn(&Bucket) -> u64| {
        let points = points(buckets, |bucket| Some(seconds_of(count(bucket)) / width_s));
        Series { name, colour, points }
    };
    let series = vec![
        series_of("writes done", "#1b7837", |bucket| bucket.writes),
        series_of("reads done", "#2166ac", |bucket| bucket.reads),
        series_of("refused", "#e08214", |bucket| bucket.refused),
        series_of("unknown", "#b2182b", |bucket| bucket.unknown),
    ];
    let maximum = series_maximum(&series);
    Chart {
        label: "operations / s",
        scale: linear_scale(maximum),
        series,
        duration_s: buckets.duration_s(),
        final_start_s: buckets.final_start_s,
    }
}

/// One point per bucket, at its middle: `value` of the bucket, or a break in the line.
fn points(buckets: &Buckets, value: impl Fn(&Bucket) -> Option<f64>) -> Vec<Option<(f64, f64)>> {
    let values = buckets.buckets.iter().map(value);
    values.enumerate().map(|(index, value)| Some((buckets.middle_s(index), value?))).collect()
}

/// Latency percentiles in milliseconds.
fn latency_chart(buckets: &Buckets) -> Chart {
    let series_of = |name, colour, pick: fn(&Latency) -> u32| {
        let points = points(buckets, |bucket| {
            bucket.latency.as_ref().map(|latency| f64::from(pick(latency)) / 1000.0)
        });
        Series { name, colour, points }
    };
    let series = vec![
        series_of("p50", "#2166ac", |latency| latency.p50_us),
        series_of("p99", "#e08214", |latency| latency.p99_us),
        series_of("max", "#b2182b", |latency| latency.max_us),
    ];
    let maximum = series_maximum(&series);
    Chart {
        label: "ms",
        scale: logarithmic_scale(maximum),
        series,
        duration_s: buckets.duration_s(),
        final_start_s: buckets.final_start_s,
    }
}

fn series_maximum(series: &[Series]) -> f64 {
    let values = series.iter().flat_map(|series| series.points.iter().flatten());
    values.map(|(_, value)| *value).fold(0.0, f64::max)
}

/// The pixel column of `seconds` on a chart `duration_s` long, kept inside the plot.
fn x_of(seconds: f64, duration_s: f64) -> f64 {
    let fraction = if duration_s > 0.0 { seconds / duration_s } else { 0.0 };
    PLOT_LEFT + fraction.clamp(0.0, 1.0) * (PLOT_RIGHT - PLOT_LEFT)
}

/// Seconds between two ticks of the time axis: 10, 30, 60 or 300 s, more for very long runs,
/// so that there are at most 25 ticks.
fn tick_interval_s(duration_s: f64) -> u64 {
    let candidates = [10, 30, 60, 300, 600, 1800, 3600];
    let fits = |interval: &u64| duration_s / seconds_of(*interval) <= 25.0;
    candidates.into_iter().find(fits).unwrap_or_else(|| {
        let hours = (duration_s / 3600.0 / 25.0).ceil();
        // A duration of at most 2^64 µs: the hour count fits.
        let hours = hours.max(1.0) as u64;
        hours * 3600
    })
}

fn write_chart(out: &mut String, chart: &Chart, overlay: &Overlay<'_>) -> fmt::Result {
    writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" \
         height=\"{CHART_HEIGHT}\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\">"
    )?;
    writeln!(
        out,
        "<rect class=\"plot\" x=\"{PLOT_LEFT}\" y=\"{PLOT_TOP}\" width=\"{}\" height=\"{}\"/>",
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP
    )?;
    write_y_axis(out, chart)?;
    write_x_axis(out, chart.duration_s)?;
    overlay.write_spans(out, chart.duration_s)?;
    write_final_start(out, chart)?;
    for series in &chart.series {
        write_series(out, series, chart)?;
    }
    overlay.write_marks(out, chart.duration_s)?;
    write_legend(out, &chart.series, overlay)?;
    out.write_str("</svg>\n")
}

fn write_y_axis(out: &mut String, chart: &Chart) -> fmt::Result {
    for (value, label) in chart.scale.ticks() {
        let y = chart.scale.y(value);
        writeln!(
            out,
            "<line class=\"grid\" x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT}\" \
             y2=\"{y:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" \
             text-anchor=\"end\">{label}</text>",
            PLOT_LEFT - 4.0,
            y + 4.0
        )?;
    }
    writeln!(
        out,
        "<text class=\"axis\" transform=\"translate(14 {:.1}) rotate(-90)\" \
         text-anchor=\"middle\">{}</text>",
        (PLOT_TOP + PLOT_BOTTOM) / 2.0,
        chart.label
    )
}

fn write_x_axis(out: &mut String, duration_s: f64) -> fmt::Result {
    let interval = tick_interval_s(duration_s);
    let ticks = (0..).map(|number| number * interval);
    for tick in ticks.take_while(|tick| seconds_of(*tick) <= duration_s) {
        let x = x_of(seconds_of(tick), duration_s);
        writeln!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{PLOT_TOP}\" x2=\"{x:.1}\" \
             y2=\"{PLOT_BOTTOM}\"/><text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" \
             text-anchor=\"middle\">{tick}</text>",
            PLOT_BOTTOM + 14.0
        )?;
    }
    writeln!(
        out,
        "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since \
         the run started</text>",
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        CHART_HEIGHT - 8.0
    )
}

/// The dashed line where the final reads begin.
fn write_final_start(out: &mut String, chart: &Chart) -> fmt::Result {
    let Some(start_s) = chart.final_start_s else { return Ok(()) };
    let x = x_of(start_s, chart.duration_s);
    writeln!(
        out,
        "<line class=\"final\" x1=\"{x:.1}\" y1=\"{PLOT_TOP}\" x2=\"{x:.1}\" y2=\"{PLOT_BOTTOM}\"/>\
         <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">final reads</text>",
        x - 3.0,
        PLOT_TOP + 24.0
    )
}

/// A series as polylines, broken where it has no value; a lone point as a dot.
fn write_series(out: &mut String, series: &Series, chart: &Chart) -> fmt::Result {
    let runs = series.points.split(Option::is_none).filter(|run| !run.is_empty());
    for run in runs {
        let pixels: Vec<(f64, f64)> = run
            .iter()
            .flatten()
            .map(|(seconds, value)| (x_of(*seconds, chart.duration_s), chart.scale.y(*value)))
            .collect();
        if let [(x, y)] = pixels.as_slice() {
            let colour = series.colour;
            writeln!(out, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"1.5\" fill=\"{colour}\"/>")?;
            continue;
        }
        let mut points = String::new();
        for (x, y) in pixels {
            write!(points, "{x:.1},{y:.1} ")?;
        }
        writeln!(
            out,
            "<polyline class=\"series\" stroke=\"{}\" points=\"{}\"/>",
            series.colour,
            points.trim_end()
        )?;
    }
    Ok(())
}

/// The legend above the plot: series as lines, then the kinds of faults and marks shown.
fn write_legend(out: &mut String, series: &[Series], overlay: &Overlay<'_>) -> fmt::Result {
    let mut x = PLOT_LEFT;
    let y = 16.0;
    for entry in series {
        writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\" \
             stroke-width=\"2\"/><text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y - 4.0,
            x + 16.0,
            y - 4.0,
            entry.colour,
            x + 20.0,
            y,
            entry.name
        )?;
        x += 28.0 + label_width(entry.name);
    }
    // A gap between the series and the timeline's kinds.
    x += 16.0;
    for kind in overlay.kinds() {
        let (colour, opacity) = kind.swatch();
        let name = escape(kind.name());
        writeln!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{colour}\" \
             fill-opacity=\"{opacity}\"/><text class=\"label\" x=\"{:.1}\" \
             y=\"{y:.1}\">{name}</text>",
            y - 9.0,
            x + 14.0
        )?;
        x += 24.0 + label_width(kind.name());
    }
    Ok(())
}

fn label_width(text: &str) -> f64 {
    seconds_of(text.chars().count() as u64) * LABEL_CHARACTER_WIDTH
}

// ---------------------------------------------------------------------------------------------
// The timeline over the charts.

/// How an event is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A band from `start_us` to `end_us`.
    Span { start_us: u64, end_us: u64 },
    /// A line at `at_us`.
    Mark { at_us: u64 },
}

/// How `event` is drawn on a run that ends at `run_end_us`.
fn shape(event: &Event, run_end_us: u64) -> Shape {
    let start_us = event.start_us;
    if MARK_KINDS.contains(&event.fault.as_str()) {
        return Shape::Mark { at_us: start_us };
    }
    match event.end_us {
        None => Shape::Span { start_us, end_us: run_end_us.max(start_us) },
        Some(end_us) if end_us > start_us => Shape::Span { start_us, end_us },
        Some(_) => Shape::Mark { at_us: start_us },
    }
}

/// The colour of a fault's band.
fn fault_colour(fault: &str) -> &'static str {
    match fault {
        "kill" => "#d95f02",
        "pause" => "#1f78b4",
        "partition" => "#7570b3",
        "disk-full" => "#8c564b",
        "clock-step" => "#1b9e77",
        _ => "#7f7f7f",
    }
}

/// The colour and width of a mark's line.
fn mark_style(fault: &str) -> (&'static str, f64) {
    match fault {
        "problem" => ("#d00000", 2.0),
        "promote" => ("#222222", 1.0),
        "repoint" => ("#999999", 1.0),
        "leader-lost" => ("#6a3d9a", 1.0),
        "leader" => ("#222222", 1.0),
        "join" => ("#999999", 1.0),
        _ => ("#555555", 1.0),
    }
}

/// A kind of event in the legend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LegendKind<'a> {
    Span(&'a str),
    Mark(&'a str),
}

impl LegendKind<'_> {
    fn name(&self) -> &str {
        match self {
            LegendKind::Span(name) | LegendKind::Mark(name) => name,
        }
    }

    /// Colour and opacity of its swatch.
    fn swatch(&self) -> (&'static str, f64) {
        match self {
            LegendKind::Span(name) => (fault_colour(name), 0.35),
            LegendKind::Mark(name) => (mark_style(name).0, 1.0),
        }
    }
}

/// The run's events with their shapes, drawn over both charts.
struct Overlay<'a> {
    shapes: Vec<(&'a Event, Shape)>,
}

impl<'a> Overlay<'a> {
    fn new(events: &'a [Event], run_end_us: u64) -> Overlay<'a> {
        let shapes = events.iter().map(|event| (event, shape(event, run_end_us))).collect();
        Overlay { shapes }
    }

    /// The kinds drawn, each once, bands first.
    fn kinds(&self) -> Vec<LegendKind<'a>> {
        let mut kinds: Vec<LegendKind<'a>> = self
            .shapes
            .iter()
            .map(|(event, shape)| match shape {
                Shape::Span { .. } => LegendKind::Span(event.fault.as_str()),
                Shape::Mark { .. } => LegendKind::Mark(event.fault.as_str()),
            })
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }

    fn write_spans(&self, out: &mut String, duration_s: f64) -> fmt::Result {
        for (event, shape) in &self.shapes {
            if let Shape::Span { start_us, end_us } = *shape {
                write_span(out, event, start_us, end_us, duration_s)?;
            }
        }
        Ok(())
    }

    fn write_marks(&self, out: &mut String, duration_s: f64) -> fmt::Result {
        for (event, shape) in &self.shapes {
            if let Shape::Mark { at_us } = *shape {
                write_mark(out, event, at_us, duration_s)?;
            }
        }
        Ok(())
    }
}

/// A fault's band, with its tooltip, and its kind and node on top when they fit.
fn write_span(
    out: &mut String,
    event: &Event,
    start_us: u64,
    end_us: u64,
    duration_s: f64,
) -> fmt::Result {
    let left = x_of(microseconds_to_seconds(start_us), duration_s);
    let right = x_of(microseconds_to_seconds(end_us), duration_s);
    let width = (right - left).max(1.0);
    writeln!(
        out,
        "<rect class=\"fault\" x=\"{left:.1}\" y=\"{PLOT_TOP}\" width=\"{width:.1}\" \
         height=\"{}\" fill=\"{}\"><title>{}</title></rect>",
        PLOT_BOTTOM - PLOT_TOP,
        fault_colour(&event.fault),
        tooltip(event)
    )?;
    let label = format!("{} {}", event.fault, event.node);
    if width >= label_width(&label) + 4.0 {
        writeln!(
            out,
            "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            left + 2.0,
            PLOT_TOP + 11.0,
            escape(&label)
        )?;
    }
    Ok(())
}

/// An operator action's, a problem's or an instant fault's line, with its tooltip.
fn write_mark(out: &mut String, event: &Event, at_us: u64, duration_s: f64) -> fmt::Result {
    let x = x_of(microseconds_to_seconds(at_us), duration_s);
    let (colour, width) = mark_style(&event.fault);
    writeln!(
        out,
        "<line class=\"mark\" x1=\"{x:.1}\" y1=\"{PLOT_TOP}\" x2=\"{x:.1}\" y2=\"{PLOT_BOTTOM}\" \
         stroke=\"{colour}\" stroke-width=\"{width}\"><title>{}</title></line>",
        tooltip(event)
    )
}

/// `kind node, start–end s: detail`, escaped.
fn tooltip(event: &Event) -> String {
    let end = event.end_us.map_or_else(|| "end".to_string(), format_seconds);
    let text = format!(
        "{} {}, {}–{} s: {}",
        event.fault,
        event.node,
        format_seconds(event.start_us),
        end,
        event.detail
    );
    escape(&text)
}

/// Microseconds as seconds with three decimals.
fn format_seconds(microseconds: u64) -> String {
    format!("{:.3}", microseconds_to_seconds(microseconds))
}

// ---------------------------------------------------------------------------------------------
// The rest of the page.

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(character),
        }
    }
    escaped
}

const STYLE_SHEET: &str = "\
body { font-family: sans-serif; margin: 16px auto; max-width: 1120px; color: #222; }
.verdict { font-size: 26px; font-weight: bold; color: #fff; padding: 12px 16px; }
.pass { background: #2e7d32; }
.fail { background: #c62828; }
pre { background: #f4f4f4; padding: 8px 12px; overflow-x: auto; }
h2 { font-size: 17px; margin: 20px 0 4px; }
svg { display: block; }
svg text { font-size: 11px; fill: #333; }
.plot { fill: #fff; stroke: #999; }
.grid { stroke: #e4e4e4; }
.series { fill: none; stroke-width: 1.5; stroke-linejoin: round; }
.fault { fill-opacity: 0.18; }
.final { stroke: #333; stroke-dasharray: 6 4; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.problem td { color: #b00000; font-weight: bold; }
";

fn write_head(out: &mut String, verdict: &str) -> fmt::Result {
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>\n{STYLE_SHEET}</style>\n</head>\n<body>",
        escape(verdict)
    )
}

/// The verdict on a green or red band, then the summary lines.
fn write_verdict(out: &mut String, verdict: &str, summary: &[String]) -> fmt::Result {
    let class = if verdict.contains(" PASS ") { "pass" } else { "fail" };
    writeln!(out, "<div class=\"verdict {class}\">{}</div>", escape(verdict))?;
    out.write_str("<pre>")?;
    for line in summary {
        writeln!(out, "{}", escape(line))?;
    }
    out.write_str("</pre>\n")
}

/// Every event: start, end and length in seconds, kind, node and detail.
fn write_event_table(out: &mut String, events: &[Event]) -> fmt::Result {
    writeln!(out, "<h2>Timeline ({} events)</h2>", events.len())?;
    out.write_str(
        "<table>\n<thead><tr><th>start s</th><th>end s</th><th>length s</th><th>kind</th>\
         <th>node</th><th>detail</th></tr></thead>\n<tbody>\n",
    )?;
    for event in events {
        let (end, length) = match event.end_us {
            Some(end_us) => {
                (format_seconds(end_us), format_seconds(end_us.saturating_sub(event.start_us)))
            }
            None => ("open".to_string(), "to the end".to_string()),
        };
        let class = if event.fault == "problem" { " class=\"problem\"" } else { "" };
        writeln!(
            out,
            "<tr{class}><td class=\"number\">{}</td><td class=\"number\">{end}</td>\
             <td class=\"number\">{length}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_seconds(event.start_us),
            escape(&event.fault),
            escape(&event.node),
            escape(&event.detail)
        )?;
    }
    out.write_str("</tbody>\n</table>\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Value;

    fn operation(
        action: Action,
        outcome: Outcome,
        invoked_us: u64,
        completed_us: u64,
    ) -> Operation {
        Operation::sample(action, outcome, (invoked_us, completed_us))
    }

    fn done() -> Outcome {
        Outcome::Done { answer: Value::Missing }
    }

    fn write(invoked_us: u64, completed_us: u64) -> Operation {
        operation(Action::Incr { key: "c1".into() }, done(), invoked_us, completed_us)
    }

    fn read(invoked_us: u64, completed_us: u64) -> Operation {
        operation(Action::Get { key: "r1".into() }, done(), invoked_us, completed_us)
    }

    fn event(fault: &str, start_us: u64, end_us: Option<u64>, detail: &str) -> Event {
        Event { start_us, end_us, fault: fault.into(), node: "n2".into(), detail: detail.into() }
    }

    fn page<'a>(
        verdict: &'a str,
        operations: &'a [Operation],
        events: &'a [Event],
        summary: &'a [String],
    ) -> Page<'a> {
        Page { verdict, summary, operations, events }
    }

    #[test]
    fn the_verdict_is_shown_escaped_with_its_colour() {
        let summary = vec!["writes <done> 5".to_string()];
        let pass = render(&page("chaos: PASS seed=1 <x>&", &[], &[], &summary));
        assert!(
            pass.contains("<div class=\"verdict pass\">chaos: PASS seed=1 &lt;x&gt;&amp;</div>")
        );
        assert!(pass.contains("writes &lt;done&gt; 5"), "{pass}");
        assert!(!pass.contains("<x>"));
        let fail = render(&page("chaos: FAIL seed=1 ops=3 violations=3", &[], &[], &[]));
        assert!(fail.contains("<div class=\"verdict fail\">"), "{fail}");
        assert!(!fail.contains("verdict pass"));
    }

    #[test]
    fn an_empty_history_renders() {
        let html = render(&page("chaos: PASS seed=1 ops=0 faults=0", &[], &[], &[]));
        assert_eq!(html.matches("<svg ").count(), 2);
        assert!(html.ends_with("</html>\n"));
        assert!(!html.contains("NaN"), "{html}");
        assert!(!html.contains("inf\""), "{html}");
    }

    #[test]
    fn each_fault_with_a_length_is_one_band_per_chart() {
        let events = vec![
            event("kill", 1_000_000, Some(3_000_000), ""),
            event("pause", 4_000_000, None, "never healed"),
            event("partition", 5_000_000, Some(5_000_000), "no length"),
            event("promote", 2_000_000, Some(2_500_000), "leads"),
            event("problem", 6_000_000, Some(6_000_001), "n3 exited"),
        ];
        let operations = vec![write(0, 9_000_000)];
        let html = render(&page("chaos: PASS ", &operations, &events, &[]));
        assert_eq!(html.matches("<rect class=\"fault\"").count(), 2 * 2);
        assert_eq!(html.matches("<line class=\"mark\"").count(), 3 * 2);
        assert_eq!(html.matches("stroke=\"#d00000\" stroke-width=\"2\"").count(), 2);
        assert!(html.contains(">kill n2</text>"), "{html}");
    }

    #[test]
    fn a_band_without_end_lasts_to_the_end_of_the_run() {
        let event = event("pause", 4_000_000, None, "");
        assert_eq!(
            shape(&event, 9_000_000),
            Shape::Span { start_us: 4_000_000, end_us: 9_000_000 }
        );
        let repoint = Event { fault: "repoint".into(), ..event.clone() };
        assert_eq!(shape(&repoint, 9_000_000), Shape::Mark { at_us: 4_000_000 });
    }

    #[test]
    fn details_are_escaped() {
        let events = vec![event("kill", 0, Some(1_000_000), "<script>alert(\"x\")</script> & 'y'")];
        let html = render(&page("chaos: PASS ", &[], &events, &[]));
        assert!(!html.contains("<script>"));
        let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;";
        assert!(html.contains(&format!("<td>{escaped}</td>")), "{html}");
        assert!(html.contains(&format!("kill n2, 0.000–1.000 s: {escaped}</title>")), "{html}");
    }

    #[test]
    fn buckets_count_operations_by_category_and_second() {
        let mut unanswered = write(2_500_000, 0);
        unanswered.completed_us = None;
        unanswered.outcome = Outcome::Unknown { error: "timeout".into() };
        let mut refused = write(1_000_000, 1_100_000);
        refused.outcome = Outcome::Refused { error: "READONLY".into() };
        let operations = vec![
            write(0, 900_000),
            write(900_000, 1_200_000),
            read(1_000_000, 1_999_999),
            operation(
                Action::Append { key: "a1".into(), element: "x1".into() },
                done(),
                1_500_000,
                1_600_000,
            ),
            refused,
            unanswered,
        ];
        let buckets = bucket_operations(&operations, 3_000_000);
        assert_eq!(buckets.width_s, 1);
        assert_eq!(buckets.buckets.len(), 4);
        let counts: Vec<(u64, u64, u64, u64)> = buckets
            .buckets
            .iter()
            .map(|bucket| (bucket.writes, bucket.reads, bucket.refused, bucket.unknown))
            .collect();
        assert_eq!(counts, vec![(1, 0, 0, 0), (2, 1, 1, 0), (0, 0, 0, 1), (0, 0, 0, 0)]);
        let second = buckets.buckets[1].latency.unwrap();
        assert_eq!(second.max_us, 999_999);
        assert_eq!(buckets.buckets[2].latency, None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut values: Vec<u32> = (1..=1000).rev().collect();
        let latency = Latency::of(&mut values).unwrap();
        assert_eq!(latency, Latency { p50_us: 500, p99_us: 990, max_us: 1000 });
        let mut one = vec![7];
        assert_eq!(Latency::of(&mut one), Some(Latency { p50_us: 7, p99_us: 7, max_us: 7 }));
        assert_eq!(Latency::of(&mut []), None);
        let mut hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&mut hundred, 99), Some(99));
        assert_eq!(percentile(&mut hundred, 50), Some(50));
    }

    #[test]
    fn long_runs_merge_buckets_and_keep_every_operation() {
        let operations: Vec<Operation> =
            (0..7200u64).map(|second| write(second * 1_000_000, second * 1_000_000 + 10)).collect();
        let buckets = bucket_operations(&operations, 7_200_000_000);
        assert!(buckets.buckets.len() as u64 <= POINTS_MAX, "{}", buckets.buckets.len());
        assert_eq!(buckets.width_s, 7);
        assert_eq!(buckets.buckets.iter().map(|bucket| bucket.writes).sum::<u64>(), 7200);
        assert_eq!(buckets.buckets[0].writes, 7);
        let html = render(&page("chaos: PASS ", &operations, &[], &[]));
        for polyline in html.lines().filter(|line| line.starts_with("<polyline")) {
            assert!(polyline.matches(',').count() as u64 <= POINTS_MAX, "{polyline}");
        }
    }

    #[test]
    fn the_page_does_not_grow_with_the_history() {
        let few: Vec<Operation> =
            (0..10u64).map(|n| write(n * 1_000_000, n * 1_000_000 + 5)).collect();
        let many: Vec<Operation> =
            (0..10_000u64).map(|n| write(n * 1_000, n * 1_000 + 5)).chain(few.clone()).collect();
        let small = render(&page("chaos: PASS ", &few, &[], &[]));
        let large = render(&page("chaos: PASS ", &many, &[], &[]));
        assert!(large.len() < small.len() + 2_000, "{} vs {}", large.len(), small.len());
    }

    #[test]
    fn the_final_reads_are_marked() {
        let mut last = read(5_000_000, 5_100_000);
        last.phase = Phase::Final;
        let operations = vec![write(0, 10), last];
        let html = render(&page("chaos: PASS ", &operations, &[], &[]));
        assert_eq!(html.matches(">final reads</text>").count(), 2);
        let html = render(&page("chaos: PASS ", &operations[..1], &[], &[]));
        assert!(!html.contains("final reads"));
    }

    #[test]
    fn scales_map_their_ends_to_the_plot_edges() {
        let logarithmic = logarithmic_scale(3.0);
        assert!((logarithmic.y(0.1) - PLOT_BOTTOM).abs() < 1e-9);
        assert!((logarithmic.y(0.0) - PLOT_BOTTOM).abs() < 1e-9);
        assert!((logarithmic.y(10_000.0) - PLOT_TOP).abs() < 1e-9);
        let labels: Vec<String> = logarithmic.ticks().into_iter().map(|(_, label)| label).collect();
        assert_eq!(labels, ["0.1", "1", "10", "100", "1000", "10000"]);
        assert_eq!(logarithmic_scale(25_000.0), Scale::Logarithmic { top: 100_000.0 });
        assert_eq!(linear_scale(0.0), Scale::Linear { top: 5.0, step: 1.0 });
        assert_eq!(linear_scale(12.5), Scale::Linear { top: 15.0, step: 5.0 });
        assert_eq!(linear_scale(4321.0), Scale::Linear { top: 5000.0, step: 1000.0 });
    }

    #[test]
    fn time_ticks_suit_the_length_of_the_run() {
        assert_eq!(tick_interval_s(10.0), 10);
        assert_eq!(tick_interval_s(240.0), 10);
        assert_eq!(tick_interval_s(600.0), 30);
        assert_eq!(tick_interval_s(1800.0), 300);
        assert_eq!(tick_interval_s(7200.0), 300);
        let huge = tick_interval_s(1e9);
        assert_eq!(huge % 3600, 0);
        assert!(1e9 / seconds_of(huge) <= 25.0, "{huge}");
    }
}
