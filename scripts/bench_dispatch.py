"""What one ``gen_server:call`` costs the node in Python, from the bytes read to the reply's bytes.

A real erl node makes calls to ``{pynode, Node}`` on a node running in this process; the bytes its
connection reads are recorded, one chunk per ``data_received``. The same chunks are then fed again,
``--replays`` times, to that connection with its socket swapped for one that only counts what is
written: every frame is parsed, every control message dispatched (the caller's monitor, the call,
the demonitor), the reply encoded, as in the real round trip, but no system call is made and no
event-loop turn is taken. So the figure is the node's own work per call, with no noise from the
kernel or the peer, and the profile (``--profile``) lists only pynode's functions and the codec's.

Prints CPU µs per call (best and median of several rounds) and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import secrets
import statistics
import sys
import time
from typing import Any

from pynode.net.channel import Connection
from pynode.testing import BeamNode, running_epmd
from pynode.testing.local import running_pynode

PY = "py@127.0.0.1"


class CountingTransport:
    """Stands in for the socket: keeps the byte count of what the node writes, sends nothing."""

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def record(calls: int) -> tuple[list[bytes], dict[str, Any]]:
    """Run ``calls`` calls from erl and keep the chunks the node read during them."""
    cookie = secrets.token_hex(8)
    chunks: list[bytes] = []
    original = Connection.feed
    recording = False

    def feed(self: Connection, data: bytes) -> None:
        if recording:
            chunks.append(bytes(data))
        original(self, data)

    Connection.feed = feed  # type: ignore[method-assign]
    try:
        with running_epmd() as epmd:
            async with running_pynode(PY, cookie=cookie, epmd_port=epmd.port, agents_dir=None) as py:
                erl = await BeamNode.start("caller@127.0.0.1", cookie=cookie, epmd_port=epmd.port)
                try:
                    ping = f"gen_server:call({{pynode, '{PY}'}}, ping)"
                    await erl.eval(ping)
                    await asyncio.sleep(0.2)  # let the first call's demonitor arrive before recording
                    recording = True
                    each = max(1, calls // OPTIONS.concurrency)
                    callers = (
                        f"Self = self(), Loop = fun() -> lists:foreach(fun(_) -> {ping} end, lists:seq(1, {each})) end,"
                        f" Pids = [spawn(fun() -> Loop(), Self ! {{done, self()}} end)"
                        f" || _ <- lists:seq(1, {OPTIONS.concurrency})],"
                        f" [receive {{done, P}} -> ok after 120000 -> error(timeout) end || P <- Pids], ok"
                    )
                    await erl.eval(callers, timeout=150)
                    calls = each * OPTIONS.concurrency
                    await asyncio.sleep(0.2)
                    recording = False
                    conn = py.node.net.connections["caller@127.0.0.1"]
                    figures = replay_all(conn, chunks, calls)
                finally:
                    await erl.stop()
    finally:
        Connection.feed = original  # type: ignore[method-assign]
    return chunks, figures


OPTIONS: argparse.Namespace


def replay_all(conn: Connection, chunks: list[bytes], calls: int) -> dict[str, Any]:
    """Feed the recorded chunks again, ``rounds`` times; CPU time per call of each round."""
    real = conn.transport
    counting = CountingTransport()
    conn.transport = counting  # type: ignore[assignment]
    per_call: list[float] = []
    try:
        for _ in range(OPTIONS.rounds):
            started = time.process_time()
            for _ in range(OPTIONS.replays):
                for chunk in chunks:
                    conn.feed(chunk)
            per_call.append((time.process_time() - started) / (OPTIONS.replays * calls) * 1e6)
        if OPTIONS.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for chunk in chunks:
                conn.feed(chunk)
            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(25)
    finally:
        conn.transport = real
    replies = counting.writes / (OPTIONS.rounds * OPTIONS.replays + (1 if OPTIONS.profile else 0))
    return {
        "calls": calls,
        "chunks_per_call": len(chunks) / calls,
        "writes_per_call": replies / calls,
        "cpu_us_per_call_best": round(min(per_call), 2),
        "cpu_us_per_call_median": round(statistics.median(per_call), 2),
    }


def main() -> int:
    global OPTIONS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls recorded (default 2000)")
    parser.add_argument("--replays", type=int, default=5, help="replays of the recording per round (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; best and median are printed (default 5)")
    parser.add_argument("--concurrency", type=int, default=1, help="callers at once on the erl node (default 1)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one more replay")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    OPTIONS = parser.parse_args()
    if OPTIONS.quick:
        OPTIONS.calls, OPTIONS.replays, OPTIONS.rounds = 100, 1, 2
    encoder_file = str(getattr(sys.modules["pynode.etf.encode"], "__file__", ""))
    form = "pure" if encoder_file.endswith(".py") else "compiled"
    _, figures = asyncio.run(asyncio.wait_for(record(OPTIONS.calls), 300))
    figures["codec"] = form
    figures["concurrency"] = OPTIONS.concurrency
    print(
        f"one gen_server:call in the node ({form} codec, {OPTIONS.concurrency} callers):"
        f" {figures['cpu_us_per_call_best']} µs best,"
        f" {figures['cpu_us_per_call_median']} µs median; {figures['chunks_per_call']:.2f} reads and"
        f" {figures['writes_per_call']:.2f} writes per call"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
