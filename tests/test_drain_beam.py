"""Drain (docs/protocol.md section 9): a node leaves its groups, refuses new runs, lets the runs in
flight end, then stops; the first SIGTERM or the registry's ``drain`` request starts it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from agent_support import ASK_HUMAN_SPEC, create
from beam import BeamFactory, BeamNode
from hostile_peer import PynodeChild

from pynode.etf.types import Atom, Reference, Term

pytestmark = pytest.mark.beam

A = Atom
PY = "py6@127.0.0.1"
AGENT = ("asker", PY)
REGISTRY = ("pynode", PY)


async def run_waiting_on_its_tool(erl: BeamNode) -> tuple[Reference, Term]:
    """A ``start_run`` from the erl test process whose tool call waits for the test's answer."""
    started = await erl.call(AGENT, (A("start_run"), "ask", {}))
    assert isinstance(started, tuple) and started[0] == A("ok"), started
    ref = started[1]
    assert isinstance(ref, Reference)
    call = await erl.receive(10, lambda m: isinstance(m, tuple) and m[0] == A("pynode_tool_call"))
    assert isinstance(call, tuple) and isinstance(call[2], dict)
    return ref, call[2]


async def result_of(erl: BeamNode, ref: Reference) -> Term:
    message = await erl.receive(15, lambda m: isinstance(m, tuple) and m[0] == A("pynode_result") and m[1] == ref)
    assert isinstance(message, tuple)
    return message[2]


async def drained_state(erl: BeamNode) -> tuple[Term, Term, Term]:
    """What a caller sees of a draining node: its groups, a new run, its info."""
    groups = await erl.eval(
        "Wait = fun W(0) -> timeout; W(N) -> case {pg:get_members(pynode_agents, asker),"
        " pg:get_members(pynode_agents, pynode)} of {[], []} -> ok; _ -> timer:sleep(10), W(N - 1) end end,"
        " Wait(100)"
    )
    refused = await erl.call(AGENT, (A("start_run"), "again", {}))
    info = await erl.call(REGISTRY, A("info"))
    assert isinstance(info, tuple) and isinstance(info[1], dict)
    return groups, refused, info[1][A("draining")]


async def ready_cluster(beam: BeamFactory) -> BeamNode:
    erl = await beam("e1")
    assert await erl.eval("{ok, P} = pg:start(pynode_agents), is_pid(P)") == "true"
    await create(erl, "asker", ASK_HUMAN_SPEC, node=f"'{PY}'")
    got = await erl.eval(
        "Wait = fun W(0) -> timeout; W(N) -> case pg:get_members(pynode_agents, asker) of"
        " [_] -> ok; _ -> timer:sleep(10), W(N - 1) end end, Wait(100)"
    )
    assert got == "ok"
    return erl


async def test_sigterm_drains_then_the_node_stops_when_its_runs_have_ended(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path
) -> None:
    async with PynodeChild.running(PY, cookie, epmd_port, tmp_path) as py:
        erl = await ready_cluster(beam)
        ref, call = await run_waiting_on_its_tool(erl)
        py.proc.send_signal(signal.SIGTERM)
        groups, refused, draining = await drained_state(erl)
        assert groups == "ok"  # left every group within 1 s
        assert isinstance(refused, tuple) and refused[0] == A("error") and refused[1][0] == A("draining"), refused
        assert draining is True
        # The run in flight goes on to its end; then the node stops by itself.
        await erl.send(call[A("reply_to")], (A("tool_result"), call[A("call_id")], (A("ok"), "yes")))
        result = await result_of(erl, ref)
        assert isinstance(result, tuple) and result[0] == A("ok"), result
        assert await asyncio.wait_for(py.proc.wait(), 10) == 0


async def test_a_drain_request_cancels_what_is_left_after_the_drain_timeout(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path
) -> None:
    async with PynodeChild.running(PY, cookie, epmd_port, tmp_path, "--drain-timeout", "1") as py:
        erl = await ready_cluster(beam)
        ref, _call = await run_waiting_on_its_tool(erl)
        assert await erl.call(REGISTRY, A("drain")) == A("ok")
        assert await erl.call(REGISTRY, A("drain")) == A("ok")  # again: nothing more happens
        groups, refused, draining = await drained_state(erl)
        assert (groups, draining) == ("ok", True)
        assert isinstance(refused, tuple) and refused[1][0] == A("draining"), refused
        # Nobody answers the tool: after the drain timeout the run is cancelled and the node stops.
        result = await result_of(erl, ref)
        assert result == (A("error"), (A("cancelled"), b"the node is shutting down")), result
        assert await asyncio.wait_for(py.proc.wait(), 10) == 0
        assert py.lines("draining: 1 runs still in flight are cancelled")
