"""The event loop's own floor: a bare asyncio Protocol that answers every read, with no pynode in it.

A client process sends 120 bytes and waits for 40 back, ``--calls`` times, over TCP on 127.0.0.1;
the server answers each read with one write, on asyncio's loop and then on uvloop's (when it is
installed). What it prints is what any Python node pays per round trip before it parses a byte:
the client's median round trip and the server's CPU time per round trip. ``scripts/bench_rtt``
measures pynode's; ``scripts/bench_dispatch`` what pynode adds to this floor in Python.

Prints a line per loop and, last, one JSON line. Every wait is bounded; the client is ended by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

REQUEST = b"x" * 120
REPLY = b"y" * 40


def client(port: int, calls: int) -> None:
    """Round trips against the server; prints the median in µs."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        latencies: list[int] = []
        for _ in range(calls):
            started = time.perf_counter_ns()
            sock.sendall(REQUEST)
            got = 0
            while got < len(REPLY):
                chunk = sock.recv(4096)
                if not chunk:
                    raise SystemExit("the server closed the connection")
                got += len(chunk)
            latencies.append(time.perf_counter_ns() - started)
    latencies.sort()
    print(latencies[len(latencies) // 2] / 1000)


class Answer(asyncio.BufferedProtocol):
    """One write per read: the least a node does for a call.

    It reads into one buffer of its own (as pynode's connections do): a plain Protocol would have
    the loop allocate a 256 KiB bytes object per read, which glibc may serve with mmap and munmap
    each time, and the floor would measure the allocator instead of the loop.
    """

    def __init__(self, closed: asyncio.Future[None]) -> None:
        self.closed = closed
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray(65536)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        self.transport.write(REPLY)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def serve(calls: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    server = await loop.create_server(lambda: Answer(closed), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    before = resource.getrusage(resource.RUSAGE_SELF)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", str(port), "--calls", str(calls), stdout=subprocess.PIPE
    )
    try:
        async with asyncio.timeout(120):
            out, _ = await proc.communicate()
            await closed
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rtt = round(float(out.decode().strip()), 1)
    return {"rtt_median_us": rtt, "server_cpu_us_per_rtt": round(cpu / calls * 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000, help="round trips per loop (default 20000)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.client is not None:
        client(opts.client, opts.calls)
        return 0
    calls = 500 if opts.quick else opts.calls
    runners: dict[str, Callable[[Coroutine[Any, Any, dict[str, float]]], dict[str, float]]] = {"asyncio": asyncio.run}
    try:
        import uvloop

        runners["uvloop"] = uvloop.run
    except ImportError:
        pass
    result: dict[str, Any] = {"calls": calls}
    for name, run in runners.items():
        figures = run(serve(calls))
        result[name] = figures
        print(
            f"{name:8} bare round trip {figures['rtt_median_us']} µs median,"
            f" server CPU {figures['server_cpu_us_per_rtt']} µs per round trip"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
