"""Which allocator the node's interpreter runs on: glibc's malloc by default, so a burst's memory goes back.

pymalloc serves Python's small objects from 1 MiB arenas and gives an arena back only once every
block in it is free. The few hundred objects that outlive a burst of runs (pydantic-ai's per-agent
graph parts, the node's counters, free lists of the C modules) land all over the burst's arenas, so
after 10,000 runs in flight a node kept about 250 MB of the 75 MB it started with. Under glibc's
malloc those objects keep a 4 KiB page each at most, and ``malloc_trim(0)`` (which the node's memory
release calls) gives back every other free page: the same bursts leave it about 100 MB.

The interpreter reads ``PYTHONMALLOC`` only as it starts, so the ``pynode`` command starts itself
again, in the same process (``exec``: same pid, same standard streams), with the variable set. The
variable is then taken out of the node's environment, so programs the node starts (MCP servers) get
the environment it was given. ``PYTHONMALLOC`` set by whoever started the node always wins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Final

from pynode.runtime.memory import HAS_MALLOC_TRIM

__all__ = ["ALLOCATORS", "DEFAULT_ALLOCATOR", "allocator_restart", "restart_on_allocator"]

ALLOCATORS: Final = ("malloc", "pymalloc")


DEFAULT_ALLOCATOR: Final = "malloc" if os.name == "posix" and HAS_MALLOC_TRIM else "pymalloc"
"""glibc's malloc where the C library can give free pages back (``malloc_trim``); elsewhere pymalloc,
the interpreter's own default, which needs no restart."""

_RESTARTED: Final = "PYNODE_ALLOCATOR_RESTARTED"
"""Set for the restarted interpreter: it restarts no further, and drops what the restart added."""


def allocator_restart(allocator: str, environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to start the interpreter again with, so that it runs on ``allocator``;
    ``None`` when it runs on it already (or ``PYTHONMALLOC`` was set by whoever started the node)."""
    if allocator not in ALLOCATORS:
        raise ValueError(f"unknown allocator {allocator!r} (one of {', '.join(ALLOCATORS)})")
    if _RESTARTED in environ or "PYTHONMALLOC" in environ or allocator == "pymalloc":
        return None
    return {**environ, "PYTHONMALLOC": allocator, _RESTARTED: "1"}


def restart_on_allocator(allocator: str, argv: Sequence[str] | None = None) -> str:
    """Start this interpreter again on ``allocator`` (no return) unless it runs on it already; in the
    restarted interpreter, take the restart's variables out of ``os.environ``.

    Returns the allocator the interpreter runs on: what ``PYTHONMALLOC`` names, else pymalloc.
    """
    if os.environ.pop(_RESTARTED, None) is not None:
        return os.environ.pop("PYTHONMALLOC", allocator)
    environment = allocator_restart(allocator, os.environ)
    if environment is None or not sys.executable:  # no interpreter to start again: an embedded Python
        return os.environ.get("PYTHONMALLOC", "pymalloc")
    command = list(sys.orig_argv if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, environment)
