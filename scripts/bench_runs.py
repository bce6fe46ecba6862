"""Agent runs through the node against the same runs in-process, and memory per run in flight.

Starts a private epmd, the node (``python -m pynode``, a process of its own, as in production) and an
erl node that drives it. Prints a table and, last, one JSON line. Everything it starts is ended by pid.

1. A TestModel run: ``gen_server:call({bench, Py}, {run, Prompt})`` from the BEAM, sequential and with
   50 concurrent callers, against ``await agent.run(Prompt)`` on the same TestModel agent in this process.
   ``--pin`` puts the node and this process on core 0 and erl on core 1, so that the scheduler cannot
   move erl onto the core a run is using (on a 2-core machine that moves single rounds by half).
2. Runs in flight: ``start_run`` N runs (``events => false``) of an agent whose tool is answered by the
   caller, hold every tool call unanswered, read the node's RSS, then answer them all and count the results
   (none may be lost).
3. ``--memory-rounds R`` (instead of 1 and 2): R rounds of ``--in-flight`` runs held in flight at once as in 2,
   then all answered; the node's RSS at its start, and after each round once the runs have ended and the
   node has had ``--settle`` seconds with nothing to do, against the targets (after round 1 within 25% of
   the start, rounds 2 to R within 5% of round 2). ``--tracemalloc`` has the node trace its allocations
   and prints the allocation sites still live after each round that were not before the first (the RSS
   figures of such a run are not the node's usual ones). ``--trim`` also asks the node for
   ``malloc_trim(0)`` after each round and prints the RSS that gave back: what the allocator held.
   Either of the two also prints, before the first round and after each, the largest objects the node
   holds and who holds them (a dict or a set keeps the table it grew to after its entries have gone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench_node import codec_form, cpu_s, pct, rss_kb, start_node, stop

from pynode.testing import BeamNode, running_epmd

ROOT = Path(__file__).resolve().parent.parent

PY = "'py@127.0.0.1'"
WARM_UP = 50
"""Runs on each side before the timed ones."""
COOKIE = "bench_runs_cookie"


SEQUENTIAL = """
A = {{bench, {py}}},
[gen_server:call(A, {{run, <<"warm up">>}}, 30000) || _ <- lists:seq(1, {warm})],
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

PROBE = r'''"""Loaded by the node as an agent file, for scripts/bench_runs.py --memory-rounds: a probe, not an agent.

SIGUSR1: gc, then a tracemalloc snapshot (when tracing), the gc-tracked objects by type and the figures of
pymalloc (its arenas) and of glibc's malloc, to files of $BENCH_PROBE_DIR; SIGUSR2: glibc's malloc_trim(0).
Each writes a file NAME.done when it is finished.
"""

import array
import collections
import ctypes
import gc
import json
import os
import re
import signal
import sys
import tempfile
import tracemalloc

from pydantic_ai import Agent

agent = Agent("test")
OUT = os.environ["BENCH_PROBE_DIR"]
_count = [0]


def _done(name):
    with open(os.path.join(OUT, name + ".done"), "w") as file:
        file.write("done")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _allocators():
    """pymalloc's arenas (sys._debugmallocstats, which writes to fd 2) and glibc's mallinfo2, in bytes."""
    figures = {}
    with tempfile.TemporaryFile("w+") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read()
    for key, pattern in (("pymalloc_arenas", r"# arenas allocated current\s*=\s*([\d,]+)"),
                         ("pymalloc_used_bytes", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
                         ("pymalloc_free_bytes", r"# bytes in available blocks\s*=\s*([\d,]+)"),
                         ("pymalloc_arena_bytes", r"Total\s*=\s*([\d,]+)")):
        match = re.search(pattern, text)
        if match:
            figures[key] = int(match.group(1).replace(",", ""))
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
        figures["malloc_in_use_bytes"] = info.uordblks + info.hblkhd
        figures["malloc_free_bytes"] = info.fordblks
        figures["malloc_mmapped_bytes"] = info.hblkhd
    except (OSError, AttributeError):
        pass
    if tracemalloc.is_tracing():
        figures["tracemalloc_live_bytes"] = tracemalloc.get_traced_memory()[0]
    return figures


_POOL_BITS = 14  # pymalloc's pools are 16 KiB, aligned
_last_pools = []


def _small_objects():
    """Every object reachable in one step from a gc-tracked one, of a size pymalloc serves (512 bytes at most)."""
    tracked = gc.get_objects()
    seen = {}
    for o in tracked:
        for x in (o, *gc.get_referents(o)):
            # object.__sizeof__, not sys.getsizeof: the latter asks the object, and a mock (logfire_api
            # keeps one) grows a child for each question, made in the burst's arenas and keeping them.
            if id(x) not in seen and object.__sizeof__(x) <= 512:
                seen[id(x)] = x
    return seen


def _describe(o):
    kind = type(o).__module__ + "." + type(o).__qualname__
    if isinstance(o, (str, bytes)):
        return kind + " " + repr(o[:40])
    if isinstance(o, tuple):
        return kind + " of " + ",".join(type(x).__name__ for x in o[:4])
    if isinstance(o, dict):
        return kind + " keys " + ",".join(str(k)[:20] for k in list(o)[:4])
    return kind


def _new_pool_objects():
    """The objects in pools no object was in at the last snapshot: what outlived a round and keeps its arena."""
    objects = _small_objects()
    pools = collections.defaultdict(list)
    for address, o in objects.items():
        pools[address >> _POOL_BITS].append(o)
    last = _last_pools[0] if _last_pools else None
    _last_pools[:] = [array.array("Q", sorted(pools))]  # an array: no int objects of the probe's own
    if last is None:
        return {}, 0
    before = set(last)  # made after the scan: its ints are not among the objects found
    new = [o for pool, found in pools.items() if pool not in before for o in found]
    counts = collections.Counter(_describe(o) for o in new)
    return dict(counts.most_common(40)), len({a >> 20 for a in map(id, new)})


def _owners(x, seen):
    """Who holds ``x``: the kinds of its referrers, and the attribute or key it is under."""
    names = []
    for r in gc.get_referrers(x):
        if r is seen or isinstance(r, (list, tuple)) and len(r) == 2 and r[1] is x:
            continue
        where = type(r).__module__ + "." + type(r).__qualname__
        if isinstance(r, dict):
            where += "[" + ",".join(str(k) for k, v in r.items() if v is x)[:60] + "]"
            for rr in gc.get_referrers(r):
                if getattr(rr, "__dict__", None) is r:
                    where = type(rr).__module__ + "." + type(rr).__qualname__ + where[where.index("["):]
                elif isinstance(rr, type(sys)):
                    where = "module " + rr.__name__ + where[where.index("["):]
        names.append(where)
    return "; ".join(names[:4])


def _largest(top=25):
    """The largest objects reachable in one step from a gc-tracked one (a container's own table grows
    with what it held and, for a dict or a set, stays that size once emptied): size, kind and length."""
    own = (dict, set, frozenset, list, tuple, bytes, bytearray, str, collections.deque, array.array)
    seen = {}
    for o in gc.get_objects():
        for x in (o, *gc.get_referents(o)):
            if id(x) in seen:
                continue
            kind = type(x)
            if kind in own:  # these builtins size their own tables; other objects are asked nothing
                seen[id(x)] = (kind.__sizeof__(x), x)
            elif not kind.__itemsize__:
                seen[id(x)] = (object.__sizeof__(x), x)
    biggest = sorted(seen.values(), key=lambda pair: pair[0], reverse=True)[:top]
    rows = []
    for size, x in biggest:
        try:
            length = len(x)
        except Exception:
            length = -1
        rows.append([size, _describe(x)[:120] + " in " + _owners(x, seen), length])
    return rows


def _snapshot(signum, frame):
    _count[0] += 1
    name = "snap-%d" % _count[0]
    gc.collect()
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(os.path.join(OUT, name + ".tm"))
    types = collections.Counter(type(o).__module__ + "." + type(o).__qualname__ for o in gc.get_objects())
    survivors, megabytes = _new_pool_objects()
    found = {"types": dict(types.most_common(400)), "allocators": _allocators(), "survivors": survivors,
             "survivor_megabytes": megabytes, "largest": _largest()}
    with open(os.path.join(OUT, name + ".json"), "w") as file:
        json.dump(found, file)
    _done(name)


def _trim(signum, frame):
    _count[0] += 1
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    _done("trim-%d" % _count[0])


signal.signal(signal.SIGUSR1, _snapshot)
signal.signal(signal.SIGUSR2, _trim)
'''


def node_env(opts: argparse.Namespace) -> dict[str, str]:
    """The ``--node-env NAME=VALUE`` variables as a mapping."""
    return dict(item.partition("=")[::2] for item in opts.node_env)


def pin(pid: int, cpu: int) -> None:
    """Every thread of process ``pid`` onto core ``cpu`` (Linux)."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(thread), {cpu})


async def create_bench_agent(erl: BeamNode, py: str) -> None:
    """The agent ``bench`` on the node ``py`` (quoted as an atom): TestModel, no tools."""
    await erl.eval(
        f'{{ok, bench}} = gen_server:call({{pynode, {py}}}, {{create_agent, bench, #{{model => <<"test">>}}}})'
    )


async def create_slow_agent(erl: BeamNode) -> None:
    """The agent ``slow``, whose one tool ``slow`` has no handler: its calls wait for the bench to answer."""
    tool = (
        '#{name => <<"slow">>, description => <<"A slow lookup">>,'
        ' parameters => #{<<"type">> => <<"object">>, <<"properties">> => #{}}}'
    )
    await erl.eval(
        f"{{ok, slow}} = gen_server:call({{pynode, {PY}}}, {{create_agent, slow,"
        f' #{{model => <<"test">>, tools => [{tool}]}}}})'
    )


async def in_process_sequential(agent: Any, n: int, warm: int) -> list[float]:
    """``n`` runs one after another in this process, after ``warm`` not timed (as :data:`SEQUENTIAL`)."""
    for _ in range(warm):
        await agent.run("warm up")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await agent.run("What is OTP?")
        times.append((time.perf_counter() - t0) * 1e6)
    return times


async def in_process(agent: Any, times: list[float], n: int, concurrency: int) -> dict[str, float]:
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
        node = await start_node(
            epmd.port,
            cookie=COOKIE,
            agents=agents,
            max_runs=opts.in_flight + 100,
            env=node_env(opts),
            args=opts.node_arg,
        )
        erl: BeamNode | None = None
        try:
            erl = await BeamNode.start("bench@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
            if opts.pin:
                # The node and this process take turns on one core (never both at once); erl has the other.
                pin(os.getpid(), 0)
                pin(node.pid, 0)
                pin(erl.os_pid, 1)
            await create_bench_agent(erl, PY)
            await create_slow_agent(erl)
            from pydantic_ai import Agent

            agent = Agent("test")
            # Alternating short rounds, the node's then the same runs in process: a machine whose
            # speed drifts during the run (by half, within a second, on a shared virtual machine)
            # moves both sides alike, and the overhead is the median of the rounds' own ratios.
            seq: list[float] = []
            local: list[float] = []
            ratios: list[float] = []
            per_round = max(1, opts.runs // opts.rounds)
            # The first run of each side on its own: what a node's first caller waits (pynode/bridge/warmup.py).
            [first_node] = eval_list(await erl.eval(SEQUENTIAL.format(py=PY, n=1, warm=0), timeout=600))
            [first_local] = await in_process_sequential(agent, 1, 0)
            result["first_run_us"] = {"through_node": first_node, "in_process": first_local}
            await erl.eval(SEQUENTIAL.format(py=PY, n=1, warm=WARM_UP), timeout=600)
            await in_process_sequential(agent, 1, WARM_UP)
            cpu = {"node": 0.0, "erl": 0.0, "in_process": 0.0}
            for _ in range(opts.rounds):
                node_cpu, erl_cpu = cpu_s(node.pid), cpu_s(erl.os_pid)
                node_times = eval_list(await erl.eval(SEQUENTIAL.format(py=PY, n=per_round, warm=0), timeout=600))
                cpu["node"] += cpu_s(node.pid) - node_cpu
                cpu["erl"] += cpu_s(erl.os_pid) - erl_cpu
                local_cpu = time.process_time()
                local_times = await in_process_sequential(agent, per_round, 0)
                cpu["in_process"] += time.process_time() - local_cpu
                ratios.append(statistics.median(node_times) / statistics.median(local_times))
                seq += node_times
                local += local_times
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
            result["in_process"] = await in_process(agent, local, opts.runs, opts.concurrency)
            result["round_overheads"] = [round(r - 1, 4) for r in ratios]
            result["cpu_us_per_run"] = {side: round(s / len(seq) * 1e6) for side, s in cpu.items()}
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
    result["bridge_overhead_median"] = statistics.median(result["round_overheads"])
    result["bridge_overhead_pooled"] = round(
        result["through_node"]["median_us"] / result["in_process"]["median_us"] - 1, 4
    )
    result["node_env"], result["node_args"], result["pinned"] = opts.node_env, opts.node_arg, opts.pin
    return result


class Probe:
    """The node's probe (:data:`PROBE`): asked by signal, answered in files of ``out``."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.count = 0
        self.survivors: dict[str, int] = {}
        """What the last snapshot found in pymalloc pools that held nothing at the one before, by kind."""
        self.survivor_megabytes = 0
        """How many distinct MiB of address space those objects are in: about the arenas they keep."""
        self.largest: list[tuple[int, str, int]] = []
        """The largest objects at the last snapshot: their own size in bytes, their kind, their length."""

    async def _ask(self, sig: signal.Signals, prefix: str) -> Path:
        self.count += 1
        name = f"{prefix}-{self.count}"
        os.kill(self.pid, sig)
        done = self.out / f"{name}.done"
        for _ in range(6000):  # 600 s at most: a snapshot of a traced heap is slow
            if done.exists():
                return self.out / name
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the node's probe did not answer {prefix}")

    async def snapshot(self) -> tuple[tracemalloc.Snapshot | None, dict[str, int], dict[str, int]]:
        """gc, then the node's live allocations (when it traces them), its gc-tracked objects by type
        and what its allocators hold."""
        base = await self._ask(signal.SIGUSR1, "snap")
        tm = base.with_suffix(".tm")
        snap = tracemalloc.Snapshot.load(str(tm)) if tm.exists() else None
        found: dict[str, Any] = json.loads(base.with_suffix(".json").read_text())
        self.survivors = found["survivors"]
        self.survivor_megabytes = found["survivor_megabytes"]
        self.largest = found["largest"]
        return snap, found["types"], found["allocators"]

    async def trim(self) -> None:
        await self._ask(signal.SIGUSR2, "trim")


def grown_sites(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int, frames: int = 1) -> list[str]:
    """The allocation sites (file:line) with the most more blocks live than before, and the total difference."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    ]
    diff = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    total = sum(d.size_diff for d in diff)
    blocks = sum(d.count_diff for d in diff)
    lines = [f"live Python allocations {total / 1024:+.0f} KB, {blocks:+d} blocks against before round 1; by blocks:"]
    # By blocks: each block that outlives a burst can keep a whole pymalloc arena alive. Then by bytes:
    # under glibc's malloc a survivor keeps a page, not an arena, and bytes are what stay.
    by_blocks = sorted(diff, key=lambda d: (d.count_diff, d.size_diff), reverse=True)[:top]
    by_bytes = sorted(diff, key=lambda d: (d.size_diff, d.count_diff), reverse=True)[:top]
    for heading, stats in ((None, by_blocks), ("by bytes:", by_bytes)):
        if heading:
            lines.append(heading)
        for d in stats:
            lines.append(f"  {d.size_diff / 1024:+9.0f} KB {d.count_diff:+8d} blocks  {_where(d.traceback[0])}")
    if frames > 1:  # the same blocks by the innermost line of this project that led to them
        ours: dict[str, list[int]] = {}
        for d in after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "traceback"):
            frame = next((f for f in d.traceback if f.filename.startswith(str(ROOT / "pynode"))), d.traceback[0])
            sums = ours.setdefault(_where(frame), [0, 0])
            sums[0] += d.count_diff
            sums[1] += d.size_diff
        lines.append("the same, by the line of pynode that led to them (else where they were made):")
        for where, (count, size) in sorted(ours.items(), key=lambda kv: kv[1], reverse=True)[:top]:
            lines.append(f"  {size / 1024:+9.0f} KB {count:+8d} blocks  {where}")
    return lines


def largest_lines(largest: list[tuple[int, str, int]], top: int) -> list[str]:
    """The probe's largest objects, one line each."""
    return [
        "the largest objects (their own size, kind, length):",
        *(f"  {size / 1024:8.0f} KB {kind} (len {n})" for size, kind, n in largest[:top]),
    ]


def _where(frame: tracemalloc.Frame) -> str:
    return f"{frame.filename.replace(str(ROOT) + '/', '').split('site-packages/')[-1]}:{frame.lineno}"


def grown_types(before: dict[str, int], after: dict[str, int], top: int) -> list[str]:
    grown = sorted(((after[k] - before.get(k, 0), k) for k in after), reverse=True)
    return [f"  {n:+8d} {k}" for n, k in grown[:top] if n > 0]


async def memory_rounds(opts: argparse.Namespace) -> dict[str, Any]:
    """Rounds of ``opts.in_flight`` runs in flight at once, then ended; the node's RSS after each."""
    rounds: list[dict[str, Any]] = []
    with running_epmd() as epmd, tempfile.TemporaryDirectory() as tmp:
        agents, out = Path(tmp) / "agents", Path(tmp) / "probe"
        agents.mkdir()
        out.mkdir()
        env = {}
        probing = opts.tracemalloc or opts.trim
        if probing:
            (agents / "bench_probe.py").write_text(PROBE)
            env["BENCH_PROBE_DIR"] = str(out)
        if opts.tracemalloc:
            env["PYTHONTRACEMALLOC"] = str(opts.frames)
        env.update(node_env(opts))
        node = await start_node(
            epmd.port,
            cookie=COOKIE,
            agents=agents,
            max_runs=opts.in_flight + 100,
            env=env,
            ready_within=300,
            args=opts.node_arg,
        )
        erl: BeamNode | None = None
        try:
            start = rss_kb(node.pid)
            erl = await BeamNode.start("bench@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
            await create_slow_agent(erl)
            probe = Probe(node.pid, out) if probing else None
            first: tuple[tracemalloc.Snapshot | None, dict[str, int], dict[str, int]] | None = None
            if probe is not None:
                first = await probe.snapshot()
                print("before round 1:", flush=True)
                for line in _allocator_lines(first[2]):
                    print(line, flush=True)
                for line in largest_lines(probe.largest, opts.top):
                    print(line, flush=True)
            ready = rss_kb(node.pid)
            for i in range(opts.memory_rounds):
                t0 = time.monotonic()
                await erl.eval(HOLDER.format(py=PY, n=opts.in_flight), timeout=60)
                held = await erl.eval(ASK_HOLDER, timeout=600)
                loaded = rss_kb(node.pid)
                await erl.eval("bench_holder ! go, ok.")
                results = await erl.eval(ASK_HOLDER, timeout=600)
                wall = time.monotonic() - t0
                await asyncio.sleep(opts.settle)
                row: dict[str, Any] = {
                    "round": i + 1,
                    "held_tool_calls": held,
                    "results": results,
                    "seconds": round(wall, 1),
                    "rss_in_flight_kb": loaded,
                    "rss_after_kb": rss_kb(node.pid),
                }
                if probe is not None and first is not None:
                    snap, types, row["allocators"] = await probe.snapshot()
                    row["rss_after_gc_kb"] = rss_kb(node.pid)
                    first_snap, first_types, _ = first
                    row["grown"] = grown_sites(first_snap, snap, opts.top, opts.frames) if first_snap and snap else []
                    row["grown_types"] = grown_types(first_types, types, opts.top)
                    row["survivors"] = [
                        f"objects in pools new since the last snapshot, in {probe.survivor_megabytes} MiB"
                        " of addresses:",
                        *(f"  {n:+8d} {kind}" for kind, n in list(probe.survivors.items())[: opts.top]),
                    ]
                    row["largest"] = largest_lines(probe.largest, opts.top)
                    if opts.trim:
                        await probe.trim()
                        row["rss_after_trim_kb"] = rss_kb(node.pid)
                rounds.append(row)
                print(_round_line(start, row), flush=True)
                for line in [
                    *_allocator_lines(row.get("allocators", {})),
                    *row.get("grown", []),
                    *row.get("survivors", []),
                    *row.get("grown_types", []),
                    *row.get("largest", []),
                ]:
                    print(line, flush=True)
        finally:
            if erl is not None:
                await erl.stop()
            await stop(node)
    after = [r["rss_after_kb"] for r in rounds]
    return {
        "memory_rounds": opts.memory_rounds,
        "runs_per_round": opts.in_flight,
        "tracemalloc": opts.tracemalloc,
        "trim": opts.trim,
        "node_env": opts.node_env,
        "node_args": opts.node_arg,
        "rss_start_kb": start,
        "rss_ready_kb": ready,
        "allocators_before": first[2] if first is not None else {},
        "rounds": rounds,
        "after_round_1_vs_start": after[0] / start - 1,
        "spread_rounds_2_on": (max(after[1:]) - min(after[1:])) / after[1] if len(after) > 1 else 0.0,
    }


def _allocator_lines(figures: dict[str, int]) -> list[str]:
    return [
        f"  {key} {value / 1048576:.1f} MB" if key.endswith("bytes") else f"  {key} {value}"
        for key, value in figures.items()
    ]


def _round_line(start: int, row: dict[str, Any]) -> str:
    extra = "".join(
        f", {label} {row[key] / 1024:.0f} MB"
        for key, label in (("rss_after_gc_kb", "after gc"), ("rss_after_trim_kb", "after malloc_trim"))
        if key in row
    )
    return (
        f"round {row['round']}: {row['held_tool_calls']} {row['results']} in {row['seconds']} s;"
        f" RSS in flight {row['rss_in_flight_kb'] / 1024:.0f} MB, after {row['rss_after_kb'] / 1024:.0f} MB"
        f" ({row['rss_after_kb'] / start - 1:+.0%} of the start){extra}"
    )


def eval_list(printed: str) -> list[float]:
    return [float(x) for x in printed.strip("[]").split(",") if x]


def eval_pair(printed: str) -> tuple[float, list[float]]:
    head, _, rest = printed.strip("{}").partition(",")
    return float(head), eval_list(rest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--rounds",
        type=int,
        default=100,
        help="alternating rounds of the sequential runs, node then in process (default 100: 20 runs each)",
    )
    parser.add_argument("--in-flight", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--memory-rounds", type=int, default=0, metavar="R", help="only R rounds of --in-flight runs, RSS after each"
    )
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle after a round before RSS is read")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="with --memory-rounds: the allocation sites grown after each round"
    )
    parser.add_argument(
        "--frames", type=int, default=1, help="with --tracemalloc: frames kept per allocation (more: slower)"
    )
    parser.add_argument("--trim", action="store_true", help="with --memory-rounds: RSS after malloc_trim(0) too")
    parser.add_argument(
        "--node-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable for the node's environment (PYTHONMALLOC=malloc, MALLOC_ARENA_MAX=2)",
    )
    parser.add_argument(
        "--node-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="a command-line flag for the node, one per option (--node-arg=--loop --node-arg=uvloop)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the node and the in-process runs on core 0, erl on core 1 (Linux, two cores or more): the"
        " scheduler then cannot put erl on the core a run is using, which moves single rounds by half",
    )
    parser.add_argument("--top", type=int, default=15, help="sites and types --tracemalloc prints")
    opts = parser.parse_args()
    if opts.pin and not {0, 1} <= os.sched_getaffinity(0):
        parser.error("--pin needs cores 0 and 1 to pin to")
    if opts.quick:
        opts.runs, opts.concurrency, opts.in_flight, opts.rounds = 100, 10, 200, 5
        opts.settle = min(opts.settle, 0.5)
    print(f"the node's codec: {codec_form()}", flush=True)
    if opts.memory_rounds > 0:
        return print_memory(asyncio.run(asyncio.wait_for(memory_rounds(opts), 3600)))
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
    spread = sorted(result["round_overheads"])
    quartiles = f"{pct(spread, 0.25) * 100:+.1f}% to {pct(spread, 0.75) * 100:+.1f}%"
    print(
        f"bridge + distribution overhead on the median: {result['bridge_overhead_median'] * 100:+.1f}%"
        f" (median of {len(spread)} alternating rounds, the middle half {quartiles};"
        f" all runs' medians: {result['bridge_overhead_pooled'] * 100:+.1f}%)"
    )
    cpu = result["cpu_us_per_run"]
    print(
        f"CPU per sequential run: the node {cpu['node']} µs and erl {cpu['erl']} µs (its eval included),"
        f" against {cpu['in_process']} µs in process"
    )
    first = result["first_run_us"]
    print(
        f"first run after the start: {first['through_node'] / 1000:.1f} ms through the node,"
        f" {first['in_process'] / 1000:.1f} ms in process (pydantic-ai's first run there)"
    )
    print(
        f"runs in flight: {f['runs']} started, tool calls held {f['held_tool_calls']}, results {f['results']};"
        f" RSS {f['rss_before_kb'] / 1024:.0f} -> {f['rss_with_runs_kb'] / 1024:.0f} MB"
        f" ({f['kb_per_run_in_flight']:.1f} KB per run in flight), after {f['rss_after_kb'] / 1024:.0f} MB"
    )
    print(json.dumps(result))
    return 0


def print_memory(result: dict[str, Any]) -> int:
    start, rounds = result["rss_start_kb"], result["rounds"]
    after = ", ".join(f"{r['rss_after_kb'] / 1024:.0f}" for r in rounds)
    print(
        f"RSS at start {start / 1024:.0f} MB, agent created {result['rss_ready_kb'] / 1024:.0f} MB;"
        f" after each round of {result['runs_per_round']} runs in flight:"
        f" {after} MB"
    )
    print(
        f"after round 1: {result['after_round_1_vs_start']:+.1%} of the start (target within +25%);"
        f" rounds 2-{len(rounds)} spread {result['spread_rounds_2_on']:.1%} of round 2 (target within 5%)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
