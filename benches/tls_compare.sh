#!/usr/bin/env bash
# benches/tls_compare.sh: what does TLS termination cost in switchyard next to
# nginx and HAProxy, with the same ECDSA P-256 certificate, on this machine?
#
# One run, loopback only, free ports, every process started here and stopped
# by pid on exit. Servers (the proxy under test, 1 worker/thread, and a
# 1-worker nginx origin answering "blue\n") on CPU 1; clients on CPU 0.
#
#   handshakes/s     examples/tls_handshake.rs (rustls client): 16 concurrent
#                    loops, each a new connection with a full TLS 1.3 handshake
#                    (resumption off) + one GET with Connection: close
#   wrk close req/s  wrk -t1 -c50 -H 'Connection: close': a new connection per
#                    request (wrk may resume sessions, so not all are full)
#   keep-alive req/s wrk -t1 -c50: 50 keep-alive HTTPS connections
#
# (openssl s_time cannot send SNI, which switchyard requires: hence the
# small rustls client.) The certificate names "localhost", so wrk (which
# sends the URL's host as SNI) reaches switchyard's certificate lookup.
#
# Usage: benches/tls_compare.sh               (DURATION=10)
#        DURATION=5 benches/tls_compare.sh
#        SWITCHYARD_BIN=/path/to/switchyard HANDSHAKE_BIN=/path/to/tls_handshake \
#            benches/tls_compare.sh        (prebuilt binaries, nothing is built)
# Needs nginx, haproxy, wrk, openssl (scripts/setup.sh bench installs them).

set -euo pipefail

DURATION=${DURATION:-10}
CONNS=50
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
PATH=$PATH:/usr/sbin:/sbin

die() {
    echo "tls_compare.sh: $*" >&2
    exit 1
}

for t in nginx haproxy wrk openssl taskset curl python3; do
    command -v "$t" >/dev/null || die "$t is missing: run scripts/setup.sh bench"
done
(($(nproc) >= 2)) || die "needs 2 CPUs (clients on CPU 0, servers on CPU 1)"
if [[ -z ${SWITCHYARD_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release --bin switchyard -q) || die "cargo build --release failed"
fi
HANDSHAKE=${HANDSHAKE_BIN:-$ROOT/target/release/examples/tls_handshake}
if [[ -z ${HANDSHAKE_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release --example tls_handshake -q) || die "cannot build the handshake client"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-tls.XXXXXX")
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # PORT
    local i
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listens on $1"
}

# --- the certificate ---------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$WORK/ext.cnf"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/ext.cnf" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"

# --- the origin --------------------------------------------------------------
ORIGIN=$(free_port)
mkdir -p "$WORK/origin"
cat >"$WORK/origin/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/origin/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$ORIGIN;
        keepalive_requests 1000000;
        location / { return 200 "blue\n"; }
    }
}
EOF
taskset -c 1 nginx -p "$WORK/origin" -c "$WORK/origin/nginx.conf" -e "$WORK/origin/error.log" \
    -g 'daemon off;' &
PIDS+=($!)
wait_port "$ORIGIN"

# --- the proxies -------------------------------------------------------------
start_switchyard() { # PORT
    local http
    http=$(free_port)
    cat >"$WORK/switchyard.toml" <<EOF
[server]
http = "127.0.0.1:$http"
https = "127.0.0.1:$1"
workers = 1

[admin]
socket = "$WORK/admin.sock"
state = "$WORK/state.json"

[[routes]]
host = "localhost"
pool = "app"
tls = { cert = "$WORK/cert.pem", key = "$WORK/key.pem" }
redirect_https = false

[pools.app.versions.blue]
weight = 100
backends = ["127.0.0.1:$ORIGIN"]
EOF
    RUST_LOG=warn taskset -c 1 "$SWITCHYARD" run -c "$WORK/switchyard.toml" 2>"$WORK/switchyard.log" &
    PIDS+=($!)
}

start_nginx() { # PORT
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
    server {
        listen 127.0.0.1:$1 ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
EOF
    taskset -c 1 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
        -g 'daemon off;' &
    PIDS+=($!)
}

start_haproxy() { # PORT
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 3s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$1 ssl crt $WORK/haproxy.pem alpn h2,http/1.1
    default_backend be
backend be
    http-reuse always
    server origin 127.0.0.1:$ORIGIN
EOF
    taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
    PIDS+=($!)
}

stop_last() {
    local p=${PIDS[-1]}
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset 'PIDS[-1]'
}

wrk_rps() { # PORT [extra wrk args...]
    local port=$1
    shift
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "$@" "https://localhost:$port/" 2>&1 |
        awk '/Requests\/sec/ {printf "%.0f", $2} /Non-2xx|Socket errors/ {print "  (" $0 ")" > "/dev/stderr"}'
}

handshakes() { # PORT
    taskset -c 0 "$HANDSHAKE" "127.0.0.1:$1" localhost "$WORK/ca.pem" "$DURATION" 16 |
        tee -a "$WORK/handshake.log" | sed -n 's/.*per_second=\([0-9]*\).*/\1/p'
}

printf '%-12s %14s %16s %18s\n' "server" "handshakes/s" "wrk close req/s" "keep-alive req/s" | tee "$WORK/result.txt"
for target in switchyard nginx haproxy; do
    port=$(free_port)
    "start_$target" "$port"
    wait_port "$port"
    body=$(curl -sf --cacert "$WORK/ca.pem" --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/") ||
        die "$target does not answer over TLS"
    [[ $body == blue ]] || die "$target answered '$body'"
    hps=$(handshakes "$port")
    nc=$(wrk_rps "$port" -H 'Connection: close')
    ka=$(wrk_rps "$port")
    printf '%-12s %14s %16s %18s\n' "$target" "${hps:-n/a}" "$nc" "$ka" | tee -a "$WORK/result.txt"
    stop_last
done
mkdir -p "$ROOT/bench-results"
cp "$WORK/result.txt" "$ROOT/bench-results/tls-compare-$(date +%Y%m%d-%H%M%S).txt"
