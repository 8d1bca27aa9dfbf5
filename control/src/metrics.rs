//! `GET /metrics`: the node's measurements in Prometheus's text format (version 0.0.4),
//! encoded by the `prometheus` crate.
//!
//! Nothing is counted twice: at each scrape the collector reads what the node keeps anyway
//! (the shards' counters and histograms, `strata_shard::metrics`; the serving mode and epoch;
//! the leader's replication progress and membership table; the archive's status) and turns
//! it into metric families. Every metric is per node, with the `strata_` prefix and labels of
//! a small fixed set (command and error kinds, roles, partitions, members).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};
use serde_json::Value;
use strata_core::cluster::{NodeRow, NodeStatus, Role};
use strata_shard::metrics::{CommandKind, ErrorKind, HistogramSnapshot, NodeMetrics};

use crate::roles::{now_ms, Control};

/// The roles `strata_role` has a series for.
const ROLES: [Role; 5] =
    [Role::Admin, Role::Standalone, Role::Leader, Role::Follower, Role::Learner];

/// The states a bootstrap from the archive goes through (`strata_bootstrap_state`).
const BOOTSTRAP_STATES: [&str; 5] = ["idle", "loading", "installing", "done", "failed"];

/// `GET /metrics`.
pub(crate) async fn serve(State(control): State<Arc<Control>>) -> Response {
    let families = collect(&control);
    let mut text = String::new();
    match TextEncoder::new().encode_utf8(&families, &mut text) {
        Ok(()) => {
            let content_type = TextEncoder::new().format_type().to_string();
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "metrics could not be encoded");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

/// Every metric family of this node, as of now.
fn collect(control: &Control) -> Vec<MetricFamily> {
    let mut families = Families::default();
    let metrics = &control.handle.metrics;
    add_commands(&mut families, metrics);
    add_storage(&mut families, metrics);
    add_replication(&mut families, control);
    add_members(&mut families, control);
    if let Some(status) = &control.config.storage_status {
        add_archive(&mut families, &status());
    }
    families.finish()
}

/// Clients, commands, errors, reply latency, memory and keys.
fn add_commands(families: &mut Families, metrics: &NodeMetrics) {
    let counters = metrics.counters();
    let shards = metrics.shards();
    families.counter(
        "strata_commands_total",
        "Commands received, by kind (invalid: unknown or with wrong arguments).",
        CommandKind::ALL.iter().map(|kind| {
            let count = shards.iter().map(|shard| shard.commands(*kind)).sum::<u64>();
            (vec![("command", kind.name().to_string())], count as f64)
        }),
    );
    families.counter(
        "strata_errors_total",
        "Error replies sent, by their first word.",
        ErrorKind::ALL.iter().map(|kind| {
            let count = shards.iter().map(|shard| shard.errors(*kind)).sum::<u64>();
            (vec![("kind", kind.name().to_string())], count as f64)
        }),
    );
    families.gauge_value(
        "strata_connected_clients",
        "Client connections open.",
        counters.connections_current as f64,
    );
    families.counter_value(
        "strata_connections_received_total",
        "Client connections accepted.",
        counters.connections_received as f64,
    );
    families.counter_value(
        "strata_connections_rejected_total",
        "Client connections refused at the maxclients limit.",
        counters.connections_rejected as f64,
    );
    families.histogram(
        "strata_reply_latency_seconds",
        "Time from reading a command to its reply being ready to send.",
        &metrics.histogram(|shard| &shard.reply_latency_us),
        MICROSECONDS,
    );
    let keys = metrics.partitions().iter().map(|partition| load(&partition.keys)).sum::<u64>();
    families.gauge_value("strata_keys", "Keys held (refreshed every second).", keys as f64);
    families.gauge_value(
        "strata_resident_memory_bytes",
        "Resident set size of the process.",
        strata_shard::memory::resident_bytes() as f64,
    );
}

/// The WAL: appends, syncs, bytes, group-commit batches, snapshots, LSNs per partition.
fn add_storage(families: &mut Families, metrics: &NodeMetrics) {
    let counters = metrics.counters();
    let bytes = metrics.shards().iter().map(|shard| shard.wal_bytes_written()).sum::<u64>();
    families.counter_value(
        "strata_wal_frames_written_total",
        "Frames appended to partition logs.",
        counters.frames_written as f64,
    );
    families.counter_value(
        "strata_wal_bytes_written_total",
        "Bytes of frames appended to partition logs.",
        bytes as f64,
    );
    families.counter_value(
        "strata_shard_hops_total",
        "Requests and replies sent from one shard to another.",
        counters.shard_hops as f64,
    );
    families.counter_value(
        "strata_shard_messages_total",
        "Ring publications between shards (one per destination per turn with hops).",
        counters.shard_messages as f64,
    );
    families.counter_value(
        "strata_shard_wakeups_total",
        "Shards woken by another because they slept.",
        counters.shard_wakeups as f64,
    );
    families.counter_value(
        "strata_wal_fdatasyncs_total",
        "fdatasync calls (one may cover several partitions).",
        counters.fdatasyncs as f64,
    );
    families.histogram(
        "strata_wal_append_seconds",
        "Duration of one log append (until durable, with O_DSYNC or a shared sync).",
        &metrics.histogram(|shard| &shard.wal_append_us),
        MICROSECONDS,
    );
    families.histogram(
        "strata_wal_sync_seconds",
        "Duration of one explicit log sync.",
        &metrics.histogram(|shard| &shard.wal_sync_us),
        MICROSECONDS,
    );
    families.histogram(
        "strata_replication_wait_seconds",
        "As leader: from the log being durable up to a point to its commit, the wait for the \
         in-sync followers (0 when they had acknowledged first).",
        &metrics.histogram(|shard| &shard.replication_wait_us),
        MICROSECONDS,
    );
    families.histogram(
        "strata_group_commit_batch_records",
        "Records per frame a partition's group commit cut.",
        &metrics.histogram(|shard| &shard.batch_records),
        1.0,
    );
    add_snapshot_counters(families, metrics);
    let partitions = metrics.partitions().iter().enumerate();
    let per_partition = |pick: fn(&strata_shard::metrics::PartitionGauges) -> u64| {
        partitions.clone().map(move |(index, gauges)| {
            (vec![("partition", index.to_string())], pick(gauges) as f64)
        })
    };
    families.gauge(
        "strata_partition_committed_lsn",
        "Last committed LSN of each partition (refreshed every second).",
        per_partition(|gauges| load(&gauges.committed_lsn)),
    );
    families.gauge(
        "strata_partition_durable_lsn",
        "Last LSN durable in each partition's log (refreshed every second).",
        per_partition(|gauges| load(&gauges.durable_lsn)),
    );
}

fn add_snapshot_counters(families: &mut Families, metrics: &NodeMetrics) {
    let counters = metrics.counters();
    families.counter_value(
        "strata_snapshots_written_total",
        "Snapshots written to partition logs.",
        counters.snapshots_written as f64,
    );
    families.counter_value(
        "strata_snapshots_sent_total",
        "Snapshots this node sent to replicas as leader.",
        counters.snapshots_sent as f64,
    );
    families.counter_value(
        "strata_snapshots_installed_total",
        "Leader snapshots installed here as a replica.",
        counters.snapshots_installed as f64,
    );
    families.counter_value(
        "strata_records_discarded_total",
        "Records a replica cut from its log where it diverged from its leader.",
        counters.records_discarded as f64,
    );
    families.counter_value(
        "strata_expired_keys_total",
        "Keys active expiry deleted (logged deletes; a replica counts none).",
        counters.expired_keys as f64,
    );
}

/// Role, epoch, in-sync members, failovers.
fn add_replication(families: &mut Families, control: &Control) {
    let role = control.role();
    families.gauge(
        "strata_role",
        "1 for the role this node has, 0 for the others.",
        ROLES.iter().map(|candidate| {
            (vec![("role", candidate.name().to_string())], f64::from(u8::from(*candidate == role)))
        }),
    );
    let shared = &control.handle.shared;
    families.gauge_value(
        "strata_epoch",
        "Data epoch: led at by a leader, the highest seen otherwise.",
        shared.epoch().0 as f64,
    );
    let in_sync = if role == Role::Leader { 1 + shared.in_sync_followers() } else { 0 };
    families.gauge_value(
        "strata_insync_members",
        "Leader: members in sync on every partition, itself included (0 on other roles).",
        in_sync as f64,
    );
    families.gauge_value(
        "strata_refusing_partitions",
        "Leader: partitions refusing writes for lack of in-sync members.",
        shared.refusing_partitions() as f64,
    );
    families.counter_value(
        "strata_failovers_total",
        "Data leaders this node's controller replaced after losing them.",
        load(&control.failovers) as f64,
    );
}

/// What the leader knows of each member: alive, heartbeat age, in sync, lag, acknowledged LSN.
fn add_members(families: &mut Families, control: &Control) {
    if control.role() != Role::Leader {
        return;
    }
    let rows: Vec<NodeRow> = control.rows().unwrap_or_default().into_iter().skip(1).collect();
    let progress = control.handle.shared.progress();
    let now = now_ms();
    let member = |row: &NodeRow| vec![("member", row.name.clone())];
    families.gauge(
        "strata_member_alive",
        "1 while the member's heartbeats arrive in time.",
        rows.iter().map(|row| (member(row), f64::from(u8::from(row.status == NodeStatus::Alive)))),
    );
    families.gauge(
        "strata_member_heartbeat_age_seconds",
        "Seconds since the member's last heartbeat.",
        rows.iter().map(|row| (member(row), now.saturating_sub(row.last_update_ms) as f64 / 1e3)),
    );
    families.gauge(
        "strata_member_in_sync",
        "1 if writes wait for the member on every partition it streams.",
        rows.iter().map(|row| {
            let streams = progress.iter().filter(|((name, _), _)| *name == row.name);
            let mut streams = streams.peekable();
            let in_sync = streams.peek().is_some() && streams.all(|(_, entry)| entry.in_sync);
            (member(row), f64::from(u8::from(in_sync)))
        }),
    );
    families.gauge(
        "strata_member_lag_records",
        "Records the member has yet to acknowledge, over the partitions it streams.",
        rows.iter().filter_map(|row| row.lag.map(|lag| (member(row), lag as f64))),
    );
    families.gauge(
        "strata_member_acknowledged_lsn",
        "Last LSN the member acknowledged durable, per partition it streams.",
        progress.iter().map(|((name, partition), entry)| {
            let labels = vec![("member", name.clone()), ("partition", partition.0.to_string())];
            (labels, entry.acked_lsn.0 as f64)
        }),
    );
}

/// The uploader and a bootstrap from the archive, from the storage status.
fn add_archive(families: &mut Families, status: &Value) {
    let number = |value: &Value| value.as_u64().unwrap_or(0) as f64;
    let counters = [
        ("strata_archive_uploaded_objects_total", "Objects uploaded.", "uploaded_objects"),
        ("strata_archive_uploaded_bytes_total", "Bytes uploaded.", "uploaded_bytes"),
        ("strata_archive_upload_failures_total", "Uploads that failed.", "failures"),
    ];
    for (name, help, key) in counters {
        families.counter_value(name, help, number(&status[key]));
    }
    let gauges = [
        ("strata_archive_backlog_objects", "Objects waiting to be uploaded.", "backlog_objects"),
        ("strata_archive_backlog_bytes", "Bytes waiting to be uploaded.", "backlog_bytes"),
    ];
    for (name, help, key) in gauges {
        families.gauge_value(name, help, number(&status[key]));
    }
    let bootstrap = &status["bootstrap"];
    if bootstrap.is_object() {
        let state = bootstrap["state"].as_str().unwrap_or("idle");
        families.gauge(
            "strata_bootstrap_state",
            "1 for the state of the bootstrap from the archive, 0 for the others.",
            BOOTSTRAP_STATES.iter().map(|candidate| {
                (
                    vec![("state", (*candidate).to_string())],
                    f64::from(u8::from(*candidate == state)),
                )
            }),
        );
        let progress = [
            ("strata_bootstrap_partitions", "Partitions to load.", "partitions"),
            ("strata_bootstrap_partitions_loaded", "Partitions loaded.", "partitions_loaded"),
            ("strata_bootstrap_bytes", "Bytes to load.", "bytes_total"),
            ("strata_bootstrap_loaded_bytes", "Bytes loaded.", "bytes_loaded"),
        ];
        for (name, help, key) in progress {
            families.gauge_value(name, help, number(&bootstrap[key]));
        }
    }
}

fn load(value: &std::sync::atomic::AtomicU64) -> u64 {
    value.load(std::sync::atomic::Ordering::Relaxed)
}

/// Microseconds in a second: the latency histograms count microseconds and report seconds.
const MICROSECONDS: f64 = 1e6;

type Labels = Vec<(&'static str, String)>;

/// Metric families being gathered; families without a sample are left out (the text format
/// has no empty family).
#[derive(Default)]
struct Families {
    families: Vec<MetricFamily>,
}

impl Families {
    fn finish(self) -> Vec<MetricFamily> {
        self.families
    }

    fn add(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        debug_assert!(name.starts_with("strata_"), "every metric has the strata_ prefix");
        debug_assert!(
            self.families.iter().all(|family| family.name() != name),
            "{name} is gathered once"
        );
        if metrics.is_empty() {
            return;
        }
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        family.set_metric(metrics);
        self.families.push(family);
    }

    fn counter(&mut self, name: &str, help: &str, samples: impl Iterator<Item = (Labels, f64)>) {
        let metrics = samples
            .map(|(labels, value)| {
                let mut counter = Counter::default();
                counter.set_value(value);
                let mut metric = labelled(labels);
                metric.set_counter(counter);
                metric
            })
            .collect();
        self.add(name, help, MetricType::COUNTER, metrics);
    }

    fn counter_value(&mut self, name: &str, help: &str, value: f64) {
        self.counter(name, help, std::iter::once((Vec::new(), value)));
    }

    fn gauge(&mut self, name: &str, help: &str, samples: impl Iterator<Item = (Labels, f64)>) {
        let metrics = samples
            .map(|(labels, value)| {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                let mut metric = labelled(labels);
                metric.set_gauge(gauge);
                metric
            })
            .collect();
        self.add(name, help, MetricType::GAUGE, metrics);
    }

    fn gauge_value(&mut self, name: &str, help: &str, value: f64) {
        self.gauge(name, help, std::iter::once((Vec::new(), value)));
    }

    /// A histogram whose bounds and sum are divided by `per_unit` (1e6 turns microseconds
    /// into seconds; dividing keeps the bounds exact in the text).
    fn histogram(&mut self, name: &str, help: &str, snapshot: &HistogramSnapshot, per_unit: f64) {
        let metric = histogram_metric(snapshot, per_unit);
        self.add(name, help, MetricType::HISTOGRAM, vec![metric]);
    }
}

fn labelled(labels: Labels) -> Metric {
    let pairs = labels
        .into_iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value);
            pair
        })
        .collect();
    let mut metric = Metric::default();
    metric.set_label(pairs);
    metric
}

/// The text format's cumulative buckets from per-bucket counts; the encoder adds `+Inf`,
/// which equals the count.
fn histogram_metric(snapshot: &HistogramSnapshot, per_unit: f64) -> Metric {
    let mut cumulative = 0;
    let buckets = snapshot
        .bounds
        .iter()
        .zip(&snapshot.buckets)
        .map(|(bound, count)| {
            cumulative += count;
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(*bound as f64 / per_unit);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    let mut histogram = Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(snapshot.count());
    histogram.set_sample_sum(snapshot.sum as f64 / per_unit);
    let mut metric = Metric::default();
    metric.set_histogram(histogram);
    metric
}

#[cfg(test)]
mod tests {
    use super::{Families, MICROSECONDS};
    use prometheus::TextEncoder;
    use strata_shard::metrics::{Histogram, LATENCY_BOUNDS_US};

    fn encode(families: Families) -> String {
        TextEncoder::new().encode_to_string(&families.finish()).expect("encodes")
    }

    #[test]
    fn a_histogram_is_cumulative_in_seconds_with_inf_equal_to_the_count() {
        let histogram = Histogram::new(&LATENCY_BOUNDS_US);
        histogram.record(5, 2);
        histogram.record(30, 1);
        histogram.record(20_000_000, 1);
        let mut families = Families::default();
        families.histogram("strata_test_seconds", "A test.", &histogram.snapshot(), MICROSECONDS);
        let text = encode(families);
        assert!(text.contains("# TYPE strata_test_seconds histogram\n"), "{text}");
        assert!(text.contains("strata_test_seconds_bucket{le=\"0.00001\"} 2\n"), "{text}");
        assert!(text.contains("strata_test_seconds_bucket{le=\"0.000025\"} 2\n"), "{text}");
        assert!(text.contains("strata_test_seconds_bucket{le=\"0.00005\"} 3\n"), "{text}");
        assert!(text.contains("strata_test_seconds_bucket{le=\"10\"} 3\n"), "{text}");
        assert!(text.contains("strata_test_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("strata_test_seconds_count 4\n"), "{text}");
        assert!(text.contains("strata_test_seconds_sum 20.00004\n"), "{text}");
    }

    #[test]
    fn the_archive_status_becomes_counters_and_gauges() {
        let status = serde_json::json!({
            "uploaded_objects": 7, "uploaded_bytes": 4096, "failures": 2,
            "backlog_objects": 3, "backlog_bytes": 1024,
            "bootstrap": {
                "state": "loading", "partitions": 8, "partitions_loaded": 5,
                "bytes_total": 100, "bytes_loaded": 60,
            },
        });
        let mut families = Families::default();
        super::add_archive(&mut families, &status);
        let text = encode(families);
        for line in [
            "strata_archive_uploaded_objects_total 7\n",
            "strata_archive_upload_failures_total 2\n",
            "strata_archive_backlog_bytes 1024\n",
            "strata_bootstrap_state{state=\"loading\"} 1\n",
            "strata_bootstrap_state{state=\"done\"} 0\n",
            "strata_bootstrap_partitions_loaded 5\n",
            "strata_bootstrap_loaded_bytes 60\n",
        ] {
            assert!(text.contains(line), "no {line} in {text}");
        }
    }

    #[test]
    fn families_without_samples_are_left_out_and_labels_are_written() {
        let mut families = Families::default();
        families.gauge("strata_empty", "Nothing.", std::iter::empty());
        families.counter(
            "strata_things_total",
            "Things.",
            [(vec![("kind", "a".to_string())], 3.0)].into_iter(),
        );
        let text = encode(families);
        assert!(!text.contains("strata_empty"), "{text}");
        assert!(text.contains("# HELP strata_things_total Things.\n"), "{text}");
        assert!(text.contains("# TYPE strata_things_total counter\n"), "{text}");
        assert!(text.contains("strata_things_total{kind=\"a\"} 3\n"), "{text}");
    }
}
