//! The admin HTTP API, with Infinity's paths, JSON keys, error codes and statuses (200 on
//! success, 500 with `error_code` and `error_message` otherwise). Deviations from the
//! reference are listed in `docs/admin-api.md`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use strata_core::auth::Password;
use strata_core::cluster::{AdminError, NodeRow, Role};

use crate::roles::{now_ms, Control};

pub(crate) fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/admin/node/current", post(set_role).get(current_node))
        .route("/admin/nodes", get(list_nodes))
        .route("/admin/leader/transfer", post(transfer_leader))
        .route("/admin/cluster/init", post(init_cluster))
        .route("/admin/jobs", get(list_jobs))
        .route("/admin/jobs/{id}", get(show_job))
        .route("/admin/node/{name}", get(show_node).delete(remove_node))
        .route("/admin/variables", get(variables))
        .route("/admin/variables/{name}", get(variable))
        .route("/admin/configs", get(configs))
        .route("/admin/storage", get(storage))
        .route("/metrics", get(crate::metrics::serve))
        .route("/admin/health", get(cluster_health))
        .route("/admin/console", get(crate::console::state))
        .route("/debug/events", get(crate::debug::events))
        .route_layer(middleware::from_fn_with_state(admin_password(&control), require_token))
        .route("/", get(crate::console::page))
        .route("/console.js", get(crate::console::script))
        .route("/console.css", get(crate::console::style))
        .route("/healthz", get(liveness))
        .route("/readyz", get(readiness))
        .with_state(control)
}

/// With `[security] admin_token`: every route above the layer answers 401 without
/// `Authorization: Bearer <token>`. The health routes stay open: they tell a load balancer
/// whether to send traffic, and nothing else. So do the console's page and assets: they hold
/// no data, and the page asks for it with the token.
/// The admin token's digest, computed once: `None` when no token is asked for.
fn admin_password(control: &Control) -> Option<Arc<Password>> {
    let token = control.config.admin_token.as_deref()?;
    Some(Arc::new(Password::new(token.as_bytes())))
}

async fn require_token(
    State(expected): State<Option<Arc<Password>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = expected else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match given {
        // Digests compared in constant time: the timing tells nothing of the token.
        Some(token) if expected.matches(token.as_bytes()) => next.run(request).await,
        _ => unauthorized(given.is_some()),
    }
}

fn unauthorized(token_given: bool) -> Response {
    let error = AdminError::unauthorized(token_given);
    let body = json!({
        "error_code": error.code,
        "error_message": error.message,
        "error_msg": error.message,
    });
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json"), (header::WWW_AUTHENTICATE, "Bearer")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /admin/health`: this node's view of its cluster, with the problems it sees, and the
/// archive's upload backlog where there is one.
async fn cluster_health(State(control): State<Arc<Control>>) -> Response {
    let mut fields = control.cluster_health().json();
    if let Some(upload) = upload_json(&control) {
        fields.insert("upload".into(), upload);
    }
    success(fields)
}

/// The uploader's backlog, failures and last error; `None` when nothing is archived.
pub(crate) fn upload_json(control: &Control) -> Option<Value> {
    let status = (control.config.storage_status.as_ref()?)();
    Some(json!({
        "backlog_objects": status["backlog_objects"],
        "backlog_bytes": status["backlog_bytes"],
        "failures": status["failures"],
        "last_error": status["last_error"],
    }))
}

/// `GET /healthz`: the process serves.
async fn liveness() -> Response {
    reply(StatusCode::OK, &json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the node can do its job in its role, 503 with the reason.
async fn readiness(State(control): State<Arc<Control>>) -> Response {
    let observed = control.observed_health();
    let outcome = crate::health::readiness(&observed);
    let status = if outcome.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    reply(status, &crate::health::readiness_json(&observed, &outcome))
}

fn reply(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

pub(crate) fn success(fields: Map<String, Value>) -> Response {
    let mut body = fields;
    body.insert("error_code".into(), json!(0));
    reply(StatusCode::OK, &Value::Object(body))
}

/// The reference's error body. `error_msg` repeats the message under the key later Infinity
/// versions use, so clients of either read it.
pub(crate) fn failure(error: &AdminError) -> Response {
    let body = json!({
        "error_code": error.code,
        "error_message": error.message,
        "error_msg": error.message,
    });
    reply(StatusCode::INTERNAL_SERVER_ERROR, &body)
}

fn answer(outcome: Result<Map<String, Value>, AdminError>) -> Response {
    match outcome {
        Ok(fields) => success(fields),
        Err(error) => failure(&error),
    }
}

/// `std::ctime` of a time in milliseconds since the epoch: local time, with a trailing newline,
/// as the reference renders `update_time` and `last_update`.
pub(crate) fn ctime(milliseconds: u64) -> String {
    let seconds = (milliseconds / 1000) as libc::time_t;
    let mut buffer = [0 as libc::c_char; 64];
    // SAFETY: ctime_r writes at most 26 bytes into the 64-byte buffer and NUL-terminates it.
    let written = unsafe { libc::ctime_r(&seconds, buffer.as_mut_ptr()) };
    if written.is_null() {
        return String::new();
    }
    // SAFETY: ctime_r succeeded, so the buffer holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned()
}

async fn set_role(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    let request = match crate::json::parse_set_role(&body) {
        Ok(request) => request,
        Err(error) => return failure(&error),
    };
    let what = format!("role change to {}", request.role.name());
    let outcome = control.set_role(request).await;
    note_refusal(&control, &what, &outcome);
    answer(outcome.map(|job| {
        let mut fields = Map::new();
        if let Some(id) = job {
            fields.insert("job_id".into(), json!(id));
        }
        fields
    }))
}

/// Records a refused role change, transfer or removal among the console's events.
fn note_refusal<T>(control: &Control, what: &str, outcome: &Result<T, AdminError>) {
    if let Err(error) = outcome {
        let text = format!("{what} refused ({}): {}", error.code, error.message);
        control.events.record(crate::events::EventKind::Refusal, text);
    }
}

/// `POST /admin/leader/transfer {"to": NAME}`.
async fn transfer_leader(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    let to = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => match fields.get("to") {
            Some(Value::String(to)) => to.clone(),
            _ => return failure(&AdminError::field_required("to")),
        },
        Ok(_) => return failure(&AdminError::invalid_json("the body must be a JSON object")),
        Err(error) => return failure(&AdminError::invalid_json(&error.to_string())),
    };
    let outcome = control.start_transfer(&to).await;
    note_refusal(&control, &format!("leader transfer to {to}"), &outcome);
    answer(outcome.map(|id| {
        let mut fields = Map::new();
        fields.insert("job_id".into(), json!(id));
        fields
    }))
}

/// `POST /admin/cluster/init`.
async fn init_cluster(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    answer(control.init_cluster(&body).await.map(|members| {
        let mut fields = Map::new();
        fields.insert("members".into(), members);
        fields
    }))
}

/// `GET /admin/jobs`.
async fn list_jobs(State(control): State<Arc<Control>>) -> Response {
    answer(control.jobs_json().map(|jobs| {
        let mut fields = Map::new();
        fields.insert("jobs".into(), jobs);
        fields
    }))
}

/// `GET /admin/jobs/{id}`.
async fn show_job(State(control): State<Arc<Control>>, Path(id): Path<String>) -> Response {
    answer(control.job_json(&id).map(|job| {
        let mut fields = Map::new();
        fields.insert("job".into(), job);
        fields
    }))
}

async fn current_node(State(control): State<Arc<Control>>) -> Response {
    let role = control.role();
    let node = if matches!(role, Role::Admin | Role::Standalone) {
        json!({ "role": role.name(), "status": "started" })
    } else {
        let rows = control.rows().unwrap_or_default();
        match rows.first() {
            Some(own) => json!({
                "address": own.address,
                "name": own.name,
                "role": own.role.name(),
                "status": own.status.name(),
                "update_time": ctime(now_ms()),
            }),
            None => json!({ "role": role.name(), "status": "started" }),
        }
    };
    let mut fields = Map::new();
    fields.insert("node".into(), node);
    success(fields)
}

fn row_json(row: &NodeRow, time_key: &str) -> Value {
    let mut node = json!({
        "address": row.address,
        "heartbeat": row.heartbeats.to_string(),
        "name": row.name,
        "role": row.role.name(),
        "status": row.status.name(),
        "lag": row.lag.map_or(String::new(), |lag| lag.to_string()),
    });
    node[time_key] = json!(ctime(row.last_update_ms));
    node
}

async fn list_nodes(State(control): State<Arc<Control>>) -> Response {
    answer(nodes_fields(&control))
}

/// `GET /admin/nodes`'s fields: `nodes`, and the controller's view where there is one.
pub(crate) fn nodes_fields(control: &Control) -> Result<Map<String, Value>, AdminError> {
    let view = control.controller_view();
    control.rows().map(|rows| {
        let mut nodes: Vec<Value> = rows.iter().map(|row| row_json(row, "last_update")).collect();
        let mut fields = Map::new();
        if let Some(view) = &view {
            add_controller_view(&mut nodes, &mut fields, view);
        }
        fields.insert("nodes".into(), Value::Array(nodes));
        fields
    })
}

/// In a cluster with a controller: each node's in-sync flag and controller vote, the members
/// the controller knows that this node does not list (as `timeout`), and the cluster's tag,
/// leader epoch and the member leading the controller.
fn add_controller_view(
    nodes: &mut Vec<Value>,
    fields: &mut Map<String, Value>,
    view: &crate::failover::ControllerView,
) {
    for (name, kind) in &view.members {
        let listed = nodes.iter().any(|node| node["name"] == name.as_str());
        if !listed {
            let role = match (view.data_leader.as_deref() == Some(name.as_str()), kind) {
                (true, _) => "leader",
                (false, strata_core::controller::MemberKind::Voter) => "follower",
                (false, strata_core::controller::MemberKind::Learner) => "learner",
            };
            nodes.push(json!({ "name": name, "role": role, "status": "timeout" }));
        }
    }
    for node in nodes.iter_mut() {
        let name = node["name"].as_str().unwrap_or_default().to_string();
        node["in_sync"] = json!(view.in_sync.contains(&name));
        node["controller"] = json!(if view.controller_leader.as_deref() == Some(name.as_str()) {
            "leader"
        } else if view.voters.contains(&name) {
            "voter"
        } else {
            "learner"
        });
    }
    if let Some(tag) = &view.tag {
        fields.insert(
            "cluster".into(),
            json!({ "name": tag.name, "id": format!("{:032x}", tag.id) }),
        );
    }
    fields.insert("leader_epoch".into(), json!(view.leader_epoch.0));
    fields.insert("controller_leader".into(), json!(view.controller_leader));
}

async fn show_node(State(control): State<Arc<Control>>, Path(name): Path<String>) -> Response {
    answer(control.row(&name).map(|row| {
        let mut fields = Map::new();
        fields.insert("node".into(), row_json(&row, "update_time"));
        fields
    }))
}

async fn remove_node(State(control): State<Arc<Control>>, Path(name): Path<String>) -> Response {
    let outcome = control.remove(&name).await;
    note_refusal(&control, &format!("removal of {name}"), &outcome);
    answer(outcome.map(|job| {
        let mut fields = Map::new();
        fields.insert("message".into(), json!(format!("Node {name} removed successfully.")));
        if let Some(id) = job {
            fields.insert("job_id".into(), json!(id));
        }
        fields
    }))
}

/// Variables and configs are shown in admin mode only, as in the reference.
fn admin_only(control: &Control) -> Result<(), AdminError> {
    if control.role() == Role::Admin {
        Ok(())
    } else {
        Err(AdminError::only_maintenance())
    }
}

async fn variables(State(control): State<Arc<Control>>) -> Response {
    answer(admin_only(&control).map(|()| {
        let mut fields = Map::new();
        fields.insert("role".into(), json!(control.role().name()));
        fields
    }))
}

async fn variable(State(control): State<Arc<Control>>, Path(name): Path<String>) -> Response {
    let lowered = name.to_lowercase();
    let outcome = if control.role() != Role::Admin && lowered != "server_role" {
        Err(AdminError::only_maintenance())
    } else if lowered == "role" {
        let mut fields = Map::new();
        fields.insert(name, json!(control.role().name()));
        Ok(fields)
    } else {
        Err(AdminError::no_such_variable(&lowered))
    };
    answer(outcome)
}

/// Beyond Infinity: the archive (whether shared storage is configured, and where) and the
/// uploader (backlog, failures, last error).
async fn storage(State(control): State<Arc<Control>>) -> Response {
    let mut fields = Map::new();
    match &control.config.storage_status {
        Some(status) => {
            fields.insert("shared_storage".into(), json!(true));
            if let Value::Object(status) = status() {
                fields.extend(status);
            }
        }
        None => {
            fields.insert("shared_storage".into(), json!(false));
        }
    }
    success(fields)
}

async fn configs(State(control): State<Arc<Control>>) -> Response {
    answer(admin_only(&control).map(|()| {
        control.config.configs.iter().map(|(name, value)| (name.clone(), json!(value))).collect()
    }))
}
