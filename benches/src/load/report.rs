//! The result of a load run, as text for people or as one JSON object for scripts.

use std::io::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::connection::ThreadStats;
use super::timeline::Timeline;
use super::LoadOptions;

/// Measurements of one load run. `--json` prints exactly these fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadReport {
    /// Replies received, error replies included.
    pub requests: u64,
    /// Error replies received (`-ERR ...`); a healthy run has none.
    pub errors: u64,
    /// Text of the first error reply, if any.
    pub first_error: Option<String>,
    /// Measured time: from the moment every connection was open until the last reply.
    pub seconds: f64,
    pub ops_per_second: f64,
    /// Per-request latency: from sending the request's pipeline batch to receiving its reply.
    pub latency_ms: LatencySummary,
    pub connections: u32,
    pub pipeline: u32,
    pub threads: u32,
    pub value_bytes: usize,
    pub keyspace: u64,
    pub read_ratio: f64,
    /// Latency per interval and the nodes' events, with `--timeline` or `--events-from` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

/// Latency percentiles in milliseconds, resolved to three significant digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencySummary {
    /// Summarizes a histogram of microseconds; all zeros when it is empty.
    #[must_use]
    pub fn from_histogram_us(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let milliseconds = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        LatencySummary {
            p50: milliseconds(0.5),
            p90: milliseconds(0.9),
            p99: milliseconds(0.99),
            p999: milliseconds(0.999),
            max: histogram.max() as f64 / 1000.0,
        }
    }
}

impl LoadReport {
    pub(super) fn new(options: &LoadOptions, stats: &ThreadStats, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        let ops_per_second = if seconds > 0.0 { stats.requests as f64 / seconds } else { 0.0 };
        LoadReport {
            requests: stats.requests,
            errors: stats.errors,
            first_error: stats.first_error.clone(),
            seconds,
            ops_per_second,
            latency_ms: LatencySummary::from_histogram_us(&stats.histogram),
            connections: options.connections,
            pipeline: options.pipeline,
            threads: options.threads,
            value_bytes: options.value_bytes,
            keyspace: options.keyspace,
            read_ratio: options.read_ratio,
            timeline: None,
        }
    }

    /// One JSON object, no trailing newline.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// The human-readable report, several lines.
    #[must_use]
    pub fn to_text(&self) -> String {
        let latency = &self.latency_ms;
        let mut text = format!(
            "workload     connections {}, pipeline {}, threads {}, value bytes {}, \
             keys {}, GET {:.0}%\n\
             requests     {} ({} errors)\n\
             seconds      {:.2}\n\
             throughput   {:.0} ops/s\n\
             latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            self.connections,
            self.pipeline,
            self.threads,
            self.value_bytes,
            self.keyspace,
            self.read_ratio * 100.0,
            self.requests,
            self.errors,
            self.seconds,
            self.ops_per_second,
            latency.p50,
            latency.p90,
            latency.p99,
            latency.p999,
            latency.max,
        );
        if let Some(error) = &self.first_error {
            text.push_str(&format!("first error  {error}\n"));
        }
        if let Some(timeline) = &self.timeline {
            text.push_str(&timeline.to_text(latency.p99));
        }
        text
    }
}

/// Prints `report` on stdout: one JSON line with `--json`, else the text form.
pub fn print_report(report: &LoadReport, options: &LoadOptions) {
    let mut stdout = std::io::stdout().lock();
    let written = if options.json {
        writeln!(stdout, "{}", report.to_json())
    } else {
        write!(stdout, "{}", report.to_text())
    };
    // A closed stdout (e.g. piped into `head`) is not worth a panic at the very end.
    let _ = written.and_then(|()| stdout.flush());
}
