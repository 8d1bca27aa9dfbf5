//! `[security] requirepass` on the client port, driven by real clients: redis-cli,
//! redis-benchmark, the `redis` crate, `strata bench` and raw RESP for exact bytes. Before AUTH a
//! connection is served nothing: commands answer NOAUTH and writes do not happen, which is
//! checked after authenticating. Wrong credentials leave the connection open.

use std::time::Duration;

use strata_tests::raw::{RawConnection, Reply};
use strata_tests::{info_field, run_tool_with, strata_binary, NodeSettings, TestNode, ToolOutput};

const PASSWORD: &str = "correct-horse";
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

const NO_AUTH: &str = "NOAUTH Authentication required.";
const WRONG_PASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const HELLO_NO_AUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, \
     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
     client and select the RESP protocol version at the same time";
const NO_PASSWORD_CONFIGURED: &str = "ERR AUTH <password> called without any password \
     configured for the default user. Are you sure your configuration is correct?";

fn protected_node() -> TestNode {
    TestNode::start(NodeSettings {
        requirepass: Some(PASSWORD.to_owned()),
        ..NodeSettings::default()
    })
}

fn redis_cli(node: &TestNode, arguments: &[&str]) -> ToolOutput {
    let port = node.port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", port.as_str()];
    all.extend_from_slice(arguments);
    let output = run_tool_with("redis-cli", &all, b"", TOOL_TIMEOUT);
    assert!(output.status.is_some(), "redis-cli {arguments:?} did not finish: {output:?}");
    output
}

/// redis-cli's standard output for one command, without the final newline.
fn cli(node: &TestNode, arguments: &[&str]) -> String {
    redis_cli(node, arguments).stdout.trim_end_matches('\n').to_string()
}

/// An authenticated raw connection.
fn authenticated(node: &TestNode) -> RawConnection {
    let mut connection = node.raw();
    assert_eq!(connection.command_words(&["AUTH", PASSWORD]), Reply::Simple("OK".into()));
    connection
}

#[test]
fn redis_cli_without_the_password_is_served_nothing() {
    let node = protected_node();
    assert_eq!(cli(&node, &["SET", "cli:key", "written"]), NO_AUTH);
    assert_eq!(cli(&node, &["GET", "cli:key"]), NO_AUTH);
    assert_eq!(cli(&node, &["DBSIZE"]), NO_AUTH);
    let with = ["-a", PASSWORD, "--no-auth-warning"];
    assert_eq!(cli(&node, &[&with[..], &["GET", "cli:key"]].concat()), "", "SET was written");
    assert_eq!(cli(&node, &[&with[..], &["DBSIZE"]].concat()), "0");
    assert_eq!(cli(&node, &[&with[..], &["SET", "cli:key", "written"]].concat()), "OK");
    assert_eq!(cli(&node, &[&with[..], &["GET", "cli:key"]].concat()), "written");
    let wrong = redis_cli(&node, &["-a", "wrong", "--no-auth-warning", "GET", "cli:key"]);
    let shown = format!("{}{}", wrong.stdout, wrong.stderr);
    assert!(shown.contains("WRONGPASS"), "redis-cli with a wrong password: {wrong:?}");
    assert!(!shown.contains("written"), "a wrong password read the value: {wrong:?}");
}

#[test]
fn nothing_runs_before_auth_and_wrong_passwords_keep_the_connection() {
    let node = protected_node();
    let mut connection = node.raw();
    for words in [&["SET", "raw:key", "v"][..], &["GET", "raw:key"], &["PING"], &["INFO"]] {
        assert_eq!(connection.command_words(words), Reply::error(NO_AUTH), "{words:?}");
    }
    assert_eq!(
        connection.command_words(&["MSET", "raw:a", "1", "raw:b", "2"]),
        Reply::error(NO_AUTH)
    );
    assert_eq!(connection.command_words(&["INCR", "raw:counter"]), Reply::error(NO_AUTH));
    // Redis reports a wrong argument count before it checks authentication.
    let arity = "ERR wrong number of arguments for 'get' command";
    assert_eq!(connection.command_words(&["GET"]), Reply::error(arity));
    assert_eq!(connection.command_words(&["HELLO"]), Reply::error(HELLO_NO_AUTH));
    assert_eq!(connection.command_words(&["HELLO", "2"]), Reply::error(HELLO_NO_AUTH));
    assert_eq!(connection.command_words(&["AUTH", "wrong"]), Reply::error(WRONG_PASS));
    assert_eq!(connection.command_words(&["AUTH", "default", "wrong"]), Reply::error(WRONG_PASS));
    assert_eq!(connection.command_words(&["AUTH", "other", PASSWORD]), Reply::error(WRONG_PASS));
    let syntax = Reply::error("ERR syntax error");
    assert_eq!(connection.command_words(&["AUTH", "a", "b", "c"]), syntax);
    let arity = "ERR wrong number of arguments for 'auth' command";
    assert_eq!(connection.command_words(&["AUTH"]), Reply::error(arity));
    assert_eq!(connection.command_words(&["GET", "raw:key"]), Reply::error(NO_AUTH));
    // The same connection, still open, now authenticates.
    assert_eq!(
        connection.command_words(&["AUTH", "default", PASSWORD]),
        Reply::Simple("OK".into())
    );
    assert_eq!(connection.command_words(&["DBSIZE"]), Reply::Integer(0), "a refused write ran");
    assert_eq!(connection.command_words(&["GET", "raw:key"]), Reply::Bulk(None));
    assert_eq!(connection.command_words(&["SET", "raw:key", "v"]), Reply::Simple("OK".into()));
    // A failed AUTH does not undo an earlier success, as in Redis.
    assert_eq!(connection.command_words(&["AUTH", "wrong"]), Reply::error(WRONG_PASS));
    assert_eq!(connection.command_words(&["GET", "raw:key"]), Reply::bulk("v"));
    let Reply::Bulk(Some(stats)) = connection.command_words(&["INFO", "stats"]) else {
        panic!("INFO stats is not a bulk reply");
    };
    let stats = String::from_utf8(stats).expect("INFO is text");
    let failures = info_field(&stats, "acl_access_denied_auth");
    assert_eq!(failures.as_deref(), Some("4"), "INFO stats:\n{stats}");
}

#[test]
fn a_pipeline_is_refused_up_to_its_auth_and_served_after() {
    let node = protected_node();
    let mut connection = node.raw();
    let commands: [&[&str]; 6] = [
        &["SET", "piped", "early"],
        &["GET", "piped"],
        &["AUTH", PASSWORD],
        &["GET", "piped"],
        &["SET", "piped", "late"],
        &["GET", "piped"],
    ];
    let mut bytes = Vec::new();
    for words in commands {
        let arguments: Vec<&[u8]> = words.iter().map(|word| word.as_bytes()).collect();
        bytes.extend_from_slice(&strata_tests::raw::encode_command(&arguments));
    }
    connection.send(&bytes).expect("send the pipeline");
    let replies: Vec<Reply> =
        (0..commands.len()).map(|_| connection.read_reply().unwrap()).collect();
    let expected = [
        Reply::error(NO_AUTH),
        Reply::error(NO_AUTH),
        Reply::Simple("OK".into()),
        Reply::Bulk(None),
        Reply::Simple("OK".into()),
        Reply::bulk("late"),
    ];
    assert_eq!(replies, expected);
}

#[test]
fn hello_authenticates_with_its_auth_option() {
    let node = protected_node();
    let mut connection = node.raw();
    let hello = ["HELLO", "2", "AUTH", "default", "wrong"];
    assert_eq!(connection.command_words(&hello), Reply::error(WRONG_PASS));
    // Only RESP2 is spoken: HELLO 3 is refused before its AUTH option is looked at.
    let hello = ["HELLO", "3", "AUTH", "default", PASSWORD];
    let refused = Reply::error("NOPROTO unsupported protocol version");
    assert_eq!(connection.command_words(&hello), refused);
    assert_eq!(connection.command_words(&["GET", "k"]), Reply::error(NO_AUTH));
    let hello = ["HELLO", "2", "AUTH", "default", PASSWORD, "SETNAME", "app"];
    let Reply::Array(Some(fields)) = connection.command_words(&hello) else {
        panic!("HELLO with the password did not answer its map");
    };
    let proto = fields.iter().position(|field| *field == Reply::bulk("proto"));
    assert_eq!(proto.map(|index| &fields[index + 1]), Some(&Reply::Integer(2)), "{fields:?}");
    assert_eq!(connection.command_words(&["CLIENT", "GETNAME"]), Reply::bulk("app"));
    assert_eq!(connection.command_words(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    // Once authenticated, HELLO without AUTH answers as usual.
    assert!(matches!(connection.command_words(&["HELLO", "2"]), Reply::Array(Some(_))));
}

#[test]
fn the_redis_crate_authenticates_from_its_url() {
    let node = protected_node();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", node.port);
    let client = redis::Client::open(url).expect("URL");
    let mut connection = client.get_connection().expect("connect with the password");
    let _: () = redis::cmd("SET").arg("crate:key").arg("v").query(&mut connection).unwrap();
    let value: String = redis::cmd("GET").arg("crate:key").query(&mut connection).unwrap();
    assert_eq!(value, "v");
    let wrong = format!("redis://:wrong@127.0.0.1:{}/", node.port);
    let refused = redis::Client::open(wrong).expect("URL").get_connection();
    let error = refused.err().expect("a wrong password connected");
    assert_eq!(error.kind(), redis::ErrorKind::AuthenticationFailed, "{error}");
    let mut anonymous = node.client();
    let error = redis::cmd("GET").arg("crate:key").query::<String>(&mut anonymous).unwrap_err();
    assert_eq!(error.code(), Some("NOAUTH"), "{error}");
}

#[test]
fn benchmarks_pass_the_password() {
    let node = protected_node();
    let port = node.port.to_string();
    let arguments = ["-h", "127.0.0.1", "-p", &port, "-a", PASSWORD, "-t", "set", "-n", "1000"];
    let arguments = [&arguments[..], &["-c", "4", "-q"]].concat();
    let output = run_tool_with("redis-benchmark", &arguments, b"", Duration::from_secs(120));
    assert!(output.success(), "redis-benchmark failed: {output:?}");
    let set = output.stdout.lines().find(|line| line.trim_start().starts_with("SET:"));
    assert!(set.is_some_and(|line| line.contains("requests per second")), "{output:?}");
    assert!(!output.stdout.contains("NOAUTH"), "redis-benchmark saw NOAUTH:\n{output:?}");
    let bench = [&["bench", "--port", &port, "--password", PASSWORD][..], &["--requests", "500"]];
    let bench = [&bench.concat()[..], &["--connections", "2", "--duration-seconds", "30"]].concat();
    let bench = [&bench[..], &["--json", "--quiet"]].concat();
    let output = run_tool_with(strata_binary().to_str().unwrap(), &bench, b"", TOOL_TIMEOUT);
    assert!(output.success(), "strata bench failed: {output:?}");
    let report: serde_json::Value = serde_json::from_str(&output.stdout).expect("JSON report");
    assert_eq!(report["requests"], 500, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let mut connection = authenticated(&node);
    let Reply::Integer(keys) = connection.command_words(&["DBSIZE"]) else { panic!("DBSIZE") };
    assert!(keys > 1, "{keys} keys after both benchmarks");
    let wrong = ["bench", "--port", &port, "--password", "wrong", "--requests", "10", "--quiet"];
    let output = run_tool_with(strata_binary().to_str().unwrap(), &wrong, b"", TOOL_TIMEOUT);
    assert!(!output.success(), "strata bench ran with a wrong password: {output:?}");
    assert!(output.stderr.contains("WRONGPASS"), "{output:?}");
}

#[test]
fn a_node_without_a_password_serves_everyone_and_answers_auth_like_redis() {
    let node = TestNode::start(NodeSettings::default());
    let mut connection = node.raw();
    assert_eq!(connection.command_words(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    assert_eq!(connection.command_words(&["AUTH", "x"]), Reply::error(NO_PASSWORD_CONFIGURED));
    assert_eq!(connection.command_words(&["AUTH", "default", "x"]), Reply::Simple("OK".into()));
    assert_eq!(connection.command_words(&["AUTH", "other", "x"]), Reply::error(WRONG_PASS));
    let hello = ["HELLO", "2", "AUTH", "default", "anything"];
    assert!(matches!(connection.command_words(&hello), Reply::Array(Some(_))));
    assert_eq!(connection.command_words(&["GET", "k"]), Reply::bulk("v"));
}

/// A large command (taken out of the input as it arrives) is refused before AUTH like any
/// other, and runs after it.
#[test]
fn a_large_command_needs_auth_too() {
    let node = protected_node();
    let mut raw = node.raw();
    let value = vec![b'x'; 1_000_000];
    let reply = raw.command(&[b"SET", b"large", &value]);
    assert_eq!(reply, Reply::Error(NO_AUTH.into()));
    assert_eq!(raw.command(&[b"AUTH", PASSWORD.as_bytes()]), Reply::Simple("OK".into()));
    assert_eq!(raw.command(&[b"SET", b"large", &value]), Reply::Simple("OK".into()));
    assert_eq!(raw.command(&[b"STRLEN", b"large"]), Reply::Integer(1_000_000));
}
