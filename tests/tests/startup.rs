//! Start-up refusals that protect data: a second node on the same data directory, and a second
//! node on a port already served (SO_REUSEPORT would otherwise let both serve it).

use std::process::Command;
use std::time::Duration;

use strata_tests::{free_port, strata_binary, NodeSettings, TestNode};

/// Runs `strata node` on `config` (a TOML text) and returns its exit code and output.
fn run_node(config: &str) -> (Option<i32>, String) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("strata.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(strata_binary())
        .args(["node", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&output.stderr).into_owned()
                + &String::from_utf8_lossy(&output.stdout);
            return (output.status.code(), text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the second node kept running");
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused() {
    let node = TestNode::start(NodeSettings::default());
    let config = format!(
        "[network]\nserver_address = \"127.0.0.1\"\nclient_port = {}\n\
         [storage]\ndata_dir = \"{}\"\n",
        free_port(),
        node.data_dir().display()
    );
    let (code, output) = run_node(&config);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("in use by another strata node"), "{output}");
    assert!(strata_tests::ping(node.port), "the first node must keep serving");
}

#[test]
fn a_second_node_on_a_served_port_is_refused() {
    let node = TestNode::start(NodeSettings::default());
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "[network]\nserver_address = \"127.0.0.1\"\nclient_port = {}\n\
         [storage]\ndata_dir = \"{}\"\n",
        node.port,
        data.path().display()
    );
    let (code, output) = run_node(&config);
    assert_eq!(code, Some(3), "{output}");
    assert!(output.contains("cannot listen"), "{output}");
    assert!(strata_tests::ping(node.port), "the first node must keep serving");
}
