//! redis-py, the Python client, against a real node: it runs unmodified (Debian's python3 and
//! python3-redis, installed by scripts/setup.sh).

use std::process::Command;

use strata_tests::{NodeSettings, TestNode};

const SCRIPT: &str = r#"
import sys
import redis

client = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
assert client.ping() is True
assert client.set("py:a", "1") is True
assert client.get("py:a") == b"1"
assert client.incr("py:n", 5) == 5
assert client.set("py:nx", "x", nx=True) is True
assert client.set("py:nx", "y", nx=True) is None
assert client.set("py:ex", "v", ex=100) is True
assert 99 <= client.ttl("py:ex") <= 100
client.mset({"py:m1": "a", "py:m2": "b", "{py}x": "c"})
assert client.mget(["py:m1", "py:missing", "py:m2", "{py}x"]) == [b"a", None, b"b", b"c"]
assert client.delete("py:m1", "py:m2", "py:missing") == 2
assert client.append("py:a", "23") == 3
pipe = client.pipeline(transaction=False)
for index in range(100):
    pipe.set(f"py:p{index}", index)
    pipe.get(f"py:p{index}")
results = pipe.execute()
assert results[1::2] == [str(index).encode() for index in range(100)]
try:
    client.incr("py:a", 1) and client.incr("py:m", "x")
except redis.ResponseError as error:
    assert "not an integer" in str(error), error
else:
    raise AssertionError("INCR by a non-integer was accepted")
info = client.info("keyspace")
assert info["db0"]["keys"] >= 100, info
assert client.dbsize() >= 100
print("redis-py ok")
"#;

#[test]
fn redis_py_runs_unmodified() {
    let node = TestNode::start(NodeSettings::default());
    let output = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, &node.port.to_string()])
        .output()
        .expect("/usr/bin/python3 runs (scripts/setup.sh installs python3-redis)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "redis-py failed:\n{stdout}\n{stderr}\n{}", node.log());
    assert!(stdout.contains("redis-py ok"), "{stdout}");
}
