"""The node's own processes killed from real erl/elixir nodes come back (docs/protocol.md section 1).

Pids come from ``gen_server:call({pynode_sup, Node}, which_children)``, as a BEAM program would
find them; kills are ``exit(Pid, kill)`` / ``Process.exit(pid, :kill)``. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_support import ASK_HUMAN_SPEC, PY, REG, eventually, registry_of, term
from beam import BeamFactory, BeamNode
from pydantic_ai import Agent
from test_node_process_beam import Launcher, pynode_command  # noqa: F401 (a fixture)

from pynode.bridge.registry import current_registry, start_registry
from pynode.bridge.runner import AgentDefinition
from pynode.errors import CallExit
from pynode.etf.encode import encode
from pynode.etf.types import Atom, Pid, Term
from pynode.node import Node
from pynode.runtime.process import KILL as KILL_SIGNAL
from pynode.runtime.services import node_supervisor
from pynode.runtime.supervisor import RestartIntensity
from pynode.testing import on_otp
from pynode.testing.local import running_pynode

pytestmark = pytest.mark.beam


SUP = f"{{pynode_sup, {PY}}}"

CHILD_PID = (
    "ChildPid = fun(Name) -> case lists:keyfind(Name, 1, gen_server:call(" + SUP + ", which_children)) of"
    " {Name, P, worker, _} -> P; false -> none end end,"
)
"""Erlang: ``ChildPid(Name)``, the pid of a child of pynode_sup (or ``restarting``/``none``)."""

KILL = CHILD_PID + (
    "Kill = fun(Name) -> P = ChildPid(Name), M = monitor(process, P), exit(P, kill),"
    " receive {'DOWN', M, process, P, R} -> {P, R} after 5000 -> {P, no_down} end end,"
)
"""Erlang: ``Kill(Name)`` kills that child of pynode_sup; ``{Pid, DownReason}``."""

WAIT_BACK = (
    "WaitBack = fun W(_, _, 0) -> gave_up;"
    " W(Name, Old, N) -> case catch ChildPid(Name) of"
    "   P when is_pid(P), P =/= Old -> P;"
    "   _ -> timer:sleep(20), W(Name, Old, N - 1) end end,"
)
"""Erlang: ``WaitBack(Name, OldPid, Tries)``: poll (20 ms apart) until Name has a new pid."""


def term_expr(term: Term) -> str:
    """Erlang source for ``term`` (a pid): decoded on the BEAM from its external format."""
    return f'binary_to_term(base64:decode(<<"{base64.b64encode(encode(term)).decode()}">>))'


async def back_under_name(node: Node, name: str, old: Pid | None) -> Pid:
    """Wait (bounded) until ``name`` is registered again, to a pid other than ``old``."""
    await eventually(lambda: node.whereis(name) not in (None, old), what=f"{name} back under its name")
    pid = node.whereis(name)
    assert pid is not None
    return pid


def is_cancelled(reply: Term) -> bool:
    return type(reply) is tuple and reply[0] == Atom("error") and reply[1][0] == Atom("cancelled")


# -- the registry ---------------------------------------------------------------------------


@on_otp("25", "28")
async def test_registry_killed_comes_back_with_its_agents_and_runs(erl: BeamNode, py_node: Node) -> None:
    created = await erl.eval(f"gen_server:call({REG}, {{create_agent, asker, {ASK_HUMAN_SPEC}}})")
    assert created == "{ok,asker}"
    old = py_node.whereis("pynode")
    got = await term(
        erl,
        KILL + WAIT_BACK + "A = {asker, " + PY + "},"
        ' {ok, Ref} = gen_server:call(A, {start_run, <<"x">>, #{}}),'
        " #{call_id := Id} = receive {pynode_tool_call, Ref, C} -> C after 10000 -> exit(no_call) end,"
        " {Old, Down} = Kill(pynode),"
        " New = WaitBack(pynode, Old, 500),"
        f" Pong = gen_server:call({REG}, ping),"
        f" {{ok, Info}} = gen_server:call({REG}, info),"
        f" {{ok, Listed}} = gen_server:call({REG}, list_agents),"
        # The run in flight went on: it still answers, and the counter follows it.
        ' ok = gen_server:call(A, {tool_result, Id, {ok, <<"yes">>}}),'
        " Result = receive {pynode_result, Ref, R} -> element(1, R) after 10000 -> timeout end,"
        f" {{ok, After}} = gen_server:call({REG}, info),"
        f' Created = gen_server:call({REG}, {{create_agent, second, #{{model => <<"test">>}}}}),'
        f" {{ok, Listed2}} = gen_server:call({REG}, list_agents),"
        " {Old, Down, is_pid(New) andalso New =/= Old, Pong, maps:with([agents, runs], Info),"
        "  [maps:get(name, L) || L <- Listed], Result, maps:with([agents, runs], After), Created,"
        "  lists:sort([maps:get(name, L) || L <- Listed2])}",
        timeout=30,
    )
    assert isinstance(got, tuple)
    killed_pid, down, new_pid, pong, info, listed, result, after, created, listed2 = got
    assert killed_pid == old and down == Atom("killed") and new_pid is True
    assert pong == Atom("pong")
    assert info == {Atom("agents"): 1, Atom("runs"): 1}
    assert listed == [Atom("asker")]
    assert result == Atom("ok")
    assert after == {Atom("agents"): 1, Atom("runs"): 0}
    assert created == (Atom("ok"), Atom("second"))
    assert listed2 == [Atom("asker"), Atom("second")]
    registry = current_registry(py_node)
    assert registry is not None and registry.pid == py_node.whereis("pynode") != old


async def test_an_owned_agent_still_goes_with_its_owner_after_the_registry_restarted(
    erl: BeamNode, py_node: Node
) -> None:
    got = await term(
        erl,
        KILL + WAIT_BACK + "Owner = spawn(fun() -> receive stop -> ok end end),"
        f" {{ok, owned}} = gen_server:call({REG},"
        ' {create_agent, owned, #{model => <<"test">>}, #{owner => Owner}}),'
        " {Old, killed} = Kill(pynode), New = WaitBack(pynode, Old, 500),"
        " exit(Owner, kill),"
        " Gone = fun G(0) -> still_there; G(N) ->"
        f"   {{ok, L}} = gen_server:call({REG}, list_agents),"
        "   case [A || A = #{name := owned} <- L] of [] -> gone; _ -> timer:sleep(20), G(N - 1) end end,"
        " {is_pid(New), Gone(500)}",
        timeout=30,
    )
    assert got == (True, Atom("gone"))
    assert py_node.whereis("owned") is None
    assert not registry_of(py_node).limits.owners


# -- net_kernel and the io server -----------------------------------------------------------


@on_otp("25", "28")
async def test_net_kernel_killed_ping_still_pongs_old_and_new_connections(
    erl: BeamNode, py_node: Node, beam: BeamFactory
) -> None:
    connection = py_node.connections["e1@127.0.0.1"]
    old = py_node.whereis("net_kernel")
    got = await term(erl, KILL + "Kill(net_kernel)", timeout=30)
    assert got == (old, Atom("killed"))
    await back_under_name(py_node, "net_kernel", old)
    # net_adm:ping disconnects on pang: pong on the same connection shows it never failed.
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    assert py_node.connections["e1@127.0.0.1"] is connection
    e2 = await beam("e2")
    assert await e2.eval(f"net_adm:ping({PY})") == "pong"
    assert "e2@127.0.0.1" in py_node.connections


ELIXIR_PRINTING_TOOL = """
defmodule Loud do
  def shout(%{"word" => word}) do
    IO.puts("shouting #{word}")
    {:ok, String.upcase(word)}
  end
end
"""

LOUD_SPEC = """%{model: "test", tools: [%{name: "shout", description: "Shout a word",
  parameters: %{"type" => "object", "properties" => %{"word" => %{"type" => "string"}},
                "required" => ["word"]},
  handler: {Loud, :shout}}]}"""


async def test_io_server_killed_a_printing_elixir_tool_still_works(
    py_node: Node, beam: BeamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(ELIXIR_PRINTING_TOOL)
    created = await ex.eval(f'GenServer.call({{:pynode, :"py@127.0.0.1"}}, {{:create_agent, :loud, {LOUD_SPEC}}})')
    assert created == "{:ok, :loud}"
    old = py_node.whereis("pynode_io")
    killed = await ex.eval(
        'sup = {:pynode_sup, :"py@127.0.0.1"};'
        " {:pynode_io, pid, :worker, _} = List.keyfind(GenServer.call(sup, :which_children), :pynode_io, 0);"
        " ref = Process.monitor(pid); Process.exit(pid, :kill);"
        " receive do {:DOWN, ^ref, :process, ^pid, reason} -> reason after 5000 -> :no_down end"
    )
    assert killed == ":killed"
    new = await back_under_name(py_node, "pynode_io", old)
    with caplog.at_level(logging.INFO, logger="pynode.io"):
        out = await ex.eval(
            '{:ok, r} = GenServer.call({:loud, :"py@127.0.0.1"}, {:run, "Shout", %{}}, 15_000);'
            " {r.output, r.usage.tool_calls}"
        )
    assert out.endswith(", 1}") and "shout" in out
    printed = [r.getMessage() for r in caplog.records if r.name == "pynode.io"]
    assert any("shouting" in line for line in printed), printed
    assert py_node.whereis("pynode_io") == new


# -- agents ---------------------------------------------------------------------------------

ASK_HUMAN_ELIXIR = """%{model: "test", tools: [%{name: "ask_human", description: "Ask a person",
  parameters: %{"type" => "object", "properties" => %{"question" => %{"type" => "string"}},
                "required" => ["question"]}}]}"""
"""agent_support.ASK_HUMAN_SPEC in Elixir: one tool with no handler."""


@on_otp("25", "28")
async def test_agent_killed_mid_run_its_callers_get_cancelled_and_it_comes_back(erl: BeamNode, py_node: Node) -> None:
    for name in ("asker", "other"):
        created = await erl.eval(f"gen_server:call({REG}, {{create_agent, {name}, {ASK_HUMAN_SPEC}}})")
        assert created == f"{{ok,{name}}}"
    before = await erl.eval("gen_server:call({asker, " + PY + "}, info)")
    old = py_node.whereis("asker")
    got = await term(
        erl,
        KILL + WAIT_BACK + "A = {asker, " + PY + "}, Self = self(),"
        # A synchronous run whose tool handler never answers, and a start_run waiting on its caller.
        " Handler = spawn(fun() -> receive {pynode_tool_call, _, _} -> Self ! handler_has_call,"
        "   receive never -> ok end end end),"
        " spawn(fun() -> Self ! {sync, catch gen_server:call(A,"
        '   {run, <<"sync">>, #{tool_handler => Handler}}, 20000)} end),'
        " receive handler_has_call -> ok after 10000 -> exit(no_sync_tool_call) end,"
        ' {ok, Ref} = gen_server:call(A, {start_run, <<"async">>, #{}}),'
        " receive {pynode_tool_call, Ref, _} -> ok after 10000 -> exit(no_tool_call) end,"
        " {ok, #{runs := 2}} = gen_server:call(A, info),"
        # A run of another agent, waiting on its tool when asker is killed.
        " B = {other, " + PY + "},"
        ' {ok, RefB} = gen_server:call(B, {start_run, <<"b">>, #{}}),'
        " #{call_id := IdB} = receive {pynode_tool_call, RefB, CB} -> CB after 10000 -> exit(no_call_b) end,"
        " {Old, Down} = Kill(asker),"
        " Sync = receive {sync, S} -> S after 15000 -> no_sync_answer end,"
        " Async = receive {pynode_result, Ref, R} -> R after 15000 -> no_result end,"
        " New = WaitBack(asker, Old, 500),"
        ' ok = gen_server:call(B, {tool_result, IdB, {ok, <<"b done">>}}),'
        " Other = receive {pynode_result, RefB, RB} -> element(1, RB) after 10000 -> timeout end,"
        " {ok, Info} = gen_server:call(A, info),"
        # The agent that came back takes runs again.
        ' {ok, Ref2} = gen_server:call(A, {start_run, <<"again">>, #{}}),'
        " #{call_id := Id2} = receive {pynode_tool_call, Ref2, C2} -> C2 after 10000 -> exit(no_call2) end,"
        ' ok = gen_server:call(A, {tool_result, Id2, {ok, <<"fine">>}}),'
        " Again = receive {pynode_result, Ref2, R2} -> element(1, R2) after 10000 -> timeout end,"
        f" {{ok, RegInfo}} = gen_server:call({REG}, info),"
        f" {{ok, Listed}} = gen_server:call({REG}, list_agents),"
        " exit(Handler, kill),"
        " {Old, Down, Sync, Async, is_pid(New) andalso New =/= Old, Info, Again,"
        "  maps:with([agents, runs], RegInfo), [L || L = #{name := asker} <- Listed], Other}",
        timeout=30,
    )
    assert isinstance(got, tuple)
    killed_pid, down, sync, async_result, new_pid, info, again, reg_info, listed, other = got
    assert killed_pid == old and down == Atom("killed")
    assert is_cancelled(sync), sync
    assert is_cancelled(async_result), async_result
    assert b"asker" in sync[1][1] and b"killed" in sync[1][1]
    assert new_pid is True
    assert await erl.eval("gen_server:call({asker, " + PY + "}, info)") == before
    assert info[Atom("tools")] == [b"ask_human"] and info[Atom("model")] == b"test"
    assert again == Atom("ok")
    assert reg_info == {Atom("agents"): 2, Atom("runs"): 0}
    assert listed == [{Atom("name"): Atom("asker"), Atom("model"): b"test", Atom("origin"): Atom("remote")}]
    assert other == Atom("ok")
    assert registry_of(py_node).limits.in_flight == 0


async def test_a_replaced_agent_killed_comes_back_with_its_last_spec(erl: BeamNode, py_node: Node) -> None:
    got = await term(
        erl,
        KILL + WAIT_BACK + "A = {asker, " + PY + "},"
        f' {{ok, asker}} = gen_server:call({REG}, {{create_agent, asker, #{{model => <<"test">>}}}}),'
        f" {{ok, asker}} = gen_server:call({REG},"
        f" {{create_agent, asker, {ASK_HUMAN_SPEC}, #{{if_exists => replace}}}}),"
        " {ok, #{tools := Before}} = gen_server:call(A, info),"
        " {Old, killed} = Kill(asker), New = WaitBack(asker, Old, 500),"
        " {ok, #{tools := After}} = gen_server:call(A, info),"
        f" {{ok, Listed}} = gen_server:call({REG}, list_agents),"
        " {Before, After, is_pid(New), length(Listed)}",
        timeout=30,
    )
    assert got == ([b"ask_human"], [b"ask_human"], True, 1)
    assert list(node_supervisor(py_node).children()).count("asker") == 1


async def test_agent_killed_from_elixir_during_a_call_answers_cancelled(py_node: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    created = await ex.eval(
        f'GenServer.call({{:pynode, :"py@127.0.0.1"}}, {{:create_agent, :asker, {ASK_HUMAN_ELIXIR}}})'
    )
    assert created == "{:ok, :asker}"
    old = py_node.whereis("asker")
    out = await ex.eval(
        'node = :"py@127.0.0.1"; me = self();'
        " handler = spawn(fn -> receive do {:pynode_tool_call, _, _} ->"
        "   send(me, :has_call); Process.sleep(:infinity) end end);"
        " caller = Task.async(fn ->"
        '   GenServer.call({:asker, node}, {:run, "q", %{tool_handler: handler}}, 20_000) end);'
        " receive do :has_call -> :ok after 10_000 -> exit(:no_tool_call) end;"
        " {_, pid, _, _} = List.keyfind(GenServer.call({:pynode_sup, node}, :which_children), :asker, 0);"
        " Process.exit(pid, :kill);"
        " result = Task.await(caller, 15_000); Process.exit(handler, :kill); result"
    )
    assert out.startswith("{:error, {:cancelled, ") and "killed" in out
    await back_under_name(py_node, "asker", old)
    info = await ex.eval('{:ok, i} = GenServer.call({:asker, :"py@127.0.0.1"}, :info); {i.model, i.tools, i.runs}')
    assert info == '{"test", ["ask_human"], 0}'


async def test_deleted_or_shut_down_agents_are_not_restarted(erl: BeamNode, py_node: Node) -> None:
    for name in ("gone", "stopped", "kept"):
        created = await erl.eval(f'gen_server:call({REG}, {{create_agent, {name}, #{{model => <<"test">>}}}})')
        assert created == f"{{ok,{name}}}"
    assert await erl.eval(f"gen_server:call({REG}, {{delete_agent, gone}})") == "ok"
    # Deleted, the name is free at once: delete then create is a replacement from the BEAM side.
    recreated = await term(
        erl,
        f"ok = gen_server:call({REG}, {{delete_agent, kept}}),"
        f' gen_server:call({REG}, {{create_agent, kept, #{{model => <<"test">>}}}})',
        timeout=30,
    )
    assert recreated == (Atom("ok"), Atom("kept"))
    # exit(Pid, shutdown) is a normal end for an agent (a transient child): it stays gone too.
    got = await term(
        erl,
        CHILD_PID + "P = ChildPid(stopped), M = monitor(process, P), exit(P, shutdown),"
        " receive {'DOWN', M, process, P, R} -> R after 5000 -> no_down end",
        timeout=30,
    )
    assert got == Atom("shutdown")
    # count_children answers after the supervisor has handled the exits that came before.
    counts = await term(erl, f"gen_server:call({SUP}, count_children)", timeout=30)
    assert isinstance(counts, list)
    listed = await term(
        erl, f"{{ok, L}} = gen_server:call({REG}, list_agents), [maps:get(name, A) || A <- L]", timeout=30
    )
    assert listed == [Atom("kept")]
    assert py_node.whereis("gone") is None and py_node.whereis("stopped") is None
    children = node_supervisor(py_node).children()
    assert "gone" not in children and "stopped" not in children and "kept" in children
    info = await term(erl, f"gen_server:call({REG}, info)", timeout=30)
    assert isinstance(info, tuple) and info[1][Atom("agents")] == 1


PYTHON_AGENT = '''
from pydantic_ai import Agent

agent = Agent("test", instructions="Be brief.")


@agent.tool_plain
def double(n: int) -> int:
    """Twice n."""
    return 2 * n
'''


@pytest.fixture
async def python_agents(epmd_port: int, cookie: str, tmp_path: Path) -> AsyncIterator[Node]:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "doubler.py").write_text(PYTHON_AGENT)
    async with running_pynode("py@127.0.0.1", cookie=cookie, epmd_port=epmd_port, agents_dir=agents) as running:
        yield running.node


async def test_python_agent_killed_comes_back_from_its_definition(python_agents: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    node = ':"py@127.0.0.1"'
    before = await ex.eval(f"GenServer.call({{:doubler, {node}}}, :info)")
    old = python_agents.whereis("doubler")
    await ex.eval(
        f"{{_, pid, _, _}} = List.keyfind(GenServer.call({{:pynode_sup, {node}}}, :which_children), :doubler, 0);"
        " Process.exit(pid, :kill)"
    )
    await back_under_name(python_agents, "doubler", old)
    assert await ex.eval(f"GenServer.call({{:doubler, {node}}}, :info)") == before
    out = await ex.eval(
        f'{{:ok, r}} = GenServer.call({{:doubler, {node}}}, {{:run, "Double 3"}}, 15_000); r.usage.tool_calls'
    )
    assert out == "1"
    listed = await ex.eval(f"{{:ok, l}} = GenServer.call({{:pynode, {node}}}, :list_agents); l")
    assert listed == '[%{model: "test", name: :doubler, origin: :python}]'


# -- past the restart intensity -------------------------------------------------------------


@pytest.fixture
async def strict_node(epmd_port: int, cookie: str) -> AsyncIterator[Node]:
    """``py@127.0.0.1`` whose supervisor allows two restarts a minute."""
    node = Node("py@127.0.0.1", cookie, epmd_port=epmd_port, restart_intensity=RestartIntensity(2, 60.0))
    await node.start()
    await start_registry(node, agents_dir=None)
    try:
        yield node
    finally:
        await node.stop()


async def test_past_the_intensity_the_supervisor_gives_up_and_the_node_has_no_registry(
    strict_node: Node, beam: BeamFactory
) -> None:
    py_node = strict_node
    erl = await beam("e1")
    supervisor = node_supervisor(py_node)
    assert supervisor.intensity.max_restarts == 2
    old = py_node.whereis("pynode")
    for _ in range(2):
        assert await term(erl, KILL + "element(2, Kill(pynode))", timeout=30) == Atom("killed")
        old = await back_under_name(py_node, "pynode", old)
    assert await term(erl, KILL + "element(2, Kill(pynode))", timeout=30) == Atom("killed")
    assert await supervisor.join(10) == Atom("shutdown")
    assert supervisor.gave_up
    for name in ("pynode", "net_kernel", "pynode_io", "pynode_sup"):
        assert py_node.whereis(name) is None, name
    got = await erl.eval(f"catch gen_server:call({REG}, ping, 5000)")
    assert got.startswith("{'EXIT',{noproc,")


async def test_the_command_stops_with_status_1_when_its_supervisor_gives_up(
    pynode_command: Launcher,  # noqa: F811
    beam: BeamFactory,
    cookie: str,
) -> None:
    node = await pynode_command(
        "--name", "pysup@127.0.0.1", "--cookie", cookie, "--max-restarts", "1", "--restart-period", "60"
    )
    await node.ready()
    erl = await beam("e1")
    py = "'pysup@127.0.0.1'"
    sup = f"{{pynode_sup, {py}}}"
    got = await erl.eval(
        KILL.replace(SUP, sup) + WAIT_BACK + "{Old, killed} = Kill(pynode), New = WaitBack(pynode, Old, 500),"
        f" pong = gen_server:call({{pynode, {py}}}, ping),"
        f" monitor_node({py}, true), {{_, killed}} = Kill(pynode),"
        f" receive {{nodedown, {py}}} -> nodedown after 20000 -> still_up end"
    )
    assert got == "nodedown"
    assert await node.wait(20) == 1
    output = node.output()
    assert "reached its restart intensity" in output and "supervisor ended" in output


async def test_pynode_sup_killed_takes_the_node_processes_with_it(erl: BeamNode, py_node: Node) -> None:
    """As a BEAM node's kernel supervisor: its end is the end of what it supervised (the command stops)."""
    supervisor = node_supervisor(py_node)
    registry = current_registry(py_node)
    assert supervisor.pid is not None and registry is not None
    got = await erl.eval(
        f"P = {term_expr(supervisor.pid)}, M = monitor(process, P), exit(P, kill),"
        " receive {'DOWN', M, process, P, R} -> R after 5000 -> no_down end"
    )
    assert got == "killed"
    assert await supervisor.join(5) == Atom("killed")
    assert await registry.join(5) == Atom("killed")
    for name in ("pynode", "net_kernel", "pynode_io"):
        assert py_node.whereis(name) is None, name


async def test_registry_killed_while_a_deleted_agent_winds_down_still_ends_that_agent(
    erl: BeamNode, py_node: Node
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    agent: Agent[None, str] = Agent("test")

    @agent.tool_plain
    async def linger() -> str:
        """Ends only when the test says so, even once cancelled."""
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()
            raise
        return "never"

    registry = registry_of(py_node)
    registry.add_agent(AgentDefinition(name="lingering", agent=agent, spec=None, origin="python", model_name="test"))
    process = registry.agents["lingering"]
    # The run's caller stays alive (a dead caller would cancel the run before its tool is called).
    caller = (
        "spawn(fun() -> {ok, _} = gen_server:call({lingering, " + PY + '}, {start_run, <<"go">>, #{}}),'
        " receive stop -> ok end end)"
    )
    await erl.eval(caller)
    await asyncio.wait_for(entered.wait(), 10)
    delete = (Atom("delete_agent"), Atom("lingering"))
    deleting = asyncio.ensure_future(py_node.call(Atom("pynode"), delete, timeout=20))
    await eventually(lambda: process.closing is not None, what="the agent winding down")
    assert registry.pid is not None
    py_node.exit(registry.pid, KILL_SIGNAL)
    with pytest.raises(CallExit):
        await deleting
    assert await process.join(10) == Atom("shutdown")
    release.set()
    await back_under_name(py_node, "pynode", registry.pid)
    assert py_node.whereis("lingering") is None
    assert "lingering" not in node_supervisor(py_node).children()
    listed = await term(erl, f"{{ok, L}} = gen_server:call({REG}, list_agents), L", timeout=30)
    assert listed == []
