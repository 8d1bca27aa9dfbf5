//! `GET /debug/events?since=<sequence>`: the shards' timestamped events (slow syncs, segment
//! rolls, snapshots, replica streams: `strata_shard::events`) from a sequence number on, with
//! the counters that move on every round, read at the same moment. `strata bench
//! --events-from` polls it to put the node's doings on its latency timeline.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{json, Map, Value};
use strata_core::cluster::AdminError;
use strata_shard::events::{unix_micros, EventPage, TimedEvent};
use strata_shard::metrics::NodeMetrics;

use crate::roles::Control;

/// `GET /debug/events`.
pub(crate) async fn events(
    State(control): State<Arc<Control>>,
    RawQuery(query): RawQuery,
) -> Response {
    let since = match since_parameter(query.as_deref()) {
        Ok(since) => since,
        Err(error) => return crate::http::failure(&error),
    };
    let metrics = &control.handle.metrics;
    let page = metrics.events.since(since);
    let mut counters = counters_json(metrics);
    if let Some(status) = control.config.storage_status.as_ref().map(|status| status()) {
        for name in ["uploaded_objects", "uploaded_bytes"] {
            counters.insert(name.into(), json!(status[name].as_u64().unwrap_or(0)));
        }
    }
    crate::http::success(page_json(&page, counters))
}

/// The `since` query parameter; 0 when absent.
fn since_parameter(query: Option<&str>) -> Result<u64, AdminError> {
    let mut since = 0;
    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "since" {
            since = value.parse().map_err(|_| AdminError::invalid_parameter(name, value))?;
        }
    }
    Ok(since)
}

/// The counters that move on every group-commit round, summed over the shards.
fn counters_json(metrics: &NodeMetrics) -> Map<String, Value> {
    let counters = metrics.counters();
    let wal_bytes: u64 = metrics.shards().iter().map(|shard| shard.wal_bytes_written()).sum();
    let waits = metrics.histogram(|shard| &shard.replication_wait_us);
    let mut map = Map::new();
    for (name, value) in [
        ("commands_processed", counters.commands_processed),
        ("frames_written", counters.frames_written),
        ("syncs", counters.syncs),
        ("fdatasyncs", counters.fdatasyncs),
        ("snapshots_written", counters.snapshots_written),
        ("wal_bytes_written", wal_bytes),
        ("replication_waits", waits.count()),
        ("replication_wait_us", waits.sum),
    ] {
        map.insert(name.into(), json!(value));
    }
    map
}

fn page_json(page: &EventPage, counters: Map<String, Value>) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("now_unix_us".into(), json!(unix_micros(SystemTime::now())));
    fields.insert("next_sequence".into(), json!(page.next_sequence));
    fields.insert("dropped".into(), json!(page.dropped));
    fields.insert("counters".into(), Value::Object(counters));
    fields.insert("events".into(), page.events.iter().map(event_json).collect());
    fields
}

fn event_json(event: &TimedEvent) -> Value {
    json!({
        "sequence": event.sequence,
        "unix_us": event.unix_us,
        "kind": event.kind.name(),
        "partition": event.partition.map(|partition| partition.0),
        "micros": event.micros,
        "detail": event.detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_read_from_the_query_and_a_bad_one_is_refused() {
        assert_eq!(since_parameter(None), Ok(0));
        assert_eq!(since_parameter(Some("")), Ok(0));
        assert_eq!(since_parameter(Some("since=42")), Ok(42));
        assert_eq!(since_parameter(Some("other=x&since=7")), Ok(7));
        let error = since_parameter(Some("since=-1")).unwrap_err();
        assert_eq!(error.code, 3067);
        assert!(error.message.contains("since"), "{}", error.message);
        assert!(since_parameter(Some("since=")).is_err());
    }
}
