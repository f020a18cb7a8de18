#!/usr/bin/env python3
"""benches/idle_clients.py: CLIENTS keep-alive connections to a proxy, each
sending one GET and reading its whole answer, then staying open and silent
until killed. Writes how many were answered to --ready once all have been
tried (benches/many_conns.sh measures the server's memory then).

Sequential and blocking on purpose: one round trip at a time keeps the
server's transient allocations small, so what remains is what an idle
keep-alive connection holds.
"""
import argparse
import os
import signal
import socket
import sys
import time


def answered(sock, timeout):
    """Reads one HTTP/1.1 answer with a Content-Length; True when complete."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is None or not head.startswith(b"HTTP/1.1 200"):
            return False
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            body += chunk
        return True
    except (OSError, ValueError):
        return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host-header", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    request = f"GET / HTTP/1.1\r\nHost: {a.host_header}\r\n\r\n".encode()
    socks, ok, failed = [], 0, 0
    for _ in range(a.clients):
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
            s.sendall(request)
        except OSError:
            failed += 1
            continue
        if answered(s, a.timeout):
            ok += 1
        else:
            failed += 1
        socks.append(s)
    print(f"answered {ok}, failed {failed}, open {len(socks)}", flush=True)
    with open(a.ready + ".tmp", "w") as f:
        f.write(f"{ok}\n")

    os.rename(a.ready + ".tmp", a.ready)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
