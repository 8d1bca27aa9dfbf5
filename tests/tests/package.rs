//! The Debian package on this machine: it installs, creates its user, directories and unit,
//! and the unit's command starts a node as that user that tells systemd it is ready only
//! once it serves. Where systemd runs, `systemctl start` is used; elsewhere (a container) the
//! unit's `ExecStartPre` and `ExecStart` lines run as the unit's user under `runuser`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_tests::{free_port, ping, workspace_root};

const UNIT: &str = "/usr/lib/systemd/system/strata.service";
const CONFIG: &str = "/etc/strata/strata.toml";

fn run(program: &str, arguments: &[&str]) -> (bool, String) {
    let output = Command::new(program).args(arguments).output().unwrap_or_else(|error| {
        panic!("cannot run {program}: {error}");
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Whether this test can run here: root, with dpkg. Under CI it must.
fn can_install() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let dpkg = Command::new("dpkg").arg("--version").output().is_ok();
    if !(root && dpkg) {
        assert!(std::env::var("CI").is_err(), "CI must run the package test (root and dpkg)");
        eprintln!("SKIPPED: installing a Debian package needs root and dpkg");
    }
    root && dpkg
}

/// Builds the package from the binary the test suite built.
fn build_package() -> String {
    let binary = strata_tests::strata_binary();
    let target = binary.parent().and_then(Path::parent).expect("target directory");
    let output = Command::new(workspace_root().join("scripts/package.sh"))
        .args(["--debug", "--no-build"])
        .env("CARGO_TARGET_DIR", target)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/package.sh");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "scripts/package.sh failed: {text}");
    text.lines().last().expect("the package's path").trim().to_string()
}

/// The value of `key=` in the installed unit.
fn unit_line(key: &str) -> String {
    let unit = std::fs::read_to_string(UNIT).expect("the installed unit");
    let prefix = format!("{key}=");
    let line = unit.lines().find(|line| line.starts_with(&prefix));
    line.unwrap_or_else(|| panic!("no {key} in the unit")).trim_start_matches(&prefix).into()
}

/// Points the installed config at free ports on loopback and a fresh data directory the
/// unit's user owns, as an operator edits it.
fn configure_ports() -> (u16, u16) {
    let (client, http, peer) = (free_port(), free_port(), free_port());
    let data_dir = format!("/var/lib/strata/package-test-{}", std::process::id());
    let (ok, text) = run("install", &["-d", "-o", "strata", "-g", "strata", &data_dir]);
    assert!(ok, "{text}");
    let config = std::fs::read_to_string(CONFIG).expect("the installed config");
    let config = config
        .replace("data_dir = \"/var/lib/strata\"", &format!("data_dir = {data_dir:?}"))
        .replace("client_port = 23817", &format!("client_port = {client}"))
        .replace("http_port = 23820", &format!("http_port = {http}"))
        .replace("peer_port = 23850", &format!("peer_port = {peer}"))
        .replace("server_address = \"0.0.0.0\"", "server_address = \"127.0.0.1\"");
    std::fs::write(CONFIG, config).expect("edit the config");
    (client, http)
}

fn assert_installed() {
    let (found, passwd) = run("getent", &["passwd", "strata"]);
    assert!(found && passwd.contains("/var/lib/strata"), "no strata user: {passwd}");
    let (_, uid) = run("id", &["-u", "strata"]);
    let state = std::fs::metadata("/var/lib/strata").expect("/var/lib/strata");
    assert_eq!(state.uid().to_string(), uid.trim(), "/var/lib/strata is not the user's");
    let config = std::fs::metadata(CONFIG).expect("the config");
    assert_eq!(config.permissions().mode() & 0o777, 0o640, "the config is readable by all");
    for path in [
        "/usr/bin/strata",
        UNIT,
        "/usr/share/man/man1/strata.1.gz",
        "/usr/share/bash-completion/completions/strata",
    ] {
        assert!(Path::new(path).exists(), "{path} is not installed");
    }
    assert_eq!(unit_line("Type"), "notify");
    assert_eq!(unit_line("User"), "strata");
}

/// Without systemd: the unit's commands as its user, with a notify socket of our own.
fn start_as_the_unit_would(client_port: u16) {
    let directory = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let socket_path = directory.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    socket.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let check: Vec<String> =
        unit_line("ExecStartPre").split_whitespace().map(str::to_string).collect();
    let mut arguments = vec!["-u".to_string(), "strata".into(), "--".into()];
    let (ok, text) =
        run("runuser", &arguments.iter().chain(&check).map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "ExecStartPre failed: {text}");
    arguments.extend(unit_line("ExecStart").split_whitespace().map(str::to_string));
    let mut node = Command::new("runuser")
        .args(&arguments)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the unit's command");
    let mut buffer = [0u8; 256];
    let received = socket.recv(&mut buffer);
    let ready = received.is_ok_and(|length| {
        String::from_utf8_lossy(&buffer[..length]).contains("READY=1") && ping(client_port)
    });
    let (as_the_user, _) = run("pgrep", &["-u", "strata", "-x", "strata"]);
    let _ = run("pkill", &["-TERM", "-u", "strata", "-x", "strata"]);
    let _ = node.wait();
    assert!(ready, "no READY=1, or the node did not serve when it came");
    assert!(as_the_user, "the node does not run as the unit's user");
}

fn start_with_systemd(client_port: u16) {
    let (ok, text) = run("systemctl", &["daemon-reload"]);
    assert!(ok, "{text}");
    let (ok, text) = run("systemctl", &["start", "strata"]);
    let serving = ping(client_port);
    let _ = run("systemctl", &["stop", "strata"]);
    assert!(ok, "systemctl start strata: {text}");
    assert!(serving, "systemctl start returned before the node served");
}

#[test]
fn the_debian_package_installs_and_its_unit_starts_a_node() {
    if !can_install() {
        return;
    }
    let package = build_package();
    // A package left by an earlier run keeps its edited config through an upgrade: start
    // from nothing.
    let _ = run("dpkg", &["--purge", "strata"]);
    let (ok, text) = run("dpkg", &["-i", &package]);
    assert!(ok, "dpkg -i {package}: {text}");
    assert_installed();
    let (client_port, _) = configure_ports();
    if Path::new("/run/systemd/system").exists() {
        start_with_systemd(client_port);
    } else {
        start_as_the_unit_would(client_port);
    }
    let (ok, text) = run("dpkg", &["--purge", "strata"]);
    assert!(ok, "dpkg --purge strata: {text}");
    assert!(!Path::new("/usr/bin/strata").exists());
    let leftovers = std::fs::read_dir("/var/lib/strata").expect("/var/lib/strata");
    for entry in leftovers.flatten() {
        if entry.file_name().to_string_lossy().starts_with("package-test-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
