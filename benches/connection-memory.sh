#!/usr/bin/env bash
# Measures what client connections cost one standalone node, from its RSS in /proc:
#   idle:  RSS of the empty node, then with CONNECTIONS idle connections open (each answered
#          one PING, then waits), and the growth per connection;
#   large: CLIENTS clients at once, each sending one pipelined request of REQUEST_BYTES of
#          SETs (VALUE_BYTES values), reading the replies as they come, or with SHAPE=mset one
#          MSET command of that size; the peak RSS (VmHWM) against the bytes sent.
# Builds the release binary unless STRATA_BIN is set. With SERVER=redis it measures
# redis-server (`appendonly yes`, `appendfsync always`) the same way instead: the peer's figures
# with the same clients. Every wait is bounded.
#
# Usage: benches/connection-memory.sh [idle|large|all]   (default all)
# Environment: CONNECTIONS (10000), CLIENTS (10), REQUEST_BYTES (120000000), VALUE_BYTES
# (16384), SHAPE (set or mset), SAME_KEY=1 to overwrite one key per client (what stays stored is then small, and
# the peak is what requests in flight hold), SHARDS (2), TIMEOUT_SECONDS (300, per phase),
# SERVER (strata or redis), KEEP_WORK=1 to keep the data directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

MODE=${1:-all}
CONNECTIONS=${CONNECTIONS:-10000}
CLIENTS=${CLIENTS:-10}
REQUEST_BYTES=${REQUEST_BYTES:-120000000}
VALUE_BYTES=${VALUE_BYTES:-16384}
SAME_KEY=${SAME_KEY:-0}
SHAPE=${SHAPE:-set}
SHARDS=${SHARDS:-2}
SERVER=${SERVER:-strata}
TIMEOUT_SECONDS=${TIMEOUT_SECONDS:-300}

log() { echo "connection-memory: $*" >&2; }
fail() {
    log "error: $*"
    exit 1
}
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"

case "$SHAPE" in
    set | mset) ;;
    *) fail "unknown SHAPE $SHAPE (set or mset)" ;;
esac
case "$MODE" in
    idle | large | all) ;;
    *) fail "unknown mode $MODE (idle, large or all)" ;;
esac
case "$SERVER" in
    strata) STRATA_BIN=$(strata_binary) ;;
    redis) command -v redis-server >/dev/null || fail "redis-server not found (scripts/setup.sh)" ;;
    *) fail "unknown SERVER $SERVER (strata or redis)" ;;
esac
WORK=$(mktemp -d /var/tmp/strata-connection-memory-XXXXXX)
node_pid=""
cleanup() {
    if [ -n "$node_pid" ]; then
        { kill -9 "$node_pid" && wait "$node_pid"; } 2>/dev/null || true
    fi
    [ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

# Each connection is a descriptor in the node and one in the client: raise the soft limit as
# far as the hard one allows.
hard_limit=$(ulimit -Hn)
if [ "$hard_limit" = unlimited ] || [ "$hard_limit" -gt $((CONNECTIONS + 1000)) ]; then
    ulimit -n $((CONNECTIONS + 1000))
else
    ulimit -n "$hard_limit"
fi

# Starts a fresh node, or redis-server with SERVER=redis (sets node_pid), and waits until it
# answers PING.
start_node() {
    local port="$1"
    rm -rf "$WORK/data"
    if [ "$SERVER" = redis ]; then
        mkdir -p "$WORK/data"
        redis-server --port "$port" --bind 127.0.0.1 --appendonly yes --appendfsync always \
            --save '' --dir "$WORK/data" --maxclients $((CONNECTIONS + 100)) \
            --daemonize no >>"$WORK/node.log" 2>&1 &
        node_pid=$!
        wait_ping "$port"
        return
    fi
    cat >"$WORK/strata.toml" <<TOML
[general]
shards = $SHARDS
[network]
server_address = "127.0.0.1"
client_port = $port
connections_max = $((CONNECTIONS + 100))
[storage]
data_dir = "$WORK/data"
TOML
    "$STRATA_BIN" node --config "$WORK/strata.toml" >>"$WORK/node.log" 2>&1 &
    node_pid=$!
    wait_ping "$port"
}

stop_node() {
    { kill -9 "$node_pid" && wait "$node_pid"; } 2>/dev/null || true
    node_pid=""
}

status_bytes() { awk -v field="$1:" '$1 == field { printf "%.0f\n", $2 * 1024 }' "/proc/$node_pid/status"; }
mebibytes() { awk -v bytes="$1" 'BEGIN { printf "%.1f MiB", bytes / 1048576 }'; }

# Opens $CONNECTIONS connections, PINGs on each, reports when all answered, then holds them
# until it is killed.
IDLE_CLIENT=$(
    cat <<'PY'
import socket, sys, threading
port, count = int(sys.argv[1]), int(sys.argv[2])
sockets = []
for _ in range(count):
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(b"PING\r\n")
    sockets.append(connection)
for connection in sockets:
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = connection.recv(64)
        if not chunk:
            sys.exit("connection closed: " + reply.decode(errors="replace"))
        reply += chunk
    if reply != b"+PONG\r\n":
        sys.exit("unexpected reply " + repr(reply))
print("open", flush=True)
threading.Event().wait()
PY
)

measure_idle() {
    local port baseline after growth
    port=$(free_port)
    start_node "$port"
    sleep 1
    baseline=$(status_bytes VmRSS)
    timeout "$TIMEOUT_SECONDS" python3 -c "$IDLE_CLIENT" "$port" "$CONNECTIONS" \
        >"$WORK/idle-client" &
    local client_pid=$! waited=0
    until grep -q open "$WORK/idle-client"; do
        kill -0 "$client_pid" 2>/dev/null || fail "the idle connections did not open"
        [ "$waited" -lt $((TIMEOUT_SECONDS * 10)) ] || fail "the idle connections took too long"
        sleep 0.1
        waited=$((waited + 1))
    done
    sleep 1
    after=$(status_bytes VmRSS)
    growth=$((after - baseline))
    echo "idle: server=$SERVER connections=$CONNECTIONS rss_empty=$(mebibytes "$baseline")" \
        "rss_open=$(mebibytes "$after") growth=$(mebibytes "$growth")" \
        "per_connection=$((growth / CONNECTIONS)) bytes"
    kill "$client_pid"
    wait "$client_pid" 2>/dev/null || true
    stop_node
}

# One client: sends its request of SETs while a thread reads the replies, and checks them.
# One client: sends its request (SETs, or one MSET) while a thread reads the replies, and
# checks them. Prints the bytes it sent.
LARGE_CLIENT=$(
    cat <<'PY'
import socket, sys, threading
port, client, total, size, same = (int(argument) for argument in sys.argv[1:6])
shape = sys.argv[6]
value = b"v" * size
def key(number):
    return b"client:%d:key:%d" % (client, 0 if same else number)
def bulk(data):
    return b"$%d\r\n%s\r\n" % (len(data), data)
def pair(number):
    return bulk(key(number)) + bulk(value)
count = max(1, total // len(pair(0)))
if shape == "mset":
    parts = [b"*%d\r\n" % (1 + 2 * count), bulk(b"MSET")]
    parts += (pair(number) for number in range(count))
    chunks, expected = parts, 1
else:
    chunks = (b"*3\r\n" + bulk(b"SET") + pair(number) for number in range(count))
    expected = count
connection = socket.create_connection(("127.0.0.1", port), timeout=120)
answers = {"ok": 0, "other": b""}
def read_replies():
    pending = b""
    while answers["ok"] < expected:
        chunk = connection.recv(1 << 16)
        if not chunk:
            break
        pending += chunk
        lines = pending.split(b"\r\n")
        pending = lines.pop()
        for line in lines:
            if line == b"+OK":
                answers["ok"] += 1
            else:
                answers["other"] = line
reader = threading.Thread(target=read_replies)
reader.start()
sent, batch = 0, []
for chunk in chunks:
    batch.append(chunk)
    if len(batch) == 64:
        sent += len(b"".join(batch))
        connection.sendall(b"".join(batch))
        batch = []
sent += len(b"".join(batch))
connection.sendall(b"".join(batch))
reader.join()
if answers["ok"] != expected:
    sys.exit("client %d: %d of %d OK, last other reply %r" % (client, answers["ok"], expected,
                                                            answers["other"]))
print(sent)
PY
)

measure_large() {
    local port baseline peak sent=0 client pids=()
    port=$(free_port)
    start_node "$port"
    sleep 1
    baseline=$(status_bytes VmRSS)
    # Starting (WAL preallocation, recovery) may have peaked higher: count from here.
    echo 5 >"/proc/$node_pid/clear_refs"
    for client in $(seq 1 "$CLIENTS"); do
        timeout "$TIMEOUT_SECONDS" python3 -c "$LARGE_CLIENT" "$port" "$client" \
            "$REQUEST_BYTES" "$VALUE_BYTES" "$SAME_KEY" "$SHAPE" >"$WORK/client-$client" &
        pids+=("$!")
    done
    for client in "${!pids[@]}"; do
        wait "${pids[$client]}" || fail "client $((client + 1)) failed"
        sent=$((sent + $(cat "$WORK/client-$((client + 1))")))
    done
    peak=$(status_bytes VmHWM)
    echo "large: server=$SERVER clients=$CLIENTS shape=$SHAPE sent=$(mebibytes "$sent")" \
        "value_bytes=$VALUE_BYTES same_key=$SAME_KEY rss_empty=$(mebibytes "$baseline") rss_peak=$(mebibytes "$peak")" \
        "growth=$(mebibytes $((peak - baseline)))" \
        "peak_over_sent=$(awk -v peak="$peak" -v sent="$sent" \
            'BEGIN { printf "%.2f", peak / sent }')"
    stop_node
}

if [ "$MODE" = idle ] || [ "$MODE" = all ]; then
    measure_idle
fi
if [ "$MODE" = large ] || [ "$MODE" = all ]; then
    measure_large
fi
