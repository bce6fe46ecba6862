"""The node gives a burst's memory back once the burst's processes have ended and it is quiet."""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc

from pynode.etf import Atom, Pid, Reference, decode, encode, forget_identifiers
from pynode.etf.decode import _PIDS, _REFS
from pynode.etf.encodings import ENCODED
from pynode.runtime.memory import FUTURE_ITERATORS, MemoryRelease, release_memory, renew_future_iterators


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
