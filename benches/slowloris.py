#!/usr/bin/env python3
"""benches/slowloris.py: the attacking client of benches/slowloris.sh.

Holds SILENT connections that send nothing and SLOW connections that send a
request head one byte every EVERY seconds (a head that never ends), to one
loopback port, reconnecting each one as soon as the server closes it. Source
addresses are spread over 127.0.0.2 .. 127.0.0.(1 + SOURCES) so that tens of
thousands of connections and reconnections never run out of ephemeral ports.

Runs until SIGTERM/SIGINT, then writes a JSON summary to --out: connections
opened and closed by the server per kind, how long the closed ones lived
(median, p99), how many were open at the end, connect failures.
"""

import argparse
import asyncio
import json
import signal
import statistics
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host-header", default="app.local")
    p.add_argument("--silent", type=int, default=10000)
    p.add_argument("--slow", type=int, default=1000)
    p.add_argument("--every", type=float, default=1.0, help="seconds between slowloris bytes")
    p.add_argument("--ramp", type=float, default=10.0, help="seconds over which connections start")
    p.add_argument("--sources", type=int, default=16)
    p.add_argument("--out", required=True)
    return p.parse_args()


class Kind:
    def __init__(self):
        self.opened = 0
        self.closed = 0
        self.open_now = 0
        self.lifetimes = []

    def summary(self):
        life = sorted(self.lifetimes)
        p99 = life[min(len(life) - 1, int(len(life) * 0.99))] if life else None
        return {
            "opened": self.opened,
            "closed_by_server": self.closed,
            "open_at_end": self.open_now,
            "lifetime_median_s": round(statistics.median(life), 2) if life else None,
            "lifetime_p99_s": round(p99, 2) if life else None,
        }


async def hold(i, kind, stats, args, stop):
    source = "127.0.0.%d" % (2 + i % args.sources)
    head = ("GET / HTTP/1.1\r\nHost: %s\r\n" % args.host_header).encode()
    head += b"".join(b"X-Slow-%d: %s\r\n" % (n, b"y" * 20) for n in range(200))
    st = stats[kind]
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", args.port, local_addr=(source, 0)
            )
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.5)
            continue
        st.opened += 1
        st.open_now += 1
        start = time.monotonic()
        closed = False
        try:
            sent = 0
            while not stop.is_set():
                if kind == "slow" and sent < len(head):
                    writer.write(head[sent : sent + 1])
                    sent += 1
                    await writer.drain()
                    wait = args.every
                else:
                    wait = 1.0
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout=wait)
                except asyncio.TimeoutError:
                    continue
                if not data:
                    closed = True
                    break
                # An answer (408, say): the close follows.
        except (ConnectionError, OSError):
            closed = True
        finally:
            st.open_now -= 1
            writer.close()
        if closed:
            st.closed += 1
            st.lifetimes.append(time.monotonic() - start)


async def main():
    args = parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = {"silent": Kind(), "slow": Kind(), "connect_errors": 0}
    total = args.silent + args.slow
    tasks = []
    for i in range(total):
        # Exactly args.slow of them slow, spread evenly among the silent ones.
        slow = (i * args.slow) // total != ((i + 1) * args.slow) // total
        kind = "slow" if slow else "silent"
        delay = i * args.ramp / total
        tasks.append(loop.create_task(start_later(delay, i, kind, stats, args, stop)))
    await stop.wait()
    summary = {
        "silent": stats["silent"].summary(),
        "slow": stats["slow"].summary(),
        "connect_errors": stats["connect_errors"],
    }
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with open(args.out, "w") as f:
        json.dump(summary, f)


async def start_later(delay, i, kind, stats, args, stop):
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
        return
    except asyncio.TimeoutError:
        pass
    await hold(i, kind, stats, args, stop)


if __name__ == "__main__":
    asyncio.run(main())
