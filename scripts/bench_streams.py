"""Streamed runs from a provider server, consumed by a BEAM process, against the same streams in-process.

Starts a private epmd, a scripted OpenAI-compatible server (``pynode.testing.fake_provider``, a process
of its own), the node (``python -m pynode``) and an erl node. N erl processes each stream one run of an
agent whose model is that server; every streamed chunk carries the wall-clock time the server wrote it,
so the BEAM process that receives its ``text_delta`` knows the delay the whole path added (one clock:
all on this machine). Then the same N streams are consumed in a separate Python process by pydantic-ai
itself (``Agent.run`` with an event stream handler, as the node runs them).

Prints a table and, last, one JSON line: events per second delivered, CPU seconds per 10,000 events
(the node's process against the in-process consumer's), memory per streaming run, and per-chunk delay
p50/p99. Everything it starts is ended by pid; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_node import NODE_CWD, PYTHON, cpu_s, pct, rss_kb, start_node, stop

from pynode.etf.decode import decode
from pynode.testing import BeamNode, running_epmd

PY = "'py@127.0.0.1'"
COOKIE = "bench_streams_cookie"
KEY = "sk-bench-not-a-key"


# -- the provider server (a process of its own) ------------------------------------------------


async def serve(chunks: int, interval: float) -> None:
    from pynode.testing.fake_provider import STAMP, FakeProvider, Recorded, Turn

    def stamped(_request: Recorded) -> Turn:
        piece = f"{STAMP} "
        return Turn(text=piece * chunks, chunk_chars=len(piece), chunk_delay=interval, stamp_chunks=True)

    provider = FakeProvider(responder=stamped)
    await provider.start()
    print(provider.openai_url, flush=True)
    await asyncio.Event().wait()


# -- the same streams consumed by pydantic-ai in-process (a process of its own) ----------------


async def in_process(url: str, streams: int) -> dict[str, Any]:
    from pydantic_ai import Agent
    from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=url, api_key=KEY))
    agent = Agent(model)
    delays: list[int] = []
    events = 0

    async def handler(_ctx: Any, stream: Any) -> None:
        nonlocal events
        async for event in stream:
            text = None
            if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                text = event.delta.content_delta
            elif isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                text = event.part.content
            if text:
                now = time.time_ns() // 1000
                events += 1
                delays.extend(now - int(stamp) for stamp in text.split())

    await agent.run("warm up", event_stream_handler=handler)
    delays.clear()
    events = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(streams):
            group.create_task(agent.run("stream", event_stream_handler=handler))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return summary(events, wall, cpu, delays)


def summary(events: int, wall: float, cpu: float, delays: list[int]) -> dict[str, Any]:
    return {
        "events": events,
        "wall_s": wall,
        "events_per_s": events / wall,
        "cpu_s": cpu,
        "cpu_s_per_10k_events": cpu / events * 10_000 if events else float("nan"),
        "delay_p50_ms": pct(delays, 0.50) / 1000,
        "delay_p99_ms": pct(delays, 0.99) / 1000,
        "delay_max_ms": max(delays, default=0) / 1000,
    }


# -- through the node, to BEAM processes -------------------------------------------------------

STREAMS = """
Self = self(), A = {{streamer, {py}}}, N = {n},
Stamps = fun(T, Now, Acc) ->
    lists:foldl(fun(S, Acc2) -> [Now - binary_to_integer(S) | Acc2] end, Acc,
                binary:split(T, <<" ">>, [global, trim_all])) end,
Run = fun() ->
    {{ok, Ref}} = gen_server:call(A, {{start_run, <<"stream">>, #{{}}}}, 60000),
    Loop = fun L(Acc, Count) -> receive
        {{pynode_event, Ref, {{text_delta, T}}}} -> L(Stamps(T, os:system_time(microsecond), Acc), Count + 1);
        {{pynode_event, Ref, _}} -> L(Acc, Count);
        {{pynode_result, Ref, R}} -> {{element(1, R), Count, Acc}}
    after 120000 -> {{timeout, Count, Acc}} end end,
    Loop([], 0) end,
T0 = erlang:monotonic_time(microsecond),
[spawn(fun() -> Self ! {{stream_done, Run()}} end) || _ <- lists:seq(1, N)],
Done = [receive {{stream_done, D}} -> D after 300000 -> {{lost, 0, []}} end || _ <- lists:seq(1, N)],
Wall = erlang:monotonic_time(microsecond) - T0,
{{Wall, length([ok || {{ok, _, _}} <- Done]), lists:sum([C || {{_, C, _}} <- Done]),
 lists:append([D || {{_, _, D}} <- Done])}}
"""


async def start_server(chunks: int, interval: float) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, __file__, "--serve", "--chunks", str(chunks), "--interval", str(interval),
        stdout=asyncio.subprocess.PIPE, cwd=NODE_CWD,
    )  # fmt: skip
    assert proc.stdout is not None
    url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    if not url.startswith("http://"):
        raise RuntimeError(f"the provider server did not start: {url!r}")
    return proc, url


async def through_node(opts: argparse.Namespace, url: str) -> dict[str, Any]:
    with running_epmd() as epmd, tempfile.TemporaryDirectory() as agents:
        node = await start_node(
            epmd.port, cookie=COOKIE, agents=Path(agents), max_runs=opts.streams + 100, profile=opts.profile_node
        )
        erl: BeamNode | None = None
        try:
            erl = await BeamNode.start("bench@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
            model = f'#{{provider => openai, name => <<"gpt-4o">>, base_url => <<"{url}">>, api_key => <<"{KEY}">>}}'
            spec = f"#{{model => {model}, max_concurrency => {opts.streams + 10}}}"
            await erl.eval(f"{{ok, streamer}} = gen_server:call({{pynode, {PY}}}, {{create_agent, streamer, {spec}}})")
            warm = STREAMS.format(py=PY, n=1)
            await erl.eval_term(warm, timeout=120)  # the SDK and the model are loaded, one stream has run
            rss0, cpu0 = rss_kb(node.pid), cpu_s(node.pid)
            task = asyncio.create_task(erl.eval_term(STREAMS.format(py=PY, n=opts.streams), timeout=900))
            await asyncio.sleep(opts.chunks * opts.interval / 2)
            rss_mid = rss_kb(node.pid)
            got = decode(await task)
            assert isinstance(got, tuple) and len(got) == 4, got
            wall_us, ok, events, delays = got
            assert isinstance(wall_us, int) and isinstance(events, int) and isinstance(delays, list)
            cpu = cpu_s(node.pid) - cpu0
        finally:
            if erl is not None:
                await erl.stop()
            await stop(node)
    result = summary(events, wall_us / 1e6, cpu, delays)
    result.update(
        streams_ok=ok, rss_before_kb=rss0, rss_streaming_kb=rss_mid, kb_per_stream=(rss_mid - rss0) / opts.streams
    )
    return result


async def measure(opts: argparse.Namespace) -> dict[str, Any]:
    server, url = await start_server(opts.chunks, opts.interval)
    try:
        node = await through_node(opts, url)
        inproc = await asyncio.create_subprocess_exec(
            PYTHON, __file__, "--in-process", url, "--streams", str(opts.streams),
            stdout=asyncio.subprocess.PIPE, cwd=NODE_CWD,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(inproc.communicate(), 900)
        if inproc.returncode != 0:
            raise RuntimeError("the in-process consumer failed")
        local = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        await stop(server)
    return {
        "streams": opts.streams,
        "chunks": opts.chunks,
        "interval_ms": opts.interval * 1000,
        "through_node": node,
        "in_process": local,
        "cpu_ratio": node["cpu_s_per_10k_events"] / local["cpu_s_per_10k_events"],
        # What the node and the distribution add to each chunk, over pydantic-ai's own delay.
        "node_adds_p50_ms": node["delay_p50_ms"] - local["delay_p50_ms"],
        "node_adds_p99_ms": node["delay_p99_ms"] - local["delay_p99_ms"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streamed runs (default 1000)")
    parser.add_argument("--chunks", type=int, default=200, help="text chunks per stream (default 200)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between chunks (default 0.02)")
    parser.add_argument("--profile-node", type=Path, metavar="FILE", help="write the node's cProfile stats to FILE")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--in-process", metavar="URL", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.quick:
        opts.streams, opts.chunks, opts.interval = 20, 20, 0.01
    if opts.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(opts.chunks, opts.interval))
        return 0
    if opts.in_process:
        print(json.dumps(asyncio.run(asyncio.wait_for(in_process(opts.in_process, opts.streams), 900))))
        return 0
    result = asyncio.run(asyncio.wait_for(measure(opts), 1800))
    n, p = result["through_node"], result["in_process"]
    print(f"{opts.streams} concurrent streams x {opts.chunks} chunks, {opts.interval * 1000:g} ms apart")
    print(f"{'consumer':30} {'events/s':>9} {'CPU s/10k ev':>13} {'delay p50 ms':>13} {'p99 ms':>8} {'max ms':>8}")
    for label, row in (("BEAM processes, via the node", n), ("pydantic-ai in-process", p)):
        print(
            f"{label:30} {row['events_per_s']:9.0f} {row['cpu_s_per_10k_events']:13.3f}"
            f" {row['delay_p50_ms']:13.2f} {row['delay_p99_ms']:8.2f} {row['delay_max_ms']:8.1f}"
        )
    print(
        f"the node adds per chunk: p50 {result['node_adds_p50_ms']:+.2f} ms, p99 {result['node_adds_p99_ms']:+.2f} ms;"
        f" node CPU per event: {result['cpu_ratio']:.2f}x pydantic-ai's own;"
        f" streams ok {n['streams_ok']}/{opts.streams};"
        f" node RSS {n['rss_before_kb'] / 1024:.0f} -> {n['rss_streaming_kb'] / 1024:.0f} MB while streaming"
        f" ({n['kb_per_stream']:.0f} KB per stream)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
