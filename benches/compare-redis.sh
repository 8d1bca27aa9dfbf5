#!/usr/bin/env bash
# Compares Strata with Redis on this machine, with the same client: redis-benchmark.
#
# Redis runs with `appendonly yes, appendfsync always` (every write is fsynced before its reply);
# Strata runs standalone with `wal_flush = "FlushAtOnce"`, its equivalent. Each round starts both
# servers afresh on empty data directories, one after the other, and the order alternates from
# round to round so neither always runs on a warmer machine. The table shows medians over rounds
# and each server's CPU seconds (utime + stime from /proc) during each test: on a shared or
# sleeping machine throughput alone misleads.
#
# Usage: benches/compare-redis.sh [--smoke]
#   --smoke         1 round with small request counts, for CI.
# Environment:
#   ROUNDS          rounds (default 3, at least 1)
#   REQUESTS_P1     requests per test at -P 1 (default 50000)
#   REQUESTS_P16    requests per test at -P 16 (default 200000)
#   STRATA_BIN      Strata binary to use; default: build it with `cargo build --release -p strata`
#   SHARDS          Strata's shard threads (default 2, the cores here); redis-benchmark runs on
#                   the same machine, so SHARDS=1 leaves it a core, as Redis's one thread does
#   PARTITIONS      Strata's partitions (default 8, the node's default); a round of writes costs
#                   one device write per partition it touches
#   ALSO_SHARDS     also run Strata with this many shard threads in the same rounds (server
#                   `strata_sN`), e.g. SHARDS=1 ALSO_SHARDS=2 to see what crossing shards costs
#   BASELINE_BIN    also run this Strata binary (server `baseline`, and `baseline_sN` with
#                   ALSO_SHARDS) in the same rounds: a change measured against the build before
#   CLUSTER_CLIENT=1  also run Strata (SHARDS shards) with a client port per shard
#                   (`shard_port_base`) and redis-benchmark --cluster on them (server
#                   `strata_cluster`): the client sends each key to the shard that owns it, so
#                   no command crosses shards
#   SKIP_STRATA=1   run the Redis half only (SKIP_REDIS=1: the Strata half only)
#   CEILING=1       also run Redis without persistence (`appendonly no`) each round: what this
#                   client can drive on this machine, which bounds any server's figure
#   KEEP_WORK=1     keep the temporary directory (configs, logs, raw CSV) for inspection
set -euo pipefail

readonly CLIENTS=50
SHARDS=${SHARDS:-2}
PARTITIONS=${PARTITIONS:-8}
readonly VALUE_BYTES=128
readonly KEYSPACE=100000
readonly TESTS=(set get)
readonly PIPELINES=(1 16)
readonly READY_TIMEOUT_SECONDS=20
readonly RUN_TIMEOUT_SECONDS=900

log() { printf 'compare-redis: %s\n' "$*" >&2; }
fail() { printf 'compare-redis: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

SMOKE=0
for argument in "$@"; do
    case "$argument" in
        --smoke) SMOKE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) fail "unknown argument: $argument (see --help)" ;;
    esac
done

if [ "$SMOKE" -eq 1 ]; then
    ROUNDS=1
    REQUESTS_P1=${REQUESTS_P1:-2000}
    REQUESTS_P16=${REQUESTS_P16:-20000}
fi
ROUNDS=${ROUNDS:-3}
REQUESTS_P1=${REQUESTS_P1:-50000}
REQUESTS_P16=${REQUESTS_P16:-200000}
SKIP_STRATA=${SKIP_STRATA:-0}
SKIP_REDIS=${SKIP_REDIS:-0}
CEILING=${CEILING:-0}
for number in "$ROUNDS" "$REQUESTS_P1" "$REQUESTS_P16" "$SHARDS" "$PARTITIONS" \
    "${ALSO_SHARDS:-1}"; do
    [[ "$number" =~ ^[1-9][0-9]*$ ]] || fail "ROUNDS, REQUESTS_*, SHARDS and PARTITIONS must be positive integers"
done
[ "$SKIP_STRATA" = 1 ] && [ "$SKIP_REDIS" = 1 ] && fail "SKIP_STRATA and SKIP_REDIS both set"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/compare-redis.XXXXXX")"
RESULTS="$WORK/results.tsv"
CLOCK_TICKS="$(getconf CLK_TCK)"
SERVER_PID=""
BENCHMARK_PID=""
# Where redis-benchmark connects for the server running now, and how: `--cluster` on the
# first shard port for `strata_cluster`, else the server's port.
BENCHMARK_PORT=""
BENCHMARK_MODE=()

cleanup() {
    if [ -n "$BENCHMARK_PID" ]; then
        kill "$BENCHMARK_PID" 2>/dev/null || true
        wait "$BENCHMARK_PID" 2>/dev/null || true
    fi
    stop_server
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in redis-server redis-cli redis-benchmark timeout getconf; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (run scripts/setup.sh)"
done

# CPU seconds (user + system, all threads) the process has used so far.
cpu_seconds() {
    local stat
    stat="$(cat "/proc/$1/stat")" || fail "server process $1 is gone"
    # Fields after the command name, which is in parentheses and may hold spaces:
    # state is field 3, utime field 14, stime field 15.
    local fields
    read -r -a fields <<<"${stat##*) }"
    echo $(( fields[11] + fields[12] ))
}

wait_until_ready() {
    local port="$1" log_file="$2" attempt
    for attempt in $(seq 1 $((READY_TIMEOUT_SECONDS * 10))); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 20 "$log_file" >&2 || true
            fail "server exited during start-up (log above)"
        fi
        sleep 0.1
    done
    tail -n 20 "$log_file" >&2 || true
    fail "server on port $port not ready after ${READY_TIMEOUT_SECONDS}s (after $attempt polls)"
}

# Starts redis-server in DIRECTORY on PORT with the persistence options that follow.
run_redis() {
    local directory="$1" port="$2"
    shift 2
    redis-server --port "$port" --bind 127.0.0.1 "$@" --save '' --dir "$directory" \
        --daemonize no --logfile "$directory/redis.log" &
    SERVER_PID=$!
    wait_until_ready "$port" "$directory/redis.log"
}

start_redis() { run_redis "$1" "$2" --appendonly yes --appendfsync always; }

# Redis keeping nothing on disk: the ceiling this client reaches here.
start_memory() { run_redis "$1" "$2" --appendonly no; }

write_strata_config() {
    local directory="$1" port="$2" http_port peer_port attempt
    for attempt in $(seq 1 20); do
        http_port="$(free_port)"
        peer_port="$(free_port)"
        if [ "$http_port" != "$port" ] && [ "$peer_port" != "$port" ] \
            && [ "$http_port" != "$peer_port" ]; then
            break
        fi
    done
    cat >"$directory/strata.toml" <<EOF
[general]
server_mode = "standalone"
shards = $SHARDS

[network]
server_address = "127.0.0.1"
client_port = $port
http_port = $http_port
peer_port = $peer_port
shard_port_base = ${SHARD_PORT_BASE:-0}

[storage]
data_dir = "$directory/data"

[wal]
wal_flush = "FlushAtOnce"

[cluster]
partitions = $PARTITIONS
EOF
}

# The first of COUNT consecutive free ports, none of them EXCEPT.
free_ports() {
    local count="$1" except="$2" first attempt offset taken
    for attempt in $(seq 1 50); do
        first="$(free_port)"
        taken=0
        for offset in $(seq 0 $((count - 1))); do
            if [ $((first + offset)) = "$except" ] \
                || (exec 3<>"/dev/tcp/127.0.0.1/$((first + offset))") 2>/dev/null; then
                taken=1
            fi
        done
        if [ "$taken" = 0 ]; then
            echo "$first"
            return 0
        fi
    done
    fail "no $count consecutive free ports after $attempt tries"
}

# Starts BINARY with SHARD_COUNT shards in DIRECTORY on PORT (and shard ports from
# SHARD_PORT_BASE when set).
run_strata() {
    local binary="$1" shard_count="$2" directory="$3" port="$4"
    SHARDS=$shard_count write_strata_config "$directory" "$port"
    "$binary" node --config "$directory/strata.toml" >"$directory/strata.log" 2>&1 &
    SERVER_PID=$!
    wait_until_ready "$port" "$directory/strata.log"
}

# Starts SERVER (redis, memory, strata, strata_sN, baseline, baseline_sN) in DIRECTORY on PORT.
start_server() {
    local server="$1" directory="$2" port="$3" binary shard_count
    BENCHMARK_PORT="$port"
    BENCHMARK_MODE=()
    case "$server" in
        redis) start_redis "$directory" "$port"; return ;;
        memory) start_memory "$directory" "$port"; return ;;
        baseline*) binary="$BASELINE_BIN" ;;
        *) binary="$STRATA" ;;
    esac
    shard_count=$SHARDS
    [[ "$server" != *_s* ]] || shard_count="${server##*_s}"
    if [ "$server" = strata_cluster ]; then
        BENCHMARK_PORT="$(free_ports "$shard_count" "$port")"
        BENCHMARK_MODE=(--cluster)
        SHARD_PORT_BASE="$BENCHMARK_PORT" run_strata "$binary" "$shard_count" "$directory" "$port"
        return
    fi
    run_strata "$binary" "$shard_count" "$directory" "$port"
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    local attempt
    for attempt in $(seq 1 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# Prints "rps<TAB>p99" from redis-benchmark's CSV ("-" for a column this version lacks). With
# --cluster, lines naming the masters come before the header.
parse_csv() {
    awk -F'","|^"|"$' '
        !header && /^"test"/ { for (i = 2; i < NF; i++) column[$i] = i; header = 1; next }
        header && NF > 2 {
            rps = ("rps" in column) ? $column["rps"] : "-"
            p99 = ("p99_latency_ms" in column) ? $column["p99_latency_ms"] : "-"
            printf "%s\t%s\n", rps, p99
            exit
        }' "$1"
}

run_test() {
    local server="$1" round="$2" port="$3" test="$4" pipeline="$5" requests="$6"
    local output="$WORK/$server-$round-$test-P$pipeline.csv" before after
    before="$(cpu_seconds "$SERVER_PID")"
    local client_before
    children_cpu_seconds >"$WORK/client_before"
    client_before="$(cat "$WORK/client_before")"
    # In the background so that a signal to this script runs its trap at once (a foreground
    # command would be waited for first); the trap ends the benchmark.
    timeout "$RUN_TIMEOUT_SECONDS" redis-benchmark "${BENCHMARK_MODE[@]}" -h 127.0.0.1 \
        -p "$BENCHMARK_PORT" -t "$test" \
        -c "$CLIENTS" -d "$VALUE_BYTES" -r "$KEYSPACE" -n "$requests" -P "$pipeline" \
        --csv >"$output" 2>"$output.err" &
    BENCHMARK_PID=$!
    local status=0
    wait "$BENCHMARK_PID" || status=$?
    BENCHMARK_PID=""
    if [ "$status" -ne 0 ]; then
        cat "$output.err" >&2
        fail "redis-benchmark failed against $server ($test, -P $pipeline): status $status"
    fi
    after="$(cpu_seconds "$SERVER_PID")"
    local client_cpu
    children_cpu_seconds >"$WORK/client_after"
    client_cpu="$(awk -v a="$(cat "$WORK/client_after")" -v b="$client_before" \
        'BEGIN { printf "%.2f", a - b }')"
    local measured
    measured="$(parse_csv "$output")"
    [ -n "$measured" ] || fail "no CSV row from redis-benchmark in $output"
    local cpu
    cpu="$(awk -v ticks=$((after - before)) -v hz="$CLOCK_TICKS" \
        'BEGIN { printf "%.2f", ticks / hz }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$test" "$pipeline" "$round" "$measured" \
        "$cpu" "$client_cpu" >>"$RESULTS"
    log "round $round $server $test -P $pipeline: $(cut -f1 <<<"$measured") ops/s," \
        "cpu ${cpu}s, client cpu ${client_cpu}s"
}

# Runs every test against one freshly started server, then stops it. SET before GET, so GETs
# find keys.
run_server() {
    local server="$1" round="$2" directory="$WORK/$1-$2" port pipeline test requests
    mkdir -p "$directory"
    port="$(free_port)"
    start_server "$server" "$directory" "$port"
    for pipeline in "${PIPELINES[@]}"; do
        requests=$REQUESTS_P1
        [ "$pipeline" -eq 1 ] || requests=$REQUESTS_P16
        for test in "${TESTS[@]}"; do
            run_test "$server" "$round" "$port" "$test" "$pipeline" "$requests"
        done
    done
    stop_server
}

# The median of column $4 of the results for server $1, test $2, pipeline $3, printed with
# printf format $5 ("-" if there are no values).
median() {
    local values
    values="$(awk -F'\t' -v s="$1" -v t="$2" -v p="$3" -v c="$4" \
        '$1 == s && $2 == t && $3 == p && $c != "-" { print $c }' "$RESULTS" | sort -g)"
    if [ -z "$values" ]; then
        echo "-"
        return 0
    fi
    awk -v format="$5" '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf format "\n", m
    }' <<<"$values"
}

print_table() {
    printf '\n%d round(s), %d clients, %d-byte values, %d keys; ' \
        "$ROUNDS" "$CLIENTS" "$VALUE_BYTES" "$KEYSPACE"
    printf 'Strata shards: %d, partitions: %d; medians over rounds; p99 in ms; server CPU seconds per test\n' \
        "$SHARDS" "$PARTITIONS"
    local format='%-5s %3s %12s %12s %7s %9s %9s %8s %8s\n'
    # shellcheck disable=SC2059
    printf "$format" test P redis_ops/s strata_ops/s ratio redis_p99 strata_p99 redis_cpu strata_cpu
    local test pipeline
    for pipeline in "${PIPELINES[@]}"; do
        for test in "${TESTS[@]}"; do
            local redis_rps strata_rps ratio
            redis_rps="$(median redis "$test" "$pipeline" 5 %.0f)"
            strata_rps="$(median strata "$test" "$pipeline" 5 %.0f)"
            ratio="$(awk -v r="$redis_rps" -v s="$strata_rps" \
                'BEGIN { if (r + 0 > 0 && s != "-") printf "%.2f", s / r; else print "-" }')"
            # shellcheck disable=SC2059
            printf "$format" "$test" "$pipeline" "$redis_rps" "$strata_rps" "$ratio" \
                "$(median redis "$test" "$pipeline" 6 %.3f)" \
                "$(median strata "$test" "$pipeline" 6 %.3f)" \
                "$(median redis "$test" "$pipeline" 7 %.2f)" \
                "$(median strata "$test" "$pipeline" 7 %.2f)"
        done
    done
    printf '\nratio = strata / redis ops/s. redis: appendfsync always; strata: FlushAtOnce.\n'
    print_client_table
    print_cpu_table
}

# Every server's ops/s (and ratio to Redis's) and CPU microseconds per request, per test.
print_cpu_table() {
    printf '\nEvery server: ops/s (ratio to redis), p99 ms, server CPU us per request\n'
    local format='%-14s %-5s %3s %10s %7s %9s %8s\n'
    # shellcheck disable=SC2059
    printf "$format" server test P ops/s ratio p99 cpu_us/op
    local server test pipeline requests rps ratio cpu
    for server in "${SERVERS[@]}"; do
        for pipeline in "${PIPELINES[@]}"; do
            requests=$REQUESTS_P1
            [ "$pipeline" -eq 1 ] || requests=$REQUESTS_P16
            for test in "${TESTS[@]}"; do
                rps="$(median "$server" "$test" "$pipeline" 5 %.0f)"
                ratio="$(awk -v r="$(median redis "$test" "$pipeline" 5 %.0f)" -v s="$rps" \
                    'BEGIN { if (r + 0 > 0 && s != "-") printf "%.2f", s / r; else print "-" }')"
                cpu="$(awk -v c="$(median "$server" "$test" "$pipeline" 7 %.3f)" -v n="$requests" \
                    'BEGIN { if (c != "-") printf "%.2f", c * 1000000 / n; else print "-" }')"
                # shellcheck disable=SC2059
                printf "$format" "$server" "$test" "$pipeline" "$rps" "$ratio" \
                    "$(median "$server" "$test" "$pipeline" 6 %.3f)" "$cpu"
            done
        done
    done
}

# The client's share of one core during a test: its CPU seconds over the test's duration.
client_share() {
    local server="$1" test="$2" pipeline="$3" requests="$4" rps cpu
    rps="$(median "$server" "$test" "$pipeline" 5 %.0f)"
    cpu="$(median "$server" "$test" "$pipeline" 8 %.3f)"
    awk -v r="$rps" -v c="$cpu" -v n="$requests" \
        'BEGIN { if (r + 0 > 0 && c != "-") printf "%.2f", c * r / n; else print "-" }'
}

print_client_table() {
    printf '\nredis-benchmark CPU as a share of one core during each test'
    [ "$CEILING" = 1 ] && printf '; ceiling: Redis without persistence'
    printf '\n'
    local format='%-5s %3s %12s %12s %13s %13s\n'
    # shellcheck disable=SC2059
    printf "$format" test P client_redis client_strata ceiling_ops/s ceiling/redis
    local test pipeline requests ceiling ratio
    for pipeline in "${PIPELINES[@]}"; do
        requests=$REQUESTS_P1
        [ "$pipeline" -eq 1 ] || requests=$REQUESTS_P16
        for test in "${TESTS[@]}"; do
            ceiling="$(median memory "$test" "$pipeline" 5 %.0f)"
            ratio="$(awk -v c="$ceiling" -v r="$(median redis "$test" "$pipeline" 5 %.0f)" \
                'BEGIN { if (r + 0 > 0 && c != "-") printf "%.2f", c / r; else print "-" }')"
            # shellcheck disable=SC2059
            printf "$format" "$test" "$pipeline" \
                "$(client_share redis "$test" "$pipeline" "$requests")" \
                "$(client_share strata "$test" "$pipeline" "$requests")" "$ceiling" "$ratio"
        done
    done
}

SERVERS=()

main() {
    local servers=()
    [ "$SKIP_REDIS" = 1 ] || servers+=(redis)
    if [ "$SKIP_STRATA" != 1 ]; then
        servers+=(strata)
        [ -z "${ALSO_SHARDS:-}" ] || servers+=("strata_s$ALSO_SHARDS")
        [ "${CLUSTER_CLIENT:-0}" != 1 ] || servers+=(strata_cluster)
        STRATA="$(strata_binary)"
    fi
    if [ -n "${BASELINE_BIN:-}" ]; then
        [ -x "$BASELINE_BIN" ] || fail "BASELINE_BIN $BASELINE_BIN is not an executable"
        servers+=(baseline)
        [ -z "${ALSO_SHARDS:-}" ] || servers+=("baseline_s$ALSO_SHARDS")
    fi
    [ "$CEILING" != 1 ] || servers+=(memory)
    SERVERS=("${servers[@]}")
    : >"$RESULTS"
    local filesystem
    filesystem="$(df --output=fstype "$WORK" 2>/dev/null | tail -n 1 || true)"
    if [ "$filesystem" = tmpfs ]; then
        log "warning: $WORK is on tmpfs, where fsync costs nothing; set TMPDIR to a disk"
    fi
    log "$ROUNDS round(s), ${servers[*]}, -P 1: $REQUESTS_P1 requests, -P 16: $REQUESTS_P16"
    local round server order index count=${#servers[@]}
    for round in $(seq 1 "$ROUNDS"); do
        # A different server goes first each round.
        order=()
        for index in $(seq 0 $((count - 1))); do
            order+=("${servers[$(((index + round - 1) % count))]}")
        done
        for server in "${order[@]}"; do
            run_server "$server" "$round"
        done
    done
    print_table
}

main
