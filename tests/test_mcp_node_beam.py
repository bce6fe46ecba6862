"""A stdio MCP server never outlives its agent, also when the node itself is killed with SIGKILL.

The node runs as the ``pynode`` command (``--mcp-command`` naming the test server's Python). The
server here ignores the end of its stdin, as a careless server would: so only the node's own guard
(a parent-death signal set before the server's program starts) can end it once the node is gone.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from beam import BeamFactory, BeamNode
from hostile_peer import PynodeChild
from mcp_servers.support import PYTHON, alive, ended, stdio_toolset

from pynode.etf.types import Atom, Term
from pynode.testing.script import ScriptedModel, text, tool_call

pytestmark = pytest.mark.beam

A = Atom
OK = A("ok")
NODE = "mcp9@127.0.0.1"
STUBBORN = {"MCP_TEST_IGNORE_EOF": "1"}
ALLOWED = os.path.realpath(PYTHON)


async def server_pid(erl: BeamNode, agent: str) -> int:
    """Create ``agent`` with the stdio toolset and ask its server which process it is."""
    script = await ScriptedModel.start(erl, [tool_call("whoami", {}), text("ok")])
    spec: dict[Term, Term] = {A("model"): script.model, A("toolsets"): [stdio_toolset(env=STUBBORN)]}
    created = await erl.call(("pynode", NODE), (A("create_agent"), A(agent), spec), timeout=60)
    assert created == (OK, A(agent)), created
    ok, result = await erl.call((agent, NODE), (A("run"), "who", {A("messages_as"): A("terms")}), timeout=30)
    assert ok == OK, result
    [reply] = [
        part
        for message in result[A("messages")]  # type: ignore[index, union-attr]
        for part in message[b"parts"]
        if part[b"part_kind"] == b"tool-return"
    ]
    pid = reply[b"content"][b"pid"]
    assert isinstance(pid, int) and alive(pid)
    return pid


async def test_the_server_dies_with_a_node_killed_with_sigkill(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path
) -> None:
    async with PynodeChild.running(NODE, cookie, epmd_port, tmp_path, "--mcp-command", PYTHON) as py:
        erl = await beam("e1")
        pid = await server_pid(erl, "stubborn")
        os.kill(py.proc.pid, signal.SIGKILL)  # the node this test started
        took = await ended(pid, within=5)  # the server would sleep 60 s without the guard
        assert took < 5


async def test_the_server_ends_when_the_node_stops_and_a_command_not_named_is_refused(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path
) -> None:
    async with PynodeChild.running(NODE, cookie, epmd_port, tmp_path, "--mcp-command", PYTHON) as py:
        erl = await beam("e1")
        pid = await server_pid(erl, "stubborn")
        other = {A("model"): b"test", A("toolsets"): [{A("mcp"): {A("command"): b"/bin/sh", A("args"): [b"-c", b":"]}}]}
        got = await erl.call(("pynode", NODE), (A("create_agent"), A("shell"), other), timeout=30)
        assert type(got) is tuple and got[0] == A("error") and got[1][0] == A("bad_spec"), got  # type: ignore[index]
        assert b"--mcp-command" in got[1][1]  # type: ignore[index]
        py.proc.send_signal(signal.SIGTERM)  # drains, then stops: the agent closes its session
        assert await py.proc.wait() == 0
        await ended(pid, within=10)
    assert py.lines(f"MCP toolsets may start: {ALLOWED}")
