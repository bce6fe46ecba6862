"""``--agents``: the ``pynode`` command says where its agents come from, and refuses a folder that is not there."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from textwrap import dedent

import pytest
from beam import epmd_names

from pynode import Atom
from pynode.testing import Beam

pytestmark = pytest.mark.beam

PYNODE = Path(sys.executable).with_name("pynode")
"""The console script the package installs, as a user runs it."""

WITHIN = 60.0


class Command:
    """One ``pynode`` child process: what it printed, how it ended."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout = ""
        self.stderr = ""

    async def ready(self) -> None:
        """Wait for the ready line; fail with what it printed if it exits first."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(WITHIN):
            while line := (await self.proc.stdout.readline()).decode():
                self.stdout += line
                if " ready " in line:
                    return
        await self.finish()
        raise AssertionError(f"pynode exited ({self.proc.returncode}) before ready:\n{self.stdout}{self.stderr}")

    async def finish(self) -> int:
        """Wait for the exit (SIGKILL by pid after WITHIN s) and collect the rest of its output."""
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), WITHIN)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            out, err = await self.proc.communicate()
        self.stdout += out.decode(errors="replace")
        self.stderr += err.decode(errors="replace")
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def stop(self) -> int:
        """SIGTERM by pid, as a service manager would; the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        return await self.finish()


@pytest.fixture
async def pynode_cli(epmd_port: int) -> AsyncIterator[list[Command]]:
    """`pynode` commands against the test's epmd ($ERL_EPMD_PORT); any still running at teardown is killed by pid."""
    started: list[Command] = []
    yield started
    for command in started:
        if command.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command.proc.pid, signal.SIGKILL)
            await command.proc.wait()


async def run(started: list[Command], cwd: Path, cookie: str, *args: str) -> Command:
    proc = await asyncio.create_subprocess_exec(
        str(PYNODE), "--name", "cli@127.0.0.1", "--cookie", cookie, *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=cwd, env={**os.environ, "PYNODE_LOG_LEVEL": "info"},
    )  # fmt: skip
    command = Command(proc)
    started.append(command)
    return command


@pytest.mark.parametrize("make", ["missing", "file"])
async def test_an_explicit_agents_folder_that_is_not_there_stops_the_command(
    pynode_cli: list[Command], tmp_path: Path, cookie: str, epmd_port: int, make: str
) -> None:
    named = tmp_path / "my_agents"
    if make == "file":
        named.write_text("not a folder\n")
    command = await run(pynode_cli, tmp_path, cookie, "--agents", str(named))
    code = await command.finish()
    assert code != 0
    reason = "no such directory" if make == "missing" else "is not a directory"
    assert f"pynode: --agents {named}: {reason}" in command.stderr
    assert " ready " not in command.stdout
    assert "cli" not in epmd_names(epmd_port)  # it stopped before registering anywhere


async def test_a_missing_default_folder_is_a_warning_and_the_node_serves(
    pynode_cli: list[Command], tmp_path: Path, cookie: str, beam: Beam
) -> None:
    command = await run(pynode_cli, tmp_path, cookie)
    await command.ready()
    assert await beam.call(("pynode", "cli@127.0.0.1"), Atom("list_agents")) == (Atom("ok"), [])
    assert await command.stop() == 0
    assert f"WARNING pynode: no Python agents: there is no folder {tmp_path / 'agents'}" in command.stderr


async def test_the_log_names_the_folder_and_the_agents_loaded(
    pynode_cli: list[Command], tmp_path: Path, cookie: str, beam: Beam
) -> None:
    folder = tmp_path / "my_agents"
    folder.mkdir()
    (folder / "greeter.py").write_text("from pydantic_ai import Agent\nagent = Agent('test')\n")
    (folder / "helper.py").write_text(
        dedent("""
        from pydantic_ai import Agent
        agent = Agent("test", instructions="Help.")
    """)
    )
    (folder / "broken.py").write_text("import no_such_module_here\n")
    command = await run(pynode_cli, tmp_path, cookie, "--agents", "my_agents")
    await command.ready()
    ok, agents = await beam.call(("pynode", "cli@127.0.0.1"), Atom("list_agents"))
    assert ok == Atom("ok")
    assert sorted(agent[Atom("name")] for agent in agents) == ["greeter", "helper"]
    assert await command.stop() == 0
    assert f"Python agents from {folder}: greeter, helper (1 file(s) failed)" in command.stderr
    assert f"no agent from {folder / 'broken.py'}: ModuleNotFoundError" in command.stderr
