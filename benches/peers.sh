# benches/peers.sh: the rig benches/slowloris.sh and benches/many_conns.sh
# share, sourced by them (not run alone): switchyard, nginx and HAProxy with
# the same client timeouts and connection limit in front of one 1-worker
# nginx origin, on loopback, free ports, stopped by pid on exit.
#
# The sourcing script sets first: BENCH (its name, for messages and the temp
# dir), ROOT, SWITCHYARD, HOST, DURATION, MAX_CONNS, NEED (open files it
# needs), ORIGIN_CONNS (the origin's worker_connections), WRK_CONNS and
# WRK_TIMEOUT (for run_wrk), and a die() function. It gets: NGINX, HAPROXY,
# NOFILE, WORK, PIDS, stop_pid, forget_pid, free_port, start, wait_ready,
# rss_mib, the four configs written, HAPROXY_MAXCONN, start_target (sets
# TARGET_PID and TARGET_PORT), to_ms and run_wrk.

PATH=$PATH:/usr/sbin:/sbin
for tool in nginx haproxy wrk python3 taskset curl; do
    command -v "$tool" >/dev/null 2>&1 || die "missing $tool (scripts/setup.sh bench installs nginx, haproxy and wrk)"
done
NGINX=$(command -v nginx)
HAPROXY=$(command -v haproxy)

# Every client connection is an open file in the client and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] || ((NOFILE >= NEED)) ||
    die "open-files limit is $NOFILE, needs $NEED (raise the hard limit: ulimit -Hn, or LimitNOFILE)"

if [[ -z ${SWITCHYARD_BIN:-} ]]; then
    if [[ ! -x $SWITCHYARD || -n $(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$SWITCHYARD" -print -quit) ]]; then
        echo "building switchyard ..."
        (cd "$ROOT" && cargo build --release --bin switchyard) || die "cargo build --release failed"
    fi
fi
[[ -x $SWITCHYARD ]] || die "no switchyard binary at $SWITCHYARD"

# --- processes --------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-$BENCH.XXXXXX")
chmod 755 "$WORK"
PIDS=()

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
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

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        stop_pid "$p"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port VAR: a loopback port outside the ephemeral range that no socket uses.
read -r EPHEMERAL_LO EPHEMERAL_HI </proc/sys/net/ipv4/ip_local_port_range
if ((EPHEMERAL_LO > 11024)); then
    PORT_BASE=10000 PORT_SPAN=$((EPHEMERAL_LO - 10000))
else
    PORT_BASE=$((EPHEMERAL_HI + 1)) PORT_SPAN=$((65535 - EPHEMERAL_HI))
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

# start LOG CMD...: CMD on CPU 1 in the background; sets STARTED.
start() {
    local log=$1
    shift
    taskset -c 1 "$@" >"$log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

wait_ready() { # PID PORT LOG
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$1" 2>/dev/null || die "a server exited at startup: $(tail -n 20 "$3")"
        curl -s --noproxy '*' -o /dev/null --max-time 1 -H "Host: $HOST" "http://127.0.0.1:$2/" && return 0
        sleep 0.1
    done
    die "nothing answered on 127.0.0.1:$2 within 10 s: $(tail -n 20 "$3")"
}

rss_mib() { # FIELD PID: VmRSS / VmHWM of the process and its children, in MiB
    local kb=0 pid key value
    for pid in "$2" $(pgrep -P "$2" 2>/dev/null || true); do
        while read -r key value _; do
            [[ $key == "$1:" ]] && kb=$((kb + value))
        done 2>/dev/null <"/proc/$pid/status" || true
    done
    awk -v kb="$kb" 'BEGIN { printf "%.1f", kb / 1024 }'
}

# --- configs ----------------------------------------------------------------

ORIGIN_PORT="" SY_PORT="" NGINX_PORT="" HAPROXY_PORT=""
free_port ORIGIN_PORT
free_port SY_PORT
free_port NGINX_PORT
free_port HAPROXY_PORT

nginx_head() { # DIR CONNS
    cat <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $1/nginx.pid;
error_log $1/error.log crit;
events { worker_connections $2; }
EOF
}

nginx_paths() { # DIR
    local d
    for d in client_body proxy fastcgi uwsgi scgi; do
        printf '    %s_temp_path %s/%s;\n' "$d" "$1" "$d"
    done
}

mkdir -p "$WORK/origin" "$WORK/switchyard" "$WORK/nginx" "$WORK/haproxy"
{
    nginx_head "$WORK/origin" "$ORIGIN_CONNS"
    cat <<EOF
http {
    access_log off;
$(nginx_paths "$WORK/origin")
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
        location / { default_type text/plain; return 200 "blue\n"; }
    }
}
EOF
} >"$WORK/origin/nginx.conf"

cat >"$WORK/switchyard/switchyard.toml" <<EOF
[server]
http = "127.0.0.1:$SY_PORT"
workers = 1
shutdown_grace = "1s"
header_timeout = "10s"
idle_timeout = "60s"
send_timeout = "60s"
body_timeout = "60s"
max_connections = $MAX_CONNS

[admin]
socket = "$WORK/switchyard/admin.sock"
state = "$WORK/switchyard/state.json"

[[routes]]
host = "$HOST"
pool = "app"

[pools.app.versions.blue]
weight = 100
backends = ["127.0.0.1:$ORIGIN_PORT"]
EOF

{
    nginx_head "$WORK/nginx" "$MAX_CONNS"
    cat <<EOF
http {
    access_log off;
$(nginx_paths "$WORK/nginx")
    keepalive_requests 10000000;
    client_header_timeout 10s;
    keepalive_timeout 60s;
    send_timeout 60s;
    client_body_timeout 60s;
    upstream app_pool {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=1024;
        location / {
            proxy_pass http://app_pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
} >"$WORK/nginx/nginx.conf"

# HAProxy wants two files per connection (plus a few) under its own limit.
HAPROXY_MAXCONN=$MAX_CONNS
[[ $NOFILE == unlimited ]] || ((HAPROXY_MAXCONN <= (NOFILE - 100) / 2)) || HAPROXY_MAXCONN=$(((NOFILE - 100) / 2))
cat >"$WORK/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN

defaults
    mode http
    timeout connect 3s
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    maxconn $HAPROXY_MAXCONN
    option forwardfor
    default_backend app

backend app
    http-reuse always
    server blue 127.0.0.1:$ORIGIN_PORT
EOF

"$SWITCHYARD" check -c "$WORK/switchyard/switchyard.toml" >/dev/null || die "switchyard config rejected"
"$NGINX" -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" || die "nginx config rejected"
"$HAPROXY" -c -q -f "$WORK/haproxy/haproxy.cfg" 2>/dev/null || die "haproxy config rejected"

start_target() { # TARGET: sets TARGET_PID, TARGET_PORT
    local dir=$WORK/$1
    case $1 in
    switchyard)
        start "$dir/log" "$SWITCHYARD" run -c "$dir/switchyard.toml"
        TARGET_PORT=$SY_PORT
        ;;
    switchyard-hyperserver)
        # switchyard's config, served by hyper's server (src/server/h1.rs DIRECT_SERVER).
        mkdir -p "$dir"
        start "$dir/log" env SWITCHYARD_DIRECT_SERVER=0 "$SWITCHYARD" run -c "$WORK/switchyard/switchyard.toml"
        TARGET_PORT=$SY_PORT
        ;;
    nginx)
        start "$dir/log" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;'
        TARGET_PORT=$NGINX_PORT
        ;;
    haproxy)
        start "$dir/log" "$HAPROXY" -db -f "$dir/haproxy.cfg"
        TARGET_PORT=$HAPROXY_PORT
        ;;
    *) die "unknown target $1" ;;
    esac
    TARGET_PID=$STARTED
    wait_ready "$TARGET_PID" "$TARGET_PORT" "$dir/log"
}

to_ms() { # wrk's "245.00us" / "1.23ms" / "1.02s" in ms
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

# run_wrk PORT: "req/s p99_ms errors"
run_wrk() {
    local out rps p99 errs
    out=$(taskset -c 0 wrk -t1 -c"$WRK_CONNS" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" --latency -H "Host: $HOST" "http://127.0.0.1:$1/" 2>&1) || true
    # WRK_LOG=FILE: wrk's whole output (the latency distribution) appended.
    [[ -z ${WRK_LOG:-} ]] || echo "$out" >>"$WRK_LOG"
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    errs=$(awk -F'[ ,]+' '/Socket errors:/ { s += $5 + $7 + $9 + $11 } /Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' <<<"$out")
    echo "${rps:-0} $(if [[ -n $p99 ]]; then to_ms "$p99"; else echo -; fi) $errs"
}

