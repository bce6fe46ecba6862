"""The ``pynode`` command runs its interpreter on glibc's malloc unless told otherwise, and on jemalloc
when asked (pynode.allocator)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from command_support import ready_command

from pynode.allocator import (
    DEFAULT_ALLOCATOR,
    JEMALLOC_LIBRARY,
    AllocatorUnavailable,
    allocator_restart,
    find_jemalloc,
)

JEMALLOC = find_jemalloc()
"""The system's jemalloc: scripts/test installs Debian's libjemalloc2 where it is missing."""


def test_a_restart_sets_the_allocator_and_marks_itself() -> None:
    env = allocator_restart("malloc", {"HOME": "/h"})
    assert env == {"HOME": "/h", "PYTHONMALLOC": "malloc", "PYNODE_ALLOCATOR_RESTARTED": "malloc"}


def test_a_restart_for_jemalloc_preloads_it_ahead_of_what_was_preloaded() -> None:
    env = allocator_restart("jemalloc", {"HOME": "/h"}, jemalloc="/lib/x/libjemalloc.so.2")
    assert env == {
        "HOME": "/h",
        "PYTHONMALLOC": "malloc",
        "LD_PRELOAD": "/lib/x/libjemalloc.so.2",
        "PYNODE_ALLOCATOR_RESTARTED": "jemalloc",
    }
    env = allocator_restart("jemalloc", {"LD_PRELOAD": "/a.so"}, jemalloc="/j.so")
    assert env is not None and env["LD_PRELOAD"] == "/j.so:/a.so"


def test_jemalloc_where_there_is_none_is_refused_with_what_to_install() -> None:
    with pytest.raises(AllocatorUnavailable, match="apt-get install libjemalloc2"):
        allocator_restart("jemalloc", {}, jemalloc=None)


def test_jemalloc_is_found_in_the_library_directories(tmp_path: Path) -> None:
    assert find_jemalloc([tmp_path]) is None
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / JEMALLOC_LIBRARY).write_bytes(b"")
    assert find_jemalloc([tmp_path, tmp_path / "lib"]) == str(tmp_path / "lib" / JEMALLOC_LIBRARY)
    assert JEMALLOC is not None and Path(JEMALLOC).name == JEMALLOC_LIBRARY  # this machine's


def test_no_restart_for_pymalloc_a_restarted_interpreter_or_pythonmalloc_set_by_the_caller() -> None:
    assert allocator_restart("pymalloc", {}) is None
    assert allocator_restart("malloc", {"PYNODE_ALLOCATOR_RESTARTED": "1"}) is None
    assert allocator_restart("malloc", {"PYTHONMALLOC": "pymalloc_debug"}) is None


def test_an_unknown_allocator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown allocator 'tcmalloc'"):
        allocator_restart("tcmalloc", {})


def _clean_environ() -> dict[str, str]:
    """This environment without the variables that choose an allocator: a start as a user's shell makes it."""
    chosen = ("PYTHONMALLOC", "PYNODE_ALLOCATOR", "PYNODE_ALLOCATOR_RESTARTED", "LD_PRELOAD")
    return {k: v for k, v in os.environ.items() if k not in chosen}


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in ``env``, which must succeed."""
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)


def _environ_of(pid: int) -> dict[str, str]:
    """The environment the process ``pid`` was last exec'd with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


async def _ready_node(
    epmd_port: int, cookie: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[dict[str, str], str, str]:
    """Start ``python -m pynode``; once it is ready, the environment its process was exec'd with, its
    log, and its memory map."""
    with log.open("wb") as stderr:
        async with ready_command(cookie, epmd_port, "--no-agents", *args, stderr=stderr, env=env) as (proc, line):
            text = await asyncio.to_thread(log.read_text)
            assert b"ready" in line, (line, text)
            maps = await asyncio.to_thread(Path(f"/proc/{proc.pid}/maps").read_text)
            return _environ_of(proc.pid), text, maps


async def test_the_command_starts_itself_again_on_malloc_in_the_same_process(
    epmd_port: int, cookie: str, tmp_path: Path
) -> None:
    assert DEFAULT_ALLOCATOR == "malloc"  # glibc, as on every machine the suite runs on
    environ, log, _ = await _ready_node(epmd_port, cookie, tmp_path / "node.log", env=_clean_environ())
    assert environ.get("PYTHONMALLOC") == "malloc", environ  # the pid that said ready was exec'd so
    assert "small objects served by malloc" in log, log


async def test_pymalloc_and_a_callers_pythonmalloc_need_no_restart(epmd_port: int, cookie: str, tmp_path: Path) -> None:
    env = _clean_environ()
    environ, log, _ = await _ready_node(epmd_port, cookie, tmp_path / "a.log", "--allocator", "pymalloc", env=env)
    assert "PYTHONMALLOC" not in environ and "PYNODE_ALLOCATOR_RESTARTED" not in environ, environ
    assert "small objects served by pymalloc" in log, log
    environ, log, _ = await _ready_node(epmd_port, cookie, tmp_path / "b.log", env={**env, "PYTHONMALLOC": "pymalloc"})
    assert "PYNODE_ALLOCATOR_RESTARTED" not in environ, environ
    assert "small objects served by pymalloc" in log, log


async def test_the_command_on_jemalloc_runs_with_it_loaded(epmd_port: int, cookie: str, tmp_path: Path) -> None:
    args = ("--allocator", "jemalloc")
    environ, text, maps = await _ready_node(epmd_port, cookie, tmp_path / "node.log", *args, env=_clean_environ())
    assert JEMALLOC is not None and JEMALLOC in maps  # the pid that said ready has it mapped
    assert environ.get("LD_PRELOAD") == JEMALLOC and environ.get("PYTHONMALLOC") == "malloc", environ
    assert "small objects served by jemalloc" in text, text


def test_the_restarted_interpreter_leaves_the_variables_out_of_its_environment() -> None:
    code = (
        "import os, sys; from pynode.allocator import restart_on_allocator;"
        " print(restart_on_allocator('malloc'), os.environ.get('PYTHONMALLOC'),"
        " os.environ.get('PYNODE_ALLOCATOR_RESTARTED'))"
    )
    env = {**os.environ, "PYTHONMALLOC": "malloc", "PYNODE_ALLOCATOR_RESTARTED": "malloc"}
    assert _python(code, env).stdout.split() == ["malloc", "None", "None"]


def test_a_node_on_jemalloc_has_it_loaded_and_passes_no_preload_on() -> None:
    """The restarted interpreter runs on jemalloc, and its environment (what it starts) is the one it
    was given: the preload the restart added is taken out, the caller's own stays."""
    assert JEMALLOC is not None
    code = (
        "import os; from pynode.allocator import restart_on_allocator; from pathlib import Path;"
        " served = restart_on_allocator('jemalloc');"
        " loaded = 'libjemalloc' in Path('/proc/self/maps').read_text();"
        " print(served, loaded, os.environ.get('LD_PRELOAD'), os.environ.get('PYTHONMALLOC'))"
    )
    env = _clean_environ()
    out = _python(code, env)
    assert out.stdout.split() == ["jemalloc", "True", "None", "None"], out
    # A preload of the caller's own (here a second copy of the C library, harmless) is kept.
    libc = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "/libc.so" in line)
    out = _python(code, {**env, "LD_PRELOAD": libc})
    assert out.stdout.split() == ["jemalloc", "True", libc, "None"], out


def test_jemalloc_gives_a_bursts_pages_back_when_the_node_releases_memory() -> None:
    """jemalloc returns unused pages only as later allocations go by; the release purges them at once."""
    code = """
import asyncio, gc
from pynode.allocator import restart_on_allocator
from pynode.runtime.memory import HAS_JEMALLOC, release_memory

served = restart_on_allocator("jemalloc")

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) // 1024

async def main():
    start = rss()
    burst = [bytearray(200) for _ in range(500_000)]
    peak = rss()
    del burst
    gc.collect()
    freed = rss()
    release_memory()  # as the node calls it, on its loop
    print(served, HAS_JEMALLOC, peak - start, freed - start, rss() - start)

asyncio.run(main())
"""
    out = _python(code, _clean_environ())
    served, has_jemalloc, peak, freed, released = out.stdout.split()
    assert (served, has_jemalloc) == ("jemalloc", "True"), out
    assert int(peak) > 100, out  # MB the burst took
    assert int(freed) > int(peak) // 5, out  # freed, yet much of it still held by jemalloc
    assert int(released) < int(freed) // 4, out  # and given back by the release


def test_an_unknown_allocator_in_the_environment_is_a_usage_error() -> None:
    env = {**os.environ, "PYNODE_ALLOCATOR": "tcmalloc"}
    out = subprocess.run(
        [sys.executable, "-m", "pynode", "--name", "x@127.0.0.1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out
    assert "$PYNODE_ALLOCATOR: 'tcmalloc' is not one of malloc, pymalloc, jemalloc" in out.stderr, out
