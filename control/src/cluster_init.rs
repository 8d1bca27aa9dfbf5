//! `POST /admin/cluster/init` (Ignite's `cluster init`): makes a cluster in one call on the
//! node that will lead it. The body names the members by their admin HTTP addresses:
//!
//! ```json
//! {"name": "harry",
//!  "followers": [{"name": "hermione", "admin": "10.0.0.2:23821"}],
//!  "learners":  [{"name": "ron", "admin": "10.0.0.3:23821"}]}
//! ```
//!
//! This node leads (a new cluster with a controller), then asks each member's admin API to
//! follow or learn from it, in order; the answer lists what each member said.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use strata_core::cluster::{AdminError, Role};

use crate::json::SetRole;
use crate::roles::Control;

/// How long one member's role call may take (a follower's includes its catch-up).
const MEMBER_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Members one init names at most.
const MEMBERS_MAX: usize = 256;

/// One member to give a role to.
struct Joiner {
    name: String,
    role: Role,
    admin: String,
}

impl Control {
    /// Makes the cluster the body describes; answers each member's outcome.
    pub(crate) async fn init_cluster(self: &Arc<Self>, body: &[u8]) -> Result<Value, AdminError> {
        let (name, joiners) = parse_init(body)?;
        if self.controller().is_none() && self.role() != Role::Admin {
            return Err(AdminError::controller_refused(
                "a cluster starts from a node in admin mode",
            ));
        }
        let lead =
            SetRole { role: Role::Leader, name: Some(name.clone()), address: None, force: false };
        self.set_role(lead).await?;
        let peer = self.config.advertised_address.clone();
        let mut outcomes = Vec::new();
        for joiner in joiners {
            let body = json!({ "role": joiner.role.name(), "name": joiner.name, "address": peer });
            let path = "/admin/node/current";
            let answer = post_json(self, &joiner.admin, path, &body.to_string()).await;
            let outcome = match answer {
                Ok(answer) if answer["error_code"] == 0 => json!("ok"),
                Ok(answer) => answer["error_message"].clone(),
                Err(reason) => json!(reason),
            };
            outcomes.push(
                json!({ "name": joiner.name, "role": joiner.role.name(), "outcome": outcome }),
            );
        }
        Ok(Value::Array(outcomes))
    }
}

fn parse_init(body: &[u8]) -> Result<(String, Vec<Joiner>), AdminError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| AdminError::invalid_json(&error.to_string()))?;
    let name = value["name"].as_str().ok_or_else(|| AdminError::field_required("name"))?;
    strata_core::cluster::validate_name(name)?;
    let mut joiners = Vec::new();
    for (field, role) in [("followers", Role::Follower), ("learners", Role::Learner)] {
        let listed = match &value[field] {
            Value::Null => continue,
            Value::Array(listed) => listed,
            _ => return Err(AdminError::invalid_json(&format!("{field} must be a list"))),
        };
        for member in listed {
            let (Some(member_name), Some(admin)) =
                (member["name"].as_str(), member["admin"].as_str())
            else {
                return Err(AdminError::invalid_json(&format!(
                    "each of {field} needs \"name\" and \"admin\" (its admin ip:port)"
                )));
            };
            strata_core::cluster::validate_name(member_name)?;
            joiners.push(Joiner { name: member_name.into(), role, admin: admin.into() });
        }
    }
    if joiners.len() > MEMBERS_MAX {
        return Err(AdminError::invalid_json(&format!("at most {MEMBERS_MAX} members")));
    }
    Ok((name.to_string(), joiners))
}

/// One JSON POST to another node's admin API, with this node's admin token (the members of a
/// cluster share one). The blocking client runs on the runtime's blocking pool.
/// Over HTTPS when this node serves its admin API so (`[security] admin_tls`): the members do
/// too, with certificates the cluster's CA (`tls_ca_file`) signed.
async fn post_json(
    control: &Control,
    address: &str,
    path: &str,
    body: &str,
) -> Result<Value, String> {
    let builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(MEMBER_CALL_TIMEOUT));
    let (agent, scheme): (ureq::Agent, _) =
        match (&control.config.admin_tls, &control.config.admin_ca) {
            (None, _) => (builder.build().into(), "http"),
            (Some(_), Some(trusted)) => {
                (builder.tls_config(crate::https_trusting(trusted)).build().into(), "https")
            }
            (Some(_), None) => {
                return Err("the admin API is served over HTTPS (admin_tls): set [security] \
                        tls_ca_file to the CA that signs the members' certificates"
                    .to_string())
            }
        };
    let token = control.config.admin_token.as_deref();
    let mut request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{scheme}://{address}{path}"))
        .header("Content-Type", "application/json");
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let request = request.body(body.to_string()).map_err(|error| error.to_string())?;
    let address = address.to_string();
    let exchange = move || -> Result<Value, String> {
        let mut response = agent.run(request).map_err(|error| match error {
            ureq::Error::Timeout(_) => {
                format!("{address} did not answer in {MEMBER_CALL_TIMEOUT:?}")
            }
            error => format!("cannot reach {address}: {error}"),
        })?;
        let text = response.body_mut().read_to_string().map_err(|error| error.to_string())?;
        serde_json::from_str::<Value>(&text).map_err(|error| format!("not JSON: {error}"))
    };
    tokio::task::spawn_blocking(exchange).await.map_err(|error| error.to_string())?
}
