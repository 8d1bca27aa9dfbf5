//! The live web console at `/`: one page, its script and its style sheet, embedded in the
//! binary (nothing is fetched from elsewhere), and `GET /admin/console`, the state the page
//! polls every second. The sampler behind the page's chart runs here too.
//!
//! The page and its assets hold no data and are served without the admin token; the page
//! sends the token with each request for the state (see `docs/admin-api.md`).

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use strata_core::cluster::Role;
use strata_shard::metrics::{CommandKind, ErrorKind, NodeMetrics, LATENCY_BOUNDS_US};

use crate::events::EventKind;
use crate::roles::{now_ms, Control};
use crate::series::{Sample, Series, SAMPLES_MAX};

/// How often the sampler reads the node's counters.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Only this origin's script, style and requests; no frames, plugins or forms elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

/// `GET /`: the console's page.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /console.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The address may carry the token once: it is sent to no other page.
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /admin/console`: this node, its members, its health, the upload backlog, the
/// throughput and p99 series and the recent events.
pub(crate) async fn state(State(control): State<Arc<Control>>) -> Response {
    let mut fields = Map::new();
    let health = control.cluster_health();
    let role = health.observed.role;
    let mut members = match crate::http::nodes_fields(&control) {
        Ok(mut nodes) => {
            fields.extend(
                ["leader_epoch", "controller_leader", "cluster"]
                    .into_iter()
                    .filter_map(|key| nodes.remove(key).map(|value| (key.to_string(), value))),
            );
            nodes.remove("nodes").unwrap_or(Value::Array(Vec::new()))
        }
        Err(_) => Value::Array(Vec::new()),
    };
    add_leader_view_of_in_sync(&mut members, &health);
    let mut health_fields = health.json();
    health_fields.remove("members");
    fields.insert(
        "node".into(),
        json!({
            "name": health.name,
            "role": role.name(),
            "epoch": control.handle.shared.epoch().0,
            "time_ms": now_ms(),
        }),
    );
    fields.insert("members".into(), members);
    fields.insert("health".into(), Value::Object(health_fields));
    fields.insert("upload".into(), crate::http::upload_json(&control).unwrap_or(Value::Null));
    fields.insert("series".into(), series_json(&control.series()));
    fields.insert("events".into(), control.events.json());
    crate::http::success(fields)
}

/// Without a controller, `in_sync` comes from the leader's own view (the health's); the
/// leader itself is in sync by definition, a member that is not alive is not. Rows that have
/// it from the controller keep it.
fn add_leader_view_of_in_sync(members: &mut Value, health: &crate::health::ClusterHealth) {
    let Some(members) = members.as_array_mut() else { return };
    for member in members {
        if member.get("in_sync").is_some() {
            continue;
        }
        let name = member["name"].as_str().unwrap_or_default();
        let in_sync = if name == health.name && health.observed.role == Role::Leader {
            Some(true)
        } else if member["status"] != "alive" {
            Some(false)
        } else {
            health.members.iter().find(|other| other.name == name).and_then(|other| other.in_sync)
        };
        member["in_sync"] = json!(in_sync);
    }
}

/// The series as parallel arrays, oldest first, which the page charts as they are.
fn series_json(series: &Series) -> Value {
    let points = series.points(&LATENCY_BOUNDS_US);
    let round = |value: f64| (value * 1000.0).round() / 1000.0;
    json!({
        "interval_ms": SAMPLE_INTERVAL.as_millis() as u64,
        "samples_max": SAMPLES_MAX,
        "time_ms": points.iter().map(|point| point.wall_ms).collect::<Vec<_>>(),
        "commands_per_second":
            points.iter().map(|point| round(point.commands_per_second)).collect::<Vec<_>>(),
        "errors_per_second":
            points.iter().map(|point| round(point.errors_per_second)).collect::<Vec<_>>(),
        "p99_ms": points.iter().map(|point| point.p99_ms.map(round)).collect::<Vec<_>>(),
    })
}

/// Reads the node's counters every second into the series, and records when this leader
/// starts or stops refusing writes for lack of in-sync members. Runs as long as the control
/// thread.
pub(crate) async fn sample_every_second(control: Arc<Control>) {
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut refusing_before = 0;
    loop {
        ticks.tick().await;
        let sample = read_sample(&control.handle.metrics);
        control.series().push(sample);
        refusing_before = note_refusals(&control, refusing_before);
    }
}

/// One pass over the shards' counters and the reply-latency histogram.
fn read_sample(metrics: &NodeMetrics) -> Sample {
    let mut commands = 0;
    let mut errors = 0;
    for shard in metrics.shards() {
        commands += CommandKind::ALL.iter().map(|kind| shard.commands(*kind)).sum::<u64>();
        errors += ErrorKind::ALL.iter().map(|kind| shard.errors(*kind)).sum::<u64>();
    }
    Sample {
        wall_ms: now_ms(),
        moment_ms: strata_shard::monotonic_ms(),
        commands,
        errors,
        latency_buckets: metrics.histogram(|shard| &shard.reply_latency_us).buckets,
    }
}

/// Records a change in the partitions refusing writes; answers how many refuse now.
fn note_refusals(control: &Control, before: usize) -> usize {
    let now = if control.role() == Role::Leader {
        control.handle.shared.refusing_partitions()
    } else {
        0
    };
    if before == 0 && now > 0 {
        let text = format!(
            "{now} partitions refuse writes: fewer members in sync than min_insync_replicas ({})",
            control.config.min_insync_replicas
        );
        control.events.record(EventKind::Refusal, text);
    } else if before > 0 && now == 0 {
        control.events.record(EventKind::Refusal, "writes are accepted again");
    }
    now
}

impl Control {
    /// The console's series; the lock is held only to push or read, never across an await.
    pub(crate) fn series(&self) -> MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
