"""The node gives a burst's memory back once the burst's processes have ended and it is quiet."""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from collections.abc import AsyncGenerator

from pynode.etf import Atom, Pid, Reference, decode, encode, forget_identifiers
from pynode.etf.decode import _PIDS, _REFS
from pynode.etf.encodings import ENCODED
from pynode.node import Node
from pynode.runtime.memory import (
    FUTURE_ITERATORS,
    MemoryRelease,
    compact,
    library_tables,
    release_memory,
    renew_future_iterators,
)
from pynode.runtime.process import Process
from pynode.testing import BeamNode


async def test_a_release_follows_enough_ended_processes_once_none_ends_for_a_while() -> None:
    released = asyncio.Event()
    calls: list[int] = []

    def release() -> None:
        calls.append(1)
        released.set()

    memory = MemoryRelease(after=3, quiet=0.01, release=release)
    memory.process_ended()
    memory.process_ended()
    assert memory._handle is None  # two ended: not a burst, nothing scheduled
    memory.process_ended()
    assert memory._handle is not None
    await asyncio.wait_for(released.wait(), 10)
    assert calls == [1]
    # The count starts again from nothing.
    memory.process_ended()
    assert memory._handle is None
    memory.cancel()


async def test_processes_that_keep_ending_put_the_release_off() -> None:
    calls: list[int] = []
    memory = MemoryRelease(after=1, quiet=3600.0, release=lambda: calls.append(1))
    memory.process_ended()
    first = memory._handle
    assert first is not None
    memory.process_ended()
    assert memory._handle is first  # one timer, however many end
    memory._check(asyncio.get_running_loop())  # the timer fires while the last end is recent
    assert calls == []
    assert memory._handle is not None and memory._handle is not first  # looks again later
    memory.cancel()
    assert memory._handle is None


async def test_a_failing_release_is_only_logged() -> None:
    failed = asyncio.Event()

    def fail() -> None:
        failed.set()
        raise RuntimeError("no")

    memory = MemoryRelease(after=1, quiet=0.0, release=fail)
    memory.process_ended()
    await asyncio.wait_for(failed.wait(), 10)
    memory.process_ended()  # still counting, and scheduling
    assert memory._handle is not None
    memory.cancel()


def test_forgetting_identifiers_empties_the_codec_tables_and_changes_no_result() -> None:
    node = Atom("caller@127.0.0.1")
    pid, ref = Pid(node, 1, 0, 7), Reference(node, 7, (1, 2, 3))
    data = encode((pid, ref))
    decoded = decode(data)
    assert _PIDS and _REFS and ENCODED
    forget_identifiers()
    assert not _PIDS and not _REFS and not ENCODED
    assert decode(data) == decoded == (pid, ref)
    assert encode(decoded) == data


async def test_release_memory_runs_where_malloc_trim_is_or_is_not() -> None:
    release_memory()
    assert not ENCODED


def _made_on(line: int, snapshot: tracemalloc.Snapshot) -> int:
    """Blocks alive that were made on ``line`` of this file."""
    made = snapshot.filter_traces([tracemalloc.Filter(True, __file__, lineno=line)])
    return sum(stat.count for stat in made.statistics("lineno"))


async def test_renewing_frees_the_future_iterators_a_burst_left_in_asyncios_free_list() -> None:
    future = asyncio.get_running_loop().create_future()
    tracemalloc.start()
    try:
        line = sys._getframe().f_lineno + 1
        burst = [future.__await__() for _ in range(2 * FUTURE_ITERATORS)]
        del burst  # the last FUTURE_ITERATORS made go back to the free list, and stay there
        gc.collect()
        assert _made_on(line, tracemalloc.take_snapshot()) == FUTURE_ITERATORS
        renew_future_iterators()
        assert _made_on(line, tracemalloc.take_snapshot()) == 0
    finally:
        future.cancel()
        tracemalloc.stop()


def test_compacting_gives_a_table_that_once_held_many_a_small_one_in_place() -> None:
    table = {n: str(n) for n in range(10_000)}
    members = set(range(10_000))
    for n in range(10_000):
        if n % 2000:
            del table[n]
            members.discard(n)
    grown_table, grown_set = table.__sizeof__(), members.__sizeof__()
    dense = {n: n for n in range(100)}
    same, dense_size = dense, dense.__sizeof__()
    freed = compact([table, members, dense])
    assert table == {n: str(n) for n in range(0, 10_000, 2000)} and list(table) == [0, 2000, 4000, 6000, 8000]
    assert members == set(range(0, 10_000, 2000))
    assert table.__sizeof__() * 50 < grown_table and members.__sizeof__() * 50 < grown_set
    assert freed == grown_table - table.__sizeof__() + grown_set - members.__sizeof__()
    assert same is dense and dense.__sizeof__() == dense_size  # a table that fits what it holds is left alone
    assert gc.isenabled()  # off while the tables are rebuilt, on again after


async def test_the_libraries_tables_of_tasks_and_async_generators_are_compacted() -> None:
    import anyio

    async def counting() -> AsyncGenerator[int, None]:
        yield 1

    async def one() -> None:
        generator = counting()  # alive, and in the loop's set, until it is closed
        await anext(generator)
        async with anyio.create_task_group() as group:  # anyio keeps a state for each task it sees
            group.start_soon(asyncio.sleep, 0)
        await generator.aclose()

    async with asyncio.TaskGroup() as group:
        for _ in range(3000):
            group.create_task(one())
    gc.collect()
    tables = list(library_tables())
    assert len(tables) == 3  # asyncio's tasks, the loop's async generators, anyio's states by task
    grown = [t.__sizeof__() for t in tables]
    release_memory()
    assert all(t.__sizeof__() * 10 < size for t, size in zip(tables, grown, strict=True)), (grown, tables)
    assert asyncio.current_task() in asyncio.all_tasks()  # still tracked after its table was rebuilt


async def test_after_a_burst_the_node_compacts_its_own_tables_by_itself(py_node: Node, erl: BeamNode) -> None:
    await erl.eval("register(holder, spawn(fun() -> receive stop -> ok end end)), ok.")
    gate = asyncio.Event()
    before = len(py_node.processes)

    async def body(process: Process) -> None:
        process.monitor((Atom("holder"), Atom("e1@127.0.0.1")))
        await gate.wait()

    burst = [py_node.spawn(body) for _ in range(3000)]
    signals = py_node.connections["e1@127.0.0.1"].signals
    for _ in range(500):  # 10 s at most
        if len(signals.monitors_out) == len(burst):
            break
        await asyncio.sleep(0.02)
    assert len(signals.monitors_out) == len(burst)
    peak = py_node.processes.by_pid.__sizeof__(), signals.monitors_out.__sizeof__()
    gate.set()
    for _ in range(1000):  # 20 s at most; the node releases memory QUIET seconds after the last end
        if py_node.processes.by_pid.__sizeof__() * 10 < peak[0] and signals.monitors_out.__sizeof__() * 10 < peak[1]:
            break
        await asyncio.sleep(0.02)
    assert py_node.processes.by_pid.__sizeof__() * 10 < peak[0]
    assert signals.monitors_out.__sizeof__() * 10 < peak[1]
    assert len(py_node.processes) == before and not signals.monitors_out
    assert await erl.eval("gen_server:call({pynode, 'py@127.0.0.1'}, ping)") == "pong"
