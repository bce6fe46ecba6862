"""Agent runs through the node against the same runs in-process, and memory per run in flight.

Starts a private epmd, the node (``python -m pynode``, a process of its own, as in production) and an
erl node that drives it. Prints a table and, last, one JSON line. Everything it starts is ended by pid.

1. A TestModel run: ``gen_server:call({bench, Py}, {run, Prompt})`` from the BEAM, sequential and with
   50 concurrent callers, against ``await agent.run(Prompt)`` on the same TestModel agent in this process.
2. Runs in flight: ``start_run`` N runs (``events => false``) of an agent whose tool is answered by the
   caller, hold every tool call unanswered, read the node's RSS, then answer them all and count the results
   (none may be lost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_node import pct, rss_kb, start_node, stop

from pynode.testing import BeamNode, running_epmd

ROOT = Path(__file__).resolve().parent.parent

PY = "'py@127.0.0.1'"
COOKIE = "bench_runs_cookie"


SEQUENTIAL = """
A = {{bench, {py}}},
[gen_server:call(A, {{run, <<"warm up">>}}, 30000) || _ <- lists:seq(1, 50)],
Times = [begin T0 = erlang:monotonic_time(microsecond),
                {{ok, _}} = gen_server:call(A, {{run, <<"What is OTP?">>}}, 30000),
                erlang:monotonic_time(microsecond) - T0 end || _ <- lists:seq(1, {n})],
Times.
"""

CONCURRENT = """
A = {{bench, {py}}}, Self = self(), Per = {n} div {c},
T0 = erlang:monotonic_time(microsecond),
[spawn(fun() ->
    Ts = [begin S = erlang:monotonic_time(microsecond),
                {{ok, _}} = gen_server:call(A, {{run, <<"What is OTP?">>}}, 60000),
                erlang:monotonic_time(microsecond) - S end || _ <- lists:seq(1, Per)],
    Self ! {{done, Ts}} end) || _ <- lists:seq(1, {c})],
All = lists:append([receive {{done, Ts}} -> Ts after 120000 -> [] end || _ <- lists:seq(1, {c})]),
{{erlang:monotonic_time(microsecond) - T0, All}}.
"""

HOLDER = """
Holder = spawn(fun() ->
    A = {{slow, {py}}},
    Opts = #{{events => false}},
    Refs = [begin {{ok, R}} = gen_server:call(A, {{start_run, <<"Ask the slow tool">>, Opts}}, 60000), R end
            || _ <- lists:seq(1, {n})],
    Calls = [receive {{pynode_tool_call, _, #{{call_id := Id, reply_to := To}}}} -> {{Id, To}}
             after 120000 -> none end || _ <- Refs],
    receive {{report, From}} -> From ! {{held, length([C || C <- Calls, C =/= none])}} end,
    receive go -> ok end,
    [To ! {{tool_result, Id, {{ok, <<"answer">>}}}} || {{Id, To}} <- Calls],
    %% In the order they end: waiting for each ref in turn would scan the mailbox once per run.
    Collect = fun C(0, Acc) -> Acc;
                  C(K, Acc) -> receive {{pynode_result, _, Res}} -> C(K - 1, [Res | Acc])
                               after 120000 -> [timeout | Acc] end end,
    Results = Collect(length(Refs), []),
    receive {{report, From2}} -> From2 ! {{results, length([ok || {{ok, _}} <- Results]), length(Results)}} end
  end),
register(bench_holder, Holder), ok.
"""

ASK_HOLDER = "bench_holder ! {report, self()}, receive Reply -> Reply after 300000 -> timeout end."


async def in_process(n: int, concurrency: int) -> dict[str, float]:
    from pydantic_ai import Agent

    agent = Agent("test")
    for _ in range(50):
        await agent.run("warm up")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await agent.run("What is OTP?")
        times.append((time.perf_counter() - t0) * 1e6)
    per = n // concurrency

    async def worker() -> None:
        for _ in range(per):
            await agent.run("What is OTP?")

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    wall = time.perf_counter() - t0
    return {
        "median_us": statistics.median(times),
        "p99_us": pct(times, 0.99),
        "runs_per_s_sequential": n / (sum(times) / 1e6),
        "runs_per_s_concurrent": per * concurrency / wall,
    }


async def measure(opts: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with running_epmd() as epmd, tempfile.TemporaryDirectory() as tmp:
        agents = Path(tmp)
        node = await start_node(epmd.port, cookie=COOKIE, agents=agents, max_runs=opts.in_flight + 100)
        erl: BeamNode | None = None
        try:
            erl = await BeamNode.start("bench@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
            await erl.eval(
                f'{{ok, bench}} = gen_server:call({{pynode, {PY}}}, {{create_agent, bench, #{{model => <<"test">>}}}})'
            )
            tool = (
                '#{name => <<"slow">>, description => <<"A slow lookup">>,'
                ' parameters => #{<<"type">> => <<"object">>, <<"properties">> => #{}}}'
            )
            await erl.eval(
                f"{{ok, slow}} = gen_server:call({{pynode, {PY}}}, {{create_agent, slow,"
                f' #{{model => <<"test">>, tools => [{tool}]}}}})'
            )
            seq = eval_list(await erl.eval(SEQUENTIAL.format(py=PY, n=opts.runs), timeout=600))
            wall_us, conc = eval_pair(
                await erl.eval(CONCURRENT.format(py=PY, n=opts.runs, c=opts.concurrency), timeout=600)
            )
            result["through_node"] = {
                "median_us": statistics.median(seq),
                "p99_us": pct(seq, 0.99),
                "runs_per_s_sequential": len(seq) / (sum(seq) / 1e6),
                "runs_per_s_concurrent": len(conc) / (wall_us / 1e6),
                "concurrent_median_us": statistics.median(conc),
            }
            result["in_process"] = await in_process(opts.runs, opts.concurrency)
            base = rss_kb(node.pid)
            await erl.eval(HOLDER.format(py=PY, n=opts.in_flight), timeout=60)
            held = await erl.eval(ASK_HOLDER, timeout=600)
            loaded = rss_kb(node.pid)
            await erl.eval("bench_holder ! go, ok.")
            results = await erl.eval(ASK_HOLDER, timeout=600)
            after = rss_kb(node.pid)
            result["in_flight"] = {
                "runs": opts.in_flight,
                "held_tool_calls": held,
                "results": results,
                "rss_before_kb": base,
                "rss_with_runs_kb": loaded,
                "rss_after_kb": after,
                "kb_per_run_in_flight": (loaded - base) / opts.in_flight,
            }
        finally:
            if erl is not None:
                await erl.stop()
            await stop(node)
    t, p = result["through_node"], result["in_process"]
    result["bridge_overhead_median"] = t["median_us"] / p["median_us"] - 1
    return result


def eval_list(printed: str) -> list[float]:
    return [float(x) for x in printed.strip("[]").split(",") if x]


def eval_pair(printed: str) -> tuple[float, list[float]]:
    head, _, rest = printed.strip("{}").partition(",")
    return float(head), eval_list(rest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--in-flight", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    opts = parser.parse_args()
    if opts.quick:
        opts.runs, opts.concurrency, opts.in_flight = 100, 10, 200
    result = asyncio.run(asyncio.wait_for(measure(opts), 1800))
    t, p, f = result["through_node"], result["in_process"], result["in_flight"]
    print(
        f"{'TestModel run':32} {'median µs':>10} {'p99 µs':>10} {'runs/s seq':>11}"
        f" {'runs/s x' + str(opts.concurrency):>11}"
    )
    for label, row in (("through the node (from erl)", t), ("in-process pydantic-ai", p)):
        print(
            f"{label:32} {row['median_us']:10.0f} {row['p99_us']:10.0f} {row['runs_per_s_sequential']:11.0f}"
            f" {row['runs_per_s_concurrent']:11.0f}"
        )
    print(f"bridge + distribution overhead on the median: {result['bridge_overhead_median'] * 100:+.1f}%")
    print(
        f"runs in flight: {f['runs']} started, tool calls held {f['held_tool_calls']}, results {f['results']};"
        f" RSS {f['rss_before_kb'] / 1024:.0f} -> {f['rss_with_runs_kb'] / 1024:.0f} MB"
        f" ({f['kb_per_run_in_flight']:.1f} KB per run in flight), after {f['rss_after_kb'] / 1024:.0f} MB"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
