use super::*;
use crate::command::{parse, Command};

/// Every command and subcommand the parser knows. A command added to the parser goes here
/// and gets a row in the table; the tests below hold the two to each other.
const PARSED_NAMES: &[&str] = &[
    "get",
    "set",
    "getset",
    "setnx",
    "del",
    "unlink",
    "exists",
    "mset",
    "mget",
    "incr",
    "incrby",
    "decr",
    "decrby",
    "append",
    "strlen",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "ttl",
    "pttl",
    "persist",
    "setex",
    "psetex",
    "getdel",
    "getex",
    "getrange",
    "substr",
    "setrange",
    "incrbyfloat",
    "type",
    "touch",
    "expiretime",
    "pexpiretime",
    "time",
    "rename",
    "renamenx",
    "copy",
    "msetnx",
    "dbsize",
    "flushall",
    "flushdb",
    "ping",
    "echo",
    "info",
    "select",
    "swapdb",
    "move",
    "command",
    "config",
    "client",
    "auth",
    "hello",
    "quit",
    "waitaof",
    "command|count",
    "command|docs",
    "command|getkeys",
    "command|info",
    "command|list",
    "config|get",
    "config|set",
    "config|resetstat",
    "config|rewrite",
    "client|setname",
    "client|getname",
    "client|id",
    "client|setinfo",
    "scan",
    "keys",
    "randomkey",
    "object",
    "object|encoding",
    "object|freq",
    "object|idletime",
    "object|refcount",
    "setbit",
    "getbit",
    "bitcount",
    "bitpos",
    "bitop",
    "bitfield",
    "bitfield_ro",
    "lcs",
    "cluster",
    "readonly",
    "readwrite",
    "cluster|help",
    "cluster|info",
    "cluster|myid",
    "cluster|nodes",
    "cluster|slots",
    "cluster|shards",
    "cluster|keyslot",
];

fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ').map(str::as_bytes).collect()
}

#[test]
fn the_table_serves_exactly_the_commands_the_parser_knows() {
    for name in PARSED_NAMES {
        let id = find(name.as_bytes()).unwrap_or_else(|| panic!("{name} is not in the table"));
        assert_eq!(spec(id).name, *name);
        assert!(is_served(id), "{name}");
    }
    for (position, command) in all().iter().enumerate() {
        let id = CommandId(u16::try_from(position).unwrap());
        let listed = PARSED_NAMES.contains(&command.name);
        assert!(listed, "{} is in the table but not in the list", command.name);
        assert!(is_served(id), "{}", command.name);
    }
    let top_level = PARSED_NAMES.iter().filter(|name| !name.contains('|')).count();
    assert_eq!(served().count(), top_level);
}

#[test]
fn names_are_found_in_any_case_and_subcommands_through_their_container() {
    assert_eq!(find(b"GeT").map(|id| spec(id).name), Some("get"));
    assert_eq!(find(b"nosuch"), None);
    assert_eq!(find(&[b'a'; 100]), None);
    let name = |line: &str| lookup(&words(line)).map(|id| spec(id).name);
    assert_eq!(name("CONFIG Get maxmemory"), Some("config|get"));
    assert_eq!(name("config"), Some("config"));
    assert_eq!(name("config nosuch"), None);
    assert_eq!(name("get k"), Some("get"));
    assert_eq!(declared_arity("config|get"), Some(-3));
    assert_eq!(declared_arity("mset"), Some(-3));
}

#[test]
fn key_positions_agree_with_the_parser() {
    let lines = [
        "get k",
        "set k v EX 10",
        "getset k v",
        "setnx k v",
        "del a b c",
        "unlink a b",
        "exists a b",
        "mset a 1 b 2",
        "mget a b c",
        "incr k",
        "incrby k 2",
        "decr k",
        "decrby k 2",
        "append k v",
        "strlen k",
        "expire k 10 NX",
        "pexpire k 10",
        "expireat k 10",
        "pexpireat k 10",
        "ttl k",
        "pttl k",
        "persist k",
        "setex k 10 v",
        "psetex k 10 v",
        "getdel k",
        "getex k PERSIST",
        "getrange k 0 1",
        "substr k 0 1",
        "setrange k 0 v",
        "incrbyfloat k 1.5",
        "type k",
        "touch a b",
        "expiretime k",
        "pexpiretime k",
        "rename {t}a {t}b",
        "renamenx {t}a {t}b",
        "copy {t}a {t}b REPLACE",
        "msetnx {t}a 1 {t}b 2",
    ];
    for line in lines {
        let arguments = words(line);
        let Ok(Command::Key(command)) = parse(&arguments) else { panic!("{line} does not parse") };
        let from_table = get_keys(&arguments).unwrap();
        assert_eq!(from_table, command.keys(), "{line}");
    }
}

#[test]
fn get_keys_refuses_as_redis_does() {
    let error = |line: &str| get_keys(&words(line)).unwrap_err().0;
    assert_eq!(error("nosuch a"), "ERR Invalid command specified");
    assert_eq!(error("config nosuch a"), "ERR Invalid command specified");
    assert_eq!(error("echo a b"), "ERR The command has no key arguments");
    assert_eq!(error("get a b"), "ERR Invalid number of arguments specified for command");
    assert_eq!(get_keys(&words("mset a 1 b")).unwrap(), vec![&b"a"[..], b"b"]);
}

#[test]
fn command_info_is_written_as_redis_writes_it() {
    let mut output = Vec::new();
    encode_info(&mut output, spec(find(b"dbsize").unwrap()));
    let redis = "*10\r\n$6\r\ndbsize\r\n:1\r\n*2\r\n+readonly\r\n+fast\r\n:0\r\n:0\r\n:0\r\n\
                 *3\r\n+@keyspace\r\n+@read\r\n+@fast\r\n*2\r\n$25\r\nrequest_policy:all_shards\r\n\
                 $23\r\nresponse_policy:agg_sum\r\n*0\r\n*0\r\n";
    assert_eq!(String::from_utf8_lossy(&output), redis);
    output.clear();
    encode_info(&mut output, spec(find(b"get").unwrap()));
    let redis = "*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
                 *3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n\
                 *2\r\n+RO\r\n+access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n\
                 $4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n\
                 $5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n\
                 $5\r\nlimit\r\n:0\r\n*0\r\n";
    assert_eq!(String::from_utf8_lossy(&output), redis);
}

#[test]
fn container_rows_list_only_served_subcommands() {
    let mut output = Vec::new();
    answer(&mut output, &CommandQuery::List { filter: None });
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("config|get"), "{text}");
    // CLIENT LIST exists in Redis, not here: the container lists what is served only.
    assert!(text.contains("client|id") && !text.contains("client|list"), "{text}");
    output.clear();
    let pattern = Some(ListFilter::Pattern(b"config|*".to_vec()));
    answer(&mut output, &CommandQuery::List { filter: pattern });
    assert!(output.starts_with(b"*4\r\n"), "{}", String::from_utf8_lossy(&output));
}
