#!/usr/bin/env bash
# benches/compare.sh: how does switchyard compare with nginx and HAProxy on
# this machine, for the same weighted pool (Host app.local, blue:90 green:10)?
#
# One run, everything on loopback (127.0.0.1, free ports picked here), every
# server in the foreground under this script, in a temp dir, stopped by pid on
# exit. Layout (see shared/BENCH.md):
#
#   CPU 0: wrk -t1 -c50 --latency -H 'Host: app.local'
#   CPU 1: the proxies under test (1 worker each) + two 1-worker nginx origins
#          answering "blue\n" and "green\n"
#
# WORKERS=N (N <= CPUs) runs every proxy with N workers: switchyard
# `workers = N`, nginx `worker_processes N`, HAProxy `nbthread N`. With N >= 2
# the layout is LAYOUT=shared: the proxies, the origins (still 1 worker each)
# and wrk (-t N) all on CPUs 0..N-1, the load generator competing with the
# servers for the same cores, as on a small machine with nothing to spare
# (this is not a "server has N cores to itself" figure). LAYOUT=shared with
# WORKERS=1 gives the 1-worker figure on that same layout, so that the step
# from 1 to N workers is measured with nothing else changed; LAYOUT=split
# (the default for WORKERS=1) is the layout above.
#
# Every proxy does the same job: the client's Host kept, X-Forwarded-For,
# -Proto and -Host set (switchyard always does; nginx and HAProxy are
# configured to), upstream keep-alive.
#
# Targets: direct (wrk to the blue origin: the rig's ceiling), switchyard,
# nginx, haproxy. Optional: haproxy-bare (HAProxy without the X-Forwarded-*
# rules), the switchyard-health/-metrics/-accesslog variants, switchyard-rules
# (eight rule routes on the benchmarked host, none matching: what a host with
# rules costs), switchyard-middlewares (ip_allow, rate_limit, compress and
# headers on the route: what a typical chain costs), and
# switchyard-hyper (the same config with SWITCHYARD_DIRECT_H1=0: every request
# through hyper's client, not src/upstream/h1.rs's direct exchange; what that path is
# worth), switchyard-hyperserver (SWITCHYARD_DIRECT_SERVER=0: every client
# connection served by hyper's server, not src/server/h1.rs's direct path),
# switchyard-b (the plain config run by another build, SWITCHYARD_B_BIN: an
# A/B of two builds in the same rotated rounds).
#
# Each round starts fresh origins and every target, fresh (so "idle RSS" is
# really idle and the peak is the round's); 100 requests through each proxy
# must split 90/10; each gets a 2 s warm-up. Then the targets take turns in
# SLICE-second wrk runs, the order rotating, until each has had DURATION
# seconds: this VM's speed drifts by tens of percent within seconds (steal
# time from other guests), and short alternating slices give every target
# the same share of good and bad moments. Per round and target: req/s = all
# requests / all slice time, p50/p99 = the median of the slices' values,
# CPU = the target's CPU time / requests (user + kernel; the per-round rows
# also give the user-space part, and the summary both parts against nginx
# and HAProxy). The table gives medians of rounds.
#
# Usage: benches/compare.sh                    (ROUNDS=3 DURATION=10 SLICE=1)
#        ROUNDS=1 DURATION=5 benches/compare.sh
#        TARGETS="direct switchyard nginx haproxy haproxy-bare" benches/compare.sh
#        TARGETS="switchyard switchyard-hyper haproxy" benches/compare.sh
#        TARGETS="switchyard switchyard-hyperserver nginx haproxy" benches/compare.sh
#        TARGETS="switchyard switchyard-rules switchyard-middlewares haproxy" benches/compare.sh
#        SWITCHYARD_BIN=/path/to/switchyard benches/compare.sh   (another build)
#        SWITCHYARD_B_BIN=/path/to/other TARGETS="switchyard switchyard-b nginx" benches/compare.sh
#        WORKERS=2 benches/compare.sh       (2 workers each, everything on CPUs 0-1)
#        WORKERS=1 LAYOUT=shared benches/compare.sh   (1 worker each, same layout)
# Output: a table of medians on stdout and in bench-results/compare-<date>.txt.
#
# Installs nginx-light, haproxy and wrk with apt-get when missing (as root),
# and builds target/release/switchyard when missing or older than the sources.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SLICE=${SLICE:-1}
WARMUP=2
CONNS=50
HOST=app.local
CHECK_REQUESTS=100
WORKERS=${WORKERS:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# SWITCHYARD_BIN=path measures another build (not rebuilt by this script).
SWITCHYARD=${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}
# SWITCHYARD_B_BIN=path: the build the switchyard-b target runs.
SWITCHYARD_B=${SWITCHYARD_B_BIN:-}

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive number of seconds (got '$DURATION')"
[[ $SLICE =~ ^[1-9][0-9]*$ ]] || die "SLICE must be a positive number of seconds (got '$SLICE')"
[[ -r /proc/self/stat ]] || die "needs Linux /proc"
(($(nproc) >= 2)) || die "needs at least 2 CPUs (wrk on CPU 0, servers on CPU 1)"
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "WORKERS must be a positive integer (got '$WORKERS')"
((WORKERS <= $(nproc))) || die "WORKERS=$WORKERS is more than the $(nproc) CPUs"
if ((WORKERS == 1)); then LAYOUT=${LAYOUT:-split}; else LAYOUT=${LAYOUT:-shared}; fi
case $LAYOUT in
split)
    ((WORKERS == 1)) || die "LAYOUT=split puts the servers on CPU 1 alone: WORKERS must be 1"
    SERVER_CPUS=1 LOAD_CPUS=0 WRK_THREADS=1
    LAYOUT_TEXT="wrk -t1 on CPU 0; proxies (1 worker each) + 2 origins on CPU 1"
    ;;
shared)
    # The CPUs the N-worker run uses, for every process (1 worker: the same
    # two CPUs as WORKERS=2, so the scaling step changes only the workers).
    cpus=$((WORKERS > 2 ? WORKERS : 2))
    SERVER_CPUS=0-$((cpus - 1)) LOAD_CPUS=$SERVER_CPUS WRK_THREADS=$cpus
    LAYOUT_TEXT="wrk -t$WRK_THREADS, proxies ($WORKERS worker(s) each) and 2 one-worker origins all sharing CPUs $SERVER_CPUS"
    ;;
*) die "LAYOUT must be split or shared (got '$LAYOUT')" ;;
esac

# --- tools ------------------------------------------------------------------

install_missing() {
    local pkgs=()
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx-light)
    command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || pkgs+=(haproxy)
    command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    command -v taskset >/dev/null 2>&1 || pkgs+=(util-linux)
    ((${#pkgs[@]} == 0)) && return 0
    ((EUID == 0)) || die "missing ${pkgs[*]}: run as root, or: sudo apt-get install -y ${pkgs[*]}"
    echo "installing ${pkgs[*]} ..."
    # Keep the packaged services from starting (and binding 0.0.0.0:80) during
    # the install: Debian's policy-rc.d hook, only if none is in place.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"; } || rc=$?
    ((made_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${pkgs[*]} failed"
}
install_missing
PATH=$PATH:/usr/sbin:/sbin
NGINX=$(command -v nginx)
HAPROXY=$(command -v haproxy)

build_switchyard() {
    local newer=""
    if [[ -n ${SWITCHYARD_BIN:-} ]]; then
        [[ -x $SWITCHYARD ]] || die "SWITCHYARD_BIN=$SWITCHYARD is not an executable"
        return 0
    fi
    if [[ -x $SWITCHYARD ]]; then
        newer=$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$SWITCHYARD" -print -quit)
        [[ -z $newer ]] && return 0
        echo "rebuilding switchyard ($newer is newer than the binary) ..."
    else
        echo "building switchyard ..."
    fi
    (cd "$ROOT" && cargo build --release --bin switchyard) || die "cargo build --release failed"
    [[ -x $SWITCHYARD ]] || die "no $SWITCHYARD after the build"
}
build_switchyard

# --- processes --------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-compare.XXXXXX")
# nginx workers drop to an unprivileged user when started as root.
chmod 755 "$WORK"
PIDS=()

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

# While switchyard-metrics is driven: a Prometheus-like scrape every second, on CPU 0.
SCRAPER_PID=""
start_scraper() {
    taskset -c "$LOAD_CPUS" bash -c "while :; do curl -s --noproxy '*' -o /dev/null http://127.0.0.1:$SY_METRICS_PORT/metrics; sleep 1; done" &
    SCRAPER_PID=$!
}
stop_scraper() {
    [[ -n $SCRAPER_PID ]] || return 0
    kill "$SCRAPER_PID" 2>/dev/null || true
    wait "$SCRAPER_PID" 2>/dev/null || true
    SCRAPER_PID=""
}

cleanup() {
    local p
    stop_scraper
    for p in "${PIDS[@]}"; do
        stop_pid "$p"
    done
    PIDS=()
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port VAR: sets VAR to a loopback port that no socket uses (any state,
# IPv4 or IPv6, per /proc/net/tcp*) and that this script has not handed out.
# Ports come from outside the kernel's ephemeral range, so that the tens of
# thousands of client connections of a run cannot take one before its server
# binds it.
read -r EPHEMERAL_LO EPHEMERAL_HI </proc/sys/net/ipv4/ip_local_port_range
if ((EPHEMERAL_LO > 11024)); then
    PORT_BASE=10000 PORT_SPAN=$((EPHEMERAL_LO - 10000))
elif ((EPHEMERAL_HI < 64511)); then
    PORT_BASE=$((EPHEMERAL_HI + 1)) PORT_SPAN=$((65535 - EPHEMERAL_HI))
else
    PORT_BASE=1024 PORT_SPAN=$((EPHEMERAL_LO - 1024))
fi
((PORT_SPAN >= 100)) || die "no room outside the ephemeral port range $EPHEMERAL_LO-$EPHEMERAL_HI"
TAKEN=" "
free_port() {
    local used=" " local_addr hex p i
    while read -r _ local_addr _; do
        hex=${local_addr##*:}
        [[ $hex =~ ^[0-9A-F]{4}$ ]] && used+="$((16#$hex)) "
    done < <(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null)
    for ((i = 0; i < 1000; i++)); do
        p=$((PORT_BASE + (RANDOM * 32768 + RANDOM) % PORT_SPAN))
        if [[ $used != *" $p "* && $TAKEN != *" $p "* ]]; then
            TAKEN+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# start NAME LOG CMD...: runs CMD on CPU 1 in the background; sets STARTED.
STARTED=""
start() {
    local name=$1 log=$2
    shift 2
    taskset -c "$SERVER_CPUS" "$@" >"$log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
    echo "$name" >"$WORK/name.$STARTED"
}

# wait_ready PID PORT LOG: until the server answers on PORT (any HTTP status).
wait_ready() {
    local pid=$1 port=$2 log=$3 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$(cat "$WORK/name.$pid") exited at startup; its log:
$(tail -n 20 "$log")"
        if curl -s --noproxy '*' -o /dev/null --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$(cat "$WORK/name.$pid") did not answer on 127.0.0.1:$port within 10 s; its log:
$(tail -n 20 "$log")"
}

# tree_pids, tree_ticks (shared with benches/tls_compare.sh).
# shellcheck source=benches/proc.sh
source "$ROOT/benches/proc.sh"

# tree_mem_mib FIELD PID: a /proc/PID/status field (kB) summed over the tree, in MiB.
tree_mem_mib() {
    local field=$1 root=$2 kb=0 pid key value
    for pid in $(tree_pids "$root"); do
        while read -r key value _; do
            [[ $key == "$field:" ]] && kb=$((kb + value))
        done 2>/dev/null <"/proc/$pid/status" || true
    done
    awk -v kb="$kb" 'BEGIN { printf "%.1f", kb / 1024 }'
}

CLK_TCK=$(getconf CLK_TCK)

# --- configs ----------------------------------------------------------------

BLUE_PORT="" GREEN_PORT="" SY_PORT="" NGINX_PORT="" HAPROXY_PORT="" SY_METRICS_PORT=""
free_port SY_METRICS_PORT
free_port BLUE_PORT
free_port GREEN_PORT
free_port SY_PORT
free_port NGINX_PORT
free_port HAPROXY_PORT
# Every target runs at once in a round (see "measuring"): one port each.
declare -A PORT_OF=()
for t in switchyard switchyard-health switchyard-metrics switchyard-accesslog switchyard-hyper switchyard-hyperserver switchyard-rules switchyard-middlewares switchyard-b haproxy-bare; do
    free_port new_port
    PORT_OF[$t]=$new_port
done
PORT_OF[switchyard]=$SY_PORT
PORT_OF[nginx]=$NGINX_PORT
PORT_OF[haproxy]=$HAPROXY_PORT

# The job (origins, switchyard, nginx): shared with benches/callgrind.sh.
# shellcheck source=benches/jobs.sh
source "$ROOT/benches/jobs.sh"

# switchyard_conf [VARIANT]: the plain config, or with health checks, the
# metrics listener or the access log switched on (for the overhead figures);
# hyper and hyperserver are the plain config (the variant is in the
# environment, see start_target).
switchyard_conf() {
    local variant=${1:-} dir=$WORK/switchyard${1:+-$1}
    mkdir -p "$dir"
    {
        local route_extra=""
        [[ $variant == middlewares ]] && route_extra='middlewares = ["office", "limit", "gzip", "secure"]'
        switchyard_base "$dir" "${PORT_OF[switchyard${variant:+-$variant}]}" "$route_extra"
        case $variant in
        "" | hyper | hyperserver | b) ;;
        rules)
            # Eight rule routes on the same host rank before the host-only
            # one, and match nothing wrk asks for: the worst case of a host
            # with rules.
            for n in 1 2 3 4 5 6 7 8; do
                printf '\n[[routes]]\nhost = "%s"\npath_prefix = "/api/v%s"\nmethods = ["GET", "POST"]\nheaders = { "X-Tenant" = "~^t%s$" }\npool = "app"\n' "$HOST" "$n" "$n"
            done
            ;;
        middlewares)
            # headers + ip_allow + rate_limit (never reached) + compress (the
            # origin's 5-byte answers are under min_bytes) on the route.
            cat <<'EOM'

[middlewares.secure]
headers = { frame_deny = true, content_type_nosniff = true, request = { set = { "X-Env" = "bench" } }, response = { set = { "Cache-Control" = "no-store" } } }
[middlewares.office]
ip_allow = { cidrs = ["127.0.0.0/8"] }
[middlewares.limit]
rate_limit = { average = 1000000, burst = 1000000 }
[middlewares.gzip]
compress = { min_bytes = 1024 }
EOM
            ;;
        health)
            printf '\n[pools.app]\nhealth = { path = "/", interval = "1s", timeout = "500ms", rise = 2, fall = 3 }\n'
            ;;
        metrics) printf '\n[metrics]\nlisten = "127.0.0.1:%s"\n' "$SY_METRICS_PORT" ;;
        accesslog) printf '\n[access_log]\nformat = "common"\npath = "%s/access.log"\n' "$dir" ;;
        *) die "unknown switchyard variant $variant" ;;
        esac
    } >"$dir/switchyard.toml"
}

haproxy_conf() {
    local dir=$WORK/haproxy
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 4096

defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    acl is_app hdr(host),field(1,:) -i $HOST
    # Unknown hosts get 404, as in switchyard.
    http-request deny deny_status 404 unless is_app
    # The job switchyard does on every request: X-Forwarded-For/-Proto/-Host
    # set (HAProxy keeps the client's Host by itself).
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend app

backend app
    balance roundrobin
    http-reuse always
    server blue 127.0.0.1:$BLUE_PORT weight 90
    server green 127.0.0.1:$GREEN_PORT weight 10
EOF
    # haproxy-bare: the same without the X-Forwarded-* rules (less work than
    # switchyard does), for reference.
    mkdir -p "$WORK/haproxy-bare"
    grep -v -e forwardfor -e X-Forwarded -e "The job switchyard" -e "(HAProxy keeps" \
        "$dir/haproxy.cfg" | sed "s/:$HAPROXY_PORT\$/:${PORT_OF[haproxy-bare]}/" >"$WORK/haproxy-bare/haproxy.cfg"
}

origin_conf blue "$BLUE_PORT"
origin_conf green "$GREEN_PORT"
for variant in "" health metrics accesslog hyper hyperserver rules middlewares b; do
    switchyard_conf "$variant"
    conf=$WORK/switchyard${variant:+-$variant}/switchyard.toml
    "$SWITCHYARD" check -c "$conf" >/dev/null || die "switchyard config rejected: $("$SWITCHYARD" check -c "$conf")"
done
nginx_proxy_conf
haproxy_conf

"$NGINX" -t -q -p "$WORK/blue" -c "$WORK/blue/nginx.conf" -e "$WORK/blue/error.log" || die "origin nginx config rejected"
"$NGINX" -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" || die "proxy nginx config rejected"
"$HAPROXY" -c -q -f "$WORK/haproxy/haproxy.cfg" || die "haproxy config rejected"

start_nginx() { # NAME PORT
    local dir=$WORK/$1
    start "$1" "$dir/stdout.log" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;'
    wait_ready "$STARTED" "$2" "$dir/error.log"
}

# start_target TARGET: starts it (origins must be up); sets TARGET_PID, TARGET_PORT.
start_target() {
    case $1 in
    direct)
        TARGET_PID=$BLUE_PID
        TARGET_PORT=$BLUE_PORT
        ;;
    switchyard | switchyard-*)
        local dir=$WORK/$1 env=()
        # The direct HTTP/1.1 path off: a benchmark switch (src/proxy/mod.rs DIRECT_H1).
        [[ $1 == switchyard-hyper ]] && env=(env SWITCHYARD_DIRECT_H1=0)
        # The direct HTTP/1.1 server path off (src/server/h1.rs DIRECT_SERVER).
        [[ $1 == switchyard-hyperserver ]] && env=(env SWITCHYARD_DIRECT_SERVER=0)
        local bin=$SWITCHYARD
        [[ $1 == switchyard-b ]] && bin=$SWITCHYARD_B
        start "$1" "$dir/log" "${env[@]}" "$bin" run -c "$dir/switchyard.toml"
        TARGET_PID=$STARTED
        TARGET_PORT=${PORT_OF[$1]}
        wait_ready "$TARGET_PID" "$TARGET_PORT" "$dir/log"
        ;;
    nginx)
        start_nginx nginx "$NGINX_PORT"
        TARGET_PID=$STARTED
        TARGET_PORT=$NGINX_PORT
        ;;
    haproxy | haproxy-bare)
        local dir=$WORK/$1
        start "$1" "$dir/log" "$HAPROXY" -db -f "$dir/haproxy.cfg"
        TARGET_PID=$STARTED
        TARGET_PORT=${PORT_OF[$1]}
        wait_ready "$TARGET_PID" "$TARGET_PORT" "$dir/log"
        ;;
    *) die "unknown target $1" ;;
    esac
}

stop_target() { # TARGET PID
    [[ $1 == direct ]] && return 0
    stop_pid "$2"
    forget_pid "$2"
}

# verify_split TARGET PORT: 100 requests must answer blue/green about 90/10.
verify_split() {
    local target=$1 port=$2 out blue green other
    out=$(taskset -c "$LOAD_CPUS" curl -s --noproxy '*' --max-time 10 -H "Host: $HOST" \
        "http://127.0.0.1:$port/split-check/[1-$CHECK_REQUESTS]" || true)
    blue=$(grep -cx blue <<<"$out" || true)
    green=$(grep -cx green <<<"$out" || true)
    other=$((CHECK_REQUESTS - blue - green))
    if ((other != 0 || blue < 85 || blue > 95)); then
        die "$target does not split 90/10: $CHECK_REQUESTS requests with Host $HOST gave blue=$blue green=$green other/failed=$other
first answers: $(head -c 300 <<<"$out" | tr '\n' ' ')"
    fi
    echo "  $target split check: blue=$blue green=$green over $CHECK_REQUESTS requests"
}

# wrk's latency value ("245.00us", "1.23ms", "1.02s") in ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# Counters of both origins (nginx stub_status), as
# "accepted_connections blue_requests green_requests". Each read is itself one
# connection and one request on each origin.
origin_counters() {
    local port out acc=0 reqs=()
    local -a f
    for port in "$BLUE_PORT" "$GREEN_PORT"; do
        out=$(curl -s --noproxy '*' --max-time 2 "http://127.0.0.1:$port/__origin_status") ||
            die "cannot read the origin's status on port $port"
        read -r -a f <<<"$(sed -n 3p <<<"$out")"
        [[ ${f[0]:-} =~ ^[0-9]+$ && ${f[2]:-} =~ ^[0-9]+$ ]] || die "unexpected origin status: $out"
        acc=$((acc + f[0]))
        reqs+=("${f[2]}")
    done
    echo "$acc ${reqs[0]} ${reqs[1]}"
}

# --- measuring --------------------------------------------------------------

# TARGETS="direct switchyard switchyard-health ..." picks targets; the
# switchyard-health/-metrics/-accesslog variants give the overhead of each feature.
read -r -a TARGETS <<<"${TARGETS:-direct switchyard nginx haproxy}"
for t in "${TARGETS[@]}"; do
    if [[ $t == switchyard-b ]]; then
        [[ -x $SWITCHYARD_B ]] || die "target switchyard-b needs SWITCHYARD_B_BIN=<an executable> (got '$SWITCHYARD_B')"
    fi
done
RAW=$WORK/raw.tsv
: >"$RAW"
STAMP=$(date +%Y%m%d-%H%M%S)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_BEFORE%% *}" 'BEGIN { exit !(l >= 1.0) }'; then
    echo "warning: load average is $LOAD_BEFORE; another job on this machine skews the figures (BENCH.md: ~30%)" >&2
fi

echo "switchyard vs nginx vs HAProxy: $ROUNDS round(s) x ${DURATION}s per target in ${SLICE}s slices; WORKERS=$WORKERS LAYOUT=$LAYOUT: $LAYOUT_TEXT"
echo "ports: blue $BLUE_PORT green $GREEN_PORT switchyard $SY_PORT nginx $NGINX_PORT haproxy $HAPROXY_PORT"

# median of the numbers on stdin ("-" when none)
median_of() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
        print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

SLICES=$(((DURATION + SLICE - 1) / SLICE))
for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round/$ROUNDS"
    start_nginx blue "$BLUE_PORT"
    BLUE_PID=$STARTED
    start_nginx green "$GREEN_PORT"
    GREEN_PID=$STARTED
    declare -A PID_OF=() IDLE=() REQS=() SECS=() TICKS=() UTICKS=() ERRS=() UPC=() BLUE_N=() GREEN_N=() P50S=() P99S=()
    # Every target up at once (each fresh, idle until driven), so that the
    # slices below can alternate between them.
    for target in "${TARGETS[@]}"; do
        start_target "$target"
        PID_OF[$target]=$TARGET_PID
        PORT_OF[$target]=$TARGET_PORT
        IDLE[$target]=$(tree_mem_mib VmRSS "$TARGET_PID")
        [[ $target == direct ]] || verify_split "$target" "$TARGET_PORT"
        REQS[$target]=0 SECS[$target]=0 TICKS[$target]=0 UTICKS[$target]=0 ERRS[$target]=0 UPC[$target]=0
        BLUE_N[$target]=0 GREEN_N[$target]=0 P50S[$target]="" P99S[$target]=""
    done
    for target in "${TARGETS[@]}"; do
        taskset -c "$LOAD_CPUS" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" -H "Host: $HOST" "http://127.0.0.1:${PORT_OF[$target]}/" >/dev/null
    done
    # The machine's speed drifts by tens of percent over seconds (other
    # guests: steal time). Short slices, the targets' order rotating, give
    # each target the same share of good and bad moments.
    n=${#TARGETS[@]}
    for ((slice = 0; slice < SLICES; slice++)); do
        for ((i = 0; i < n; i++)); do
            target=${TARGETS[(i + slice) % n]}
            pid=${PID_OF[$target]}
            [[ $target == switchyard-metrics ]] && start_scraper
            read -r acc0 blue0 green0 <<<"$(origin_counters)"
            read -r t0 u0 <<<"$(tree_ticks_split "$pid")"
            out=$(taskset -c "$LOAD_CPUS" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SLICE}s" --latency -H "Host: $HOST" "http://127.0.0.1:${PORT_OF[$target]}/")
            read -r t1 u1 <<<"$(tree_ticks_split "$pid")"
            read -r acc1 blue1 green1 <<<"$(origin_counters)"
            stop_scraper
            read -r requests secs <<<"$(awk '/ requests in / { sub(/s,?$/, "", $4); print $1, $4 }' <<<"$out")"
            [[ -n $requests && $requests -gt 0 ]] || die "could not read wrk's output for $target:
$out"
            non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
            sockerr=$(awk -F'[ ,]+' '/Socket errors:/ { print $5 + $7 + $9 + $11 }' <<<"$out")
            REQS[$target]=$((REQS[$target] + requests))
            SECS[$target]=$(awk -v a="${SECS[$target]}" -v b="$secs" 'BEGIN { print a + b }')
            TICKS[$target]=$((TICKS[$target] + t1 - t0))
            UTICKS[$target]=$((UTICKS[$target] + u1 - u0))
            ERRS[$target]=$((ERRS[$target] + ${non2xx:-0} + ${sockerr:-0}))
            # Minus the status reads themselves (one connection and one request each).
            UPC[$target]=$((UPC[$target] + acc1 - acc0 - 2))
            BLUE_N[$target]=$((BLUE_N[$target] + blue1 - blue0 - 1))
            GREEN_N[$target]=$((GREEN_N[$target] + green1 - green0 - 1))
            P50S[$target]+="$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")") "
            P99S[$target]+="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")") "
        done
    done
    for target in "${TARGETS[@]}"; do
        pid=${PID_OF[$target]}
        peak=$(tree_mem_mib VmHWM "$pid")
        kill -0 "$pid" 2>/dev/null || die "$target died during the run"
        stop_target "$target" "$pid"
        requests=${REQS[$target]}
        rps=$(awk -v n="$requests" -v s="${SECS[$target]}" 'BEGIN { printf "%.0f", n / s }')
        p50=$(tr ' ' '\n' <<<"${P50S[$target]}" | grep . | median_of)
        p99=$(tr ' ' '\n' <<<"${P99S[$target]}" | grep . | median_of)
        cpu=$(awk -v d="${TICKS[$target]}" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
        # The user-space share of it (the rest is the kernel's: sockets, wake-ups).
        ucpu=$(awk -v d="${UTICKS[$target]}" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
        green_pct=$(awk -v b="${BLUE_N[$target]}" -v g="${GREEN_N[$target]}" 'BEGIN { if (b + g > 0) printf "%.1f", 100 * g / (b + g); else print "-" }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$rps" "$p50" "$p99" "${IDLE[$target]}" "$peak" "$cpu" "${ERRS[$target]}" "${UPC[$target]}" "$green_pct" "$requests" "$ucpu" >>"$RAW"
        printf '  %-20s %8s req/s  p50 %6s ms  p99 %6s ms  idle %5s MiB  peak %5s MiB  cpu %6s us/req (user %s)  errors %s  upstream conns %s  green %s%%\n' \
            "$target" "$rps" "$p50" "$p99" "${IDLE[$target]}" "$peak" "$cpu" "$ucpu" "${ERRS[$target]}" "${UPC[$target]}" "$green_pct"
    done
    stop_pid "$BLUE_PID"
    forget_pid "$BLUE_PID"
    stop_pid "$GREEN_PID"
    forget_pid "$GREEN_PID"
done

# --- report -----------------------------------------------------------------

# median TARGET COLUMN (columns of raw.tsv, 1-based)
median() {
    awk -F'\t' -v t="$1" -v c="$2" '$2 == t { print $c }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
              m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m }'
}

fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "-") print "-"; else printf f, v }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

label() {
    case $1 in
    direct) echo "direct to origin (ceiling)" ;;
    haproxy-bare) echo "haproxy, no X-Forwarded-*" ;;
    *) echo "$1" ;;
    esac
}

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
    COMMIT+=" (+ uncommitted changes in src/Cargo)"
fi
mkdir -p "$ROOT/bench-results"
RESULT=$ROOT/bench-results/compare-$STAMP.txt

{
    echo "# switchyard compare, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT"
    echo "# $(nproc) CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER"
    echo "# $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), HAProxy $("$HAPROXY" -v | awk 'NR == 1 { print $3 }'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), $("$SWITCHYARD" --version)"
    echo "# pool Host $HOST blue:90 green:10; wrk -c$CONNS, ${DURATION}s per target per round in ${SLICE}s slices taken in turn, after a ${WARMUP}s warm-up"
    echo "# WORKERS=$WORKERS LAYOUT=$LAYOUT: $LAYOUT_TEXT"
    echo "# medians of $ROUNDS round(s) (${TARGETS[*]}); p50/p99 per round = median of the slices' values"
    echo
    printf '| %-26s | %8s | %7s | %7s | %13s | %13s | %16s | %6s | %14s | %7s |\n' \
        target "req/s" "p50 ms" "p99 ms" "idle RSS MiB" "peak RSS MiB" "proxy CPU us/req" errors "upstream conns" "green %"
    echo '|----------------------------|---------:|--------:|--------:|--------------:|--------------:|-----------------:|-------:|---------------:|--------:|'
    for t in "${TARGETS[@]}"; do
        errs=$(awk -F'\t' -v t="$t" '$2 == t { s += $9 } END { print s + 0 }' "$RAW")
        printf '| %-26s | %8s | %7s | %7s | %13s | %13s | %16s | %6s | %14s | %7s |\n' "$(label "$t")" \
            "$(fmt "$(median "$t" 3)" '%.0f')" "$(fmt "$(median "$t" 4)" '%.2f')" "$(fmt "$(median "$t" 5)" '%.2f')" \
            "$(fmt "$(median "$t" 6)" '%.1f')" "$(fmt "$(median "$t" 7)" '%.1f')" "$(fmt "$(median "$t" 8)" '%.1f')" "$errs" \
            "$(fmt "$(median "$t" 10)" '%.0f')" "$(fmt "$(median "$t" 11)" '%.1f')"
    done
    echo
    sy=$(median switchyard 3)
    echo "switchyard / haproxy req/s: $(ratio "$sy" "$(median haproxy 3)")"
    echo "switchyard / nginx   req/s: $(ratio "$sy" "$(median nginx 3)")"
    echo "switchyard / direct  req/s: $(ratio "$sy" "$(median direct 3)")"
    if [[ " ${TARGETS[*]} " == *" haproxy-bare "* ]]; then
        echo "switchyard / haproxy-bare req/s: $(ratio "$sy" "$(median haproxy-bare 3)")"
    fi
    echo "switchyard / haproxy CPU per request: $(ratio "$(median switchyard 8)" "$(median haproxy 8)")"
    echo "switchyard / nginx   CPU per request: $(ratio "$(median switchyard 8)" "$(median nginx 8)")"
    for p in nginx haproxy; do
        [[ " ${TARGETS[*]} " == *" $p "* ]] || continue
        echo "CPU us/req, user + kernel: switchyard $(median switchyard 13) + $(awk -v a="$(median switchyard 8)" -v b="$(median switchyard 13)" 'BEGIN { printf "%.1f", a - b }'), $p $(median "$p" 13) + $(awk -v a="$(median "$p" 8)" -v b="$(median "$p" 13)" 'BEGIN { printf "%.1f", a - b }') (medians of rounds)"
    done
    for t in "${TARGETS[@]}"; do
        [[ $t == switchyard-* ]] || continue
        echo "$t / switchyard req/s: $(ratio "$(median "$t" 3)" "$sy"), CPU per request: $(ratio "$(median "$t" 8)" "$(median switchyard 8)")"
    done
    echo
    echo "Notes: for 'direct' the RSS and CPU columns are the blue origin's own (its CPU per request is"
    echo "paid by every proxy too). RSS sums the process tree (nginx: master + workers); peak is VmHWM."
    echo "errors = non-2xx answers + socket errors summed over all rounds. upstream conns = connections"
    echo "the origins accepted during the measured slices (direct: wrk's $CONNS; a proxy reusing upstream"
    echo "keep-alive connections opens few; switchyard, like nginx, closes the backend connection of a request"
    echo "whose client left, which wrk does at the end of every slice; switchyard-health's probes count"
    echo "wherever they fall). green % = green's share of the requests the origins served"
    echo "during the run. Every proxy answered $CHECK_REQUESTS/$CHECK_REQUESTS split-check requests about 90/10"
    echo "before each round."
    for t in "${TARGETS[@]}"; do
        [[ $t == direct ]] && continue
        awk -F'\t' -v t="$t" '$2 == t && $12 > 0 && $10 > 0.01 * $12 {
            printf "WARNING: %s opened %d upstream connections for %d requests in round %d (%.0f%%): it is not reusing upstream keep-alive connections\n",
                t, $10, $12, $1, 100 * $10 / $12 }
            $2 == t && ($11 == "-" || $11 < 8 || $11 > 12) {
            printf "WARNING: %s sent %s%% of the requests to green in round %d, not about 10%%\n", t, $11, $1 }' "$RAW"
    done
    echo
    echo "## per round"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' round target "req/s" p50_ms p99_ms idle_mib peak_mib cpu_us_per_req errors upstream_conns green_pct requests user_us_per_req
    cat "$RAW"
} >"$RESULT"

echo
cat "$RESULT"
echo
echo "written to ${RESULT#"$ROOT"/}"
