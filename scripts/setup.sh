#!/usr/bin/env bash
# Installs what switchyard's tests and tools need, idempotently: only what is
# missing, with one `apt-get update` first. Safe to run on every CI start.
#   scripts/setup.sh            test dependencies
#   scripts/setup.sh bench      also the benchmark peers (nginx, HAProxy, wrk, h2load, valgrind)
set -euo pipefail

# docker.io, docker-compose and busybox-static: tests/docker.rs starts its own
# dockerd (Debian's policy-rc.d keeps the package from starting one) and
# makes its test image from the static busybox. apache2-utils: htpasswd for
# tests/middlewares.rs. etcd-server/etcd-client: the [cluster] tests start
# their own members; protobuf-compiler + libprotobuf-dev: the etcd-client
# crate's build needs protoc and the well-known .proto files.
packages=(curl apache2-utils pebble prometheus chromium chromium-driver docker.io docker-compose busybox-static etcd-server etcd-client protobuf-compiler libprotobuf-dev)
if [[ "${1:-}" == "bench" ]]; then
  packages+=(nginx-light haproxy wrk nghttp2-client valgrind)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts packaged daemons; the tests start their own on loopback.
  for svc in prometheus nginx haproxy etcd; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    pkill -x "$svc" >/dev/null 2>&1 || true
  done
  # Where systemd started Debian's own dockerd (it changes iptables and adds
  # docker0), stop it: tests/docker.rs runs private daemons that change nothing.
  $SUDO systemctl disable --now docker.socket docker containerd >/dev/null 2>&1 || true
fi

for tool in pebble pebble-challtestsrv prometheus promtool curl htpasswd dockerd docker-compose etcd etcdctl protoc; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is still missing" >&2; exit 1; }
done
echo "setup: ok"
