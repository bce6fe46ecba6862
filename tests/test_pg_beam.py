"""The node as a member of OTP's ``pg`` (docs/protocol.md section 9), against real OTP 25 and 28 nodes.

A BEAM node's ``pg:get_members(pynode_agents, Name)`` lists the agent processes named ``Name``
on the connected pynode nodes; ``pynode`` lists their registries. The scope on the BEAM node is
OTP's own ``pg``: what it accepts is what ``pg.erl`` accepts.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from agent_support import create
from beam import BeamFactory, BeamNode
from hostile_peer import PynodeChild

from pynode.etf.decode import decode
from pynode.etf.types import Atom, Pid
from pynode.node import Node

pytestmark = pytest.mark.beam

PY = "'py@127.0.0.1'"
WAIT = (
    "Wait = fun W(F, N) -> case F() of true -> ok;"
    " _ when N > 0 -> timer:sleep(10), W(F, N - 1); _ -> {timeout, F()} end end,"
)
"""``Wait(F, N)``: ``ok`` once ``F()`` is true, polled every 10 ms at most ``N`` times."""


def members(group: str) -> str:
    return f"pg:get_members(pynode_agents, {group})"


async def wait_until(erl: BeamNode, condition: str, within_ms: int = 1000) -> None:
    """``condition`` (an Erlang expression) holds on ``erl`` within ``within_ms``."""
    got = await erl.eval(WAIT + f" Wait(fun() -> {condition} end, {within_ms // 10})")
    assert got == "ok", f"{condition} did not hold within {within_ms} ms: {got}"


@pytest.fixture(params=["25", "28"], ids=["otp25", "otp28"])
def otp(request: pytest.FixtureRequest) -> str:
    release: str = request.param
    return release


async def test_agents_are_pg_members_that_follow_create_delete_replace_and_crash(
    py_node: Node, beam: BeamFactory, otp: str
) -> None:
    erl = await beam("e1")
    assert (await erl.eval("erlang:system_info(otp_release)")).strip('"') == otp
    # The scope starts after the connection: the node keeps discovering until it answers.
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    assert (await erl.eval("{ok, P} = pg:start(pynode_agents), is_pid(P)")) == "true"
    await wait_until(erl, f"[node(P) || P <- {members('pynode')}] =:= [{PY}]")
    await create(erl, "shop", '#{model => <<"test">>}')
    await wait_until(erl, f"length({members('shop')}) =:= 1")
    # The member is the agent itself: a call to the pid is a call to the agent.
    info = await erl.eval(f"[P] = {members('shop')}, {{ok, #{{name := N}}}} = gen_server:call(P, info), {{node(P), N}}")
    assert info == f"{{{PY},shop}}"


async def test_pg_monitor_subscribers_see_joins_and_leaves(py_node: Node, beam: BeamFactory, otp: str) -> None:
    erl = await beam("e1")
    assert (await erl.eval("{ok, P} = pg:start(pynode_agents), is_pid(P)")) == "true"
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    await wait_until(erl, f"length({members('pynode')}) =:= 1")
    got = decode(
        await erl.eval_term(
            "{Ref, []} = pg:monitor(pynode_agents, shop),"
            f' {{ok, shop}} = gen_server:call({{pynode, {PY}}}, {{create_agent, shop, #{{model => <<"test">>}}}}),'
            " Join = receive {Ref, join, shop, [J]} -> J after 2000 -> none end,"
            f' {{ok, shop}} = gen_server:call({{pynode, {PY}}}, {{create_agent, shop, #{{model => <<"test">>}},'
            " #{if_exists => replace}}),"
            " Replaced = receive {Ref, leave, shop, [L1]} -> L1 after 2000 -> none end,"
            " Rejoined = receive {Ref, join, shop, [J2]} -> J2 after 2000 -> none end,"
            " exit(Rejoined, kill),"
            " Killed = receive {Ref, leave, shop, [L2]} -> L2 after 2000 -> none end,"
            " Restarted = receive {Ref, join, shop, [J3]} -> J3 after 2000 -> none end,"
            f" ok = gen_server:call({{pynode, {PY}}}, {{delete_agent, shop}}),"
            " Deleted = receive {Ref, leave, shop, [L3]} -> L3 after 2000 -> none end,"
            " {Join, Replaced, Rejoined, Killed, Restarted, Deleted, pg:get_members(pynode_agents, shop)}"
        )
    )
    assert isinstance(got, tuple)
    join, replaced, rejoined, killed, restarted, deleted, left = got
    assert all(isinstance(p, Pid) and p.node == Atom("py@127.0.0.1") for p in got[:6]), got
    assert replaced == join and killed == rejoined and deleted == restarted
    assert len({join, rejoined, restarted}) == 3  # a new process each time
    assert left == []


async def test_a_restarted_scope_finds_the_members_again(py_node: Node, beam: BeamFactory, otp: str) -> None:
    erl = await beam("e1")
    assert (await erl.eval("{ok, P} = pg:start(pynode_agents), is_pid(P)")) == "true"
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    await create(erl, "shop", '#{model => <<"test">>}')
    await wait_until(erl, f"length({members('shop')}) =:= 1")
    got = await erl.eval(
        "Old = whereis(pynode_agents), Mref = monitor(process, Old), exit(Old, kill),"
        " receive {'DOWN', Mref, _, _, _} -> ok end, {ok, New} = pg:start(pynode_agents), New =/= Old"
    )
    assert got == "true"
    await wait_until(erl, f"length({members('shop')}) =:= 1 andalso length({members('pynode')}) =:= 1")


async def test_members_are_gone_when_the_node_is_killed(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path, otp: str
) -> None:
    async with PynodeChild.running("py7@127.0.0.1", cookie, epmd_port, tmp_path) as py7:
        erl = await beam("e1")
        assert (await erl.eval("{ok, P} = pg:start(pynode_agents), is_pid(P)")) == "true"
        await create(erl, "shop", '#{model => <<"test">>}', node="'py7@127.0.0.1'")
        await wait_until(erl, f"length({members('shop')}) =:= 1")
        os.kill(py7.proc.pid, signal.SIGKILL)
        await wait_until(erl, f"{members('shop')} =:= [] andalso {members('pynode')} =:= []")


async def test_no_pg_joins_no_scope(beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path) -> None:
    async with PynodeChild.running("py8@127.0.0.1", cookie, epmd_port, tmp_path, "--no-pg"):
        erl = await beam("e1")
        assert (await erl.eval("{ok, P} = pg:start(pynode_agents), is_pid(P)")) == "true"
        await create(erl, "shop", '#{model => <<"test">>}', node="'py8@127.0.0.1'")
        got = await erl.eval("timer:sleep(600), {" + members("shop") + ", " + members("pynode") + "}")
        assert got == "{[],[]}"
