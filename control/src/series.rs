//! The console's time series: a sample of the node's counters every second, kept in a bounded
//! ring, and the rates and reply-latency percentiles computed from consecutive samples.
//!
//! Pure: the sampler (`crate::console`) reads the shards and pushes [`Sample`]s; everything
//! here is arithmetic on them, so it is tested without a node.

use std::collections::VecDeque;

/// Samples kept: ten minutes at one a second.
pub(crate) const SAMPLES_MAX: usize = 600;

/// The node's cumulative counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Wall clock, for display.
    pub wall_ms: u64,
    /// Monotonic clock, for the time between two samples.
    pub moment_ms: u64,
    /// Commands received since the node started.
    pub commands: u64,
    /// Error replies sent since the node started.
    pub errors: u64,
    /// Reply-latency observations per bucket (not cumulative), `+Inf` last.
    pub latency_buckets: Vec<u64>,
}

/// What happened between two consecutive samples.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Point {
    /// The later sample's wall clock.
    pub wall_ms: u64,
    pub commands_per_second: f64,
    pub errors_per_second: f64,
    /// The 99th percentile of the replies in the interval, in milliseconds; `None` when no
    /// reply was timed in it.
    pub p99_ms: Option<f64>,
}

/// The last [`SAMPLES_MAX`] samples, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Series {
    samples: VecDeque<Sample>,
}

impl Series {
    /// Adds a sample, dropping the oldest beyond [`SAMPLES_MAX`].
    pub(crate) fn push(&mut self, sample: Sample) {
        if self.samples.len() == SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        debug_assert!(self.samples.len() <= SAMPLES_MAX);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// One point per pair of consecutive samples, oldest first.
    pub(crate) fn points(&self, bounds_us: &[u64]) -> Vec<Point> {
        let mut points = Vec::with_capacity(self.samples.len().saturating_sub(1));
        let mut samples = self.samples.iter();
        let Some(mut earlier) = samples.next() else { return points };
        for later in samples {
            points.push(point(earlier, later, bounds_us));
            earlier = later;
        }
        points
    }
}

/// The rates and the p99 between `earlier` and `later`.
pub(crate) fn point(earlier: &Sample, later: &Sample, bounds_us: &[u64]) -> Point {
    // Two samples in the same millisecond would divide by zero; a millisecond is the floor.
    let seconds = later.moment_ms.saturating_sub(earlier.moment_ms).max(1) as f64 / 1e3;
    let rate = |before: u64, after: u64| after.saturating_sub(before) as f64 / seconds;
    let deltas: Vec<u64> = later
        .latency_buckets
        .iter()
        .zip(&earlier.latency_buckets)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect();
    Point {
        wall_ms: later.wall_ms,
        commands_per_second: rate(earlier.commands, later.commands),
        errors_per_second: rate(earlier.errors, later.errors),
        p99_ms: percentile_us(&deltas, bounds_us, 0.99).map(|us| us / 1e3),
    }
}

/// The `quantile` (0 to 1) of the observations counted in `buckets` (per bucket, `+Inf`
/// last), in microseconds: interpolated linearly inside the bucket it falls in, as
/// Prometheus's `histogram_quantile` does. An observation beyond the last bound counts as the
/// last bound. `None` without observations.
pub(crate) fn percentile_us(buckets: &[u64], bounds_us: &[u64], quantile: f64) -> Option<f64> {
    assert!((0.0..=1.0).contains(&quantile), "a quantile lies between 0 and 1");
    assert!(buckets.len() <= bounds_us.len() + 1, "one bucket per bound, and +Inf");
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = quantile * total as f64;
    let mut below = 0u64;
    for (index, count) in buckets.iter().enumerate() {
        let through = below + count;
        if *count > 0 && through as f64 >= rank {
            let Some(upper) = bounds_us.get(index) else {
                return bounds_us.last().map(|last| *last as f64);
            };
            let lower = if index == 0 { 0 } else { bounds_us[index - 1] };
            let inside = (rank - below as f64) / *count as f64;
            return Some(lower as f64 + (*upper - lower) as f64 * inside);
        }
        below = through;
    }
    bounds_us.last().map(|last| *last as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [u64; 4] = [10, 100, 1_000, 10_000];

    fn sample(moment_ms: u64, commands: u64, errors: u64, buckets: [u64; 5]) -> Sample {
        Sample {
            wall_ms: moment_ms + 1_000_000,
            moment_ms,
            commands,
            errors,
            latency_buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn rates_are_deltas_over_the_time_between_samples() {
        let earlier = sample(1_000, 100, 5, [0; 5]);
        let later = sample(3_000, 700, 9, [0; 5]);
        let point = point(&earlier, &later, &BOUNDS);
        assert_eq!(point.commands_per_second, 300.0);
        assert_eq!(point.errors_per_second, 2.0);
        assert_eq!(point.wall_ms, 1_003_000);
        assert_eq!(point.p99_ms, None, "no reply timed in the interval");
    }

    #[test]
    fn the_p99_comes_from_the_bucket_deltas_only() {
        // Before: many slow replies long ago, which must not count.
        let earlier = sample(0, 0, 0, [0, 0, 0, 500, 0]);
        // In the interval: 99 fast replies (10..100 µs) and one slow one (1..10 ms).
        let later = sample(1_000, 100, 0, [0, 99, 0, 501, 0]);
        let p99 = point(&earlier, &later, &BOUNDS).p99_ms.expect("replies were timed");
        assert!((p99 - 0.1).abs() < 1e-9, "the 99th of 100 is the last fast one: {p99}");
    }

    #[test]
    fn a_percentile_interpolates_inside_its_bucket_and_caps_at_the_last_bound() {
        assert_eq!(percentile_us(&[0; 5], &BOUNDS, 0.99), None);
        assert_eq!(percentile_us(&[10, 0, 0, 0, 0], &BOUNDS, 0.5), Some(5.0));
        assert_eq!(percentile_us(&[0, 0, 4, 0, 0], &BOUNDS, 0.5), Some(550.0));
        assert_eq!(percentile_us(&[0, 0, 0, 0, 3], &BOUNDS, 0.99), Some(10_000.0));
        assert_eq!(percentile_us(&[1, 0, 0, 0, 99], &BOUNDS, 0.01), Some(10.0));
    }

    #[test]
    fn counters_that_went_back_give_zero_not_a_wrap() {
        let earlier = sample(0, 50, 5, [3, 0, 0, 0, 0]);
        let later = sample(0, 10, 1, [1, 0, 0, 0, 0]);
        let point = point(&earlier, &later, &BOUNDS);
        assert_eq!(point.commands_per_second, 0.0);
        assert_eq!(point.p99_ms, None);
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_up_to_its_bound() {
        let mut series = Series::default();
        assert!(series.points(&BOUNDS).is_empty());
        for second in 0..(SAMPLES_MAX as u64 + 50) {
            series.push(sample(second * 1_000, second * 10, 0, [0; 5]));
        }
        assert_eq!(series.len(), SAMPLES_MAX);
        let points = series.points(&BOUNDS);
        assert_eq!(points.len(), SAMPLES_MAX - 1);
        assert_eq!(points.last().map(|point| point.wall_ms), Some(1_000_000 + 649_000));
        assert!(points.iter().all(|point| point.commands_per_second == 10.0));
    }
}
