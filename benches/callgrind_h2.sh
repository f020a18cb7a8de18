#!/usr/bin/env bash
# benches/callgrind_h2.sh: user-space instructions per HTTP/2 request over
# TLS, counted by valgrind's callgrind, for switchyard and HAProxy doing the
# job of benches/tls_compare.sh (the same ECDSA P-256 certificate, one nginx
# origin over HTTP/1.1, 1 worker/thread each).
#
# The peers do switchyard's job (benches/tls_jobs.sh: unknown hosts 404, Host
# kept, X-Forwarded-For/-Proto/-Host set): HAProxy by default; PEERS= adds
# nginx (one process: master_process off) and haproxy-bare (HAProxy without
# those rules).
#
# Each proxy runs under callgrind; 1 000 warm-up requests, then the counters
# are zeroed, N requests are sent (h2load -c10 -mM over TLS, ALPN h2) and
# the counters dumped: instructions / N is the figure. As in
# benches/callgrind.sh, instructions are not time (a syscall's kernel work
# counts nothing, a `rep movsb` one): this says where user-space work goes
# and whether a change removed some; benches/tls_compare.sh says how fast.
#
# Usage: benches/callgrind_h2.sh                   (N=20000, M="1 100", builds switchyard)
#        SWITCHYARD_BIN=/path/to/switchyard M=100 benches/callgrind_h2.sh
#        TOP=30 benches/callgrind_h2.sh           (also each proxy's top functions)
#        PEERS="haproxy nginx haproxy-bare" benches/callgrind_h2.sh
# Needs valgrind, nginx, haproxy, h2load, openssl (scripts/setup.sh bench).

set -euo pipefail

N=${N:-20000}
TOP=${TOP:-0}
read -r -a STREAMS <<<"${M:-1 100}"
read -r -a PEERS <<<"${PEERS:-haproxy}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
PATH=$PATH:/usr/sbin:/sbin

die() {
    echo "callgrind_h2.sh: $*" >&2
    exit 1
}

[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer (got '$N')"
[[ $TOP =~ ^[0-9]+$ ]] || die "TOP must be a number (got '$TOP')"
for m in "${STREAMS[@]}"; do
    [[ $m =~ ^[1-9][0-9]*$ ]] || die "M must be positive integers (got '$m')"
done
for p in "${PEERS[@]}"; do
    [[ $p == haproxy || $p == nginx || $p == haproxy-bare ]] ||
        die "PEERS: haproxy, nginx and/or haproxy-bare (got '$p')"
done
for tool in valgrind callgrind_annotate callgrind_control h2load nginx haproxy openssl curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool (scripts/setup.sh bench installs it)"
done
if [[ -n ${SWITCHYARD_BIN:-} ]]; then
    [[ -x $SWITCHYARD ]] || die "SWITCHYARD_BIN=$SWITCHYARD is not an executable"
else
    (cd "$ROOT" && cargo build --release --bin switchyard -q) || die "cargo build --release failed"
fi

# shellcheck source=benches/callgrind_lib.sh
source "$ROOT/benches/callgrind_lib.sh"
cg_setup switchyard-callgrind-h2

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The job of benches/tls_compare.sh.
# shellcheck source=benches/tls_jobs.sh
source "$ROOT/benches/tls_jobs.sh"
tls_certs

ORIGIN=$(free_port)
origin_tls_conf "$ORIGIN"
nginx -p "$WORK/origin" -c "$WORK/origin/nginx.conf" -e "$WORK/origin/error.log" -g 'daemon off;' &
PIDS+=($!)

SY_PORT=$(free_port)
switchyard_tls_conf "$SY_PORT" "$(free_port)" "$ORIGIN" >"$WORK/switchyard.toml"

declare -A PORT_OF
for p in "${PEERS[@]}"; do
    PORT_OF[$p]=$(free_port)
    case $p in
    nginx) nginx_tls_conf "${PORT_OF[$p]}" "$ORIGIN" ;;
    haproxy) haproxy_tls_conf "${PORT_OF[$p]}" "$ORIGIN" job >"$WORK/$p.cfg" ;;
    haproxy-bare) haproxy_tls_conf "${PORT_OF[$p]}" "$ORIGIN" bare >"$WORK/$p.cfg" ;;
    esac
done

# wait_ok PORT: until the port answers 200 over TLS (valgrind starts slowly).
wait_ok() {
    for ((i = 0; i < 300; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/ca.pem" \
            --resolve "localhost:$1:127.0.0.1" "https://localhost:$1/" 2>/dev/null) == 200 ]] && return 0
        sleep 0.2
    done
    die "nothing answers 200 on port $1"
}

load() { # PORT COUNT (STREAMS per connection: set by the loop below)
    local out
    out=$(h2load -t1 -c10 -m"$STREAMS_NOW" -n "$2" --connect-to="127.0.0.1:$1" "https://localhost:$1/" 2>&1)
    grep -q '^Application protocol: h2$' <<<"$out" || die "no h2 on port $1: $out"
    grep -q "status codes: $2 2xx" <<<"$out" || die "not every request got a 2xx: $(grep 'status codes' <<<"$out")"
}

for m in "${STREAMS[@]}"; do
    STREAMS_NOW=$m
    RUST_LOG=warn cg_measure "switchyard-$m" "$SY_PORT" 1000 "switchyard, $m stream(s) per connection" \
        "$SWITCHYARD" run --config "$WORK/switchyard.toml"
    for p in "${PEERS[@]}"; do
        if [[ $p == nginx ]]; then
            cg_measure "nginx-$m" "${PORT_OF[$p]}" 1000 "nginx, $m stream(s) per connection" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
                -e "$WORK/nginx/error.log" -g 'daemon off; master_process off;'
        else
            cg_measure "$p-$m" "${PORT_OF[$p]}" 1000 "$p, $m stream(s) per connection" \
                haproxy -db -f "$WORK/$p.cfg"
        fi
    done
done

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
echo "# callgrind, HTTP/2 over TLS, $(date -u '+%Y-%m-%d %H:%M') UTC, commit $commit, $N requests (h2load -c10 -mM) after 1 000 warm-up"
printf '%-10s %12s' "streams" "switchyard"
for p in "${PEERS[@]}"; do printf ' %14s %8s' "$p" "ratio"; done
echo
for m in "${STREAMS[@]}"; do
    printf '%-10s %12d' "-m$m" "${IR[switchyard-$m]}"
    for p in "${PEERS[@]}"; do
        awk -v a="${IR[switchyard-$m]}" -v b="${IR[$p-$m]}" 'BEGIN { printf " %14d %8.2f", b, a / b }'
    done
    echo
done
