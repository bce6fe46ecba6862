"""Runs that never hang and never leak: cancellation, timeouts, dead callers, handlers and nodes.

Everything here runs against real erl/elixir nodes; OS processes are killed by pid, every wait
is bounded. After each fault the node must be clean: no runs counted, no run processes, no
monitors left behind on either side of a connection, no stray asyncio tasks.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from agent_support import ASK_HUMAN_SPEC as TOOL_SPEC
from agent_support import PY, REG, create, ended, eventually, registry_of, term
from beam import BeamFactory, BeamNode
from hostile_peer import PynodeChild

from pynode.bridge.runs import RunProcess
from pynode.etf.types import Atom
from pynode.node import Node

pytestmark = pytest.mark.beam


def leftovers(node: Node) -> list[str]:
    """Everything a finished run could leave behind on the node; empty when clean."""
    found: list[str] = []
    registry = registry_of(node)
    if registry.limits.in_flight:
        found.append(f"in_flight={registry.limits.in_flight}")
    for name, agent in registry.agents.items():
        if agent.runs or agent.calls:
            found.append(f"agent {name}: runs={len(agent.runs)} calls={len(agent.calls)}")
        if agent.monitored_by or agent.monitors:
            found.append(f"agent {name}: monitored_by={agent.monitored_by} monitors={agent.monitors}")
    if registry.monitored_by or registry.monitors:
        found.append(f"registry: monitored_by={registry.monitored_by} monitors={registry.monitors}")
    runs = [p for p in node.processes.by_pid.values() if isinstance(p, RunProcess)]
    if runs:
        found.append(f"{len(runs)} RunProcess left")
    for peer, conn in node.connections.items():
        if conn.signals.monitors_in or conn.signals.monitors_out or conn.signals.spawn_requests:
            found.append(
                f"{peer}: monitors_in={len(conn.signals.monitors_in)} monitors_out={len(conn.signals.monitors_out)}"
                f" spawn_requests={len(conn.signals.spawn_requests)}"
            )
    return found


async def assert_clean(node: Node, tasks_baseline: int | None = None, within: float = 10.0) -> None:
    """Wait (bounded) until the node holds nothing of finished runs, then check it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        left = leftovers(node)
        tasks = len(asyncio.all_tasks())
        if not left and (tasks_baseline is None or tasks <= tasks_baseline):
            return
        if loop.time() > deadline:
            pytest.fail(f"left behind: {left}; tasks {tasks} (baseline {tasks_baseline})")
        await asyncio.sleep(0.05)


def baseline_tasks() -> int:
    return len(asyncio.all_tasks())


# ---------------------------------------------------------------------------------------------
# cancellation and timeouts


async def test_cancel_releases_the_pending_tool_wait(
    erl: BeamNode, py_node: Node, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "asker", TOOL_SPEC)
    tasks = baseline_tasks()
    got = await term(
        erl,
        "A = {asker, 'py@127.0.0.1'},"
        ' {ok, Ref} = gen_server:call(A, {start_run, <<"x">>, #{}}),'
        " #{call_id := Id, reply_to := To} = receive {pynode_tool_call, Ref, C} -> C after 5000 -> exit(no_call) end,"
        " {ok, #{runs := 1}} = gen_server:call(A, info),"
        " ok = gen_server:call(A, {cancel, Ref}),"
        " Result = receive {pynode_result, Ref, R} -> R after 5000 -> timeout end,"
        # The handler answers late: to the agent (a clear error), and straight to the run's pid (ignored).
        ' Late = gen_server:call(A, {tool_result, Id, {ok, <<"too late">>}}),'
        ' To ! {tool_result, Id, {ok, <<"too late">>}},'
        ' gen_server:cast(A, {tool_result, Id, {ok, <<"too late">>}}),'
        ' A ! {tool_result, Id, {ok, <<"too late">>}},'
        " {ok, Info} = gen_server:call(A, info),"
        f" {{ok, RegInfo}} = gen_server:call({REG}, info),"
        " {Result, Late, maps:get(runs, Info), maps:get(runs, RegInfo)}",
    )
    assert isinstance(got, tuple)
    result, late, agent_runs, node_runs = got
    assert result[0] == Atom("error") and result[1][0] == Atom("cancelled")
    assert late[0] == Atom("error") and late[1][0] == Atom("bad_request") and b"no tool call" in late[1][1]
    assert (agent_runs, node_runs) == (0, 0)
    assert ended(run_log) == ["cancelled (cancelled by request)"]
    await assert_clean(py_node, tasks)


async def test_tool_results_sent_to_the_agent_reach_their_own_run(erl: BeamNode, py_node: Node) -> None:
    """Concurrent runs of one agent whose model reuses call ids (TestModel does): no crossed answers."""
    await create(erl, "asker", TOOL_SPEC)
    tasks = baseline_tasks()
    got = await term(
        erl,
        "A = {asker, 'py@127.0.0.1'},"
        " Refs = [begin {ok, Ref} = gen_server:call(A, {start_run, integer_to_binary(N), #{}}),"
        "   receive {pynode_tool_call, Ref, #{call_id := Id}} -> {N, Ref, Id} after 5000 -> exit(no_call) end"
        " end || N <- [1, 2, 3]],"
        # Every answer goes to the agent, which must find the run by the call id alone.
        " [ok = gen_server:call(A, {tool_result, Id, {ok, N * 100}}) || {N, _, Id} <- lists:reverse(Refs)],"
        " [{Id, receive {pynode_result, Ref, {ok, #{output := O}}} -> O after 5000 -> timeout end}"
        "  || {_, Ref, Id} <- Refs]",
    )
    assert isinstance(got, list) and len(got) == 3, got
    ids = [call_id for call_id, _ in got]
    assert len(set(ids)) == 3, ids  # unique on the node, though the model's own ids are all the same
    assert [output for _, output in got] == [b'{"ask_human":%d}' % (n * 100) for n in (1, 2, 3)]
    await assert_clean(py_node, tasks)


async def test_cancel_of_an_unknown_or_finished_run_is_ok(erl: BeamNode) -> None:
    await create(erl, "plain", '#{model => <<"test">>}')
    got = await erl.eval(
        "A = {plain, 'py@127.0.0.1'},"
        ' {ok, Ref} = gen_server:call(A, {start_run, <<"x">>, #{}}),'
        " {ok, _} = receive {pynode_result, Ref, R} -> R after 5000 -> timeout end,"
        " {gen_server:call(A, {cancel, Ref}), gen_server:call(A, {cancel, make_ref()}),"
        "  gen_server:call(A, {cancel, not_a_ref})}"
    )
    assert got == "{ok,ok,ok}"


async def test_timeout_with_a_tool_that_never_answers(
    erl: BeamNode, py_node: Node, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "asker", TOOL_SPEC)
    tasks = baseline_tasks()
    got = await term(
        erl,
        "Handler = spawn(fun() -> receive _ -> timer:sleep(60000) end end),"
        " T0 = erlang:monotonic_time(millisecond),"
        " R = gen_server:call({asker, 'py@127.0.0.1'}, {run, <<\"x\">>, #{tool_handler => Handler, timeout => 500}}),"
        " Elapsed = erlang:monotonic_time(millisecond) - T0,"
        " Alive = is_process_alive(Handler), exit(Handler, kill), {R, Elapsed, Alive}",
    )
    assert isinstance(got, tuple)
    result, elapsed, handler_alive = got
    assert result[0] == Atom("error") and result[1][0] == Atom("timeout")
    assert b"500 ms" in result[1][1]
    assert isinstance(elapsed, int) and 500 <= elapsed < 1500
    assert handler_alive is True  # the node never touches a slow handler: it stops waiting
    assert ended(run_log) == ["timeout after 500 ms"]
    await assert_clean(py_node, tasks)


async def test_agent_deleted_in_the_same_instant_a_run_starts(
    erl: BeamNode, py_node: Node, run_log: pytest.LogCaptureFixture
) -> None:
    """start_run and delete_agent in one packet burst: the run is cancelled before its task ever ran.

    Both requests are dispatched from one read of the socket, so the registry handles the delete
    before the new run's task has had its first turn; the run must still answer and be counted out.
    """
    await create(erl, "asker", TOOL_SPEC)
    tasks = baseline_tasks()
    got = await term(
        erl,
        "R1 = make_ref(), R2 = make_ref(),"
        " {asker, 'py@127.0.0.1'} ! {self(), R1, {start_run, <<\"x\">>, #{}}},"
        f" {REG} ! {{self(), R2, {{delete_agent, asker}}}},"
        " {ok, Ref} = receive {R1, Started} -> Started after 5000 -> exit(no_reply) end,"
        " ok = receive {R2, Deleted} -> Deleted after 5000 -> exit(no_reply) end,"
        " Result = receive {pynode_result, Ref, R} -> R after 5000 -> timeout end,"
        f" {{ok, Info}} = gen_server:call({REG}, info),"
        " {Result, maps:get(runs, Info)}",
    )
    assert got == ((Atom("error"), (Atom("cancelled"), b"agent asker was deleted")), 0)
    assert ended(run_log) == ["cancelled (agent asker was deleted)"]
    await assert_clean(py_node, tasks)


async def test_registry_shutdown_cancels_runs_and_refuses_new_ones(
    erl: BeamNode, py_node: Node, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "asker", TOOL_SPEC)
    await erl.eval(
        "Self = self(), register(starter, spawn(fun() ->"
        " {ok, Ref} = gen_server:call({asker, 'py@127.0.0.1'}, {start_run, <<\"x\">>, #{}}),"
        " receive {pynode_tool_call, Ref, _} -> Self ! waiting end,"
        " R = receive {pynode_result, Ref, Res} -> Res after 10000 -> timeout end,"
        " receive {get, P} -> P ! {result, R} end end)),"
        " receive waiting -> ok after 5000 -> exit(no_tool_call) end"
    )
    await registry_of(py_node).shutdown()
    got = await term(
        erl,
        "starter ! {get, self()}, Old = receive {result, R} -> R after 5000 -> timeout end,"
        " New = gen_server:call({asker, 'py@127.0.0.1'}, {start_run, <<\"y\">>, #{}}),"
        " {Old, New}",
    )
    shutting_down = (Atom("error"), (Atom("cancelled"), b"the node is shutting down"))
    assert got == (shutting_down, shutting_down)
    assert ended(run_log) == ["cancelled (the node is shutting down)"]
    await assert_clean(py_node)


BLOCKING_AGENT = """
import time

from pydantic_ai import Agent

agent = Agent("test")


@agent.tool_plain
def crunch() -> str:
    \"\"\"Blocks its thread for a while.\"\"\"
    time.sleep(2)
    return "crunched"
"""


async def test_timeout_and_cancel_do_not_wait_for_a_blocking_python_tool(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path, run_log: pytest.LogCaptureFixture
) -> None:
    """A sync Python tool blocks a worker thread; the run still ends on time and the thread is let go."""
    from pynode.bridge.registry import start_registry

    (tmp_path / "blocking.py").write_text(BLOCKING_AGENT)
    node = Node("py@127.0.0.1", cookie, epmd_port=epmd_port)
    await node.start()
    try:
        await start_registry(node, agents_dir=tmp_path)
        e1 = await beam("e1")
        tasks = baseline_tasks()
        got = await term(
            e1,
            "A = {blocking, 'py@127.0.0.1'}, T0 = erlang:monotonic_time(millisecond),"
            ' Timeout = gen_server:call(A, {run, <<"go">>, #{timeout => 300}}),'
            " T1 = erlang:monotonic_time(millisecond),"
            ' {ok, Ref} = gen_server:call(A, {start_run, <<"go">>, #{}}),'
            " timer:sleep(200), ok = gen_server:call(A, {cancel, Ref}),"
            " Cancelled = receive {pynode_result, Ref, R} -> R after 5000 -> timeout end,"
            " T2 = erlang:monotonic_time(millisecond),"
            " {Timeout, T1 - T0, Cancelled, T2 - T1}",
        )
        assert isinstance(got, tuple), got
        timed_out, timeout_ms, cancelled, cancel_ms = got
        assert timed_out[1][0] == Atom("timeout") and cancelled[1][0] == Atom("cancelled"), got
        assert 300 <= timeout_ms < 1000 and cancel_ms < 1000, got
        assert ended(run_log) == ["timeout after 300 ms", "cancelled (cancelled by request)"]
        await assert_clean(node, tasks)
    finally:
        await node.stop()


# ---------------------------------------------------------------------------------------------
# the caller goes away


async def test_caller_killed_mid_run_cancels_it(
    erl: BeamNode, py_node: Node, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "asker", TOOL_SPEC)
    tasks = baseline_tasks()
    got = await erl.eval(
        "Self = self(),"
        " Caller = spawn(fun() ->"
        "   {ok, Ref} = gen_server:call({asker, 'py@127.0.0.1'}, {start_run, <<\"x\">>, #{}}),"
        "   receive {pynode_tool_call, Ref, _} -> Self ! waiting end,"
        "   timer:sleep(60000) end),"
        " receive waiting -> ok after 5000 -> exit(no_tool_call) end,"
        " {ok, #{runs := 1}} = gen_server:call({asker, 'py@127.0.0.1'}, info),"
        " exit(Caller, kill), ok"
    )
    assert got == "ok"
    registry = registry_of(py_node)
    await eventually(lambda: registry.limits.in_flight == 0, what="registry runs back to 0")
    info = await erl.eval(
        "{{ok, #{runs := A}}, {ok, #{runs := N}}} ="
        f" {{gen_server:call({{asker, {PY}}}, info), gen_server:call({REG}, info)}}, {{A, N}}"
    )
    assert info == "{0,0}"
    assert ended(run_log) == ["cancelled (the caller exited (killed))"]
    await assert_clean(py_node, tasks)


async def test_caller_node_killed_mid_run_cancels_its_runs(
    erl: BeamNode, py_node: Node, beam: BeamFactory, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "asker", TOOL_SPEC)
    doomed = await beam("doomed")
    tasks = baseline_tasks()
    # Three runs wait on tool calls their callers will never answer; one waits on a handler on e1.
    got = await doomed.eval(
        "Self = self(), A = {asker, 'py@127.0.0.1'},"
        ' [spawn(fun() -> {ok, Ref} = gen_server:call(A, {start_run, <<"x">>, #{}}),'
        "   receive {pynode_tool_call, Ref, _} -> Self ! waiting end, timer:sleep(60000) end)"
        "  || _ <- lists:seq(1, 3)],"
        " [receive waiting -> ok after 5000 -> exit(no_tool_call) end || _ <- lists:seq(1, 3)],"
        " {ok, #{runs := 3}} = gen_server:call(A, info), ok"
    )
    assert got == "ok"
    await erl.eval("register(slowpoke, spawn(fun() -> receive _ -> timer:sleep(60000) end end)), ok")
    await doomed.eval(
        "Self = self(), spawn(fun() -> Self ! started, gen_server:call({asker, 'py@127.0.0.1'},"
        " {run, <<\"y\">>, #{tool_handler => {slowpoke, 'e1@127.0.0.1'}}}, 60000) end),"
        " receive started -> ok end"
    )
    registry = registry_of(py_node)
    agent = registry.agents["asker"]
    await eventually(lambda: len(agent.calls) == 4, what="four tool calls pending")
    waits = [run._waits[call_id] for call_id, run in agent.calls.items()]
    doomed.kill()
    await doomed.wait()
    await eventually(lambda: registry.limits.in_flight == 0, what="runs back to 0 after the node died")
    assert all(w.done() for w in waits)  # every tool wait was released
    assert sorted(ended(run_log)) == ["cancelled (the caller exited (noconnection))"] * 4
    await assert_clean(py_node, tasks)
    # The node keeps serving the others.
    out = await erl.eval(
        "Handler = spawn(fun() -> receive {pynode_tool_call, _, #{call_id := Id, reply_to := To}} ->"
        " To ! {tool_result, Id, {ok, 1}} end end),"
        " {ok, R} = gen_server:call({asker, 'py@127.0.0.1'}, {run, <<\"z\">>, #{tool_handler => Handler}}),"
        " maps:get(output, R)"
    )
    assert out == '<<"{\\"ask_human\\":1}">>'
    assert "doomed@127.0.0.1" not in py_node.connections


# ---------------------------------------------------------------------------------------------
# a tool handler goes away


async def test_tool_handler_killed_while_the_run_waits(erl: BeamNode, py_node: Node) -> None:
    await create(erl, "asker", TOOL_SPEC)
    tasks = baseline_tasks()
    got = await term(
        erl,
        "Self = self(),"
        " Handler = spawn(fun() -> receive {pynode_tool_call, _, _} -> Self ! got_call, timer:sleep(60000) end end),"
        " Caller = spawn(fun() -> Self ! {run, gen_server:call({asker, 'py@127.0.0.1'},"
        '   {run, <<"x">>, #{tool_handler => Handler}}, 20000)} end),'
        " receive got_call -> exit(Handler, kill) after 5000 -> exit(no_tool_call) end,"
        " receive {run, R} -> R after 10000 -> hung end",
    )
    assert isinstance(got, tuple) and got[0] == Atom("ok"), got
    messages = got[1][Atom("messages")]
    assert isinstance(messages, bytes)
    assert b"the tool handler exited before answering (killed)" in messages
    await assert_clean(py_node, tasks)


async def test_tool_handler_node_killed_while_the_run_waits(erl: BeamNode, py_node: Node, beam: BeamFactory) -> None:
    handler_node = await beam("tools")
    spec = TOOL_SPEC.replace(
        '<<"required">> => [<<"question">>]}}]}',
        '<<"required">> => [<<"question">>]}, handler => {helper, \'tools@127.0.0.1\'}}]}',
    )
    assert "handler =>" in spec
    await create(erl, "remote_tool", spec)
    await handler_node.eval("register(helper, spawn(fun() -> receive _ -> timer:sleep(60000) end end)), ok")
    tasks = baseline_tasks()
    await erl.eval(
        "Self = self(), register(waiter, spawn(fun() -> R = gen_server:call({remote_tool, 'py@127.0.0.1'},"
        ' {run, <<"x">>}, 20000), receive {get, P} -> P ! {run, R} end end)), ok'
    )
    agent = registry_of(py_node).agents["remote_tool"]
    await eventually(lambda: len(agent.calls) == 1, what="the tool call waiting on the other node")
    handler_node.kill()
    await handler_node.wait()
    got = await term(erl, "waiter ! {get, self()}, receive {run, R} -> R after 10000 -> hung end")
    assert isinstance(got, tuple) and got[0] == Atom("ok"), got
    assert b"the tool handler exited before answering (noconnection)" in got[1][Atom("messages")]
    await assert_clean(py_node, tasks)


MF_TOOLS = """
defmodule SlowTool do
  def wait(_args) do
    Process.register(self(), :slow_tool)
    Process.sleep(60_000)
  end
end
"""

MF_SPEC = """%{
  model: "test",
  tools: [%{name: "slow", description: "Takes its time",
            parameters: %{"type" => "object", "properties" => %{}},
            handler: {SlowTool, :wait}}]}"""


async def test_mf_tool_process_killed_mid_call(py_node: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(MF_TOOLS)
    await ex.eval(f'{{:ok, :slow}} = GenServer.call({{:pynode, :"py@127.0.0.1"}}, {{:create_agent, :slow, {MF_SPEC}}})')
    tasks = baseline_tasks()
    got = await term(
        ex,
        "me = self()\n"
        'spawn(fn -> send(me, {:run, GenServer.call({:slow, :"py@127.0.0.1"}, {:run, "go", %{}}, 20_000)}) end)\n'
        "wait = fn w, n -> case Process.whereis(:slow_tool) do\n"
        "  nil when n > 0 -> Process.sleep(20); w.(w, n - 1)\n"
        "  pid -> pid end end\n"
        "Process.exit(wait.(wait, 250), :kill)\n"
        "receive do {:run, r} -> r after 10_000 -> :hung end",
    )
    assert isinstance(got, tuple) and got[0] == Atom("ok"), got
    # The model is told which function, where, and how it ended (module in Erlang syntax, section 8).
    assert b"SlowTool.wait/1 on node ex1@127.0.0.1 exited: " in got[1][Atom("messages")]
    await assert_clean(py_node, tasks)


async def test_cancel_during_an_mf_tool_stops_the_tool(py_node: Node, beam: BeamFactory) -> None:
    """A cancelled run does not leave its {M, F} tool running on the caller's node (as erpc's timeout)."""
    ex = await beam("ex1", kind="elixir")
    await ex.eval(MF_TOOLS)
    await ex.eval(f'{{:ok, :slow}} = GenServer.call({{:pynode, :"py@127.0.0.1"}}, {{:create_agent, :slow, {MF_SPEC}}})')
    tasks = baseline_tasks()
    got = await term(
        ex,
        'a = {:slow, :"py@127.0.0.1"}\n'
        '{:ok, ref} = GenServer.call(a, {:start_run, "go", %{}})\n'
        "wait = fn w, n -> case Process.whereis(:slow_tool) do\n"
        "  nil when n > 0 -> Process.sleep(20); w.(w, n - 1)\n"
        "  pid -> pid end end\n"
        "tool = wait.(wait, 250)\n"
        "mref = Process.monitor(tool)\n"
        ":ok = GenServer.call(a, {:cancel, ref})\n"
        "result = receive do {:pynode_result, ^ref, r} -> r after 5_000 -> :timeout end\n"
        "tool_end = receive do {:DOWN, ^mref, :process, _, why} -> why after 2_000 -> :still_running end\n"
        "{result, tool_end}",
    )
    assert isinstance(got, tuple), got
    result, tool_end = got
    assert result == (Atom("error"), (Atom("cancelled"), b"cancelled by request"))
    await assert_clean(py_node, tasks)
    assert tool_end == Atom("killed"), "the cancelled run's tool kept running on the BEAM"


async def test_mf_tool_whose_node_goes_away_mid_call(
    erl: BeamNode, py_node: Node, beam: BeamFactory, run_log: pytest.LogCaptureFixture
) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(MF_TOOLS)
    await ex.eval(f'{{:ok, :slow}} = GenServer.call({{:pynode, :"py@127.0.0.1"}}, {{:create_agent, :slow, {MF_SPEC}}})')
    tasks = baseline_tasks()
    processes = len(py_node.processes.by_pid)
    await ex.eval('spawn(fn -> GenServer.call({:slow, :"py@127.0.0.1"}, {:run, "go", %{}}, 60_000) end); :ok')
    registry = registry_of(py_node)
    await eventually(lambda: registry.limits.in_flight == 1, what="the run started")
    # The tool is running on ex1 when the node dies.
    running = await ex.eval(
        "wait = fn w, n -> case Process.whereis(:slow_tool) do\n"
        "  nil when n > 0 -> Process.sleep(20); w.(w, n - 1)\n"
        "  found -> is_pid(found) end end\n"
        "wait.(wait, 250)"
    )
    assert running == "true"
    ex.kill()
    await ex.wait()
    await eventually(lambda: registry.limits.in_flight == 0, what="runs back to 0")
    assert ended(run_log) == ["cancelled (the caller exited (noconnection))"]
    await assert_clean(py_node, tasks)
    assert len(py_node.processes.by_pid) == processes  # no erpc helper process left
    assert await erl.eval(f"gen_server:call({REG}, ping)") == "pong"


# ---------------------------------------------------------------------------------------------
# overload


async def test_node_wide_max_runs_refuses_with_overloaded(erl: BeamNode, py_node: Node) -> None:
    registry_of(py_node).limits.max_runs = 2  # as Registry(max_runs=2) / --max-runs 2
    await create(erl, "a1", TOOL_SPEC)
    await create(erl, "a2", TOOL_SPEC)
    got = await erl.eval(
        "Start = fun(A) -> {ok, Ref} = gen_server:call({A, 'py@127.0.0.1'}, {start_run, <<\"x\">>, #{}}),"
        "   receive {pynode_tool_call, Ref, #{call_id := Id}} -> {A, Ref, Id} after 5000 -> exit(no_call) end end,"
        " {A1, Ref1, Id1} = Start(a1), _ = Start(a2),"
        " {error, {Kind, Msg}} = gen_server:call({a1, 'py@127.0.0.1'}, {start_run, <<\"x\">>, #{}}),"
        # A tool_handler other than the caller itself (that one is a bad_request: it could never answer).
        " Handler = spawn(fun() -> receive stop -> ok after 10000 -> ok end end),"
        " Sync = gen_server:call({a2, 'py@127.0.0.1'}, {run, <<\"x\">>, #{tool_handler => Handler}}),"
        " {A1, 'py@127.0.0.1'} ! {tool_result, Id1, {ok, 1}},"
        " {ok, _} = receive {pynode_result, Ref1, R} -> R after 5000 -> timeout end,"
        # One run ended: there is room for one more.
        " {ok, Ref3} = gen_server:call({a1, 'py@127.0.0.1'}, {start_run, <<\"x\">>, #{}}),"
        " ok = gen_server:call({a1, 'py@127.0.0.1'}, {cancel, Ref3}),"
        " {Kind, Msg, element(1, element(2, Sync))}"
    )
    assert got.startswith('{overloaded,<<"the node already has 2 runs in flight') and got.endswith(",overloaded}")


async def test_max_concurrency_is_per_agent(erl: BeamNode) -> None:
    await create(erl, "one", TOOL_SPEC.replace("#{model", "#{max_concurrency => 1, model", 1))
    await create(erl, "other", TOOL_SPEC)
    got = await erl.eval(
        "{ok, Ref} = gen_server:call({one, 'py@127.0.0.1'}, {start_run, <<\"x\">>, #{}}),"
        " receive {pynode_tool_call, Ref, _} -> ok after 5000 -> exit(no_call) end,"
        " {error, {K1, _}} = gen_server:call({one, 'py@127.0.0.1'}, {start_run, <<\"y\">>, #{}}),"
        " {ok, Ref2} = gen_server:call({other, 'py@127.0.0.1'}, {start_run, <<\"z\">>, #{}}),"
        " ok = gen_server:call({one, 'py@127.0.0.1'}, {cancel, Ref}),"
        " {error, {cancelled, _}} = receive {pynode_result, Ref, R} -> R after 5000 -> timeout end,"
        " {ok, Ref4} = gen_server:call({one, 'py@127.0.0.1'}, {start_run, <<\"w\">>, #{}}),"
        " [gen_server:call({N, 'py@127.0.0.1'}, {cancel, F}) || {N, F} <- [{one, Ref4}, {other, Ref2}]],"
        " K1"
    )
    assert got == "overloaded"


# ---------------------------------------------------------------------------------------------
# load: 1,000 runs with a tool round trip each


async def test_1000_concurrent_runs_with_a_tool_round_trip_leave_nothing_behind(erl: BeamNode, py_node: Node) -> None:
    await create(erl, "asker", TOOL_SPEC)
    tasks = baseline_tasks()
    got = await erl.eval(
        "Self = self(), A = {asker, 'py@127.0.0.1'},"
        " [spawn(fun() ->"
        "   {ok, Ref} = gen_server:call(A, {start_run, integer_to_binary(N), #{}}, 30000),"
        "   receive {pynode_tool_call, Ref, #{call_id := Id, reply_to := To}} -> To ! {tool_result, Id, {ok, N}}"
        "   after 30000 -> exit(no_tool_call) end,"
        "   Self ! {done, N, receive {pynode_result, Ref, R} -> R after 30000 -> timeout end} end)"
        "  || N <- lists:seq(1, 1000)],"
        " Results = [receive {done, N, R} -> {N, R} after 60000 -> {N, timeout} end || N <- lists:seq(1, 1000)],"
        " Good = [N || {N, {ok, #{output := Out}}} <- Results,"
        '   Out =:= iolist_to_binary([<<"{\\"ask_human\\":">>, integer_to_binary(N), <<"}">>])],'
        " {length(Good), [R || {_, R} = R0 <- Results, not lists:member(element(1, R0), Good)]}",
        timeout=120,
    )
    assert got == "{1000,[]}"
    await assert_clean(py_node, tasks, within=20)


# ---------------------------------------------------------------------------------------------
# the pynode OS process: SIGKILL and SIGTERM


SLOW_AGENT = '''
import asyncio

from pydantic_ai import Agent

agent = Agent("test")


@agent.tool_plain
async def nap() -> str:
    """Takes a long time."""
    await asyncio.sleep(60)
    return "rested"
'''


async def test_python_node_killed_mid_call_gives_noconnection_quickly(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    """SIGKILL to ``pynode`` during a GenServer.call: the BEAM side knows within 2 s.

    A monitor on the agent fires with ``noconnection``; gen:call turns that DOWN into an exit
    with ``{nodedown, Node}`` (OTP's gen.erl does so for every call to a remote process).
    """
    (tmp_path / "slow.py").write_text(SLOW_AGENT)
    async with PynodeChild.running("py9@127.0.0.1", cookie, epmd_port, tmp_path) as py9:
        ex = await beam("ex1", kind="elixir")
        got = await term(
            ex,
            "me = self()\n"
            "spawn(fn ->\n"
            '  r = try do GenServer.call({:slow, :"py9@127.0.0.1"}, {:run, "go", %{}}, 30_000)\n'
            "      catch :exit, reason -> {:exit, reason} end\n"
            "  send(me, {:call_done, r, System.monotonic_time(:millisecond)}) end)\n"
            "wait = fn w, n ->\n"
            '  {:ok, i} = GenServer.call({:pynode, :"py9@127.0.0.1"}, :info)\n'
            "  if i.runs == 1 or n == 0, do: i.runs, else: (Process.sleep(20); w.(w, n - 1)) end\n"
            "1 = wait.(wait, 250)\n"
            'mref = Process.monitor({:slow, :"py9@127.0.0.1"})\n'
            "t0 = System.monotonic_time(:millisecond)\n"
            f'{{_, 0}} = System.cmd("kill", ["-KILL", "{py9.proc.pid}"])\n'
            "down = receive do {:DOWN, ^mref, :process, _, why} -> {why, System.monotonic_time(:millisecond) - t0}\n"
            "  after 5_000 -> :no_down end\n"
            "call = receive do {:call_done, r, t1} -> {r, t1 - t0} after 5_000 -> :no_exit end\n"
            "{down, call}",
        )
        assert await asyncio.wait_for(py9.proc.wait(), 5) == -signal.SIGKILL
    assert isinstance(got, tuple), got
    (why, down_ms), ((outcome, reason), call_ms) = got
    assert why == Atom("noconnection") and isinstance(down_ms, int) and down_ms < 2000, got
    assert outcome == Atom("exit") and isinstance(reason, tuple), got
    assert reason[0] == (Atom("nodedown"), Atom("py9@127.0.0.1")), got
    assert isinstance(call_ms, int) and call_ms < 2000, got


async def test_a_second_sigterm_cancels_the_drained_runs_and_callers_hear_before_the_connection_closes(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    async with PynodeChild.running("py9@127.0.0.1", cookie, epmd_port, tmp_path, "--log-level", "debug") as py9:
        e1 = await beam("e1")
        await create(e1, "asker", TOOL_SPEC, node="'py9@127.0.0.1'")
        # Three start_run callers with a tool wait pending each; they report what they hear, in order.
        got = await e1.eval(
            "Self = self(), A = {asker, 'py9@127.0.0.1'},"
            " Callers = [spawn(fun() ->"
            "   monitor_node('py9@127.0.0.1', true),"
            '   {ok, Ref} = gen_server:call(A, {start_run, <<"x">>, #{}}),'
            "   receive {pynode_tool_call, Ref, _} -> Self ! {waiting, self()} after 5000 -> exit(no_call) end,"
            "   Hear = fun() -> receive {pynode_result, Ref, R} -> {result, R}; {nodedown, _} -> nodedown"
            "     after 10000 -> silence end end,"
            "   First = Hear(), Second = Hear(), heard ! {heard, self(), [First, Second]} end)"
            "  || _ <- lists:seq(1, 3)],"
            " [receive {waiting, P} -> ok after 5000 -> exit(no_call) end || P <- Callers],"
            # A fourth caller in a synchronous run, its tool handler silent.
            " Silent = spawn(fun() -> timer:sleep(60000) end),"
            " Sync = spawn(fun() -> monitor_node('py9@127.0.0.1', true),"
            '   First = try {result, gen_server:call(A, {run, <<"y">>, #{tool_handler => Silent}}, 20000)}'
            "     catch exit:E -> {exit, E} end,"
            "   Second = receive {nodedown, _} -> nodedown after 10000 -> silence end,"
            "   heard ! {heard, self(), [First, Second]} end),"
            " Wait = fun W(0) -> timeout; W(N) -> case gen_server:call(A, info) of"
            "   {ok, #{runs := 4}} -> ok; _ -> timer:sleep(20), W(N - 1) end end,"
            " ok = Wait(250),"
            " register(heard, spawn(fun() -> Got = [receive {heard, P, H} -> H after 20000 -> timeout end"
            "   || P <- Callers ++ [Sync]], receive {get, To} -> To ! {heard, Got} end end)), ok"
        )
        assert got == "ok"
        # The first SIGTERM drains: the runs go on (their tools wait); the second stops at once.
        py9.proc.send_signal(signal.SIGTERM)
        await py9.logged("draining: waiting up to 30 s for 4 runs in flight")
        py9.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(py9.proc.wait(), 15)
        heard = await term(e1, "heard ! {get, self()}, receive {heard, H} -> H after 20000 -> timeout end", 30)
    assert code == 0, "".join(py9.log)
    assert isinstance(heard, list) and len(heard) == 4, heard
    for first, second in heard:
        assert first[0] == Atom("result") and first[1][0] == Atom("error"), heard
        assert first[1][1] == (Atom("cancelled"), b"the node is shutting down")
        assert second == Atom("nodedown")
    log = "".join(py9.log)
    assert log.count("ended: cancelled (the node is shutting down)") == 4, log


async def test_max_runs_option_of_the_command(epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path) -> None:
    async with PynodeChild.running("py9@127.0.0.1", cookie, epmd_port, tmp_path, "--max-runs", "2") as py9:
        e1 = await beam("e1")
        await create(e1, "asker", TOOL_SPEC, node="'py9@127.0.0.1'")
        got = await e1.eval(
            "A = {asker, 'py9@127.0.0.1'},"
            ' Refs = [begin {ok, R} = gen_server:call(A, {start_run, <<"x">>, #{}}), R end || _ <- [1, 2]],'
            ' Third = gen_server:call(A, {start_run, <<"x">>, #{}}),'
            " [ok = gen_server:call(A, {cancel, R}) || R <- Refs],"
            " element(1, element(2, Third))"
        )
        assert got == "overloaded"
        py9.proc.send_signal(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
        assert await asyncio.wait_for(py9.proc.wait(), 15) == 0
