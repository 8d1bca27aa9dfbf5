//! Writing known data through a node and checking that another node holds it.

use std::collections::BTreeMap;

use redis::Commands;

use crate::TestNode;

/// Every key of `expected` reads back with its value on `node` (MGET, 500 keys at a time);
/// `what` names the check in the failure. A leader that answers `-TRYAGAIN` (new, its lease
/// not confirmed yet) is asked again for up to 20 s.
pub fn assert_holds(node: &TestNode, expected: &BTreeMap<String, String>, what: &str) {
    let mut client = node.client();
    let keys: Vec<&String> = expected.keys().collect();
    for chunk in keys.chunks(500) {
        let values = mget_when_served(&mut client, chunk);
        for (key, value) in chunk.iter().zip(values) {
            assert_eq!(value.as_deref(), Some(expected[*key].as_str()), "{what}: key {key}");
        }
    }
}

fn mget_when_served(client: &mut redis::Connection, keys: &[&String]) -> Vec<Option<String>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match client.mget(keys) {
            Ok(values) => return values,
            Err(error)
                if error.kind() == redis::ErrorKind::TryAgain
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(error) => panic!("MGET: {error}"),
        }
    }
}

/// Writes `<prefix>:<n>` = `<n>` for n in 0..count through `client`, remembering each in
/// `expected`.
pub fn write_numbered(
    client: &mut redis::Connection,
    prefix: &str,
    count: usize,
    expected: &mut BTreeMap<String, String>,
) {
    for index in 0..count {
        let key = format!("{prefix}:{index}");
        let _: () = client.set(&key, index).unwrap();
        expected.insert(key, index.to_string());
    }
}
