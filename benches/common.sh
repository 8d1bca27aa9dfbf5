# shellcheck shell=bash
# Functions the comparison scripts share. Source it after defining `log` and `fail` and
# setting ROOT (the repository root).

# A port nothing listens on. Connecting through bash's /dev/tcp succeeds only if one does.
# Below Linux's ephemeral range (32768 and up), so no outgoing connection holds it either.
free_port() {
    local port attempt
    for attempt in $(seq 1 100); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    fail "no free port found after $attempt tries"
}

# The path of a cluster secret shared by the nodes the script starts: a fresh random one,
# written once to $WORK/cluster_secret (readable by this user only). Configs name it in
# `[security] cluster_secret_file`.
# `[security]` lines for TLS on the peer port ([security] peer_tls): one CA and one certificate
# for 127.0.0.1 made with openssl in $WORK on first use, shared by every node of the run.
peer_tls_lines() {
    local ca="$WORK/tls/ca.pem" certificate="$WORK/tls/node.pem" key="$WORK/tls/node-key.pem"
    if [ ! -f "$certificate" ]; then
        mkdir -p "$WORK/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=strata-bench-ca -keyout "$WORK/tls/ca-key.pem" -out "$ca" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=node \
            -keyout "$key" -out "$WORK/tls/node.csr" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\n' >"$WORK/tls/san.ext"
        openssl x509 -req -in "$WORK/tls/node.csr" -CA "$ca" -CAkey "$WORK/tls/ca-key.pem" \
            -CAcreateserial -days 2 -extfile "$WORK/tls/san.ext" -out "$certificate" 2>/dev/null
    fi
    printf 'peer_tls = true\ntls_cert_file = "%s"\ntls_key_file = "%s"\ntls_ca_file = "%s"\n' \
        "$certificate" "$key" "$ca"
}

cluster_secret_file() {
    local file="$WORK/cluster_secret"
    if [ ! -f "$file" ]; then
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$file")
    fi
    echo "$file"
}

# The Strata binary: STRATA_BIN, or a release build made now.
strata_binary() {
    if [ -n "${STRATA_BIN:-}" ]; then
        [ -x "$STRATA_BIN" ] || fail "STRATA_BIN=$STRATA_BIN is not an executable"
        echo "$STRATA_BIN"
        return 0
    fi
    log "building strata (release)"
    (cd "$ROOT" && cargo build --release --quiet -p strata) >&2 || fail "cargo build failed"
    local binary="${CARGO_TARGET_DIR:-$ROOT/target}/release/strata"
    [ -x "$binary" ] || fail "built, but $binary is missing"
    echo "$binary"
}

# Waits until a RESP server answers PING on 127.0.0.1:PORT (READY_TIMEOUT_SECONDS, default 30).
wait_ping() {
    local port="$1" attempt
    for attempt in $(seq 1 $((${READY_TIMEOUT_SECONDS:-30} * 10))); do
        [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    fail "nothing answers PING on port $port"
}

# CPU seconds (user + system) of this shell's reaped children so far, from `times`. Call it in
# the script's own shell, with its output redirected to a file, not inside `$(...)`: a
# subshell's children are its own. Uses $WORK for a scratch file.
children_cpu_seconds() {
    times >"$WORK/times"
    awk 'NR == 2 {
        total = 0
        for (i = 1; i <= 2; i++) {
            split($i, part, "m"); sub("s", "", part[2]); total += part[1] * 60 + part[2]
        }
        printf "%.3f", total
    }' "$WORK/times"
}
