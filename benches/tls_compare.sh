#!/usr/bin/env bash
# benches/tls_compare.sh: what does TLS termination cost in switchyard next to
# nginx and HAProxy, with the same ECDSA P-256 certificate, on this machine?
# HTTP/1.1 and HTTP/2 over TLS, full and resumed handshakes.
#
# Every proxy does the job of benches/compare.sh (benches/tls_jobs.sh):
# unknown hosts get 404, the client's Host kept, X-Forwarded-For/-Proto/-Host
# set (switchyard always does; nginx and HAProxy are configured to; before
# 2026-12-07 they were not, and this script compared switchyard with a bare
# HAProxy and nginx). Target haproxy-bare is HAProxy without those rules, for
# reference.
#
# Loopback only, free ports, every process started here and stopped by pid on
# exit. Servers (the proxy under test, 1 worker/thread, and a 1-worker nginx
# origin answering "blue\n") on CPU 1; clients on CPU 0.
#
#   full hs/s        examples/tls_handshake.rs (rustls client): 16 concurrent
#                    loops, each a new connection with a full TLS 1.3 handshake
#                    (the client offers no session) + one GET, Connection: close
#   resumed hs/s     the same with --resume: each loop keeps the tickets the
#                    server sent it and offers one on its next connection, so
#                    all but the first are TLS 1.3 resumptions (PSK + ECDHE,
#                    no certificate, no signature); "resumed %" = the share of
#                    handshakes the server accepted as resumptions
#   wrk close req/s  wrk -t1 -c50 -H 'Connection: close': a new connection per
#                    request (wrk may resume sessions, so not all are full)
#   keep-alive req/s wrk -t1 -c50: 50 keep-alive HTTPS connections (HTTP/1.1)
#   h2 m=1, m=100    h2load -t1 -c$H2_CONNS -m1 / -m100: HTTP/2 over TLS (ALPN
#                    h2, checked), 1 or 100 concurrent streams per connection;
#                    req/s, h2load's mean request time and the p99 of the
#                    per-request times of its --log-file
#   CPU us/req       the server's CPU time (user + system, all its threads and
#                    processes, from /proc) per request: over the keep-alive
#                    run, and over each h2 run after h2load's warm-up second.
#                    Steadier than req/s on a VM whose steal time varies
#                    within seconds.
#
# Resumption, as each server is configured here (the same for both rows; only
# the client decides whether it resumes):
#   switchyard  rustls' defaults: a stateful in-memory session cache (256
#               sessions) and, in TLS 1.3, 2 tickets per connection naming a
#               cache entry; no stateless (encrypted) tickets
#   nginx       ssl_session_cache shared:SSL:10m + ssl_session_tickets on
#   HAProxy     its defaults, said out loud: tune.ssl.cachesize 20000 and
#               tickets on
#
# (openssl s_time cannot send SNI, which switchyard requires: OpenSSL 3.0's
# s_time has no -servername; hence the small rustls client. h2load has no
# resumption control.) The certificate names "localhost", so wrk and h2load
# (which send the URL's host as SNI) reach switchyard's certificate lookup.
#
# ROUNDS>1 repeats everything, the targets' order rotating each round; the
# table gives the medians of rounds (per-round rows in the results file).
#
# Usage: benches/tls_compare.sh               (ROUNDS=1 DURATION=10 H2_CONNS=10)
#        ROUNDS=3 DURATION=5 benches/tls_compare.sh
#        TARGETS="switchyard haproxy" benches/tls_compare.sh
#        TARGETS="switchyard nginx haproxy haproxy-bare" benches/tls_compare.sh
#        BASE_BIN=/path/to/other/switchyard TARGETS="switchyard base haproxy" \
#            benches/tls_compare.sh        (another build as target "base", in the
#                                           same rounds: an A/B the VM's drift
#                                           between runs cannot blur)
#        SWITCHYARD_BIN=/path/to/switchyard HANDSHAKE_BIN=/path/to/tls_handshake \
#            benches/tls_compare.sh        (prebuilt binaries, nothing is built)
# Needs nginx, haproxy, wrk, h2load, openssl (scripts/setup.sh bench installs them).

set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
H2_CONNS=${H2_CONNS:-10}
CONNS=50
HS_CONNS=16
read -r -a TARGETS <<<"${TARGETS:-switchyard nginx haproxy}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
PATH=$PATH:/usr/sbin:/sbin

die() {
    echo "tls_compare.sh: $*" >&2
    exit 1
}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive number of seconds (got '$DURATION')"
[[ $H2_CONNS =~ ^[1-9][0-9]*$ ]] || die "H2_CONNS must be a positive integer (got '$H2_CONNS')"
for t in "${TARGETS[@]}"; do
    [[ $t == switchyard || $t == nginx || $t == haproxy || $t == haproxy-bare || $t == base ]] ||
        die "unknown target $t"
    [[ $t != base || -x ${BASE_BIN:-} ]] || die "target base needs BASE_BIN=<a switchyard binary>"
done
for t in nginx haproxy wrk h2load openssl taskset curl python3; do
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

# tree_pids, tree_ticks
# shellcheck source=benches/proc.sh
source "$ROOT/benches/proc.sh"
CLK_TCK=$(getconf CLK_TCK)

# --- the certificate ---------------------------------------------------------
# shellcheck source=benches/tls_jobs.sh
source "$ROOT/benches/tls_jobs.sh"
tls_certs

# --- the origin --------------------------------------------------------------
ORIGIN=$(free_port)
origin_tls_conf "$ORIGIN"
taskset -c 1 nginx -p "$WORK/origin" -c "$WORK/origin/nginx.conf" -e "$WORK/origin/error.log" \
    -g 'daemon off;' &
PIDS+=($!)
wait_port "$ORIGIN"

# --- the proxies -------------------------------------------------------------
start_base() { # PORT
    SWITCHYARD=$BASE_BIN start_switchyard "$1"
}

start_switchyard() { # PORT
    local http
    http=$(free_port)
    switchyard_tls_conf "$1" "$http" "$ORIGIN" >"$WORK/switchyard.toml"
    RUST_LOG=warn taskset -c 1 "$SWITCHYARD" run -c "$WORK/switchyard.toml" 2>"$WORK/switchyard.log" &
    PIDS+=($!)
}

start_nginx() { # PORT
    nginx_tls_conf "$1" "$ORIGIN"
    taskset -c 1 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
        -g 'daemon off;' &
    PIDS+=($!)
}

start_haproxy() { # PORT [bare]
    haproxy_tls_conf "$1" "$ORIGIN" "${2:-}" >"$WORK/haproxy.cfg"
    taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
    PIDS+=($!)
}

start_haproxy-bare() { # PORT
    start_haproxy "$1" bare
}

stop_last() {
    local p=${PIDS[-1]}
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset 'PIDS[-1]'
}

# wrk_rps PORT [extra wrk args...]: "req/s requests"
wrk_rps() {
    local port=$1
    shift
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "$@" "https://localhost:$port/" 2>&1 |
        awk '/Requests\/sec/ { rps = $2 } / requests in / { n = $1 }
            /Non-2xx|Socket errors/ { print "  (" $0 ")" > "/dev/stderr" }
            END { printf "%.0f %d\n", rps, n }'
}

# cpu_us TICKS_BEFORE TICKS_AFTER REQUESTS: the server's CPU time (user +
# system, all its threads and processes) per request, in microseconds.
cpu_us() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" \
        'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "-" }'
}

# handshakes PORT [--resume]: "per_second resumed_percent"
handshakes() {
    local out
    out=$(taskset -c 0 "$HANDSHAKE" "127.0.0.1:$1" localhost "$WORK/ca.pem" "$DURATION" "$HS_CONNS" ${2:-})
    echo "$out ${2:-}" >>"$WORK/handshake.log"
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { if (v["errors"] > 0) print "  (" v["errors"] " handshake errors)" > "/dev/stderr"
              pct = v["handshakes"] > 0 ? 100 * v["resumed"] / v["handshakes"] : 0
              printf "%d %.0f\n", v["per_second"], pct }' <<<"$out"
}

# h2 PORT STREAMS SERVER_PID: "req/s mean_ms p99_ms cpu_us_per_request" from
# h2load over HTTP/2 (ALPN h2 checked).
# The CPU per request counts the server's ticks from the end of h2load's
# warm-up second to its end, over the requests of that time.
h2() {
    local port=$1 m=$2 server=$3 out log=$WORK/h2load.log loader t0 t1
    rm -f "$log"
    taskset -c 0 h2load -t1 -c"$H2_CONNS" -m"$m" -D"$DURATION" --warm-up-time=1 \
        --connect-to="127.0.0.1:$port" --log-file="$log" "https://localhost:$port/" >"$WORK/h2load.out" 2>&1 &
    loader=$!
    sleep 1
    t0=$(tree_ticks "$server")
    wait "$loader" || die "h2load failed against port $port: $(cat "$WORK/h2load.out")"
    t1=$(tree_ticks "$server")
    out=$(cat "$WORK/h2load.out")
    grep -q '^Application protocol: h2$' <<<"$out" || die "h2load did not negotiate h2 on port $port:
$out"
    awk '/^requests:/ && $10 + $12 + $14 > 0 { print "  (h2load -m'"$m"': " $0 ")" > "/dev/stderr" }' <<<"$out"
    local rps mean p99 done
    done=$(awk '/^requests:/ { print $2 }' <<<"$out")
    rps=$(awk '/^finished in/ { printf "%.0f", $4 }' <<<"$out")
    mean=$(awk '/^time for request:/ { v = $6; n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; printf "%.2f", n }' <<<"$out")
    p99=$(awk -F'\t' '{ print $3 }' "$log" | sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit } i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", v[i] / 1000 }')
    echo "$rps $mean $p99 $(cpu_us "$t0" "$t1" "$done")"
}

RAW=$WORK/raw.tsv
: >"$RAW"
echo "TLS compare: ${TARGETS[*]}; $ROUNDS round(s) of ${DURATION}s per measurement; clients on CPU 0, servers on CPU 1" >&2
n=${#TARGETS[@]}
for ((round = 0; round < ROUNDS; round++)); do
    for ((i = 0; i < n; i++)); do
        target=${TARGETS[(i + round) % n]}
        port=$(free_port)
        "start_$target" "$port"
        wait_port "$port"
        body=$(curl -sf --cacert "$WORK/ca.pem" --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/") ||
            die "$target does not answer over TLS"
        [[ $body == blue ]] || die "$target answered '$body'"
        read -r full _ <<<"$(handshakes "$port")"
        read -r resumed resumed_pct <<<"$(handshakes "$port" --resume)"
        read -r nc _ <<<"$(wrk_rps "$port" -H 'Connection: close')"
        # CPU per request: the server's ticks (all its processes and
        # threads) around the keep-alive run, and within each h2 run.
        server=${PIDS[-1]}
        t0=$(tree_ticks "$server")
        read -r ka ka_n <<<"$(wrk_rps "$port")"
        ka_cpu=$(cpu_us "$t0" "$(tree_ticks "$server")" "$ka_n")
        read -r h1rps h1mean h1p99 h1cpu <<<"$(h2 "$port" 1 "$server")"
        read -r h100rps h100mean h100p99 h100cpu <<<"$(h2 "$port" 100 "$server")"
        row="$((round + 1))	$target	$full	$resumed	$resumed_pct	$nc	$ka	$h1rps	$h1mean	$h1p99	$h100rps	$h100mean	$h100p99	$ka_cpu	$h1cpu	$h100cpu"
        echo "$row" >>"$RAW"
        echo "  round $((round + 1)): $row" >&2
        stop_last
    done
done

median() { # TARGET COLUMN
    awk -F'\t' -v t="$1" -v c="$2" '$2 == t { print $c }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
              print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo "# switchyard TLS compare, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), $(h2load --version | head -1), $("$SWITCHYARD" --version)"
    echo "# medians of $ROUNDS round(s), ${DURATION}s each; handshakes: $HS_CONNS loops; wrk -t1 -c$CONNS; h2load -t1 -c$H2_CONNS"
    echo
    echo "| server | full hs/s | resumed hs/s | resumed % | wrk close req/s | keep-alive req/s | keep-alive CPU us/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for t in "${TARGETS[@]}"; do
        echo "| $t | $(median "$t" 3) | $(median "$t" 4) | $(median "$t" 5) | $(median "$t" 6) | $(median "$t" 7) | $(median "$t" 14) |"
    done
    echo
    echo "| server | h2 m=1 req/s | mean ms | p99 ms | CPU us/req | h2 m=100 req/s | mean ms | p99 ms | CPU us/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for t in "${TARGETS[@]}"; do
        echo "| $t | $(median "$t" 8) | $(median "$t" 9) | $(median "$t" 10) | $(median "$t" 15) | $(median "$t" 11) | $(median "$t" 12) | $(median "$t" 13) | $(median "$t" 16) |"
    done
    echo
    for t in "${TARGETS[@]}"; do
        [[ $t == switchyard ]] && continue
        echo "switchyard / $t: full hs $(ratio "$(median switchyard 3)" "$(median "$t" 3)"), resumed hs $(ratio "$(median switchyard 4)" "$(median "$t" 4)"), keep-alive $(ratio "$(median switchyard 7)" "$(median "$t" 7)"), h2 m=1 $(ratio "$(median switchyard 8)" "$(median "$t" 8)"), h2 m=100 $(ratio "$(median switchyard 11)" "$(median "$t" 11)")"
        echo "  CPU per request, switchyard / $t: keep-alive $(ratio "$(median switchyard 14)" "$(median "$t" 14)"), h2 m=1 $(ratio "$(median switchyard 15)" "$(median "$t" 15)"), h2 m=100 $(ratio "$(median switchyard 16)" "$(median "$t" 16)")"
    done
    echo
    echo "## per round"
    printf 'round\ttarget\tfull_hs\tresumed_hs\tresumed_pct\twrk_close\tkeepalive\th2m1_rps\th2m1_mean_ms\th2m1_p99_ms\th2m100_rps\th2m100_mean_ms\th2m100_p99_ms\tkeepalive_cpu_us\th2m1_cpu_us\th2m100_cpu_us\n'
    cat "$RAW"
} >"$WORK/result.txt"
cat "$WORK/result.txt"
mkdir -p "$ROOT/bench-results"
cp "$WORK/result.txt" "$ROOT/bench-results/tls-compare-$(date +%Y%m%d-%H%M%S).txt"
