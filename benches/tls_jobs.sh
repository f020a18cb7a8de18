# benches/tls_jobs.sh: the TLS job of benches/tls_compare.sh, as writers,
# sourced by tls_compare.sh and benches/callgrind_h2.sh (not run alone), so
# that what callgrind counts is the job tls_compare.sh times: one ECDSA P-256
# certificate for "localhost" (from a CA of its own), a 1-worker nginx origin
# answering "blue\n", and each proxy (1 worker/thread) terminating TLS in
# front of it.
#
# The sourcing script sets WORK (the temp dir) first. It gets: tls_certs,
# origin_tls_conf, switchyard_tls_conf, haproxy_tls_conf and
# nginx_tls_conf (and what benches/jobs.sh defines, sourced here).

# shellcheck source=benches/jobs.sh
source "$(dirname "${BASH_SOURCE[0]}")/jobs.sh"

tls_certs() { # -> $WORK/ca.pem, cert.pem, key.pem, haproxy.pem (cert + key)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$WORK/key.pem" -out "$WORK/leaf.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$WORK/ext.cnf"
    openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
        -CAcreateserial -days 2 -extfile "$WORK/ext.cnf" -out "$WORK/cert.pem" 2>/dev/null
    cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"
}

origin_tls_conf() { # PORT -> $WORK/origin/nginx.conf
    mkdir -p "$WORK/origin"
    cat >"$WORK/origin/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/origin/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$1;
        keepalive_requests 1000000;
        location / { return 200 "blue\n"; }
    }
}
EOF
}

switchyard_tls_conf() { # HTTPS_PORT HTTP_PORT ORIGIN_PORT -> stdout
    cat <<EOF
[server]
http = "127.0.0.1:$2"
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
backends = ["127.0.0.1:$3"]
EOF
}

haproxy_tls_conf() { # PORT ORIGIN_PORT [bare] -> stdout (resumption: its defaults, said out loud)
    # The job switchyard does on every request, as in benches/compare.sh:
    # unknown hosts get 404, the client's Host kept (HAProxy keeps it by
    # itself; over HTTP/2 it makes it from :authority), X-Forwarded-For,
    # -Proto and -Host set. "bare" leaves those rules out (less work than
    # switchyard does), for reference.
    local job='    acl is_app hdr(host),field(1,:) -i localhost
    http-request deny deny_status 404 unless is_app
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Host %[req.hdr(host)]'
    [[ ${3:-} == bare ]] && job="    # bare: no host check, no X-Forwarded-*"
    cat <<EOF
global
    nbthread 1
    maxconn 8000
    tune.ssl.cachesize 20000
defaults
    mode http
    timeout connect 3s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$1 ssl crt $WORK/haproxy.pem alpn h2,http/1.1
$job
    default_backend be
backend be
    http-reuse always
    server origin 127.0.0.1:$2
EOF
}

nginx_tls_conf() { # PORT ORIGIN_PORT -> $WORK/nginx/nginx.conf
    # The same job as HAProxy's above: unknown hosts 404, Host kept,
    # X-Forwarded-For/-Proto/-Host set (nginx_job_location, benches/jobs.sh).
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    upstream origin { server 127.0.0.1:$2; keepalive 64; }
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$1 ssl http2 default_server;
        return 404;
    }
    server {
        listen 127.0.0.1:$1 ssl http2;
        server_name localhost;
$(nginx_job_location origin)
    }
}
EOF
}
