"""Runs that end cleanly for their watchers (docs/protocol.md sections 3 and 4), from real erl and Elixir nodes.

- A synchronous run whose ``gen_server:call`` timed out, or whose caller died, is cancelled: the
  call's DEMONITOR is the signal (the run sends no MONITOR of its own), and nobody gets a late reply.
  A raw ``{Pid, Ref, Request}`` caller has no such monitor: its run monitors it.
- ``{create_agent, Name, Spec, CreateOpts}``: ``if_exists`` (error, replace, keep) and ``owner``.
- When an agent is deleted or replaced, each run's result reaches its caller before the agent's DOWN.
- ``events => false``: a ``start_run`` caller hears only the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_support import PY, REG, create, ended, eventually, load_erlang, registry_of, term
from beam import BeamFactory, BeamNode
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pynode.errors import CallTimeout
from pynode.etf.types import Atom
from pynode.node import Node

pytestmark = pytest.mark.beam


EX_PY = ':"py@127.0.0.1"'


class Blocking:
    """A model whose every request waits until the run is cancelled; it records what happened."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0

    async def _wait(self) -> None:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def model(self) -> FunctionModel:
        async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            await self._wait()
            raise AssertionError("a blocking model never answers")

        async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
            await self._wait()
            yield "never"

        return FunctionModel(respond, stream_function=stream)


@pytest.fixture
def blocking(py_node: Node) -> Blocking:
    """The model ``blocking`` on ``py_node``."""
    model = Blocking()
    registry_of(py_node).models.register("blocking", model.model())
    return model


# Polls an agent's info until it counts no runs (bounded): ok, or the last info seen.
ERL_NO_RUNS = (
    "NoRuns = fun W(A, 0) -> gen_server:call(A, info); W(A, N) -> case gen_server:call(A, info) of"
    " {ok, #{runs := 0}} -> ok; _ -> timer:sleep(20), W(A, N - 1) end end,"
)
EX_NO_RUNS = (
    "no_runs = fn agent -> Enum.reduce_while(1..500, nil, fn _, _ ->"
    " case GenServer.call(agent, :info) do {:ok, %{runs: 0}} -> {:halt, :ok};"
    " other -> Process.sleep(20); {:cont, other} end end) end;"
)


# ---------------------------------------------------------------------------------------------
# nothing runs that nobody waits for


async def test_elixir_call_that_times_out_cancels_its_run(
    py_node: Node, beam: BeamFactory, blocking: Blocking, run_log: pytest.LogCaptureFixture
) -> None:
    ex = await beam("ex1", kind="elixir")
    created = await ex.eval(f'GenServer.call({{:pynode, {EX_PY}}}, {{:create_agent, :slow, %{{model: "blocking"}}}})')
    assert created == "{:ok, :slow}"
    got = await term(
        ex,
        EX_NO_RUNS + f"agent = {{:slow, {EX_PY}}};"
        ' exited = try do GenServer.call(agent, {:run, "hi", %{}}, 100) catch :exit, reason -> reason end;'
        " settled = no_runs.(agent);"
        # The cancelled run answers nobody: no late {Tag, Reply} lands in the caller's mailbox.
        " stray = receive do m -> m after 300 -> :none end;"
        ' {:ok, reg} = GenServer.call({:pynode, :"py@127.0.0.1"}, :info);'
        " {elem(exited, 0), settled, stray, reg.runs}",
    )
    assert got == (Atom("timeout"), Atom("ok"), Atom("none"), 0)
    assert blocking.cancelled == blocking.started  # the model request, if it had begun, was stopped
    assert ended(run_log) == ["cancelled (the caller stopped waiting (its call timed out, or it exited))"]


async def test_erlang_call_that_times_out_cancels_its_run_and_others_go_on(
    erl: BeamNode, py_node: Node, blocking: Blocking, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "slow", '#{model => <<"blocking">>}')
    await create(erl, "quick", '#{model => <<"test">>}')
    got = await term(
        erl,
        ERL_NO_RUNS + "A = {slow, 'py@127.0.0.1'},"
        # A second caller waits patiently on the same agent: only the impatient call's run goes.
        ' Self = self(), spawn(fun() -> Self ! {patient, catch gen_server:call(A, {run, <<"wait">>}, 60000)} end),'
        " Two = fun W(0) -> timeout; W(N) -> case gen_server:call(A, info) of"
        "   {ok, #{runs := 1}} -> ok; _ -> timer:sleep(20), W(N - 1) end end, ok = Two(250),"
        ' Exited = catch gen_server:call(A, {run, <<"hi">>, #{}}, 150),'
        " Left = fun W(0) -> gen_server:call(A, info); W(N) -> case gen_server:call(A, info) of"
        "   {ok, #{runs := 1}} -> ok; _ -> timer:sleep(20), W(N - 1) end end,"
        " Settled = Left(250),"
        " {ok, Q} = gen_server:call({quick, 'py@127.0.0.1'}, {run, <<\"still here\">>}),"
        " {element(1, element(2, Exited)), Settled, maps:get(output, Q)}",
    )
    assert got == (Atom("timeout"), Atom("ok"), b"success (no tool calls)")
    # The patient run reaches its model and waits there; only the impatient one was stopped.
    await eventually(lambda: blocking.started - blocking.cancelled == 1, what="the patient run waiting on its model")
    assert blocking.cancelled <= 1
    assert registry_of(py_node).agents["slow"].runs  # and is still counted
    assert ended(run_log)[0] == "cancelled (the caller stopped waiting (its call timed out, or it exited))"


async def test_raw_envelope_caller_that_dies_cancels_its_run(
    erl: BeamNode, py_node: Node, blocking: Blocking, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "slow", '#{model => <<"blocking">>}')
    got = await term(
        erl,
        ERL_NO_RUNS + "A = {slow, 'py@127.0.0.1'},"
        ' Caller = spawn(fun() -> A ! {self(), make_ref(), {run, <<"hi">>}}, timer:sleep(60000) end),'
        " One = fun W(0) -> timeout; W(N) -> case gen_server:call(A, info) of"
        "   {ok, #{runs := 1}} -> ok; _ -> timer:sleep(20), W(N - 1) end end,"
        " ok = One(250), exit(Caller, kill), NoRuns(A, 250)",
    )
    assert got == Atom("ok")
    assert blocking.cancelled == blocking.started
    assert ended(run_log) == ["cancelled (the caller exited (killed))"]


async def test_a_gen_server_call_whose_caller_dies_cancels_its_run_through_the_calls_own_monitor(
    erl: BeamNode, py_node: Node, blocking: Blocking, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "slow", '#{model => <<"blocking">>}')
    await term(
        erl,
        "A = {slow, 'py@127.0.0.1'}, Self = self(),"
        ' Caller = spawn(fun() -> Self ! {reply, catch gen_server:call(A, {run, <<"hi">>}, 60000)} end),'
        " register(doomed_caller, Caller), ok",
    )
    agent = registry_of(py_node).agents["slow"]
    await eventually(lambda: blocking.started == 1, what="the run waiting on its model")
    (run,) = agent.runs.values()
    # The call's monitor on the agent watches the caller: the run sent no MONITOR of its own.
    assert run._caller_monitor is None
    assert not py_node.connections["e1@127.0.0.1"].signals.monitors_out
    assert list(agent.waiting_calls.values()) == [run]
    got = await term(
        erl,
        ERL_NO_RUNS + "exit(whereis(doomed_caller), kill),"
        " Settled = NoRuns({slow, 'py@127.0.0.1'}, 250),"
        " Stray = receive M -> M after 300 -> none end, {Settled, Stray}",
    )
    assert got == (Atom("ok"), Atom("none"))
    assert blocking.cancelled == blocking.started == 1
    assert ended(run_log) == ["cancelled (the caller stopped waiting (its call timed out, or it exited))"]
    assert not agent.waiting_calls


async def test_a_raw_caller_without_a_monitor_is_monitored_by_its_run(
    erl: BeamNode, py_node: Node, blocking: Blocking
) -> None:
    await create(erl, "slow", '#{model => <<"blocking">>}')
    await term(
        erl,
        "spawn(fun() -> {slow, 'py@127.0.0.1'} ! {self(), make_ref(), {run, <<\"hi\">>}}, timer:sleep(60000) end), ok",
    )
    agent = registry_of(py_node).agents["slow"]
    await eventually(lambda: blocking.started == 1, what="the run waiting on its model")
    (run,) = agent.runs.values()
    assert run._caller_monitor is not None
    assert list(py_node.connections["e1@127.0.0.1"].signals.monitors_out) == [run._caller_monitor]
    run.cancel("the test is over")
    await eventually(lambda: not agent.runs, what="the run cancelled")


async def test_a_call_answered_in_time_is_not_cancelled_by_its_demonitor(
    erl: BeamNode, py_node: Node, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "quick", '#{model => <<"test">>}')
    got = await term(
        erl,
        "A = {quick, 'py@127.0.0.1'},"
        ' Outs = [begin {ok, R} = gen_server:call(A, {run, <<"hi">>}, 10000), maps:get(output, R) end'
        "  || _ <- lists:seq(1, 20)],"
        " {lists:usort(Outs), gen_server:call(A, info)}",
    )
    assert isinstance(got, tuple)
    assert got[0] == [b"success (no tool calls)"]
    assert got[1][1][Atom("runs")] == 0
    assert ended(run_log) == ["ok"] * 20


async def test_python_call_that_times_out_cancels_its_run(
    erl: BeamNode, py_node: Node, blocking: Blocking, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "slow", '#{model => <<"blocking">>}')
    with pytest.raises(CallTimeout):
        await py_node.call(Atom("slow"), (Atom("run"), "hi"), timeout=0.2)
    registry = registry_of(py_node)
    await eventually(lambda: registry.limits.in_flight == 0, what="the run cancelled")
    assert blocking.cancelled == blocking.started
    assert len(ended(run_log)) == 1 and ended(run_log)[0].startswith("cancelled (the caller")


# ---------------------------------------------------------------------------------------------
# create_agent/4: if_exists and owner


async def test_if_exists_error_keep_and_replace(erl: BeamNode, py_node: Node) -> None:
    registry_of(py_node).models.register("other", registry_of(py_node).models.get("test"))
    got = await term(
        erl,
        f"R = {REG}, A = {{bot, {PY}}},"
        ' Spec1 = #{model => <<"test">>}, Spec2 = #{model => <<"other">>},'
        " C1 = gen_server:call(R, {create_agent, bot, Spec1, #{}}),"
        " C2 = gen_server:call(R, {create_agent, bot, Spec2, #{if_exists => error}}),"
        " C3 = gen_server:call(R, {create_agent, bot, Spec1}),"
        " C4 = gen_server:call(R, {create_agent, bot, Spec2, #{if_exists => keep}}),"
        " {ok, #{model := M4}} = gen_server:call(A, info),"
        ' C5 = gen_server:call(R, {create_agent, bot, Spec2, #{<<"if_exists">> => replace}}),'
        " {ok, #{model := M5}} = gen_server:call(A, info),"
        " {ok, List} = gen_server:call(R, list_agents),"
        " {C1, element(1, element(2, C2)), element(1, element(2, C3)), C4, M4, C5, M5, length(List)}",
    )
    assert got == (
        (Atom("ok"), Atom("bot")),
        Atom("already_exists"),
        Atom("already_exists"),
        (Atom("ok"), Atom("bot")),
        b"test",
        (Atom("ok"), Atom("bot")),
        b"other",
        1,
    )


async def test_bad_create_options_and_names_held_by_other_processes(erl: BeamNode, py_node: Node) -> None:
    got = await term(
        erl,
        f'R = {REG}, Spec = #{{model => <<"test">>}},'
        " [gen_server:call(R, Req) || Req <- ["
        "   {create_agent, bot, Spec, #{if_exists => overwrite}},"
        "   {create_agent, bot, Spec, #{owner => not_a_pid}},"
        "   {create_agent, bot, Spec, #{colour => blue}},"
        "   {create_agent, bot, Spec, [if_exists]},"
        '   {create_agent, <<"bot">>, Spec, #{}},'
        "   {create_agent, bot, #{}, #{if_exists => keep}},"
        "   {create_agent, net_kernel, Spec, #{if_exists => replace}},"
        "   {create_agent, pynode, Spec, #{if_exists => keep}}]]",
    )
    assert isinstance(got, list)
    kinds = [reply[1][0] for reply in got]
    assert kinds == [Atom("bad_request")] * 5 + [Atom("bad_spec"), Atom("already_exists"), Atom("already_exists")]
    assert b"if_exists must be error, replace or keep" in got[0][1][1]
    assert b"owner must be a pid" in got[1][1][1]
    assert registry_of(py_node).agents == {}
    assert py_node.whereis("net_kernel") is not None


async def test_replace_with_an_unavailable_model_keeps_the_old_agent(erl: BeamNode, py_node: Node) -> None:
    await create(erl, "bot", '#{model => <<"test">>}')
    got = await term(
        erl,
        f'{{error, {{Kind, _}}}} = gen_server:call({REG}, {{create_agent, bot, #{{model => <<"nope:x">>}},'
        " #{if_exists => replace}}),"
        f' {{ok, R}} = gen_server:call({{bot, {PY}}}, {{run, <<"hi">>}}), {{Kind, maps:get(output, R)}}',
    )
    assert got == (Atom("model_unavailable"), b"success (no tool calls)")


async def test_replace_cancels_the_old_runs_before_the_old_agent_goes(
    erl: BeamNode, py_node: Node, blocking: Blocking, run_log: pytest.LogCaptureFixture
) -> None:
    await create(erl, "bot", '#{model => <<"blocking">>}')
    got = await term(
        erl,
        f"A = {{bot, {PY}}}, Mon = monitor(process, A),"
        ' {ok, Ref} = gen_server:call(A, {start_run, <<"x">>, #{events => false}}),'
        " Self = self(),"
        # A synchronous caller on the old agent: its gen_server:call monitors the agent too.
        ' spawn(fun() -> Self ! {sync, catch gen_server:call(A, {run, <<"y">>}, 20000)} end),'
        " Two = fun W(0) -> timeout; W(N) -> case gen_server:call(A, info) of"
        "   {ok, #{runs := 2}} -> ok; _ -> timer:sleep(20), W(N - 1) end end, ok = Two(250),"
        f' Created = gen_server:call({REG}, {{create_agent, bot, #{{model => <<"test">>}},'
        " #{if_exists => replace}}),"
        " First = receive {pynode_result, Ref, R} -> {result, R}; {'DOWN', Mon, _, _, D} -> {down, D}"
        "   after 10000 -> timeout end,"
        " Second = receive {pynode_result, Ref, R2} -> {result, R2}; {'DOWN', Mon, _, _, D2} -> {down, D2}"
        "   after 10000 -> timeout end,"
        " Sync = receive {sync, S} -> S after 10000 -> timeout end,"
        ' {ok, New} = gen_server:call(A, {run, <<"hi">>}),'
        " {Created, First, Second, Sync, maps:get(output, New)}",
    )
    cancelled = (Atom("error"), (Atom("cancelled"), b"agent bot was replaced"))
    assert got == (
        (Atom("ok"), Atom("bot")),
        (Atom("result"), cancelled),
        (Atom("down"), Atom("shutdown")),
        cancelled,  # the synchronous caller got its reply, not an exit from the agent's DOWN
        b"success (no tool calls)",
    )
    assert blocking.cancelled == blocking.started
    assert sorted(ended(run_log)) == ["cancelled (agent bot was replaced)"] * 2 + ["ok"]


async def test_delete_answers_every_run_before_the_agent_down_elixir(
    py_node: Node, beam: BeamFactory, blocking: Blocking
) -> None:
    """The case a monitoring caller used to lose: a GenServer.call that saw the agent's DOWN first."""
    ex = await beam("ex1", kind="elixir")
    await ex.eval(f'GenServer.call({{:pynode, {EX_PY}}}, {{:create_agent, :doomed, %{{model: "blocking"}}}})')
    got = await term(
        ex,
        f"agent = {{:doomed, {EX_PY}}}; me = self();"
        " callers = for i <- 1..5, do: spawn(fn ->"
        ' send(me, {:heard, i, (try do GenServer.call(agent, {:run, "x", %{}}, 20_000)'
        " catch :exit, reason -> {:exit, reason} end)}) end);"
        " Enum.reduce_while(1..500, nil, fn _, _ -> case GenServer.call(agent, :info) do"
        " {:ok, %{runs: 5}} -> {:halt, :ok}; _ -> Process.sleep(20); {:cont, nil} end end);"
        f" deleted = GenServer.call({{:pynode, {EX_PY}}}, {{:delete_agent, :doomed}});"
        " heard = for i <- 1..length(callers), do: (receive do {:heard, ^i, r} -> r after 10_000 -> :timeout end);"
        " gone = try do GenServer.call(agent, :info) catch :exit, {reason, _} -> reason end;"
        " {deleted, heard, gone}",
    )
    cancelled = (Atom("error"), (Atom("cancelled"), b"agent doomed was deleted"))
    assert isinstance(got, tuple)
    assert got[0] == Atom("ok")
    assert got[1] == [cancelled] * 5
    assert got[2] == Atom("noproc")
    assert blocking.cancelled == blocking.started  # every model request that began was stopped
    assert "doomed" not in registry_of(py_node).agents


async def test_an_owned_agent_goes_when_its_owner_exits(
    erl: BeamNode, py_node: Node, blocking: Blocking, run_log: pytest.LogCaptureFixture
) -> None:
    got = await term(
        erl,
        f"R = {REG}, Self = self(),"
        " Owner = spawn(fun() -> receive stop -> ok end end),"
        ' {ok, owned} = gen_server:call(R, {create_agent, owned, #{model => <<"blocking">>}, #{owner => Owner}}),'
        ' {ok, free} = gen_server:call(R, {create_agent, free, #{model => <<"test">>}, #{}}),'
        f" A = {{owned, {PY}}}, Mon = monitor(process, A),"
        ' {ok, Ref} = gen_server:call(A, {start_run, <<"x">>, #{events => false}}),'
        " One = fun W(0) -> timeout; W(N) -> case gen_server:call(A, info) of"
        "   {ok, #{runs := 1}} -> ok; _ -> timer:sleep(20), W(N - 1) end end, ok = One(250),"
        " Owner ! stop,"
        " First = receive {pynode_result, Ref, Res} -> {result, Res}; {'DOWN', Mon, _, _, D} -> {down, D}"
        "   after 10000 -> timeout end,"
        " Second = receive {'DOWN', Mon, _, _, D2} -> {down, D2} after 10000 -> timeout end,"
        " {ok, List} = gen_server:call(R, list_agents),"
        " {First, Second, [maps:get(name, I) || I <- List]}",
    )
    assert isinstance(got, tuple)
    first, second, names = got
    assert first[0] == Atom("result")
    assert first[1][1][0] == Atom("cancelled")
    assert first[1][1][1] == b"agent owned was deleted: its owner exited (normal)"
    assert second == (Atom("down"), Atom("shutdown"))
    assert names == [Atom("free")]
    assert registry_of(py_node).owners == {}


async def test_an_owned_agent_goes_when_its_owners_node_disconnects(
    erl: BeamNode, py_node: Node, beam: BeamFactory
) -> None:
    ex = await beam("ex2", kind="elixir")
    created = await ex.eval(
        "owner = spawn(fn -> Process.sleep(:infinity) end);"
        f' GenServer.call({{:pynode, {EX_PY}}}, {{:create_agent, :app_bot, %{{model: "test"}},'
        " %{if_exists: :replace, owner: owner}})"
    )
    assert created == "{:ok, :app_bot}"
    assert len(registry_of(py_node).owners) == 1
    # Restarted, the app creates it again with keep: it is there, owned as before.
    kept = await ex.eval(
        f'GenServer.call({{:pynode, {EX_PY}}}, {{:create_agent, :app_bot, %{{model: "test"}}, %{{if_exists: :keep}}}})'
    )
    assert kept == "{:ok, :app_bot}"
    assert "app_bot" in registry_of(py_node).agents
    ex.kill()
    await ex.wait()
    await eventually(lambda: "app_bot" not in registry_of(py_node).agents, what="the owned agent deleted")
    assert py_node.whereis("app_bot") is None
    assert await erl.eval(f"gen_server:call({REG}, list_agents)") == "{ok,[]}"
    assert registry_of(py_node).owners == {}


async def test_replacing_an_owned_agent_drops_the_old_owner(erl: BeamNode, py_node: Node) -> None:
    got = await term(
        erl,
        f"R = {REG}, O1 = spawn(fun() -> receive stop -> ok end end),"
        " O2 = spawn(fun() -> receive stop -> ok end end),"
        ' {ok, bot} = gen_server:call(R, {create_agent, bot, #{model => <<"test">>}, #{owner => O1}}),'
        ' {ok, bot} = gen_server:call(R, {create_agent, bot, #{model => <<"test">>, system_prompt => <<"v2">>},'
        "   #{owner => O2, if_exists => replace}}),"
        " O1 ! stop, timer:sleep(200),"
        " {ok, L1} = gen_server:call(R, list_agents),"
        " O2 ! stop,"
        " Gone = fun W(0) -> timeout; W(N) -> case gen_server:call(R, list_agents) of"
        "   {ok, []} -> ok; _ -> timer:sleep(20), W(N - 1) end end,"
        " {length(L1), Gone(250)}",
    )
    assert got == (1, Atom("ok"))


WHERE_TOOL = """
-module(where_tool).
-export([where/1]).
where(_Args) -> atom_to_binary(node()).
"""

SHARED_SPEC = (
    '#{model => <<"test">>, tools => [#{name => <<"where">>, description => <<"Where the tool runs">>,'
    " parameters => #{type => object, properties => #{}}, handler => {where_tool, where}}]}"
)


async def test_an_agent_two_nodes_declare_is_shared_and_goes_with_its_last_owner(
    erl: BeamNode, py_node: Node, beam: BeamFactory, tmp_path: Path
) -> None:
    # The same app on two BEAM nodes creates the same agent, each with an owner of its own.
    apps = [await beam("app_a"), await beam("app_b")]
    declare = (
        "register(owner, spawn(fun() -> receive stop -> ok end end)),"
        f" gen_server:call({REG}, {{create_agent, shared, {SHARED_SPEC},"
        " #{owner => whereis(owner), if_exists => replace}})"
    )
    for app in apps:
        await load_erlang(app, tmp_path, WHERE_TOOL, "where_tool")
        assert await app.eval(declare) == "{ok,shared}"
    registry = registry_of(py_node)
    agent = registry.agents["shared"]
    assert len(registry.limits.owners["shared"]) == 2
    run = f'{{ok, #{{output := O}}}} = gen_server:call({{shared, {PY}}}, {{run, <<"where?">>, #{{}}}}), O'

    async def runs_on() -> str:
        output = await term(erl, run)
        assert isinstance(output, bytes | str)
        return output.decode() if isinstance(output, bytes) else output

    # The second create replaced nothing: the same agent, its tool on its creator's node.
    assert apps[0].name in await runs_on()
    # The first app's node goes: the agent stays, and its tool runs on the other owner's node.
    apps[0].kill()
    await apps[0].wait()
    await eventually(lambda: len(registry.limits.owners.get("shared", [])) == 1, what="one owner left")
    assert registry.agents["shared"] is agent
    assert apps[1].name in await runs_on()
    # A different spec replaces it, and the new owner alone owns the new agent.
    await apps[1].eval(
        "register(owner2, spawn(fun() -> receive stop -> ok end end)),"
        f' {{ok, shared}} = gen_server:call({REG}, {{create_agent, shared, #{{model => <<"test">>}},'
        " #{owner => whereis(owner2), if_exists => replace}})"
    )
    assert registry.agents["shared"] is not agent
    assert len(registry.limits.owners["shared"]) == 1
    await apps[1].eval("owner ! stop, owner2 ! stop")
    await eventually(lambda: "shared" not in registry.agents, what="the agent gone with its last owner")
    assert registry.owners == {}


async def test_node_shutdown_answers_every_run_before_the_agents_go(
    erl: BeamNode, py_node: Node, blocking: Blocking
) -> None:
    await create(erl, "slow", '#{model => <<"blocking">>}')
    await erl.eval(
        f"A = {{slow, {PY}}}, Self = self(),"
        " register(watcher, spawn(fun() -> Mon = monitor(process, A),"
        '   {ok, Ref} = gen_server:call(A, {start_run, <<"x">>, #{events => false}}),'
        "   Self ! started,"
        "   Hear = fun() -> receive {pynode_result, Ref, R} -> {result, R}; {'DOWN', Mon, _, _, D} -> {down, D}"
        "     after 15000 -> silence end end,"
        "   First = Hear(), Second = Hear(), receive {get, To} -> To ! {heard, First, Second} end end)),"
        " receive started -> ok after 5000 -> exit(not_started) end"
    )
    await registry_of(py_node).shutdown()
    await py_node.stop()
    got = await term(erl, "watcher ! {get, self()}, receive {heard, F, S} -> {F, S} after 20000 -> timeout end", 30)
    assert got == (
        (Atom("result"), (Atom("error"), (Atom("cancelled"), b"the node is shutting down"))),
        (Atom("down"), Atom("noconnection")),
    )


# ---------------------------------------------------------------------------------------------
# events => false


async def test_events_false_gives_the_caller_only_the_result(erl: BeamNode, py_node: Node) -> None:
    await create(erl, "talker", '#{model => <<"test">>}')
    got = await term(
        erl,
        "A = {talker, 'py@127.0.0.1'}, Self = self(),"
        " Hear = fun L(Ref, Acc) -> receive {pynode_event, Ref, E} -> L(Ref, [E | Acc]);"
        "   {pynode_result, Ref, R} -> {length(Acc), element(1, R)} after 10000 -> timeout end end,"
        ' {ok, Quiet} = gen_server:call(A, {start_run, <<"hi">>, #{events => false}}),'
        " QuietHeard = Hear(Quiet, []),"
        # stream_to still asks for the events; the caller still hears only the result.
        " Listener = spawn(fun() -> Acc = fun L(N) -> receive {pynode_event, _, _} -> L(N + 1);"
        "   {count, To} -> To ! {listened, N} end end, Acc(0) end),"
        ' {ok, Streamed} = gen_server:call(A, {start_run, <<"hi">>, #{events => false, stream_to => Listener}}),'
        " StreamedHeard = Hear(Streamed, []),"
        " Listener ! {count, Self}, Listened = receive {listened, N} -> N after 5000 -> timeout end,"
        ' {ok, Loud} = gen_server:call(A, {start_run, <<"hi">>, #{<<"events">> => true}}),'
        " {QuietHeard, StreamedHeard, Listened, Hear(Loud, [])}",
    )
    assert isinstance(got, tuple)
    quiet, streamed, listened, loud = got
    assert quiet == (0, Atom("ok"))
    assert streamed == (0, Atom("ok"))
    assert isinstance(listened, int) and listened > 1
    assert loud == (listened, Atom("ok"))
