"""Runs per second through 1, 2 and 3 Python nodes found by ``:pg``, and how fast a dead node leaves it.

Starts a private epmd, N pynode nodes (``python -m pynode``, processes of their own, as in production)
and one erl node running OTP's ``pg`` scope ``pynode_agents``. Every Python node gets the agent
``bench``; the erl node's callers pick a member of the group ``bench`` at random for each run, as a
client library does (docs/protocol.md section 9). Two models: pydantic-ai's TestModel (the node's own
cost) and a scripted OpenAI-compatible server answering each request after 50 ms (a provider's
latency, where more nodes mean more runs in flight). Last, with two nodes or more, one node is killed
with SIGKILL and the time until its member is gone from ``pg`` on the erl node is measured.

Prints a table and, last, one JSON line. Everything it starts is ended by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_node import start_node, stop

from pynode.testing import BeamNode, running_epmd
from pynode.testing.fake_provider import Turn, running_fake_provider

COOKIE = "bench_cluster_cookie"
PROVIDER_DELAY = 0.05

RUNS = """
Self = self(), Per = {n} div {c},
Pick = fun() -> Ms = pg:get_members(pynode_agents, bench), lists:nth(rand:uniform(length(Ms)), Ms) end,
T0 = erlang:monotonic_time(microsecond),
[spawn(fun() ->
    Ok = length([ok || _ <- lists:seq(1, Per), element(1, gen_server:call(Pick(), {{run, <<"hi">>}}, 60000)) =:= ok]),
    Self ! {{done, Ok}} end) || _ <- lists:seq(1, {c})],
Ok = lists:sum([receive {{done, K}} -> K after 300000 -> 0 end || _ <- lists:seq(1, {c})]),
{{erlang:monotonic_time(microsecond) - T0, Ok}}.
"""

MEMBERS_BELOW = """
W = fun L(N) -> case length(pg:get_members(pynode_agents, bench)) < {n} of
    true -> ok; false when N > 0 -> timer:sleep(1), L(N - 1); false -> timeout end end,
W(10000).
"""


async def cluster_figures(
    erl: BeamNode, epmd_port: int, agents: Path, count: int, model: str, opts: argparse.Namespace
) -> dict[str, Any]:
    names = [f"pyc{i}_{count}@127.0.0.1" for i in range(1, count + 1)]
    nodes = await asyncio.gather(
        *(start_node(epmd_port, cookie=COOKIE, agents=agents, max_runs=10_000, name=name) for name in names)
    )
    try:
        for name in names:
            created = await erl.eval(
                f"gen_server:call({{pynode, '{name}'}}, {{create_agent, bench, #{{model => {model}}}}})"
            )
            assert created == "{ok,bench}", created
        ready = await erl.eval(
            "W = fun L(N) -> case length(pg:get_members(pynode_agents, bench)) of"
            f" {count} -> ok; _ when N > 0 -> timer:sleep(10), L(N - 1); _ -> timeout end end, W(1000)."
        )
        assert ready == "ok", f"the {count} members did not all join: {ready}"
        await erl.eval(RUNS.format(n=opts.concurrency * 2, c=opts.concurrency), timeout=600)  # warm up
        printed = await erl.eval(RUNS.format(n=opts.runs, c=opts.concurrency), timeout=900)
        wall_us, ok = (int(x) for x in printed.strip("{}").split(","))
        figures: dict[str, Any] = {"nodes": count, "runs": opts.runs, "ok": ok, "runs_per_s": ok / (wall_us / 1e6)}
        if count > 1:
            killed_at = time.monotonic()
            os.kill(nodes[0].pid, signal.SIGKILL)
            gone = await erl.eval(MEMBERS_BELOW.format(n=count), timeout=30)
            figures["member_gone_after_kill_ms"] = (time.monotonic() - killed_at) * 1000 if gone == "ok" else None
        return figures
    finally:
        for node in nodes:
            await stop(node)


async def measure(opts: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"runs": opts.runs, "concurrency": opts.concurrency, "quick": opts.quick}

    def answer(_request: object) -> Turn:
        return Turn(text="ok", delay=PROVIDER_DELAY)

    with running_epmd() as epmd, tempfile.TemporaryDirectory() as tmp:
        async with running_fake_provider(answer) as provider:
            erl = await BeamNode.start("benchc@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
            try:
                assert await erl.eval("{ok, P} = pg:start(pynode_agents), is_pid(P).") == "true"
                fake = (
                    f'#{{provider => openai, name => <<"m">>, api => chat, api_key => <<"k">>,'
                    f' base_url => <<"{provider.openai_url}">>}}'
                )
                for label, model in (("test_model", '<<"test">>'), ("provider_50ms", fake)):
                    result[label] = [
                        await cluster_figures(erl, epmd.port, Path(tmp), count, model, opts) for count in opts.nodes
                    ]
            finally:
                await erl.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    opts = parser.parse_args()
    if opts.quick:
        opts.runs, opts.concurrency, opts.nodes = 40, 10, [1, 2]
    result = asyncio.run(measure(opts))
    print(f"{'model':15} {'nodes':>5} {'runs/s':>9} {'ok':>6} {'pg member gone after kill -9 (ms)':>34}")
    for label in ("test_model", "provider_50ms"):
        for row in result[label]:
            gone = row.get("member_gone_after_kill_ms")
            shown = f"{gone:34.1f}" if gone is not None else f"{'-':>34}"
            print(f"{label:15} {row['nodes']:5d} {row['runs_per_s']:9.0f} {row['ok']:6d} {shown}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
