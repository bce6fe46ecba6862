"""Giving the memory of a burst of processes back to the system once the node is quiet again.

Ten thousand runs in flight take over a gigabyte; once they have ended, nearly all of it is free
inside the process, yet it stays in the process's RSS. Two allocators, tables that never shrink and a
free list keep it:

* pymalloc (Python's objects up to 512 bytes) returns one of its 1 MiB arenas to the system only
  when every block in it is free. The blocks that outlive a burst were made while the burst's memory
  was being given back, so they land all over the arenas and each keeps one alive: a few thousand
  small survivors (tables of lately seen pids and references, say) hold hundreds of megabytes. What
  the node itself keeps after a burst is made to leave no such survivors, or freed here.
* glibc's malloc (everything bigger: coroutine frames, dict tables, buffers) keeps what was freed
  inside its heap and returns pages only from the top of it; ``malloc_trim(0)`` gives back every
  whole free page wherever it is. jemalloc, where it serves malloc (``--allocator jemalloc``), gives
  back its unused pages only as later allocations go by, and a quiet node makes none:
  ``mallctl("arena.<all>.purge")`` gives them back at once.

* A dict or a set never gives back its table as entries leave it: one that held ten thousand runs
  keeps room for them once they have ended. The node's own tables (processes, monitors, runs) and
  three of the libraries' (asyncio's set of all tasks, the loop's set of live async generators, and
  anyio's state by task) held about 16 MB after 10,000 runs in flight, the libraries' three most of it.
  :func:`compact` gives each such table one sized for what it holds now, in place.
* asyncio's C module keeps up to :data:`FUTURE_ITERATORS` of the iterators ``await future`` makes
  in a free list of its own, which ``gc.collect`` does not empty. After a burst they are blocks from
  all over the burst's memory, each keeping an arena.

So once :data:`RELEASE_AFTER` processes have ended since the last release and no process has ended
for :data:`QUIET` seconds, the node empties its tables of lately seen pids and references, collects
cyclic garbage (so that what only a reference cycle kept is freed before the trim), compacts the
tables a burst grew, renews asyncio's free list of future iterators, and has malloc give its free
pages back (jemalloc's purge where jemalloc serves malloc, else ``malloc_trim(0)`` where the C
library has it). That costs a few tens of milliseconds of the loop once per burst, never
while processes keep ending, and nothing on a node that only ever has a few.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import itertools
import logging
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeAlias, cast

from pynode.etf.decode import forget_identifiers

__all__ = [
    "FUTURE_ITERATORS",
    "HAS_JEMALLOC",
    "HAS_MALLOC_TRIM",
    "QUIET",
    "RELEASE_AFTER",
    "MemoryRelease",
    "Table",
    "compact",
    "library_tables",
    "release_memory",
    "renew_future_iterators",
]

log = logging.getLogger("pynode.memory")

RELEASE_AFTER: Final = 1000
"""Processes ended since the last release before the node releases memory again."""
QUIET: Final = 1.0
"""Seconds without a process ending before it does."""


def _c_function(name: str, argtypes: list[Any]) -> Callable[..., int] | None:
    """The C function ``name`` among this process's symbols (an int result), or ``None`` if there is none."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return cast("Callable[..., int]", function)


_MALLOC_TRIM: Final = _c_function("malloc_trim", [ctypes.c_size_t])
"""glibc's ``malloc_trim``, or ``None`` where the C library has none (musl, macOS)."""
HAS_MALLOC_TRIM: Final = _MALLOC_TRIM is not None
"""Whether the C library can give free pages back from inside its heap (glibc)."""

_MALLCTL: Final = _c_function(
    "mallctl", [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
)
"""jemalloc's ``mallctl``: among the process's symbols where jemalloc serves its malloc (preloaded)."""
HAS_JEMALLOC: Final = _MALLCTL is not None
"""Whether jemalloc serves this process's malloc."""

MALLCTL_ARENAS_ALL: Final = 4096
"""jemalloc's arena index that stands for every arena (``MALLCTL_ARENAS_ALL``, jemalloc 5)."""


def _give_pages_back() -> None:
    """Have malloc give its free pages back: jemalloc's purge of every arena (after the thread's cache
    goes back to its pages) where jemalloc serves malloc, else glibc's ``malloc_trim(0)`` where it is."""
    if _MALLCTL is not None:
        _MALLCTL(b"thread.tcache.flush", None, None, None, 0)
        _MALLCTL(f"arena.{MALLCTL_ARENAS_ALL}.purge".encode(), None, None, None, 0)
    elif _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


FUTURE_ITERATORS: Final = 255
"""How many future iterators asyncio's C module keeps for reuse (``FI_FREELIST_MAXLEN``)."""


def renew_future_iterators() -> None:
    """Put new blocks in asyncio's free list of future iterators, and free the ones it held.

    Taking :data:`FUTURE_ITERATORS` iterators empties the list (it makes new ones for what it lacks);
    as many more are then all new, made from memory in use now. Those go back to the list first and
    fill it, so the ones it held, made during the burst, are freed for good. Called on the node's loop.
    """
    future = asyncio.get_running_loop().create_future()
    held = [future.__await__() for _ in range(FUTURE_ITERATORS)]
    fresh = [future.__await__() for _ in range(FUTURE_ITERATORS)]
    del fresh
    del held
    future.cancel()


Table: TypeAlias = dict[Any, Any] | set[Any]
"""What :func:`compact` works on."""


def compact(tables: Iterable[Table]) -> int:
    """Rebuild in place each dict or set that takes at least twice the memory a copy of it needs: the
    same object, with the same entries in the same order, on a table sized for them. Returns the
    bytes given back.

    Clearing a dict or a set frees its table, and putting the entries back makes one sized for them.
    Called from a callback of the loop, with no await between clearing and refilling, so no code of
    the node sees a table half refilled; and with the cyclic collector off, so that no weak
    reference's callback (a WeakSet removing a dead entry) runs between the copy and the refill.
    """
    freed = 0
    collecting = gc.isenabled()
    gc.disable()
    try:
        for table in tables:
            size = table.__sizeof__()
            fresh = table.copy()
            if fresh.__sizeof__() * 2 > size:
                continue
            table.clear()
            table.update(fresh)  # a dict from a dict, a set from a set
            freed += size - table.__sizeof__()
    finally:
        if collecting:
            gc.enable()
    return freed


def _weak_tables(container: object) -> Iterator[Table]:
    """The table behind a WeakSet or a weak-keyed dictionary, unless something iterates over it now."""
    if isinstance(container, (weakref.WeakSet, weakref.WeakKeyDictionary)) and not getattr(container, "_iterating", 1):
        data = getattr(container, "data", None)
        if isinstance(data, (dict, set)):
            yield data


def library_tables() -> Iterator[Table]:
    """The tables of asyncio and anyio that grow with a burst's tasks and async generators: asyncio's
    set of all tasks, the running loop's set of live async generators (asyncio's own loop; uvloop
    keeps its own), and the state anyio keeps by task. Each is looked for; what is not there is skipped."""
    yield from _weak_tables(getattr(asyncio.tasks, "_all_tasks", None))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        yield from _weak_tables(getattr(loop, "_asyncgens", None))
    anyio_asyncio = sys.modules.get("anyio._backends._asyncio")
    yield from _weak_tables(getattr(anyio_asyncio, "_task_states", None))


def release_memory(tables: Iterable[Table] = ()) -> None:
    """Forget the lately seen pids and references, collect cyclic garbage, compact ``tables`` and the
    libraries' (:func:`library_tables`), renew asyncio's free list of future iterators, and have
    malloc give its free pages back."""
    started = time.perf_counter()
    forget_identifiers()
    collected = gc.collect()
    compacted = compact(itertools.chain(tables, library_tables()))
    renew_future_iterators()
    _give_pages_back()
    log.debug(
        "released memory: %d objects collected, %d KB of tables compacted, in %.1f ms",
        collected,
        compacted // 1024,
        (time.perf_counter() - started) * 1000,
    )


class MemoryRelease:
    """Counts ended processes; calls ``release`` once enough have ended and the node is quiet."""

    __slots__ = ("_ended", "_handle", "_last_end", "after", "quiet", "release")

    def __init__(
        self, *, after: int = RELEASE_AFTER, quiet: float = QUIET, release: Callable[[], None] = release_memory
    ) -> None:
        self.after = after
        self.quiet = quiet
        self.release = release
        self._ended = 0
        self._last_end = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def process_ended(self) -> None:
        """A process of the node ended (called from the node's loop)."""
        self._ended += 1
        if self._ended < self.after:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a node driven without a loop (its tests): nothing to schedule on
            return
        self._last_end = loop.time()
        if self._handle is None:
            self._handle = loop.call_later(self.quiet, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        wait = self._last_end + self.quiet - loop.time()
        if wait > 0:  # processes still ending: look again once the last of them is QUIET old
            self._handle = loop.call_later(wait, self._check, loop)
            return
        self._handle = None
        self._ended = 0
        try:
            self.release()
        except Exception:  # freeing memory is an optimisation: it never takes the node down
            log.warning("could not release memory", exc_info=True)

    def cancel(self) -> None:
        """The node stops: no release is pending any more."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
