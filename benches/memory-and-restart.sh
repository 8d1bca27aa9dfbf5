#!/usr/bin/env bash
# Measures two targets of the single node on this machine:
#   memory:  RSS after loading KEYS keys of 128-byte values, against their raw key+value bytes;
#   restart: time from start to serving after kill -9, with the data written so far on disk.
# Loads with `redis-cli --pipe` (raw commands on stdin). Builds the release binary unless
# STRATA_BIN is set.
#
# Usage: benches/memory-and-restart.sh
# Environment: KEYS (default 1000000), RESTART_KEYS (default 7000000: about 1 GiB of WAL and
# snapshots), VALUE_BYTES (128), SHARDS (2), SNAPSHOT_SIZE (256MB; smaller makes the
# restart load snapshots as well as WAL), KEEP_WORK=1 to keep the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
RESTART_KEYS=${RESTART_KEYS:-7000000}
VALUE_BYTES=${VALUE_BYTES:-128}
SHARDS=${SHARDS:-2}
SNAPSHOT_SIZE=${SNAPSHOT_SIZE:-256MB}
PORT=${PORT:-17817}

if [ -z "${STRATA_BIN:-}" ]; then
    cargo build --release --quiet -p strata --bin strata
    STRATA_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/strata"
fi
work=$(mktemp -d /var/tmp/strata-measure-XXXXXX)
node_pid=""
cleanup() {
    if [ -n "$node_pid" ]; then
        { kill -9 "$node_pid"; wait "$node_pid"; } 2>/dev/null || true
    fi
    [ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/strata.toml" <<TOML
[general]
shards = $SHARDS
[network]
server_address = "127.0.0.1"
client_port = $PORT
[storage]
data_dir = "$work/data"
[wal]
wal_flush = "FlushAtOnce"
snapshot_size = "$SNAPSHOT_SIZE"
TOML

# Starts the node in the background (sets node_pid) and waits until it serves; the seconds
# that took go to $work/start-seconds.
start_node() {
    local started
    started=$(date +%s.%N)
    "$STRATA_BIN" node --config "$work/strata.toml" >> "$work/node.log" 2>&1 &
    node_pid=$!
    until redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; do
        kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log"; exit 1; }
        sleep 0.05
    done
    python3 -c "print(round($(date +%s.%N) - $started, 2))" > "$work/start-seconds"
}

# Raw RESP for SET key:<n> <value>, for n in [from, to).
load() {
    python3 - "$1" "$2" "$VALUE_BYTES" <<'PY' | redis-cli -p "$PORT" --pipe > /dev/null
import sys
start, end, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = sys.stdout.buffer
value = b"v" * size
for n in range(start, end):
    key = b"key:%d" % n
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, size, value))
PY
}

rss_bytes() { echo $(( $(awk '{print $2}' "/proc/$node_pid/statm") * $(getconf PAGESIZE) )); }
raw_bytes() { python3 -c "print(sum(len(b'key:%d' % n) + $VALUE_BYTES for n in range($1)))"; }

start_node
baseline=$(rss_bytes)
load 0 "$KEYS"
keys=$(redis-cli -p "$PORT" dbsize)
rss=$(rss_bytes)
raw=$(raw_bytes "$KEYS")
echo "memory: keys=$keys raw_key_value_bytes=$raw rss_bytes=$rss (empty node: $baseline)"
echo "memory: rss/raw = $(python3 -c "print(round($rss / $raw, 2))")"

if [ "$RESTART_KEYS" -gt "$KEYS" ]; then
    load "$KEYS" "$RESTART_KEYS"
fi
on_disk=$(du -sb "$work/data" | cut -f1)
{ kill -9 "$node_pid"; wait "$node_pid"; } 2>/dev/null || true
start_node
seconds=$(cat "$work/start-seconds")
keys=$(redis-cli -p "$PORT" dbsize)
# What recovery read: WAL bytes replayed and snapshot entries loaded, from the node's log.
replayed=$(tail -n 200 "$work/node.log" | grep -o 'bytes_replayed: [0-9]*' | awk '{s+=$2} END {print s+0}')
snapshot_entries=$(tail -n 200 "$work/node.log" | grep -o 'snapshot_entries: [0-9]*' | awk '{s+=$2} END {print s+0}')
echo "restart: data_dir_bytes=$on_disk wal_bytes_replayed=$replayed snapshot_entries=$snapshot_entries"
echo "restart: keys=$keys seconds_to_serve=$seconds"
