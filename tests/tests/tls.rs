//! The three ports over TLS (`[security] admin_tls`, `client_tls`, `peer_tls`), with
//! certificates the test makes: a client trusting the node's CA gets its answers, plaintext
//! and clients trusting another CA get nothing; nodes replicate over TLS and refuse a node
//! whose certificate another CA signed, or that speaks plaintext; bad TLS settings stop the
//! node with the key named.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use strata_tests::{run_tool, strata_binary, NodeSettings, TestNode};

/// A CA and a certificate it signed for 127.0.0.1, as PEM files in `directory`.
struct Certificates {
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
}

/// A certificate authority the test made: it signs node certificates.
struct Authority {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
    file: PathBuf,
}

impl Authority {
    fn new(directory: &Path, name: &str) -> Authority {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let key = rcgen::KeyPair::generate().expect("CA key");
        let certificate = params.self_signed(&key).expect("CA certificate");
        let file = directory.join(format!("{name}-ca.pem"));
        std::fs::write(&file, certificate.pem()).expect("write PEM");
        Authority { certificate, key, file }
    }

    /// A certificate for 127.0.0.1 (and localhost) named `name`, signed by this CA.
    fn issue(&self, directory: &Path, name: &str) -> Certificates {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("node key");
        let node = params.signed_by(&key, &self.certificate, &self.key).expect("certificate");
        let write = |file: &str, text: String| {
            let path = directory.join(format!("{name}-{file}"));
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Certificates {
            ca: self.file.clone(),
            certificate: write("node.pem", node.pem()),
            key: write("node-key.pem", key.serialize_pem()),
        }
    }
}

fn make_certificates(directory: &Path, name: &str) -> Certificates {
    Authority::new(directory, name).issue(directory, name)
}

fn tls_lines(certificates: &Certificates) -> String {
    format!(
        "admin_tls = true\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        certificates.certificate.display().to_string(),
        certificates.key.display().to_string()
    )
}

/// `GET path` over HTTPS trusting `ca`: the status, or why there was none.
fn https_get(port: u16, ca: &Path, path: &str) -> Result<u16, String> {
    let pem = std::fs::read(ca).expect("CA file");
    let trusted: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(certificate)) => Some(certificate),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .root_certs(ureq::tls::RootCerts::new_with_certs(&trusted))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls)
        .build()
        .into();
    let url = format!("https://127.0.0.1:{port}{path}");
    agent.get(&url).call().map(|response| response.status().as_u16()).map_err(|e| e.to_string())
}

fn ctl(node: &TestNode, ca: &Path, arguments: &[&str]) -> (i32, String) {
    let output = Command::new(strata_binary())
        .args(["ctl", "--http", &format!("127.0.0.1:{}", node.http_port)])
        .arg("--ca-file")
        .arg(ca)
        .args(arguments)
        .output()
        .expect("run strata ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn the_admin_api_over_tls_answers_only_clients_that_trust_its_ca() {
    let directory = tempfile::tempdir().expect("tempdir");
    let own = make_certificates(directory.path(), "own");
    let other = make_certificates(directory.path(), "other");
    let node = TestNode::start(NodeSettings { security: tls_lines(&own), ..Default::default() });

    assert_eq!(https_get(node.http_port, &own.ca, "/readyz"), Ok(200));
    let (code, out) = ctl(&node, &own.ca, &["health"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("standalone"), "{out}");

    // Plain HTTP gets no answer.
    let plain = strata_tests::admin::try_request(
        node.http_port,
        "GET",
        "/readyz",
        None,
        Duration::from_secs(5),
    );
    assert!(plain.is_err() || plain.as_ref().is_ok_and(|reply| reply.status != 200), "{plain:?}");
    // A client trusting another CA refuses the node's certificate, and gets nothing.
    let refused = https_get(node.http_port, &other.ca, "/readyz");
    assert!(refused.is_err(), "{refused:?}");
    let (code, out) = ctl(&node, &other.ca, &["health"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");
    let logged = strata_tests::admin::wait_until(Duration::from_secs(5), || {
        node.log().contains("TLS handshake failed")
    });
    assert!(logged, "{}", node.log());
}

#[test]
fn bad_tls_settings_stop_the_node_naming_the_key() {
    let directory = tempfile::tempdir().expect("tempdir");
    let own = make_certificates(directory.path(), "own");
    let other = make_certificates(directory.path(), "other");
    let config = directory.path().join("strata.toml");
    let check = |security: &str| {
        std::fs::write(&config, format!("[security]\n{security}")).expect("write config");
        let path = config.display().to_string();
        let binary = strata_binary();
        run_tool(binary.to_str().expect("path"), &["node", "--config", &path, "--check-config"])
    };
    let (ok, _, err) = check("admin_tls = true\n");
    assert!(!ok && err.contains("security.tls_cert_file"), "{err}");
    let mismatched = format!(
        "admin_tls = true\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        own.certificate.display().to_string(),
        other.key.display().to_string()
    );
    let (ok, _, err) = check(&mismatched);
    assert!(!ok && err.contains("security.tls_key_file"), "{err}");
    let (ok, out, err) = check(&tls_lines(&own));
    assert!(ok, "{out}{err}");
    // The peer port needs the cluster's CA, and a file that holds one.
    let (ok, _, err) = check(&format!("{}peer_tls = true\n", tls_lines(&own)));
    assert!(!ok && err.contains("security.tls_ca_file"), "{err}");
    let not_a_ca =
        format!("{}tls_ca_file = {:?}\n", tls_lines(&own), own.key.display().to_string());
    let (ok, _, err) = check(&not_a_ca);
    assert!(!ok && err.contains("security.tls_ca_file"), "{err}");
    let (ok, out, err) = check(&peer_tls_lines(&own, &own.ca));
    assert!(ok, "{out}{err}");
}

fn redis_cli(port: u16, tls: &[&str], command: &[&str]) -> (bool, String) {
    let port = port.to_string();
    let mut arguments = vec!["-h", "127.0.0.1", "-p", port.as_str()];
    arguments.extend_from_slice(tls);
    arguments.extend_from_slice(command);
    let (ok, out, err) = run_tool("redis-cli", &arguments);
    (ok, format!("{out}{err}"))
}

#[test]
fn redis_cli_speaks_tls_to_the_client_port() {
    let directory = tempfile::tempdir().expect("tempdir");
    let own = make_certificates(directory.path(), "own");
    let other = make_certificates(directory.path(), "other");
    let security = format!("{}client_tls = true\n", tls_lines(&own));
    // Created and spawned, not started: start-up waits for a plaintext PING.
    let mut node = TestNode::create(NodeSettings { security, ..Default::default() });
    node.spawn();
    let own_ca = own.ca.display().to_string();
    let tls = ["--tls", "--cacert", own_ca.as_str()];
    let started = strata_tests::admin::wait_until(Duration::from_secs(20), || {
        redis_cli(node.port, &tls, &["PING"]).1.contains("PONG")
    });
    assert!(started, "{}", node.log());
    let (_, out) = redis_cli(node.port, &tls, &["SET", "greeting", "hello"]);
    assert!(out.contains("OK"), "{out}");
    let (_, out) = redis_cli(node.port, &tls, &["GET", "greeting"]);
    assert_eq!(out.trim(), "hello");
    // A pipeline larger than one TLS record crosses whole.
    let value = "v".repeat(100_000);
    let (_, out) = redis_cli(node.port, &tls, &["SET", "big", &value]);
    assert!(out.contains("OK"), "{out}");
    let (_, out) = redis_cli(node.port, &tls, &["STRLEN", "big"]);
    assert_eq!(out.trim(), "100000");
    // So does a reply larger than what rustls buffers by default (64 KiB).
    let (_, out) = redis_cli(node.port, &tls, &["GET", "big"]);
    assert_eq!(out.trim(), value);

    // Plaintext RESP gets nothing served.
    let (_, out) = redis_cli(node.port, &[], &["GET", "greeting"]);
    assert!(!out.contains("hello"), "{out}");
    // A client trusting another CA refuses the node.
    let other_ca = other.ca.display().to_string();
    let (_, out) = redis_cli(node.port, &["--tls", "--cacert", &other_ca], &["GET", "greeting"]);
    assert!(!out.contains("hello"), "{out}");
    assert!(out.to_lowercase().contains("certificate") || out.contains("SSL"), "{out}");
    let logged = strata_tests::admin::wait_until(Duration::from_secs(5), || {
        node.log().contains("client port: TLS handshake failed")
    });
    assert!(logged, "{}", node.log());
    // The node still serves the good client after the bad ones.
    let (_, out) = redis_cli(node.port, &tls, &["GET", "greeting"]);
    assert_eq!(out.trim(), "hello");
}

/// `[security]` lines for TLS on the peer port with `certificates`, trusting `ca`.
fn peer_tls_lines(certificates: &Certificates, ca: &Path) -> String {
    format!(
        "peer_tls = true\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\n",
        certificates.certificate.display().to_string(),
        certificates.key.display().to_string(),
        ca.display().to_string()
    )
}

fn cluster_node(security: String) -> TestNode {
    TestNode::start(NodeSettings { security, failover: "automatic", ..NodeSettings::cluster(1) })
}

/// Asks `node` to join `leader`'s cluster as a follower named `name`: whether it was let in,
/// and the answer.
fn join(node: &TestNode, name: &str, leader: &TestNode) -> (bool, String) {
    let body = strata_tests::admin::role_body("follower", Some(name), Some(&leader.peer_address()));
    let reply = node.admin("POST", "/admin/node/current", Some(&body));
    (reply.is_ok(), reply.text)
}

#[test]
fn nodes_replicate_over_tls_and_refuse_a_peer_another_ca_signed_or_speaking_plaintext() {
    use redis::Commands;
    let directory = tempfile::tempdir().expect("tempdir");
    let cluster = Authority::new(directory.path(), "cluster");
    let rogue = Authority::new(directory.path(), "rogue");
    let lines = |name: &str| peer_tls_lines(&cluster.issue(directory.path(), name), &cluster.file);
    let leader = cluster_node(lines("harry"));
    let follower = cluster_node(lines("hermione"));
    strata_tests::admin::set_role(&leader, "leader", "harry", None);
    let mut client = leader.client();
    // Written before the follower joins: it catches up through TLS records of many MiB.
    let value = "v".repeat(1024);
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for number in chunk * 500..(chunk + 1) * 500 {
            pipe.set(format!("early:{number}"), &value).ignore();
        }
        let _: () = pipe.query(&mut client).expect("write");
    }
    strata_tests::admin::set_role(&follower, "follower", "hermione", Some(&leader));
    for number in 0..100 {
        let _: String = client.set(format!("key:{number}"), number).expect("write");
    }
    let mut reader = follower.client();
    let replicated = strata_tests::admin::wait_until(Duration::from_secs(30), || {
        reader.get::<_, Option<u32>>("key:99").ok().flatten() == Some(99)
            && reader.get::<_, Option<String>>("early:9999").ok().flatten().as_ref() == Some(&value)
    });
    assert!(replicated, "{}\n{}", leader.log(), follower.log());

    // An impostor with the cluster's secret, trusting the cluster's CA, but whose
    // certificate another CA signed: the leader refuses its certificate.
    let impostor_certificate = rogue.issue(directory.path(), "impostor");
    let impostor = cluster_node(peer_tls_lines(&impostor_certificate, &cluster.file));
    let (joined, answer) = join(&impostor, "impostor", &leader);
    assert!(!joined && answer.contains("alert"), "{answer}");
    let logged = strata_tests::admin::wait_until(Duration::from_secs(5), || {
        leader.log().contains("peer connection refused: TLS handshake failed")
    });
    assert!(logged, "{}", leader.log());
    // A node trusting another CA refuses the leader's certificate.
    let wary_certificate = rogue.issue(directory.path(), "wary");
    let wary = cluster_node(peer_tls_lines(&wary_certificate, &rogue.file));
    let (joined, answer) = join(&wary, "wary", &leader);
    assert!(!joined, "{answer}");
    assert!(answer.to_lowercase().contains("certificate"), "{answer}");
    // A node speaking plaintext on the peer port, with the right secret, gets nothing.
    let plain = cluster_node(String::new());
    let (joined, answer) = join(&plain, "plain", &leader);
    assert!(!joined, "{answer}");

    // None of them took part: the cluster still has its two members, and replicates.
    let listed = leader.admin("GET", "/admin/nodes", None).json;
    let rows = listed["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 2, "{listed}");
    let _: String = client.set("after", "impostors").expect("write");
    let replicated = strata_tests::admin::wait_until(Duration::from_secs(20), || {
        reader.get::<_, Option<String>>("after").ok().flatten().as_deref() == Some("impostors")
    });
    assert!(replicated, "{}\n{}", leader.log(), follower.log());
}

#[test]
fn ctl_init_makes_a_cluster_whose_every_port_between_nodes_is_tls() {
    let directory = tempfile::tempdir().expect("tempdir");
    let cluster = Authority::new(directory.path(), "cluster");
    let nodes: Vec<TestNode> = ["harry", "hermione"]
        .iter()
        .map(|name| {
            let certificates = cluster.issue(directory.path(), name);
            let security =
                format!("admin_tls = true\n{}", peer_tls_lines(&certificates, &cluster.file));
            let mut node = TestNode::create(NodeSettings {
                security,
                failover: "automatic",
                ..NodeSettings::cluster(1)
            });
            node.spawn();
            node
        })
        .collect();
    for node in &nodes {
        let up = strata_tests::admin::wait_until(Duration::from_secs(20), || {
            https_get(node.http_port, &cluster.file, "/healthz") == Ok(200)
        });
        assert!(up, "{}", node.log());
    }
    let (leader, follower) = (
        format!("harry@127.0.0.1:{}", nodes[0].http_port),
        format!("hermione@127.0.0.1:{}", nodes[1].http_port),
    );
    let (code, out) =
        ctl(&nodes[0], &cluster.file, &["init", "--leader", &leader, "--follower", &follower]);
    assert_eq!(code, 0, "{out}\n{}\n{}", nodes[0].log(), nodes[1].log());
    let (code, out) = ctl(&nodes[1], &cluster.file, &["health"]);
    let healthy = strata_tests::admin::wait_until(Duration::from_secs(20), || {
        ctl(&nodes[1], &cluster.file, &["health"]).0 == 0
    });
    assert!(healthy, "{code} {out}\n{}\n{}", nodes[0].log(), nodes[1].log());
}
