//! `strata ctl`: a small client of the admin HTTP API that prints tables (or the JSON with
//! `--json`), and the blocking HTTP exchange `strata demo` uses too.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Args, Debug)]
pub struct CtlOptions {
    /// The node's admin HTTP address.
    #[arg(long, default_value = "127.0.0.1:23820")]
    pub http: String,
    /// The node's `[security] admin_token`, sent as a bearer token.
    #[arg(long, env = "STRATA_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the admin token (its trailing newline cut), instead of --token.
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// The admin API is served over TLS (`[security] admin_tls`): trust the certificates this
    /// PEM file holds (the CA that signed the node's certificate), and speak HTTPS.
    #[arg(long, env = "STRATA_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Every node of the cluster, as this node sees it (ADMIN LIST NODES).
    Nodes,
    /// One node by name (ADMIN SHOW NODE), or this node with `current`.
    Node { name: String },
    /// Set this node's role (ADMIN SET NODE ROLE).
    SetRole {
        /// admin, standalone, leader, follower or learner.
        role: String,
        /// The node's name in the cluster (leader, follower, learner).
        #[arg(long)]
        name: Option<String>,
        /// The leader's peer address, ip:port (follower, learner).
        #[arg(long)]
        address: Option<String>,
    },
    /// Remove a node from the cluster (ADMIN REMOVE NODE; ask the leader, or any member with
    /// automatic failover).
    Remove { name: String },
    /// Hand the leadership to a follower (automatic failover): waits for the job to end,
    /// showing its progress, unless --no-wait.
    Transfer {
        to: String,
        /// Print the job's id and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// The controller's jobs (transfers, removals).
    Jobs,
    /// One job by id.
    Job { id: u64 },
    /// Make a cluster in one go, as Ignite's `cluster init`: the leader first, then each
    /// follower and learner joins it. Each member is NAME@ADMIN_ADDRESS (ip:http_port) of a
    /// node started in admin mode.
    Init {
        #[arg(long)]
        leader: String,
        #[arg(long)]
        follower: Vec<String>,
        #[arg(long)]
        learner: Vec<String>,
    },
    /// This node's variables (admin mode only).
    Variables,
    /// This node's configuration (admin mode only).
    Configs,
    /// The cluster's state at a glance, as this node sees it (ask the leader): every member
    /// answers, a leader exists, the in-sync sets are large enough, lag, upload backlog.
    /// Exits 1 when something is wrong.
    Health,
}

/// A node's admin API: its address, the bearer token it asks for, if any, and the
/// certificates to trust when it is served over TLS.
#[derive(Clone, Debug)]
pub struct Admin {
    pub address: String,
    pub token: Option<String>,
    pub trusted: Option<Vec<ureq::tls::Certificate<'static>>>,
}

impl Admin {
    /// The admin API `options` name, with the token from `--token` or `--token-file`.
    ///
    /// # Errors
    ///
    /// When the token file cannot be read.
    pub fn of(options: &CtlOptions) -> Result<Admin, String> {
        let token = match &options.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => options.token.clone(),
        };
        let trusted = match &options.ca_file {
            Some(path) => Some(trusted_certificates(path)?),
            None => None,
        };
        let token = token.filter(|token| !token.is_empty());
        Ok(Admin { address: options.http.clone(), token, trusted })
    }

    /// The agent for this node: HTTPS trusting only the given certificates, or plain HTTP.
    fn agent(&self) -> (ureq::Agent, &'static str) {
        let builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)));
        let Some(trusted) = &self.trusted else {
            return (builder.build().into(), "http");
        };
        let tls = strata_control::https_trusting(trusted);
        (builder.tls_config(tls).build().into(), "https")
    }
}

/// The certificates of a PEM file.
pub fn trusted_certificates(
    path: &std::path::Path,
) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let certificates: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(certificate)) => Some(certificate),
            _ => None,
        })
        .collect();
    if certificates.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certificates)
}

/// An HTTP response: status code and body.
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// One HTTP exchange with a node's admin API; any status is an answer.
///
/// # Errors
///
/// A message when the node cannot be reached or answers something that is not HTTP.
pub fn http(
    admin: &Admin,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<HttpResponse, String> {
    let address = &admin.address;
    let (agent, scheme) = admin.agent();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{scheme}://{address}{path}"))
        .header("Accept", "application/json")
        .header("Content-Type", "application/json");
    if let Some(token) = &admin.token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(body.unwrap_or("").to_string())
        .map_err(|error| format!("{address}: {error}"))?;
    let mut response = agent.run(request).map_err(|error| match error {
        ureq::Error::Io(error) => format!("cannot reach {address}: {error}"),
        error => format!("{address}: {error}"),
    })?;
    let status = response.status().as_u16();
    let body =
        response.body_mut().read_to_string().map_err(|error| format!("{address}: {error}"))?;
    Ok(HttpResponse { status, body })
}

fn request_of(command: &CtlCommand) -> (&'static str, String, Option<String>) {
    match command {
        CtlCommand::Nodes => ("GET", "/admin/nodes".into(), None),
        CtlCommand::Node { name } => ("GET", format!("/admin/node/{name}"), None),
        CtlCommand::SetRole { role, name, address } => {
            let mut body = serde_json::Map::new();
            body.insert("role".into(), Value::from(role.as_str()));
            if let Some(name) = name {
                body.insert("name".into(), Value::from(name.as_str()));
            }
            if let Some(address) = address {
                body.insert("address".into(), Value::from(address.as_str()));
            }
            ("POST", "/admin/node/current".into(), Some(Value::Object(body).to_string()))
        }
        CtlCommand::Remove { name } => ("DELETE", format!("/admin/node/{name}"), None),
        CtlCommand::Transfer { to, .. } => {
            let body = serde_json::json!({ "to": to }).to_string();
            ("POST", "/admin/leader/transfer".into(), Some(body))
        }
        CtlCommand::Jobs => ("GET", "/admin/jobs".into(), None),
        CtlCommand::Job { id } => ("GET", format!("/admin/jobs/{id}"), None),
        CtlCommand::Init { .. } => ("GET", "/admin/configs".into(), None),
        CtlCommand::Variables => ("GET", "/admin/variables".into(), None),
        CtlCommand::Configs => ("GET", "/admin/configs".into(), None),
        CtlCommand::Health => ("GET", "/admin/health".into(), None),
    }
}

pub fn run(options: &CtlOptions) -> ExitCode {
    let admin = match Admin::of(options) {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("strata ctl: {error}");
            return ExitCode::from(2);
        }
    };
    if let CtlCommand::Init { leader, follower, learner } = &options.command {
        return match init_cluster(&admin, leader, follower, learner) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("strata ctl init: {error}");
                ExitCode::from(1)
            }
        };
    }
    let (method, path, body) = request_of(&options.command);
    let response = match http(&admin, method, &path, body.as_deref()) {
        Ok(response) => response,
        Err(error) => {
            eprintln!("strata ctl: {error}");
            return ExitCode::from(2);
        }
    };
    let Ok(value) = serde_json::from_str::<Value>(&response.body) else {
        eprintln!("strata ctl: HTTP {}: {}", response.status, response.body);
        return ExitCode::from(1);
    };
    if options.json {
        println!("{value}");
    } else if value["error_code"] != 0 {
        eprintln!(
            "error {}: {}",
            value["error_code"],
            value["error_message"].as_str().unwrap_or("")
        );
    } else {
        print!("{}", render(&options.command, &value));
    }
    if value["error_code"] != 0 {
        return ExitCode::from(1);
    }
    match &options.command {
        CtlCommand::Transfer { no_wait: false, .. } => {
            let id = value["job_id"].as_u64().unwrap_or_default();
            wait_for_job(&admin, id)
        }
        // A join through the controller: its job follows the catch-up.
        CtlCommand::SetRole { .. } => match value["job_id"].as_u64() {
            Some(id) => wait_for_job(&admin, id),
            None => ExitCode::SUCCESS,
        },
        CtlCommand::Health if value["healthy"] != true => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

/// Polls job `id` until it ends, showing its progress; exits non-zero when it failed.
fn wait_for_job(admin: &Admin, id: u64) -> ExitCode {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(100));
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while std::time::Instant::now() < deadline {
        let shown = http(admin, "GET", &format!("/admin/jobs/{id}"), None)
            .ok()
            .and_then(|response| serde_json::from_str::<Value>(&response.body).ok());
        if let Some(job) = shown.as_ref().map(|value| &value["job"]) {
            let state = job["state"].as_str().unwrap_or("");
            spinner.set_message(format!(
                "job {id}: {state}: {}",
                job["progress"].as_str().unwrap_or("")
            ));
            if state == "done" {
                spinner.finish_with_message(format!("job {id}: done"));
                return ExitCode::SUCCESS;
            }
            if state == "failed" {
                let error = job["error"].as_str().unwrap_or("").to_string();
                spinner.finish_with_message(format!("job {id}: failed: {error}"));
                return ExitCode::from(1);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    spinner.finish_with_message(format!("job {id}: still running after 600 s"));
    ExitCode::from(1)
}

/// `strata ctl init`: `POST /admin/cluster/init` on the leader-to-be with the member list;
/// prints what each member answered, and fails when one did not join.
fn init_cluster(
    admin: &Admin,
    leader: &str,
    followers: &[String],
    learners: &[String],
) -> Result<(), String> {
    let (leader_name, leader_http) = member(leader)?;
    let listed = |texts: &[String]| -> Result<Vec<Value>, String> {
        texts
            .iter()
            .map(|text| {
                member(text)
                    .map(|(name, admin)| serde_json::json!({ "name": name, "admin": admin }))
            })
            .collect()
    };
    let body = serde_json::json!({
        "name": leader_name,
        "followers": listed(followers)?,
        "learners": listed(learners)?,
    });
    let leader_admin = Admin { address: leader_http.to_string(), ..admin.clone() };
    let response = http(&leader_admin, "POST", "/admin/cluster/init", Some(&body.to_string()))?;
    let value: Value = serde_json::from_str(&response.body).map_err(|error| error.to_string())?;
    if value["error_code"] != 0 {
        return Err(format!("error {}: {}", value["error_code"], value["error_message"]));
    }
    println!("{leader_name}: leader");
    let mut failed = false;
    for member in value["members"].as_array().map_or(&[][..], Vec::as_slice) {
        let outcome = member["outcome"].as_str().unwrap_or("?");
        failed |= outcome != "ok";
        println!(
            "{}: {} ({outcome})",
            member["name"].as_str().unwrap_or("?"),
            member["role"].as_str().unwrap_or("?")
        );
    }
    if failed {
        return Err("some members did not join".into());
    }
    Ok(())
}

/// NAME@ADDRESS.
fn member(text: &str) -> Result<(&str, &str), String> {
    text.split_once('@').ok_or_else(|| format!("{text:?} is not NAME@ADMIN_ADDRESS"))
}

/// The table or lines `strata ctl` prints for a successful answer.
pub fn render(command: &CtlCommand, value: &Value) -> String {
    match command {
        CtlCommand::Nodes => node_table(value["nodes"].as_array().map_or(&[][..], Vec::as_slice)),
        CtlCommand::Node { .. } => node_table(std::slice::from_ref(&value["node"])),
        CtlCommand::SetRole { .. } => match value["job_id"].as_u64() {
            Some(id) => format!("OK, joining: job {id}\n"),
            None => "OK\n".into(),
        },
        CtlCommand::Remove { .. } => format!("{}\n", value["message"].as_str().unwrap_or("OK")),
        CtlCommand::Transfer { .. } => format!("job {}\n", value["job_id"]),
        CtlCommand::Jobs => job_table(value["jobs"].as_array().map_or(&[][..], Vec::as_slice)),
        CtlCommand::Job { .. } => job_table(std::slice::from_ref(&value["job"])),
        CtlCommand::Init { .. } => String::new(),
        CtlCommand::Health => health_text(value),
        CtlCommand::Variables | CtlCommand::Configs => {
            let Some(object) = value.as_object() else { return String::new() };
            let mut lines = String::new();
            for (key, field) in object.iter().filter(|(key, _)| *key != "error_code") {
                lines.push_str(&format!(
                    "{key:<24} {}\n",
                    field.as_str().map_or_else(|| field.to_string(), str::to_string)
                ));
            }
            lines
        }
    }
}

/// `strata ctl health`: a verdict, the problems, then the members.
fn health_text(value: &Value) -> String {
    let text = |field: &Value| field.as_str().unwrap_or("").to_string();
    let mut lines =
        if value["healthy"] == true { "healthy\n".to_string() } else { "UNHEALTHY\n".to_string() };
    for problem in value["problems"].as_array().map_or(&[][..], Vec::as_slice) {
        lines.push_str(&format!("  - {}\n", text(problem)));
    }
    let role = text(&value["role"]);
    if matches!(role.as_str(), "admin" | "standalone") {
        lines.push_str(&format!("node in {role} mode\n"));
    } else {
        lines.push_str(&format!(
            "node {} ({role}), leader {}, smallest in-sync set {} (min_insync_replicas {})\n",
            text(&value["name"]),
            value["leader"].as_str().unwrap_or("(none)"),
            value["smallest_in_sync_set"].as_u64().map_or("-".into(), |size| size.to_string()),
            value["min_insync_replicas"],
        ));
    }
    if value["upload"].is_object() {
        let upload = &value["upload"];
        lines.push_str(&format!(
            "upload backlog: {} objects, {} bytes; {} failures\n",
            upload["backlog_objects"], upload["backlog_bytes"], upload["failures"]
        ));
    }
    let members = value["members"].as_array().map_or(&[][..], Vec::as_slice);
    if !members.is_empty() {
        lines.push_str(&format!(
            "{:<16} {:<10} {:<16} {:<8} {:>8}\n",
            "NAME", "ROLE", "STATUS", "IN SYNC", "LAG"
        ));
    }
    for member in members {
        let in_sync =
            member["in_sync"].as_bool().map_or("", |in_sync| if in_sync { "yes" } else { "no" });
        let lag = member["lag"].as_u64().map_or(String::new(), |lag| lag.to_string());
        lines.push_str(&format!(
            "{:<16} {:<10} {:<16} {in_sync:<8} {lag:>8}\n",
            text(&member["name"]),
            text(&member["role"]),
            text(&member["status"]),
        ));
    }
    lines
}

/// A fixed-width table of jobs: id, kind, subject, runner, state, progress or error.
fn job_table(jobs: &[Value]) -> String {
    let mut table = format!(
        "{:>4} {:<9} {:<16} {:<16} {:<8} {}\n",
        "ID", "KIND", "SUBJECT", "RUNNER", "STATE", "DETAIL"
    );
    for job in jobs {
        let text = |key: &str| job[key].as_str().unwrap_or("").to_string();
        let detail = if job["error"].is_string() { text("error") } else { text("progress") };
        table.push_str(&format!(
            "{:>4} {:<9} {:<16} {:<16} {:<8} {detail}\n",
            job["id"],
            text("kind"),
            text("subject"),
            text("runner"),
            text("state")
        ));
    }
    table
}

/// A fixed-width table of nodes: name, role, status, address, heartbeats, lag, last update.
pub fn node_table(nodes: &[Value]) -> String {
    let field = |node: &Value, key: &str| node[key].as_str().unwrap_or("").trim_end().to_string();
    let mut table = format!(
        "{:<16} {:<10} {:<16} {:<22} {:>9} {:>8}  {}\n",
        "NAME", "ROLE", "STATUS", "ADDRESS", "HEARTBEAT", "LAG", "LAST UPDATE"
    );
    for node in nodes {
        let updated = if node["last_update"].is_string() {
            field(node, "last_update")
        } else {
            field(node, "update_time")
        };
        table.push_str(&format!(
            "{:<16} {:<10} {:<16} {:<22} {:>9} {:>8}  {}\n",
            field(node, "name"),
            field(node, "role"),
            field(node, "status"),
            field(node, "address"),
            field(node, "heartbeat"),
            field(node, "lag"),
            updated
        ));
    }
    table
}
