#!/usr/bin/env bash
# arm64 (Raspberry Pi 3/4/5, 64-bit OS): cross-builds switchyard for
# aarch64-unknown-linux-gnu on this x86_64 machine and runs the end-to-end
# tests with the arm64 binaries under qemu-user (the test binaries run under
# the cargo runner; the proxy they start runs under SWITCHYARD_TEST_RUNNER).
#
#   scripts/arm64.sh            install, build, end-to-end tests, size and RSS figures
#   scripts/arm64.sh build      install and build the release binary only
#   scripts/arm64.sh musl       also try a static aarch64-unknown-linux-musl build
#
# Installs what it needs idempotently (apt-get: gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross, qemu-user-static; rustup: the aarch64 target).
# The release binary ends up in target/aarch64-unknown-linux-gnu/release/switchyard.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
MODE="${1:-all}"
SYSROOT=/usr/aarch64-linux-gnu
RUNNER="qemu-aarch64-static -L $SYSROOT"

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

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$RUNNER"

# --- release binary ----------------------------------------------------------
step "cargo build --release --target $TARGET"
t0=$SECONDS
cargo build --release --locked --target "$TARGET" --bin switchyard
BIN=target/$TARGET/release/switchyard
echo "arm64: built in $((SECONDS - t0)) s: $BIN"
aarch64-linux-gnu-readelf -h "$BIN" | grep -q 'Machine:.*AArch64' || {
  echo "arm64: $BIN is not an AArch64 executable" >&2
  exit 1
}
aarch64-linux-gnu-strip -o "$BIN.stripped" "$BIN"
glibc=$(aarch64-linux-gnu-objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -k3,3n -u | tail -1)
echo "arm64: size $(stat -c %s "$BIN") bytes, stripped $(stat -c %s "$BIN.stripped") bytes; newest glibc symbol: $glibc"
$RUNNER "$BIN" --version

if [[ "$MODE" == "musl" ]]; then
  MUSL=aarch64-unknown-linux-musl
  rustup target list --installed | grep -qx "$MUSL" || rustup target add "$MUSL"
  step "cargo build --release --target $MUSL (static)"
  # Rust's musl targets bring their own crt objects and libc.a
  # (self-contained); the gnu cross gcc only drives the link and compiles
  # ring's C and assembly, which need no libc headers beyond the freestanding ones.
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
  CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
  AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar \
    cargo build --release --locked --target "$MUSL" --bin switchyard
  MBIN=target/$MUSL/release/switchyard
  aarch64-linux-gnu-strip -o "$MBIN.stripped" "$MBIN"
  if aarch64-linux-gnu-readelf -l "$MBIN" | grep -q 'INTERP'; then
    echo "arm64: $MBIN is not static" >&2
    exit 1
  fi
  echo "arm64: static musl binary $(stat -c %s "$MBIN") bytes, stripped $(stat -c %s "$MBIN.stripped") bytes"
  # No -L: a static binary needs no sysroot.
  qemu-aarch64-static "$MBIN" --version
fi
[[ "$MODE" == "build" ]] && exit 0

# --- end-to-end tests under qemu ---------------------------------------------
tests=(weights admin)
[[ -f tests/acme.rs ]] && tests+=(acme)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
if [[ " ${tests[*]} " == *" acme "* ]]; then
  scripts/setup.sh >/dev/null # pebble for the ACME tests
fi
step "cargo test --release --target $TARGET ${args[*]} (under qemu)"
t0=$SECONDS
SWITCHYARD_TEST_RUNNER="$RUNNER" cargo test --release --locked --target "$TARGET" "${args[@]}" 2>&1
echo "arm64: end-to-end tests under qemu took $((SECONDS - t0)) s"

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
pool() {
  cat <<EOF
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
# Origins: `demo -c` answers on the loopback backends (its own process).
printf '[server]\nhttp = "127.0.0.1:0"\n[admin]\nsocket = "%s/o.sock"\nstate = "%s/o.json"\n%s\n' \
  "$work" "$work" "$(pool)" >"$work/origins.toml"
printf '[server]\nhttp = "127.0.0.1:0"\n[admin]\nsocket = "%s/p.sock"\nstate = "%s/p.json"\n%s\n' \
  "$work" "$work" "$(pool)" >"$work/proxy.toml"
$RUNNER "$BIN" demo -c "$work/origins.toml" >"$work/origins.log" 2>&1 &
pids+=($!)
$RUNNER "$BIN" run -c "$work/proxy.toml" 2>"$work/proxy.log" &
proxy=$!
pids+=($proxy)
port=""
for _ in $(seq 1 200); do
  if [[ -S "$work/p.sock" ]] && state=$(curl -sf --unix-socket "$work/p.sock" http://x/v1/state); then
    port=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["listeners"]["http"].rsplit(":",1)[1])' <<<"$state")
    curl -sf "http://127.0.0.1:$p1/" >/dev/null && curl -sf "http://127.0.0.1:$p2/" >/dev/null && break
  fi
  sleep 0.1
done
[[ -n "$port" ]] || { echo "arm64: the proxy did not start" >&2; cat "$work/proxy.log" >&2; exit 1; }
mem() { grep -E '^(VmRSS|VmHWM)' "/proc/$proxy/status" | tr -s ' \t' ' ' | paste -sd, -; }
sleep 1
echo "arm64: idle:                $(mem)"
ok=$(curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: app.test' "http://127.0.0.1:$port/?[1-1000]" | grep -c '^200$' || true)
echo "arm64: after $ok/1000 requests: $(mem)"
[[ "$ok" == 1000 ]] || { echo "arm64: only $ok of 1000 requests answered 200" >&2; exit 1; }
echo "arm64: (VmRSS under qemu-user includes the emulator and its translated-code cache)"
echo "arm64: ok"
