//! CONFIG GET, SET, RESETSTAT and REWRITE: the node's settings under the names Redis gives
//! them, with values that are true of this node. No setting changes while the node runs, so
//! CONFIG SET refuses every one as Redis refuses an immutable setting.

use std::collections::BTreeMap;

use strata_core::glob;
use strata_core::resp;

use crate::options::Durability;
use crate::shard::Shard;

/// Redis's name for each setting this node has, with its value here.
pub(crate) fn parameters(shard: &Shard) -> BTreeMap<&'static str, String> {
    let options = &shard.mesh.options;
    let appendfsync = match options.durability {
        Durability::SyncEachBatch => "always",
        Durability::SyncEverySecond => "everysec",
        Durability::WriteOnly => "no",
    };
    let port = options.client_address.port().to_string();
    let tls_port = if options.client_tls.is_some() { port.clone() } else { "0".into() };
    BTreeMap::from([
        // Every write goes to the partition's log: the log is the data, as an AOF would be.
        ("appendonly", "yes".into()),
        ("appendfsync", appendfsync.into()),
        // No RDB snapshots: the logs' own snapshots are not Redis's `save` points.
        ("save", String::new()),
        ("databases", "1".into()),
        // No memory limit, so nothing is evicted.
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("maxclients", options.connections_max.to_string()),
        // Idle connections are never closed.
        ("timeout", "0".into()),
        // The shard threads read, parse and answer clients: Redis's I/O threads and more.
        ("io-threads", options.shard_count.to_string()),
        ("port", port),
        ("tls-port", tls_port),
        ("bind", options.client_address.ip().to_string()),
        ("dir", options.data_dir.display().to_string()),
        ("proto-max-bulk-len", options.resp_limits.bulk_bytes_max.to_string()),
        ("cluster-enabled", "no".into()),
        // Replicas refuse writes.
        ("replica-read-only", "yes".into()),
        ("notify-keyspace-events", String::new()),
        // As Redis answers it: the password itself, empty when none is asked.
        ("requirepass", options.requirepass.clone().unwrap_or_default()),
    ])
}

/// CONFIG GET pattern [pattern ...]: each setting any pattern matches, once.
pub(crate) fn get(output: &mut Vec<u8>, shard: &Shard, patterns: &[String]) {
    let parameters = parameters(shard);
    let matched: Vec<(&&str, &String)> = parameters
        .iter()
        .filter(|(name, _)| {
            patterns.iter().any(|pattern| glob::matches(pattern.as_bytes(), name.as_bytes()))
        })
        .collect();
    resp::encode_array_header(output, matched.len() * 2);
    for (name, value) in matched {
        resp::encode_bulk(output, name.as_bytes());
        resp::encode_bulk(output, value.as_bytes());
    }
}

/// CONFIG SET: Redis's error for the first setting named, as every known one is immutable
/// here (an unknown one has Redis's unknown-option error).
pub(crate) fn set(output: &mut Vec<u8>, shard: &Shard, settings: &[(String, Vec<u8>)]) {
    let parameters = parameters(shard);
    let Some((name, _)) = settings.first() else {
        resp::encode_error(output, "ERR wrong number of arguments for 'config|set' command");
        return;
    };
    let error = if parameters.contains_key(name.to_ascii_lowercase().as_str()) {
        format!(
            "ERR CONFIG SET failed (possibly related to argument '{name}') - can't set \
             immutable config"
        )
    } else {
        format!("ERR Unknown option or number of arguments for CONFIG SET - '{name}'")
    };
    resp::encode_error(output, &error);
}

/// CONFIG REWRITE: Redis's error without a config file; with one, a refusal, as no setting
/// differs from the file's (none changes at runtime) and the file is not Redis's format.
pub(crate) fn rewrite(output: &mut Vec<u8>, shard: &Shard) {
    if shard.mesh.options.config_file.is_empty() {
        resp::encode_error(output, "ERR The server is running without a config file");
    } else {
        resp::encode_error(
            output,
            "ERR CONFIG REWRITE is not supported: settings do not change at runtime, so the \
             config file already holds them",
        );
    }
}
