"""Which allocator the node's interpreter runs on: glibc's malloc by default, so a burst's memory goes back.

pymalloc serves Python's small objects from 1 MiB arenas and gives an arena back only once every
block in it is free. The few hundred objects that outlive a burst of runs (pydantic-ai's per-agent
graph parts, the node's counters, free lists of the C modules) land all over the burst's arenas, so
after 10,000 runs in flight a node kept about 250 MB of the 75 MB it started with. Under glibc's
malloc those objects keep a 4 KiB page each at most, and ``malloc_trim(0)`` (which the node's memory
release calls) gives back every other free page: the same bursts leave it about 85 MB.

glibc's malloc is the slower of the two for an agent's run: pydantic-ai makes and frees many small
objects, and glibc's free works harder for each than pymalloc's. jemalloc (``--allocator jemalloc``,
the system's ``libjemalloc.so.2``, preloaded) runs them nearly as fast as pymalloc and gives back
most of what glibc's malloc does (104 MB left after the same bursts): the node's memory release asks
it to purge its unused pages.

The interpreter reads ``PYTHONMALLOC`` only as it starts, and the dynamic loader ``LD_PRELOAD``, so
the ``pynode`` command starts itself again, in the same process (``exec``: same pid, same standard
streams), with the variables set. They are then taken out of the node's environment, so programs the
node starts (MCP servers) get the environment it was given. ``PYTHONMALLOC`` set by whoever started
the node always wins.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Final

from pynode.runtime.memory import HAS_JEMALLOC, HAS_MALLOC_TRIM

__all__ = [
    "ALLOCATORS",
    "DEFAULT_ALLOCATOR",
    "JEMALLOC_LIBRARY",
    "AllocatorUnavailable",
    "allocator_restart",
    "find_jemalloc",
    "restart_on_allocator",
]

ALLOCATORS: Final = ("malloc", "pymalloc", "jemalloc")

DEFAULT_ALLOCATOR: Final = "malloc" if os.name == "posix" and HAS_MALLOC_TRIM else "pymalloc"
"""glibc's malloc where the C library can give free pages back (``malloc_trim``); elsewhere pymalloc,
the interpreter's own default, which needs no restart."""

JEMALLOC_LIBRARY: Final = "libjemalloc.so.2"
"""jemalloc 5's shared library, as Debian's ``libjemalloc2``, Fedora's and Alpine's ``jemalloc`` install it."""

_RESTARTED: Final = "PYNODE_ALLOCATOR_RESTARTED"
"""Set for the restarted interpreter to the allocator it was restarted for: it restarts no further,
and drops what the restart added."""


class AllocatorUnavailable(ValueError):
    """The allocator asked for is not on this machine."""


def _library_dirs() -> list[Path]:
    """Where the system keeps shared libraries: the multiarch directories first (Debian, Ubuntu)."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = ["/usr/local/lib", "/usr/lib64", "/usr/lib", "/lib64", "/lib"]
    if arch:
        dirs[1:1] = [f"/usr/lib/{arch}", f"/lib/{arch}"]
    return [Path(d) for d in dirs]


def find_jemalloc(dirs: Sequence[Path] | None = None) -> str | None:
    """The path of :data:`JEMALLOC_LIBRARY` in the system's library directories (Linux only), or ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    for directory in _library_dirs() if dirs is None else dirs:
        candidate = directory / JEMALLOC_LIBRARY
        if candidate.is_file():
            return str(candidate)
    return None


def allocator_restart(
    allocator: str, environ: Mapping[str, str], *, jemalloc: str | None = None
) -> dict[str, str] | None:
    """The environment to start the interpreter again with, so that it runs on ``allocator``;
    ``None`` when it runs on it already (or ``PYTHONMALLOC`` was set by whoever started the node).

    ``jemalloc``: the library's path, for ``allocator == "jemalloc"`` (:func:`find_jemalloc`);
    :class:`AllocatorUnavailable` without one.
    """
    if allocator not in ALLOCATORS:
        raise ValueError(f"unknown allocator {allocator!r} (one of {', '.join(ALLOCATORS)})")
    if _RESTARTED in environ or "PYTHONMALLOC" in environ or allocator == "pymalloc":
        return None
    environment = {**environ, "PYTHONMALLOC": "malloc", _RESTARTED: allocator}
    if allocator == "jemalloc":
        if jemalloc is None:
            raise AllocatorUnavailable(
                f"--allocator jemalloc: no {JEMALLOC_LIBRARY} on this machine"
                " (Debian and Ubuntu: apt-get install libjemalloc2); --allocator malloc needs none"
            )
        before = environ.get("LD_PRELOAD")
        environment["LD_PRELOAD"] = f"{jemalloc}:{before}" if before else jemalloc
    return environment


def _undo_preload(environ: MutableMapping[str, str]) -> None:
    """Take out of ``LD_PRELOAD`` the library the restart put first in it."""
    _, _, rest = environ.get("LD_PRELOAD", "").partition(":")
    if rest:
        environ["LD_PRELOAD"] = rest
    else:
        environ.pop("LD_PRELOAD", None)


def _serving(pythonmalloc: str) -> str:
    """What serves small objects in this interpreter, started with ``PYTHONMALLOC=pythonmalloc``."""
    return "jemalloc" if pythonmalloc.startswith("malloc") and HAS_JEMALLOC else pythonmalloc


def restart_on_allocator(allocator: str, argv: Sequence[str] | None = None) -> str:
    """Start this interpreter again on ``allocator`` (no return) unless it runs on it already; in the
    restarted interpreter, take the restart's variables out of ``os.environ``.

    Returns the allocator the interpreter runs on: jemalloc where it serves malloc, else what
    ``PYTHONMALLOC`` names, else pymalloc. :class:`AllocatorUnavailable` for jemalloc where there is none.
    """
    restarted = os.environ.pop(_RESTARTED, None)
    if restarted is not None:
        if restarted == "jemalloc":
            _undo_preload(os.environ)
        return _serving(os.environ.pop("PYTHONMALLOC", allocator))
    jemalloc = find_jemalloc() if allocator == "jemalloc" else None
    environment = allocator_restart(allocator, os.environ, jemalloc=jemalloc)
    if environment is None or not sys.executable:  # no interpreter to start again: an embedded Python
        return _serving(os.environ.get("PYTHONMALLOC", "pymalloc"))
    command = list(sys.orig_argv if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, environment)
