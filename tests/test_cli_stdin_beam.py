"""``--stop-on-eof``: a node started through a Port stops with the BEAM that started it, not later."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from beam import epmd_names
from test_cli_agents_beam import PYNODE, Command, pynode_cli

from pynode import Atom
from pynode.testing import Beam

pytestmark = pytest.mark.beam
__all__ = ["pynode_cli"]


async def start(started: list[Command], cwd: Path, cookie: str, *args: str, env: dict[str, str]) -> Command:
    proc = await asyncio.create_subprocess_exec(
        str(PYNODE), "--name", "eof@127.0.0.1", "--cookie", cookie, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=cwd, env={**os.environ, "PYNODE_LOG_LEVEL": "info", **env},
    )  # fmt: skip
    command = Command(proc)
    started.append(command)
    await command.ready()
    return command


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_closing_stdin_stops_the_node_cleanly(
    pynode_cli: list[Command], tmp_path: Path, cookie: str, epmd_port: int, beam: Beam, how: str
) -> None:
    args, env = (["--stop-on-eof"], {}) if how == "flag" else ([], {"PYNODE_STOP_ON_EOF": "1"})
    command = await start(pynode_cli, tmp_path, cookie, *args, env=env)
    assert await beam.call(("pynode", "eof@127.0.0.1"), Atom("ping")) == Atom("pong")
    assert command.proc.stdin is not None
    command.proc.stdin.write(b"anything written is ignored\n")
    await command.proc.stdin.drain()
    command.proc.stdin.close()  # what the pipe does when the BEAM owning the Port dies
    assert await command.finish() == 0
    assert "standard input closed" in command.stderr
    assert "eof" not in epmd_names(epmd_port)


async def test_without_it_a_closed_stdin_changes_nothing(
    pynode_cli: list[Command], tmp_path: Path, cookie: str, beam: Beam
) -> None:
    command = await start(pynode_cli, tmp_path, cookie, env={"PYNODE_STOP_ON_EOF": ""})
    assert command.proc.stdin is not None
    command.proc.stdin.close()
    # The node still answers after its stdin closed: it stops only when told to.
    for _ in range(3):
        assert await beam.call(("pynode", "eof@127.0.0.1"), Atom("ping")) == Atom("pong")
    assert command.proc.returncode is None
    assert await command.stop() == 0
    assert "standard input closed" not in command.stderr


async def test_a_node_started_through_a_port_goes_when_its_beam_is_killed(
    beam: Beam, cookie: str, epmd_port: int, tmp_path: Path
) -> None:
    """The case the Elixir library meets: the BEAM that owns the Port is SIGKILLed, the node follows."""
    owner = await beam("owner")
    # The Port belongs to a process that lives on (an eval's own process ends when it returns, and
    # its Port, and so the node's stdin, would close with it).
    started = await owner.eval(
        "Self = self(),"
        " spawn(fun() ->"
        f'   P = open_port({{spawn_executable, "{PYNODE}"}},'
        f'     [{{args, ["--name", "port@127.0.0.1", "--cookie", "{cookie}"]}},'
        f'      {{cd, "{tmp_path}"}}, {{env, [{{"PYNODE_STOP_ON_EOF", "1"}}]}}, exit_status, {{line, 4096}}]),'
        "   {os_pid, OsPid} = erlang:port_info(P, os_pid),"
        '   Wait = fun W() -> receive {P, {data, {eol, L}}} -> case string:find(L, " ready ") of'
        "     nomatch -> W(); _ -> ok end after 60000 -> timeout end end,"
        "   Self ! {port_node, Wait(), OsPid},"
        "   Drain = fun D() -> receive _ -> D() end end, Drain()"
        " end),"
        " receive {port_node, Status, OsPid} -> {Status, OsPid} after 65000 -> {no_answer, 0} end",
        timeout=70,
    )
    status, os_pid_text = started.strip("{}").split(",")
    assert status == "ok", started
    os_pid = int(os_pid_text)
    try:
        assert "port" in epmd_names(epmd_port)
        owner.kill()  # SIGKILL: no code of the owner runs, only its pipes close
        for _ in range(600):  # bounded: up to 60 s
            if not _alive(os_pid):
                break
            await asyncio.sleep(0.1)
        assert not _alive(os_pid), "the node outlived the BEAM that started it"
        assert "port" not in epmd_names(epmd_port)
    finally:
        if _alive(os_pid):
            os.kill(os_pid, 9)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False
