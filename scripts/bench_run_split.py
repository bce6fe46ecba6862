"""Where one TestModel run's CPU goes inside the node: its start, pydantic-ai's run, the result, the reply.

A real erl node makes ``gen_server:call({bench, Node}, {run, Prompt})`` calls one after another to a
node running in this process. The node's thread CPU over the timed runs is split, by clocks around
the node's own functions, into: reading and dispatching the request up to the run's start (every
``Connection.feed``), pydantic-ai's ``Agent.run`` (with the awaits inside it), the Result term (the
messages' JSON), the reply's encoding and write, and the rest (the loop, the run's task, its end).

Run it on each allocator as the node's interpreter would be: ``PYTHONMALLOC=malloc`` for glibc's
malloc (the ``pynode`` command's default), nothing for pymalloc, ``PYTHONMALLOC=malloc
LD_PRELOAD=.../libjemalloc.so.2`` for jemalloc. Seconds move with a shared machine; instructions do
not: under ``valgrind --tool=callgrind``, two runs with different ``--runs`` give the instructions
of one run as the difference of their totals over the difference of their runs.

Prints the split per run and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from bench_runs import SEQUENTIAL, create_bench_agent

import pynode.bridge.runner as runner
from pynode.bridge.runs import RunProcess
from pynode.net.channel import Connection
from pynode.runtime.memory import HAS_JEMALLOC
from pynode.testing import BeamNode, running_epmd
from pynode.testing.local import running_pynode

PY = "py@127.0.0.1"
QUOTED = f"'{PY}'"
"""The node's name as an Erlang atom."""
PARTS = ("start (feed)", "Agent.run", "result term", "reply")

spent: dict[str, int] = dict.fromkeys(PARTS, 0)
"""Thread CPU nanoseconds in each part since the last reset."""


def _clocked(part: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def clocked(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return function(*args, **kwargs)
        finally:
            spent[part] += time.thread_time_ns() - started

    return clocked


def _clocked_async(part: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    async def clocked(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return await function(*args, **kwargs)
        finally:
            spent[part] += time.thread_time_ns() - started

    return clocked


def clock_the_node() -> None:
    """Put the clocks around the node's functions (in this process only)."""
    Connection.feed = _clocked("start (feed)", Connection.feed)  # type: ignore[method-assign]
    runner._run = _clocked_async("Agent.run", runner._run)
    runner._result_term = _clocked("result term", runner._result_term)
    RunProcess._deliver = _clocked("reply", RunProcess._deliver)  # type: ignore[method-assign]


def allocator() -> str:
    """What serves this interpreter's small objects."""
    if HAS_JEMALLOC:
        return "jemalloc"
    return os.environ.get("PYTHONMALLOC", "pymalloc")


async def measure(runs: int, warm: int, rounds: int) -> dict[str, Any]:
    cookie = secrets.token_hex(8)
    result: dict[str, Any] = {"runs": runs, "allocator": allocator(), "rounds": []}
    with running_epmd() as epmd:
        async with running_pynode(PY, cookie=cookie, epmd_port=epmd.port, agents_dir=None):
            erl = await BeamNode.start("caller@127.0.0.1", cookie=cookie, epmd_port=epmd.port)
            try:
                await create_bench_agent(erl, QUOTED)
                await erl.eval(SEQUENTIAL.format(py=QUOTED, n=1, warm=warm), timeout=600)
                for _ in range(rounds):
                    for part in PARTS:
                        spent[part] = 0
                    cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
                    await erl.eval(SEQUENTIAL.format(py=QUOTED, n=runs, warm=0), timeout=1800)
                    cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
                    row = {part: round(spent[part] / runs / 1000, 1) for part in PARTS}
                    row["rest"] = round((cpu - sum(spent.values())) / runs / 1000, 1)
                    row["node CPU"] = round(cpu / runs / 1000, 1)
                    row["wall from erl"] = round(wall / runs / 1000, 1)
                    result["rounds"].append(row)
            finally:
                await erl.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="timed runs per round (default 1000)")
    parser.add_argument("--warm", type=int, default=100, help="runs before the timed ones (default 100)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --runs (default 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    opts = parser.parse_args()
    if opts.quick:
        opts.runs, opts.warm, opts.rounds = 20, 5, 1
    clock_the_node()
    result = asyncio.run(asyncio.wait_for(measure(opts.runs, opts.warm, opts.rounds), 3600))
    print(f"one TestModel run in the node ({result['allocator']}), µs of the node's thread CPU per run:")
    for row in result["rounds"]:
        print("  " + ", ".join(f"{name} {value}" for name, value in row.items()))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
