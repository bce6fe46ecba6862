"""The ``pynode`` command as an OS process, against real OTP nodes.

Each test runs ``python -m pynode`` as a child, waits for its ``ready`` line, and ends it by
pid. HOME points to a temporary folder so ``~/.erlang.cookie`` is never touched, and
``--agents`` to an empty one so no agent is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from beam import BeamFactory, epmd_names, free_port
from test_node_beam import evals_to, eventually

from pynode.etf import Atom
from pynode.node import Node

pytestmark = pytest.mark.beam

READY_WITHIN = 30.0


class PynodeCommand:
    """One ``python -m pynode`` child: its ready line, its stderr, its exit."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.stdout: list[str] = []
        self.stderr = bytearray()
        self._stderr_reader = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls, args: list[str], env: dict[str, str], cwd: Path) -> PynodeCommand:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pynode",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        return cls(proc)

    async def ready(self) -> str:
        """The ``pynode NAME ready ...`` line (fails if the node exits or takes too long)."""
        stdout = self.proc.stdout
        assert stdout is not None
        async with asyncio.timeout(READY_WITHIN):
            while line := (await stdout.readline()).decode():
                self.stdout.append(line)
                if " ready " in line:
                    return line.strip()
        await self.wait(5)
        raise AssertionError(f"pynode exited ({self.proc.returncode}) before ready:\n{self.output()}")

    async def wait(self, within: float) -> int:
        code = await asyncio.wait_for(self.proc.wait(), within)
        await asyncio.wait_for(self._stderr_reader, 5)
        return code

    def signal(self, signum: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def output(self) -> str:
        return "".join(self.stdout) + self.stderr.decode(errors="replace")

    async def _read_stderr(self) -> None:
        stderr = self.proc.stderr
        assert stderr is not None
        while chunk := await stderr.read(65536):
            self.stderr += chunk


Launcher = Callable[..., Awaitable[PynodeCommand]]


@pytest.fixture
async def pynode_command(tmp_path: Path, epmd_port: int) -> AsyncIterator[Launcher]:
    """Start ``python -m pynode ARGS``; every child is SIGKILLed by pid at teardown if still running."""
    home = tmp_path / "home"
    agents = tmp_path / "agents"
    home.mkdir()
    agents.mkdir()
    children: list[PynodeCommand] = []

    async def launch(*args: str, env: dict[str, str | None] | None = None) -> PynodeCommand:
        """``env`` adds to (or, with None, removes from) the child's environment."""
        full_env: dict[str, str | None] = {**os.environ, "PYNODE_COOKIE": None}
        full_env |= {"HOME": str(home), "ERL_EPMD_PORT": str(epmd_port), **(env or {})}
        child_env = {key: value for key, value in full_env.items() if value is not None}
        child = await PynodeCommand.start([*args, "--agents", str(agents)], child_env, tmp_path)
        children.append(child)
        return child

    try:
        yield launch
    finally:
        for child in children:
            child.signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await child.wait(10)


async def test_long_name_with_epmd_port_from_the_environment(
    pynode_command: Launcher, beam: BeamFactory, epmd_port: int, cookie: str
) -> None:
    node = await pynode_command("--name", "py3@127.0.0.1", "--cookie", cookie)
    line = await node.ready()
    assert "py3@127.0.0.1" in line and f"epmd {epmd_port}" in line
    assert "py3" in epmd_names(epmd_port)
    erl = await beam("e1")
    assert await erl.eval("net_adm:ping('py3@127.0.0.1')") == "pong"
    assert await erl.eval("gen_server:call({pynode, 'py3@127.0.0.1'}, ping)") == "pong"
    assert await erl.eval("lists:member('py3@127.0.0.1', nodes(hidden))") == "true"


async def test_short_name_with_the_epmd_port_flag(pynode_command: Launcher, epmd_port: int, cookie: str) -> None:
    host = socket.gethostname().split(".")[0]
    # No $ERL_EPMD_PORT: only the flag says where EPMD is.
    node = await pynode_command(
        "--sname", "py4", "--cookie", cookie, "--epmd-port", str(epmd_port), env={"ERL_EPMD_PORT": None}
    )
    line = await node.ready()
    assert f"py4@{host}" in line
    assert "py4" in epmd_names(epmd_port)
    async with Node("probe@127.0.0.1", cookie, epmd_port=epmd_port) as probe:
        assert await probe.call(("pynode", f"py4@{host}"), Atom("ping")) == Atom("pong")


async def test_cookie_from_the_environment_and_from_home(
    pynode_command: Launcher, beam: BeamFactory, cookie: str, tmp_path: Path
) -> None:
    from_env = await pynode_command("--name", "py5@127.0.0.1", env={"PYNODE_COOKIE": cookie})
    await from_env.ready()
    (tmp_path / "home" / ".erlang.cookie").write_text(cookie + "\n")
    from_home = await pynode_command("--name", "py6@127.0.0.1")
    await from_home.ready()
    erl = await beam("e1")
    assert await erl.eval("net_adm:ping('py5@127.0.0.1')") == "pong"
    assert await erl.eval("net_adm:ping('py6@127.0.0.1')") == "pong"


async def test_no_cookie_at_all_is_a_clear_error(pynode_command: Launcher) -> None:
    node = await pynode_command("--name", "py7@127.0.0.1")
    assert await node.wait(30) != 0
    assert "cookie" in node.output()


async def test_no_epmd_is_a_clear_error(pynode_command: Launcher, cookie: str) -> None:
    node = await pynode_command("--name", "py8@127.0.0.1", "--cookie", cookie, env={"ERL_EPMD_PORT": str(free_port())})
    assert await node.wait(30) != 0
    assert "EPMD" in node.output() or "epmd" in node.output()
    assert " ready " not in node.output()


async def test_sigterm_stops_cleanly_and_the_beam_sees_noconnection(
    pynode_command: Launcher, beam: BeamFactory, epmd_port: int, cookie: str
) -> None:
    node = await pynode_command("--name", "py9@127.0.0.1", "--cookie", cookie)
    await node.ready()
    erl = await beam("e1")
    assert await erl.eval("net_adm:ping('py9@127.0.0.1')") == "pong"
    watching = asyncio.create_task(erl.eval(_WATCH.format(node="py9@127.0.0.1"), timeout=30))
    await eventually(lambda: evals_to(erl.eval(_WATCH_READY), "true"), what="the BEAM's monitor")
    node.signal(signal.SIGTERM)
    assert await node.wait(20) == 0, node.output()
    assert await watching == "noconnection"
    assert "py9" not in epmd_names(epmd_port)


async def test_python_node_killed_the_beam_sees_noconnection_at_once(
    pynode_command: Launcher, beam: BeamFactory, cookie: str
) -> None:
    node = await pynode_command("--name", "py2@127.0.0.1", "--cookie", cookie)
    await node.ready()
    erl = await beam("e1")
    assert await erl.eval("net_adm:ping('py2@127.0.0.1')") == "pong"
    watching = asyncio.create_task(erl.eval(_WATCH.format(node="py2@127.0.0.1"), timeout=30))
    # pynode_io is the node's io server: a process that never answers a gen_server call.
    calling = asyncio.create_task(
        erl.eval(
            "register(py_caller, self()), "
            "{'EXIT', {Reason, _}} = (catch gen_server:call({pynode_io, 'py2@127.0.0.1'}, hang, 30000)), Reason",
            timeout=30,
        )
    )
    await eventually(lambda: evals_to(erl.eval(_WATCH_READY), "true"), what="the BEAM's monitor")
    in_call = "case whereis(py_caller) of undefined -> no; P -> process_info(P, current_function) end"
    await eventually(lambda: evals_to(erl.eval(in_call), "{current_function,{gen,do_call,4}}"), what="in call")

    node.signal(signal.SIGKILL)
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    # gen_server:call turns the monitor's noconnection into {nodedown, Node}, as for any node.
    assert await asyncio.wait_for(calling, 2) == "{nodedown,'py2@127.0.0.1'}"
    assert loop.time() - killed_at < 2
    assert await watching == "noconnection"


# A BEAM process that monitors {pynode, Node} and reports the DOWN reason.
_WATCH = (
    "register(py_watch, self()), Ref = monitor(process, {{pynode, '{node}'}}), put(watching, true), "
    "receive {{'DOWN', Ref, process, _, Reason}} -> Reason after 25000 -> timeout end"
)
_WATCH_READY = (
    "case whereis(py_watch) of undefined -> false; P -> "
    "{dictionary, D} = process_info(P, dictionary), proplists:get_value(watching, D, false) end"
)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_both_event_loops_serve_calls_and_stop_cleanly(
    pynode_command: Launcher, beam: BeamFactory, cookie: str, loop: str
) -> None:
    node = await pynode_command("--name", "pyloop@127.0.0.1", "--cookie", cookie, "--loop", loop)
    await node.ready()
    erl = await beam("e1")
    assert await erl.eval("gen_server:call({pynode, 'pyloop@127.0.0.1'}, ping)") == "pong"
    got = await erl.eval(
        "T = {self(), make_ref(), #{1 => 1.0}, <<0:8000000>>},"
        " {ok, T} =:= gen_server:call({pynode, 'pyloop@127.0.0.1'}, {echo, T})"
    )
    assert got == "true"
    node.signal(signal.SIGTERM)
    assert await node.wait(15) == 0
