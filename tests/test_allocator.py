"""The ``pynode`` command runs its interpreter on glibc's malloc unless told otherwise (pynode.allocator)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from command_support import ready_command

from pynode.allocator import DEFAULT_ALLOCATOR, allocator_restart


def test_a_restart_sets_the_allocator_and_marks_itself() -> None:
    env = allocator_restart("malloc", {"HOME": "/h"})
    assert env == {"HOME": "/h", "PYTHONMALLOC": "malloc", "PYNODE_ALLOCATOR_RESTARTED": "1"}


def test_no_restart_for_pymalloc_a_restarted_interpreter_or_pythonmalloc_set_by_the_caller() -> None:
    assert allocator_restart("pymalloc", {}) is None
    assert allocator_restart("malloc", {"PYNODE_ALLOCATOR_RESTARTED": "1"}) is None
    assert allocator_restart("malloc", {"PYTHONMALLOC": "pymalloc_debug"}) is None


def test_an_unknown_allocator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown allocator 'jemalloc'"):
        allocator_restart("jemalloc", {})


def _environ_of(pid: int) -> dict[str, str]:
    """The environment the process ``pid`` was last exec'd with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


async def _ready_node(
    epmd_port: int, cookie: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[dict[str, str], str]:
    """Start ``python -m pynode``; once it is ready, the environment of its process and its log."""
    with log.open("wb") as stderr:
        async with ready_command(cookie, epmd_port, "--no-agents", *args, stderr=stderr, env=env) as (proc, line):
            text = await asyncio.to_thread(log.read_text)
            assert b"ready" in line, (line, text)
            return _environ_of(proc.pid), text


async def test_the_command_starts_itself_again_on_malloc_in_the_same_process(
    epmd_port: int, cookie: str, tmp_path: Path
) -> None:
    assert DEFAULT_ALLOCATOR == "malloc"  # glibc, as on every machine the suite runs on
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "PYNODE_ALLOCATOR")}
    environ, log = await _ready_node(epmd_port, cookie, tmp_path / "node.log", env=env)
    assert environ.get("PYTHONMALLOC") == "malloc", environ  # the pid that said ready was exec'd so
    assert "small objects served by malloc" in log, log


async def test_pymalloc_and_a_callers_pythonmalloc_need_no_restart(epmd_port: int, cookie: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "PYNODE_ALLOCATOR")}
    environ, log = await _ready_node(epmd_port, cookie, tmp_path / "a.log", "--allocator", "pymalloc", env=env)
    assert "PYTHONMALLOC" not in environ and "PYNODE_ALLOCATOR_RESTARTED" not in environ, environ
    assert "small objects served by pymalloc" in log, log
    environ, log = await _ready_node(epmd_port, cookie, tmp_path / "b.log", env={**env, "PYTHONMALLOC": "pymalloc"})
    assert "PYNODE_ALLOCATOR_RESTARTED" not in environ, environ
    assert "small objects served by pymalloc" in log, log


def test_the_restarted_interpreter_leaves_the_variables_out_of_its_environment() -> None:
    code = (
        "import os, sys; from pynode.allocator import restart_on_allocator;"
        " print(restart_on_allocator('malloc'), os.environ.get('PYTHONMALLOC'),"
        " os.environ.get('PYNODE_ALLOCATOR_RESTARTED'))"
    )
    env = {**os.environ, "PYTHONMALLOC": "malloc", "PYNODE_ALLOCATOR_RESTARTED": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["malloc", "None", "None"], out


def test_an_unknown_allocator_in_the_environment_is_a_usage_error() -> None:
    env = {**os.environ, "PYNODE_ALLOCATOR": "jemalloc"}
    out = subprocess.run(
        [sys.executable, "-m", "pynode", "--name", "x@127.0.0.1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out
    assert "$PYNODE_ALLOCATOR: 'jemalloc' is not one of malloc, pymalloc" in out.stderr, out
