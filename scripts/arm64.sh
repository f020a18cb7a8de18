#!/usr/bin/env bash
# arm64 (Raspberry Pi 3/4/5, 64-bit OS): cross-builds switchyard on this x86_64
# machine and runs the end-to-end tests with the arm64 binaries under
# qemu-user: the test binaries run under cargo's runner, and the proxy they
# start runs under SWITCHYARD_TEST_RUNNER (tests/support/mod.rs `bin()`).
#
#   scripts/arm64.sh          glibc build (aarch64-unknown-linux-gnu), the weights,
#                             admin and ACME end-to-end tests under qemu, size and RSS
#   scripts/arm64.sh build    the glibc release binary only
#   scripts/arm64.sh musl     static build (aarch64-unknown-linux-musl) and the same tests
#
# Installs what it needs, idempotently: apt-get (after an update) for
# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user-static; rustup for
# the target. Binaries: target/<target>/release/switchyard (+ .stripped).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-all}"
case "$MODE" in
  all | build) TARGET=aarch64-unknown-linux-gnu ;;
  musl) TARGET=aarch64-unknown-linux-musl ;;
  *)
    echo "usage: scripts/arm64.sh [build|musl]" >&2
    exit 2
    ;;
esac
SYSROOT=/usr/aarch64-linux-gnu
if [[ "$TARGET" == *musl ]]; then
  RUNNER="qemu-aarch64-static" # static: no sysroot needed
else
  RUNNER="qemu-aarch64-static -L $SYSROOT"
fi
BIN=target/$TARGET/release/switchyard
started=$SECONDS

step() { printf '\narm64: %s\n' "$*"; }

# --- tools -------------------------------------------------------------------
packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static curl python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  step "rustup target add $TARGET"
  rustup target add "$TARGET"
fi

# The cross gcc drives the link and compiles ring's C and assembly. For musl,
# Rust's target brings its own crt objects and libc.a (self-contained), so the
# same gcc links a static binary.
for t in AARCH64_UNKNOWN_LINUX_GNU AARCH64_UNKNOWN_LINUX_MUSL; do
  export "CARGO_TARGET_${t}_LINKER=aarch64-linux-gnu-gcc"
done
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L $SYSROOT"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER="qemu-aarch64-static"

# --- release binary ----------------------------------------------------------
step "cargo build --release --target $TARGET"
t0=$SECONDS
cargo build --release --target "$TARGET" --bin switchyard
echo "arm64: built in $((SECONDS - t0)) s: $BIN"
aarch64-linux-gnu-readelf -h "$BIN" | grep -q 'Machine:.*AArch64' || {
  echo "arm64: $BIN is not an AArch64 executable" >&2
  exit 1
}
aarch64-linux-gnu-strip -o "$BIN.stripped" "$BIN"
echo "arm64: size $(stat -c %s "$BIN") bytes, stripped $(stat -c %s "$BIN.stripped") bytes"
if [[ "$TARGET" == *musl ]]; then
  if aarch64-linux-gnu-readelf -l "$BIN" | grep -q INTERP; then
    echo "arm64: $BIN is not static" >&2
    exit 1
  fi
  echo "arm64: static executable: no dynamic loader, no glibc needed"
else
  floor=$(aarch64-linux-gnu-objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sort -u -V | tail -1)
  echo "arm64: newest glibc symbol version needed: $floor"
fi
$RUNNER "$BIN" --version
[[ "$MODE" == "build" ]] && exit 0

# --- end-to-end tests under qemu ---------------------------------------------
tests=(weights admin)
[[ -f tests/acme.rs ]] && tests+=(acme)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
[[ -f tests/acme.rs ]] && scripts/setup.sh >/dev/null # pebble for the ACME tests
step "cargo test --release --target $TARGET ${args[*]} (under qemu)"
t0=$SECONDS
SWITCHYARD_TEST_RUNNER="$RUNNER" cargo test --release --target "$TARGET" "${args[@]}" 2>&1
echo "arm64: end-to-end tests under qemu took $((SECONDS - t0)) s (build included)"

# --- memory of the arm64 proxy under emulation --------------------------------
step "RSS of the arm64 proxy under qemu (idle, then after 1000 requests)"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
read -r p1 p2 < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
config() { # NAME: a config on loopback with the blue/green pool on p1/p2
  cat <<EOF
[server]
http = "127.0.0.1:0"
[admin]
socket = "$work/$1.sock"
state = "$work/$1.json"
[[routes]]
host = "app.test"
pool = "app"
[pools.app.versions.blue]
weight = 1
backends = ["127.0.0.1:$p1"]
[pools.app.versions.green]
weight = 1
backends = ["127.0.0.1:$p2"]
EOF
}
config origins >"$work/origins.toml"
config proxy >"$work/proxy.toml"
# Origins: `demo -c` answers on the loopback backends, in a process of its own.
$RUNNER "$BIN" demo -c "$work/origins.toml" >"$work/origins.log" 2>&1 &
pids+=($!)
$RUNNER "$BIN" run -c "$work/proxy.toml" 2>"$work/proxy.log" &
proxy=$!
pids+=("$proxy")
port=""
for _ in $(seq 1 300); do
  if [[ -S "$work/proxy.sock" ]] && state=$(curl -sf --unix-socket "$work/proxy.sock" http://x/v1/state); then
    port=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["listeners"]["http"].rsplit(":",1)[1])' <<<"$state")
    if curl -sf -o /dev/null "http://127.0.0.1:$p1/" && curl -sf -o /dev/null "http://127.0.0.1:$p2/"; then
      break
    fi
  fi
  port=""
  sleep 0.1
done
if [[ -z "$port" ]]; then
  echo "arm64: the proxy or its origins did not start" >&2
  cat "$work/proxy.log" "$work/origins.log" >&2
  exit 1
fi
mem() { grep -E '^(VmRSS|VmHWM)' "/proc/$proxy/status" | tr -s ' \t' ' ' | paste -sd, -; }
sleep 1
echo "arm64: idle:                   $(mem)"
ok=$(curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: app.test' "http://127.0.0.1:$port/?[1-1000]" | grep -c '^200$' || true)
echo "arm64: after $ok/1000 requests: $(mem)"
if [[ "$ok" != 1000 ]]; then
  echo "arm64: only $ok of 1000 requests answered 200" >&2
  exit 1
fi
echo "arm64: (the RSS of qemu-user: the guest plus the emulator and its translated-code cache)"
echo "arm64: ok in $((SECONDS - started)) s"
