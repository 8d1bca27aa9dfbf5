//! `strata demo`: a leader, two followers and a learner on loopback, each a `strata node`
//! process of this same binary with its own data directory under one temporary directory.
//! Roles are set through the admin API, exactly as an operator would; failover is automatic
//! (the Raft controller of the leader and the followers).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use crate::ctl::{http, node_table, Admin};

#[derive(Args, Debug)]
pub struct DemoOptions {
    /// First RESP port on 127.0.0.1; the four nodes use it and the next three. Their admin
    /// HTTP ports start at +10, their peer ports at +20.
    #[arg(long, default_value_t = 23817)]
    pub port: u16,
    /// Keep the data directory instead of deleting it on exit.
    #[arg(long)]
    pub keep: bool,
    /// Run a short write load against the leader, print the result and stop.
    #[arg(long)]
    pub bench: bool,
}

/// (name, role) of the demo's nodes, in port order.
const NODES: [(&str, &str); 4] =
    [("harry", "leader"), ("hermione", "follower"), ("ginny", "follower"), ("ron", "learner")];
/// How long a node may take to answer its admin API after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Children to stop when the demo ends (Ctrl-C included).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

struct DemoNode {
    name: &'static str,
    role: &'static str,
    client_port: u16,
    http: String,
    peer: String,
    /// The admin token every demo node asks for.
    token: String,
}

impl DemoNode {
    fn admin(&self) -> Admin {
        Admin { address: self.http.clone(), token: Some(self.token.clone()), trusted: None }
    }
}

fn nodes(base: u16, token: &str) -> Vec<DemoNode> {
    NODES
        .iter()
        .enumerate()
        .map(|(index, (name, role))| {
            let offset = index as u16;
            DemoNode {
                name,
                role,
                client_port: base + offset,
                http: format!("127.0.0.1:{}", base + 10 + offset),
                peer: format!("127.0.0.1:{}", base + 20 + offset),
                token: token.to_string(),
            }
        })
        .collect()
}

/// The files the demo's nodes read their secrets from (`cluster_secret_file`,
/// `admin_token_file`), and the admin token itself, for the demo's own admin calls.
struct Secrets {
    cluster_secret_file: PathBuf,
    admin_token_file: PathBuf,
    admin_token: String,
}

fn write_secrets(directory: &Path) -> Result<Secrets, String> {
    let (cluster_secret_file, _) = write_secret(directory, "cluster_secret")?;
    let (admin_token_file, admin_token) = write_secret(directory, "admin_token")?;
    Ok(Secrets { cluster_secret_file, admin_token_file, admin_token })
}

/// Writes a fresh random secret to `directory/name`, readable by this user only, and returns
/// its path and the secret.
fn write_secret(directory: &Path, name: &str) -> Result<(PathBuf, String), String> {
    use rand::RngCore;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|error| error.to_string())?;
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let path = directory.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    file.write_all(format!("{secret}\n").as_bytes())
        .map_err(|error| format!("{}: {error}", path.display()))?;
    Ok((path, secret))
}

fn config_text(node: &DemoNode, data_dir: &Path, secrets: &Secrets) -> String {
    let http_port = node.http.rsplit(':').next().unwrap_or_default();
    let peer_port = node.peer.rsplit(':').next().unwrap_or_default();
    format!(
        "[general]\nserver_mode = \"admin\"\nshards = 1\ncpu_affinity = \"none\"\n\
         [network]\nserver_address = \"127.0.0.1\"\nclient_port = {}\nhttp_port = {http_port}\n\
         peer_ip = \"127.0.0.1\"\npeer_port = {peer_port}\n\
         [storage]\ndata_dir = \"{}\"\nshared_dir = \"{}\"\n\
         [wal]\nwal_flush = \"FlushAtOnce\"\n\
         segment_size = \"16MB\"\nsnapshot_size = \"64MB\"\n\
         [cluster]\nname = \"demo\"\nmin_insync_replicas = 2\nfailover = \"automatic\"\n\
         [security]\ncluster_secret_file = \"{}\"\nadmin_token_file = \"{}\"\n",
        node.client_port,
        data_dir.display(),
        data_dir.parent().unwrap_or(data_dir).join("shared").display(),
        secrets.cluster_secret_file.display(),
        secrets.admin_token_file.display(),
    )
}

fn stop_children() {
    let children = CHILDREN.lock().map(|children| children.clone()).unwrap_or_default();
    for pid in children {
        // SAFETY: kill(2) with a pid this process started; at worst the call fails.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
}

fn spawn_node(node: &DemoNode, directory: &Path, secrets: &Secrets) -> Result<Child, String> {
    let data_dir = directory.join(node.name);
    let config_file = directory.join(format!("{}.toml", node.name));
    std::fs::write(&config_file, config_text(node, &data_dir, secrets))
        .map_err(|error| error.to_string())?;
    let log = std::fs::File::create(directory.join(format!("{}.log", node.name)))
        .map_err(|error| error.to_string())?;
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let mut command = Command::new(executable);
    command.arg("node").arg("--config").arg(&config_file).stdout(Stdio::null()).stderr(log);
    // SAFETY: prctl in the child between fork and exec only asks the kernel to stop the child
    // when this process dies; it allocates nothing.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command.spawn().map_err(|error| format!("cannot start {}: {error}", node.name))?;
    if let Ok(mut children) = CHILDREN.lock() {
        children.push(child.id());
    }
    Ok(child)
}

fn wait_ready(node: &DemoNode) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Ok(response) = http(&node.admin(), "GET", "/admin/node/current", None) {
            if response.status == 200 {
                return Ok(());
            }
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(format!("{} did not start within {START_TIMEOUT:?}", node.name));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn set_role(node: &DemoNode, leader_peer: &str) -> Result<(), String> {
    let body = if node.role == "leader" {
        serde_json::json!({ "role": node.role, "name": node.name })
    } else {
        serde_json::json!({ "role": node.role, "name": node.name, "address": leader_peer })
    };
    let response = http(&node.admin(), "POST", "/admin/node/current", Some(&body.to_string()))?;
    let value: Value = serde_json::from_str(&response.body).map_err(|error| error.to_string())?;
    if value["error_code"] == 0 {
        Ok(())
    } else {
        Err(format!("{} as {}: {}", node.name, node.role, response.body))
    }
}

fn print_table(leader: &DemoNode) {
    match http(&leader.admin(), "GET", "/admin/nodes", None) {
        Ok(response) => match serde_json::from_str::<Value>(&response.body) {
            Ok(value) => {
                print!("{}", node_table(value["nodes"].as_array().map_or(&[][..], Vec::as_slice)))
            }
            Err(_) => println!("{}", response.body),
        },
        Err(error) => println!("cannot list nodes: {error}"),
    }
}

fn start_cluster(options: &DemoOptions, directory: &Path) -> Result<Vec<DemoNode>, String> {
    let secrets = write_secrets(directory)?;
    let nodes = nodes(options.port, &secrets.admin_token);
    for node in &nodes {
        for address in
            [format!("127.0.0.1:{}", node.client_port), node.http.clone(), node.peer.clone()]
        {
            let address: std::net::SocketAddr =
                address.parse().map_err(|_| "bad address".to_string())?;
            crate::meta::check_port_free(address)
                .map_err(|error| format!("{error} (choose another --port)"))?;
        }
    }
    for node in &nodes {
        spawn_node(node, directory, &secrets)?;
    }
    for node in &nodes {
        wait_ready(node)?;
    }
    let leader_peer = nodes[0].peer.clone();
    for node in &nodes {
        set_role(node, &leader_peer)?;
    }
    wait_writable(&nodes[0])?;
    Ok(nodes)
}

/// Waits until the leader takes writes: with `min_insync_replicas = 2` it refuses them until a
/// follower has joined every partition's in-sync set.
fn wait_writable(leader: &DemoNode) -> Result<(), String> {
    use std::io::{Read, Write};
    let started = Instant::now();
    let request = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n";
    loop {
        let mut answer = vec![0u8; 4096];
        let read = std::net::TcpStream::connect(("127.0.0.1", leader.client_port)).and_then(
            |mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                stream.write_all(request)?;
                stream.read(&mut answer)
            },
        );
        if let Ok(length) = read {
            if String::from_utf8_lossy(&answer[..length]).contains("refusing_partitions:0\r\n") {
                return Ok(());
            }
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(format!("{} does not take writes within {START_TIMEOUT:?}", leader.name));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(options: &DemoOptions) -> ExitCode {
    let directory: PathBuf = match tempfile::Builder::new().prefix("strata-demo-").tempdir() {
        Ok(directory) => directory.keep(),
        Err(error) => {
            eprintln!("strata demo: cannot create a temporary directory: {error}");
            return ExitCode::from(2);
        }
    };
    let remove = if options.keep { None } else { Some(directory.clone()) };
    let cleanup = move || {
        stop_children();
        if let Some(directory) = &remove {
            std::thread::sleep(Duration::from_millis(200));
            let _ = std::fs::remove_dir_all(directory);
        }
    };
    let on_signal = cleanup.clone();
    if let Err(error) = ctrlc::set_handler(move || {
        on_signal();
        std::process::exit(0);
    }) {
        eprintln!("strata demo: cannot install the Ctrl-C handler: {error}");
    }
    let nodes = match start_cluster(options, &directory) {
        Ok(nodes) => nodes,
        Err(error) => {
            eprintln!("strata demo: {error} (node logs in {})", directory.display());
            cleanup();
            return ExitCode::from(3);
        }
    };
    println!("Strata demo: a cluster on loopback, data and logs in {}", directory.display());
    print_table(&nodes[0]);
    println!();
    for node in &nodes {
        println!(
            "  {:<9} {:<8} redis-cli -p {:<5}  admin http://{}",
            node.name, node.role, node.client_port, node.http
        );
    }
    print_usage(&nodes[0], &directory);
    if options.bench {
        let outcome = run_bench(&nodes[0]);
        print_table(&nodes[0]);
        cleanup();
        return outcome;
    }
    println!(
        "  stop:      Ctrl-C{}",
        if options.keep { " (data kept)" } else { " (data deleted)" }
    );
    loop {
        std::thread::park();
    }
}

/// The console's address, and how to reach the admin API with the demo's token.
fn print_usage(leader: &DemoNode, directory: &Path) {
    let executable =
        std::env::current_exe().map_or_else(|_| "strata".into(), |path| path.display().to_string());
    let token_file = directory.join("admin_token");
    let bearer = format!("-H \"Authorization: Bearer $(cat {})\"", token_file.display());
    println!("  console:   http://{}/?token={}", leader.http, leader.token);
    println!(
        "  list nodes: {executable} ctl --http {} --token-file {} nodes",
        leader.http,
        token_file.display()
    );
    println!(
        "  failover:  kill the leader's process and a follower takes over by itself; \
         planned: curl {bearer} -X POST http://{}/admin/leader/transfer \
         -d '{{\"to\": \"hermione\"}}'",
        leader.http
    );
    println!(
        "  archive in shared storage: {}  status: curl {bearer} http://{}/admin/storage",
        directory.join("shared").display(),
        leader.http
    );
}

fn run_bench(leader: &DemoNode) -> ExitCode {
    let load = strata_benches::load::LoadOptions {
        host: "127.0.0.1".into(),
        port: leader.client_port,
        connections: 16,
        pipeline: 8,
        duration_seconds: 3.0,
        requests: Some(200_000),
        quiet: true,
        ..strata_benches::load::LoadOptions::default()
    };
    println!(
        "\nWriting to the leader for up to 3 s (16 connections, pipeline 8, 128-byte values):"
    );
    match strata_benches::load::run(&load) {
        Ok(report) => {
            strata_benches::load::print_report(&report, &load);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("strata demo: load failed: {error}");
            ExitCode::from(1)
        }
    }
}
