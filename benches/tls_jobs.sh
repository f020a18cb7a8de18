# benches/tls_jobs.sh: the TLS job of benches/tls_compare.sh, as writers,
# sourced by tls_compare.sh and benches/callgrind_h2.sh (not run alone), so
# that what callgrind counts is the job tls_compare.sh times: one ECDSA P-256
# certificate for "localhost" (from a CA of its own), a 1-worker nginx origin
# answering "blue\n", and each proxy (1 worker/thread) terminating TLS in
# front of it.
#
# The sourcing script sets WORK (the temp dir) first. It gets: tls_certs,
# origin_tls_conf, switchyard_tls_conf and haproxy_tls_conf.

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

haproxy_tls_conf() { # PORT ORIGIN_PORT -> stdout (resumption: its defaults, said out loud)
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
    default_backend be
backend be
    http-reuse always
    server origin 127.0.0.1:$2
EOF
}
