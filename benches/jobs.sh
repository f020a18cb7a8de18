# benches/jobs.sh: the job every proxy does in benches/compare.sh, as config
# writers, sourced by compare.sh and benches/callgrind.sh (not run alone), so
# that what callgrind counts is the job compare.sh times: two 1-worker nginx
# origins (blue, green), a 90/10 pool on Host $HOST, the client's Host kept,
# X-Forwarded-For/-Proto/-Host set, upstream keep-alive.
#
# The sourcing script sets first: WORK (the temp dir), HOST, WORKERS,
# BLUE_PORT, GREEN_PORT and NGINX_PORT. It gets: nginx_common,
# nginx_temp_paths, origin_conf, switchyard_base and nginx_proxy_conf.

nginx_job_location() { # UPSTREAM: the location every nginx of the benches proxies with
    cat <<EOF
        location / {
            proxy_pass http://$1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The job switchyard does on every request: the client's Host
            # kept, X-Forwarded-For/-Proto/-Host set.
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
EOF
}

nginx_common() { # DIR [WORKERS]
    cat <<EOF
worker_processes ${2:-1};
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}

nginx_temp_paths() { # DIR
    cat <<EOF
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

origin_conf() { # NAME PORT
    local dir=$WORK/$1
    mkdir -p "$dir"
    {
        nginx_common "$dir"
        cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$dir")
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / {
            default_type text/plain;
            return 200 "$1\n";
        }
        # Counters read by this script around each run (connections, requests).
        location = /__origin_status {
            stub_status;
        }
    }
}
EOF
    } >"$dir/nginx.conf"
}

switchyard_base() { # DIR PORT [ROUTE_EXTRA]
    local dir=$1
    cat <<EOF
[server]
http = "127.0.0.1:$2"
workers = $WORKERS
shutdown_grace = "1s"

[admin]
socket = "$dir/admin.sock"
state = "$dir/state.json"

[[routes]]
host = "$HOST"
pool = "app"
${3:-}

[pools.app.versions.blue]
weight = 90
backends = ["127.0.0.1:$BLUE_PORT"]

[pools.app.versions.green]
weight = 10
backends = ["127.0.0.1:$GREEN_PORT"]
EOF
}

nginx_proxy_conf() {
    local dir=$WORK/nginx
    mkdir -p "$dir"
    {
        nginx_common "$dir" "$WORKERS"
        cat <<EOF
http {
    access_log off;
$(nginx_temp_paths "$dir")
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream app_pool {
        server 127.0.0.1:$BLUE_PORT weight=90;
        server 127.0.0.1:$GREEN_PORT weight=10;
        keepalive 64;
        keepalive_requests 10000000;
    }
    # Unknown hosts get 404, as in switchyard.
    server {
        listen 127.0.0.1:$NGINX_PORT default_server backlog=4096;
        return 404;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        server_name $HOST;
$(nginx_job_location app_pool)
    }
}
EOF
    } >"$dir/nginx.conf"
}
