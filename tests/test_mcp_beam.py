"""MCP toolsets on agents (docs/protocol.md section 3, ``toolsets``), against real MCP servers.

The tests start the servers of ``tests/mcp_servers``: one over stdio (``add``, ``whoami``), which
the node starts as its own child, and one over streamable HTTP on 127.0.0.1 (``echo``, ``wait``).
An erl node creates the agents and makes the runs; a scripted model makes the tool calls.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from agent_support import eventually, registry_of
from beam import BeamNode
from mcp_servers.support import PYTHON, HttpServer, alive, ended, http_server, http_toolset, stdio_toolset

from pynode.bridge.mcp import resolve_commands
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.node import Node
from pynode.testing.script import ScriptedModel, text, tool_call

pytestmark = pytest.mark.beam

A = Atom
OK = A("ok")
REGISTRY = ("pynode", "py@127.0.0.1")


@pytest.fixture(scope="module")
def words() -> Iterator[HttpServer]:
    """The streamable-HTTP server, shared by the module's tests."""
    with http_server() as server:
        yield server


@pytest.fixture
def node(py_node: Node) -> Node:
    """The node, allowed to start the stdio test server's program (as ``--mcp-command`` does)."""
    registry_of(py_node).limits.mcp_commands = resolve_commands([PYTHON])
    return py_node


async def create(erl: BeamNode, name: str, spec: dict[Term, Term], opts: dict[Term, Term] | None = None) -> Term:
    request: tuple[Term, ...] = (A("create_agent"), A(name), spec)
    if opts is not None:
        request = (*request, opts)
    return await erl.call(REGISTRY, request, timeout=60)


async def start(erl: BeamNode, agent: str, opts: dict[Term, Term] | None = None) -> Reference:
    started = await erl.call((agent, "py@127.0.0.1"), (A("start_run"), "go", opts or {}))
    assert type(started) is tuple and started[0] == OK, started
    assert isinstance(started[1], Reference)
    return started[1]


async def until_result(erl: BeamNode, ref: Reference) -> tuple[Term, list[Term]]:
    """The run's result and every event it sent before it, in order."""
    events: list[Term] = []
    while True:
        message = await erl.receive(timeout=30, match=lambda m: type(m) is tuple and len(m) == 3 and m[1] == ref)
        assert type(message) is tuple
        if message[0] == A("pynode_result"):
            return message[2], events
        events.append(message[2])


async def next_event(erl: BeamNode, ref: Reference, tag: str, name: bytes) -> tuple[Term, ...]:
    """The run's first event ``{Tag, Name, ...}`` still in the mailbox (the others stay)."""
    message = await erl.receive(
        timeout=30,
        match=lambda m: (
            type(m) is tuple and m[0] == A("pynode_event") and m[1] == ref and m[2][0] == A(tag) and m[2][1] == name
        ),
    )
    assert type(message) is tuple and type(message[2]) is tuple
    return message[2]


def tool_events(events: list[Term]) -> list[tuple[Term, ...]]:
    """``(kind, name, content)`` of each tool event, call ids left out."""
    shown = []
    for event in events:
        if type(event) is tuple and event[0] in (A("tool_call"), A("tool_result"), A("tool_error")):
            shown.append((event[0], event[1], event[2]))
    return shown


async def test_tools_of_both_servers_run_as_any_tool_with_prefixes_and_approval(
    node: Node, erl: BeamNode, words: HttpServer
) -> None:
    script = await ScriptedModel.start(
        erl,
        [
            [tool_call("arith_add", {"a": 2, "b": 3}, "c1"), tool_call("arith_whoami", {}, "c2")],
            tool_call("words_echo", {"text": "hi"}, "c3"),
            text("done"),
        ],
    )
    spec = {
        A("model"): script.model,
        A("toolsets"): [
            stdio_toolset("arith", env={"MCP_TEST_GREETING": "hello from the spec"}),
            http_toolset(words.url, "words", approval=True),
        ],
    }
    assert await create(erl, "mcp_both", spec) == (OK, A("mcp_both"))
    ok, info = await erl.call(("mcp_both", "py@127.0.0.1"), A("info"))
    assert ok == OK and info[A("tools")] == [b"arith_add", b"arith_whoami", b"words_echo", b"words_wait"]  # type: ignore[index]

    ref = await start(erl, "mcp_both")
    approval = await erl.receive(timeout=30, match=lambda m: type(m) is tuple and m[0] == A("pynode_approval"))
    assert type(approval) is tuple and approval[1] == ref
    request = approval[2]
    assert isinstance(request, dict) and request[A("name")] == b"words_echo" and request[A("args")] == {b"text": b"hi"}
    await erl.send(request[A("reply_to")], (A("approval"), request[A("call_id")], A("approve")))
    result, events = await until_result(erl, ref)
    assert type(result) is tuple and result[0] == OK, result
    assert result[1][A("output")] == b"done"  # type: ignore[index]
    shown = tool_events(events)
    assert shown[:2] == [
        (A("tool_call"), b"arith_add", {b"a": 2, b"b": 3}),
        (A("tool_call"), b"arith_whoami", {}),
    ]
    assert (A("tool_result"), b"arith_add", 5) in shown
    who = next(content for kind, name, content in shown if kind == A("tool_result") and name == b"arith_whoami")
    assert isinstance(who, dict) and who[b"greeting"] == b"hello from the spec"
    pid = who[b"pid"]
    assert isinstance(pid, int) and alive(pid)
    assert (A("tool_result"), b"words_echo", b"echo: hi") in shown
    assert (A("approval_required"), b"words_echo", {b"text": b"hi"}, request[A("call_id")]) in events
    first = (await script.requests())[0]
    offered = {tool[A("name")]: tool for tool in first.info[A("tools")]}  # type: ignore[index, union-attr]
    assert set(offered) == {b"arith_add", b"arith_whoami", b"words_echo", b"words_wait"}
    assert offered[b"arith_add"][A("description")] == b"Add two integers."

    # A synchronous run defers the call to approve, and a later run resumes it.
    await script.add(tool_call("words_echo", {"text": "later"}, "c4"), text("resumed"))
    ok, paused = await erl.call(("mcp_both", "py@127.0.0.1"), (A("run"), "again", {}), timeout=30)
    assert ok == OK and paused[A("output")] == A("nil"), paused  # type: ignore[index]
    [deferred] = paused[A("deferred")]  # type: ignore[index]
    assert deferred[A("name")] == b"words_echo" and deferred[A("call_id")] == b"c4"
    resume = {A("message_history"): paused[A("messages")], A("approvals"): {b"c4": A("approve")}}  # type: ignore[index]
    ok, resumed = await erl.call(("mcp_both", "py@127.0.0.1"), (A("run"), "", resume), timeout=30)
    assert ok == OK and resumed[A("output")] == b"resumed", resumed  # type: ignore[index]

    # Deleting the agent closes its sessions: the stdio server's process ends.
    assert await erl.call(REGISTRY, (A("delete_agent"), A("mcp_both")), timeout=30) == OK
    await ended(pid, within=10)


async def test_a_server_that_cannot_be_reached_or_a_command_not_allowed_is_a_bad_spec(
    py_node: Node, erl: BeamNode, words: HttpServer
) -> None:
    model = b"test"
    unreachable = {A("model"): model, A("toolsets"): [http_toolset("http://127.0.0.1:9/mcp")]}
    got = await create(erl, "mcp_gone", unreachable)
    assert type(got) is tuple and got[0] == A("error"), got
    kind, message = got[1]  # type: ignore[misc]
    assert kind == A("bad_spec")
    assert b"toolsets[0] (MCP server http://127.0.0.1:9/mcp) could not be reached" in message
    assert b"connect" in message  # the client's own words: it could not connect
    ok, agents = await erl.call(REGISTRY, A("list_agents"))
    assert ok == OK and all(a[A("name")] != A("mcp_gone") for a in agents)  # type: ignore[index, union-attr]

    # A node started without --mcp-command runs no program a spec names.
    refused = {A("model"): model, A("toolsets"): [stdio_toolset()]}
    got = await create(erl, "mcp_refused", refused, {A("if_exists"): A("replace")})
    assert type(got) is tuple and got[0] == A("error"), got
    kind, message = got[1]  # type: ignore[misc]
    assert kind == A("bad_spec") and b"--mcp-command" in message, message

    # The HTTP one alone is fine, and a second server's tool of the same name needs a prefix.
    assert await create(erl, "mcp_words", {A("model"): model, A("toolsets"): [http_toolset(words.url)]}) == (
        OK,
        A("mcp_words"),
    )
    twice = {A("model"): model, A("toolsets"): [http_toolset(words.url), http_toolset(words.url)]}
    got = await create(erl, "mcp_twice", twice)
    assert type(got) is tuple and got[0] == A("error") and b"give the toolset a prefix" in got[1][1], got  # type: ignore[index]


async def test_a_server_that_dies_fails_its_calls_and_the_agent_goes_on(node: Node, erl: BeamNode) -> None:
    script = await ScriptedModel.start(
        erl,
        [
            tool_call("arith_whoami", {}, "c1"),
            tool_call("words_wait", {"seconds": 20}, "c2"),
            tool_call("arith_add", {"a": 1, "b": 1}, "c3"),
            text("still here"),
        ],
    )
    with http_server() as server:
        spec = {
            A("model"): script.model,
            A("toolsets"): [stdio_toolset("arith"), http_toolset(server.url, "words")],
        }
        assert await create(erl, "mcp_dies", spec) == (OK, A("mcp_dies"))
        ref = await start(erl, "mcp_dies")
        _, _, who, _ = await next_event(erl, ref, "tool_result", b"arith_whoami")
        assert isinstance(who, dict)
        pid = who[b"pid"]
        assert isinstance(pid, int)
        await next_event(erl, ref, "tool_call", b"words_wait")
        server.kill()  # the HTTP server dies while the call is in flight
        _, _, message, _ = await next_event(erl, ref, "tool_error", b"words_wait")
        assert isinstance(message, bytes) and b"failed" in message, message
        result, events = await until_result(erl, ref)
    assert type(result) is tuple and result[0] == OK and result[1][A("output")] == b"still here", result  # type: ignore[index]
    assert (A("tool_result"), b"arith_add", 2) in tool_events(events)

    # The stdio server dies between runs: its next call fails, the model is told, the agent serves on.
    os.kill(pid, signal.SIGKILL)  # the test's own grandchild, started for this agent
    await ended(pid)
    await script.add(tool_call("arith_add", {"a": 1, "b": 2}, "c4"), text("told"))
    result, events = await until_result(erl, await start(erl, "mcp_dies"))
    assert type(result) is tuple and result[0] == OK and result[1][A("output")] == b"told", result  # type: ignore[index]
    [failed] = [e for e in tool_events(events) if e[0] == A("tool_error")]
    assert failed[1] == b"arith_add" and isinstance(failed[2], bytes) and b"failed" in failed[2], failed
    ok, _ = await erl.call(("mcp_dies", "py@127.0.0.1"), A("info"))
    assert ok == OK

    # Killed, the agent comes back and opens its sessions again: the HTTP server is gone, so its
    # runs fail, naming it, until the agent is created again.
    agent = node.whereis("mcp_dies")
    assert isinstance(agent, Pid)
    node.exit(agent, A("kill"))
    await eventually(lambda: node.whereis("mcp_dies") not in (None, agent), what="the agent restarted")
    got = await erl.call(("mcp_dies", "py@127.0.0.1"), (A("run"), "go", {}), timeout=30)
    assert type(got) is tuple and got[0] == A("error"), got
    kind, message = got[1]  # type: ignore[misc]
    assert kind == A("tool_error") and b"toolsets[1] (MCP server http://127.0.0.1:" in message, message
    assert b"is not connected" in message


async def test_replacing_or_killing_the_agent_ends_its_server_and_starts_a_new_one(node: Node, erl: BeamNode) -> None:
    script = await ScriptedModel.start(erl)

    async def server_pid() -> int:
        await script.add(tool_call("whoami", {}), text("ok"))
        ok, result = await erl.call(("mcp_swap", "py@127.0.0.1"), (A("run"), "who", {A("messages_as"): A("terms")}))
        assert ok == OK, result
        [reply] = [
            p
            for m in result[A("messages")]
            for p in m[b"parts"]
            if p[b"part_kind"] == b"tool-return"  # type: ignore[index, union-attr]
        ]
        pid = reply[b"content"][b"pid"]
        assert isinstance(pid, int) and alive(pid)
        return pid

    spec = {A("model"): script.model, A("toolsets"): [stdio_toolset()]}
    assert await create(erl, "mcp_swap", spec) == (OK, A("mcp_swap"))
    first = await server_pid()
    assert await create(erl, "mcp_swap", spec, {A("if_exists"): A("replace")}) == (OK, A("mcp_swap"))
    await ended(first)
    second = await server_pid()
    assert second != first

    # Killed, the agent is restarted by the node's supervisor, with a session of its own.
    agent = node.whereis("mcp_swap")
    assert isinstance(agent, Pid)
    node.exit(agent, A("kill"))
    await ended(second)
    await eventually(lambda: node.whereis("mcp_swap") not in (None, agent), what="the agent restarted")
    third = await server_pid()
    assert third not in (first, second)
