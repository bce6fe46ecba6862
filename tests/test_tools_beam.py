"""BEAM tools as an Elixir or Erlang developer writes them (docs/protocol.md sections 3, 4, 5 and 8).

Real erl and elixir nodes define the functions, create the agents and make the runs; a scripted
model (pydantic-ai's FunctionModel) makes the tool calls and keeps what it was sent, so each test
checks what the model received as well as what the BEAM side saw.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agent_support import PY, REG, load_erlang, registry_of, term
from beam import BeamFactory, BeamNode
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from pynode.etf.decode import decode
from pynode.etf.types import Atom, Term
from pynode.node import Node
from pynode.testing import script as scripted_models

pytestmark = pytest.mark.beam


EX_REG = '{:pynode, :"py@127.0.0.1"}'


@dataclass
class Scripted:
    """A model that makes one step's tool calls per request, then answers ``done``; it keeps what it got.

    ``steps[n]`` are the calls of the n-th request of a run: ``(tool, args)`` pairs, made at once.
    """

    steps: list[list[tuple[str, dict[str, Any]]]] = field(default_factory=list)
    seen: list[tuple[list[ModelMessage], AgentInfo]] = field(default_factory=list)

    def model(self) -> FunctionModel:
        return FunctionModel(self._respond, stream_function=self._stream)

    def _calls(self, messages: list[ModelMessage], info: AgentInfo) -> list[tuple[str, str, dict[str, Any]]]:
        self.seen.append((messages, info))
        step = sum(1 for m in messages if isinstance(m, ModelResponse))
        calls = self.steps[step] if step < len(self.steps) else []
        return [(f"s{step}c{i}", name, args) for i, (name, args) in enumerate(calls)]

    def _respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls = self._calls(messages, info)
        if not calls:
            return ModelResponse(parts=[TextPart("done")])
        return ModelResponse(parts=[ToolCallPart(name, args, call_id) for call_id, name, args in calls])

    async def _stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        calls = self._calls(messages, info)
        if not calls:
            yield "done"
            return
        yield {
            i: DeltaToolCall(name, json.dumps(args), tool_call_id=call_id)
            for i, (call_id, name, args) in enumerate(calls)
        }

    def returns(self) -> dict[str, ToolReturnPart]:
        """What the model was told of each tool call, by the model's call id."""
        messages, _ = self.seen[-1]
        return {
            part.tool_call_id: part
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        }

    @property
    def last_info(self) -> AgentInfo:
        return self.seen[-1][1]


def scripted(py_node: Node, name: str, *steps: list[tuple[str, dict[str, Any]]]) -> Scripted:
    script = Scripted(list(steps))
    registry_of(py_node).models.register(name, script.model())
    return script


def by_model_id(events: list[Term]) -> dict[str, list[tuple[str, Term]]]:
    """The tool events of a run, by the model's call id (the wire id is ``<model id>.<run>``)."""
    out: dict[str, list[tuple[str, Term]]] = {}
    for event in events:
        assert isinstance(event, tuple)
        kind = str(event[0])
        if kind in ("tool_call", "tool_result", "tool_error"):
            call_id = event[3].decode()
            out.setdefault(call_id.split(".")[0], []).append((kind, event))
    return out


# An Elixir process collecting a run's events but text deltas, then its result (bounded).
EX_COLLECT = """
collect = fn collect, ref, acc ->
  receive do
    {:pynode_event, ^ref, {:text_delta, _}} -> collect.(collect, ref, acc)
    {:pynode_event, ^ref, e} -> collect.(collect, ref, [e | acc])
    {:pynode_result, ^ref, r} -> {Enum.reverse(acc), r}
  after 20_000 -> {Enum.reverse(acc), :timeout}
  end
end
"""

# --- 1. what an {M, F} tool returns -----------------------------------------------------------

SHOP_EX = """
defmodule Shop do
  def find(%{"item" => "apple"}) do
    {:ok, %{price: 3, at: ~U[2024-01-02 03:04:05Z], tags: MapSet.new([:fresh]), opts: [organic: true],
            cost: %{__struct__: Decimal, sign: 1, coef: 125, exp: -2}}}
  end
  def find(%{"item" => "pear"}), do: {:error, "not found"}
  def find(%{"item" => "plum"}), do: {:error, {:out_of_stock, 3}}
  def find(%{"item" => "fig"}), do: {:retry, "say which fig"}
  def find(%{"item" => "kiwi"}), do: [1, 2]
  def find(%{"item" => "lime"}), do: raise(ArgumentError, "no limes today")
  def find(%{"item" => "date"}), do: {:ok, self()}
end
"""

FIND_PARAMS_EX = '%{"type" => "object", "properties" => %{"item" => %{"type" => "string"}}, "required" => ["item"]}'
ITEMS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date"]


def ex_spec(model: str, tool: str, params: str, handler: str) -> str:
    """An Elixir agent spec with one tool."""
    return f'%{{model: "{model}", tools: [%{{name: "{tool}", parameters: {params}, handler: {handler}}}]}}'


def shop_calls(items: list[str]) -> list[tuple[str, dict[str, Any]]]:
    return [("find", {"item": item}) for item in items]


async def test_elixir_tool_returns_reach_the_model_as_elixir_means_them(py_node: Node, beam: BeamFactory) -> None:
    script = scripted(py_node, "shop_model", shop_calls(ITEMS))
    ex = await beam("ex1", kind="elixir")
    await ex.eval(SHOP_EX)
    spec = ex_spec("shop_model", "find", FIND_PARAMS_EX, "{Shop, :find}")
    assert await ex.eval(f"GenServer.call({EX_REG}, {{:create_agent, :shop, {spec}}})") == "{:ok, :shop}"
    got = await term(
        ex,
        EX_COLLECT + '{:ok, ref} = GenServer.call({:shop, :"py@127.0.0.1"}, {:start_run, "shop", %{}});'
        " collect.(collect, ref, [])",
        timeout=30,
    )
    assert isinstance(got, tuple)
    events, result = got
    assert isinstance(result, tuple) and result[0] == Atom("ok"), result
    assert result[1][Atom("output")] == b"done"

    told = {call_id: (part.outcome, part.content) for call_id, part in script.returns().items()}
    item_of = {f"s0c{i}": item for i, item in enumerate(ITEMS)}
    told_by_item = {item_of[call_id]: outcome_content for call_id, outcome_content in told.items()}
    assert told_by_item["apple"] == (
        "success",
        {
            "price": 3,
            "at": "2024-01-02T03:04:05Z",
            "tags": ["fresh"],
            "opts": {"organic": True},
            "cost": "1.25",
        },
    )
    assert told_by_item["pear"] == ("failed", "not found")
    assert told_by_item["plum"] == ("failed", "{out_of_stock,3}")
    assert told_by_item["fig"] == ("retried", "say which fig")
    assert told_by_item["kiwi"] == ("success", [1, 2])
    outcome, lime = told_by_item["lime"]
    assert outcome == "failed"
    assert lime == "Shop.find/1 on node ex1@127.0.0.1 raised ArgumentError: no limes today"
    outcome, date = told_by_item["date"]
    assert outcome == "failed" and "no JSON form" in date and "the pid" in date

    # The events: every call a tool_call, then a tool_result if it returned, else a tool_error with
    # the message the model was told; never both.
    seen = by_model_id(events)
    assert set(seen) == set(item_of)
    for call_id, item in item_of.items():
        kinds = [kind for kind, _ in seen[call_id]]
        outcome, content = told[call_id]
        if outcome == "success":
            assert kinds == ["tool_call", "tool_result"], item
        else:
            assert kinds == ["tool_call", "tool_error"], item
            _, (_, name, message, _) = seen[call_id][1]
            assert name == b"find" and message.decode() == content, item


SHOP_ERL = """
-module(shop_erl).
-export([find/1, prompt/1]).
find(#{<<"item">> := <<"apple">>}) -> {ok, #{price => 3, tags => [fresh]}};
find(#{<<"item">> := <<"pear">>}) -> {error, <<"not found">>};
find(#{<<"item">> := <<"plum">>}) -> {error, {http, 404}};
find(#{<<"item">> := <<"fig">>}) -> {retry, "say which fig"};
find(#{<<"item">> := <<"kiwi">>}) -> [{a, 1}, {b, <<"x">>}];
find(#{<<"item">> := <<"lime">>}) -> error(badarg);
find(#{<<"item">> := <<"date">>}) -> throw(no_dates);
find(#{<<"item">> := <<"yam">>}) -> exit(gone).
prompt(#{<<"user">> := User}) -> [<<"You help ">>, User, $.];
prompt(#{}) -> "You help nobody.".
"""


async def test_erlang_tool_returns_from_a_synchronous_run(py_node: Node, erl: BeamNode, tmp_path: Path) -> None:
    items = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "yam"]
    script = scripted(py_node, "shop_model", shop_calls(items))
    await load_erlang(erl, tmp_path, SHOP_ERL, "shop_erl")
    params = '#{<<"type">> => <<"object">>, <<"properties">> => #{<<"item">> => #{<<"type">> => <<"string">>}}}'
    tool = f'#{{name => <<"find">>, parameters => {params}, handler => {{shop_erl, find}}}}'
    spec = f'#{{model => <<"shop_model">>, tools => [{tool}]}}'
    assert await erl.eval(f"gen_server:call({REG}, {{create_agent, shop, {spec}}})") == "{ok,shop}"
    got = await erl.eval(f'{{ok, R}} = gen_server:call({{shop, {PY}}}, {{run, <<"x">>}}, 20000), maps:get(output, R)')
    assert got == '<<"done">>'
    told = {int(k.removeprefix("s0c")): (p.outcome, p.content) for k, p in script.returns().items()}
    by_item = {items[i]: v for i, v in told.items()}
    assert by_item["apple"] == ("success", {"price": 3, "tags": ["fresh"]})
    assert by_item["pear"] == ("failed", "not found")
    assert by_item["plum"] == ("failed", "{http,404}")
    assert by_item["fig"] == ("retried", "say which fig")
    assert by_item["kiwi"] == ("success", {"a": 1, "b": "x"})
    assert by_item["lime"] == ("failed", "shop_erl:find/1 on node e1@127.0.0.1 raised badarg")
    assert by_item["date"] == ("failed", "shop_erl:find/1 on node e1@127.0.0.1 threw no_dates")
    assert by_item["yam"] == ("failed", "shop_erl:find/1 on node e1@127.0.0.1 exited: gone")


# --- 2. the home node -------------------------------------------------------------------------

WEATHER_EX = """
defmodule Weather do
  def lookup(%{"city" => city}), do: {:ok, %{city: city, node: node(), temp: 21}}
end
"""

CITY_PARAMS_EX = '%{"type" => "object", "properties" => %{"city" => %{"type" => "string"}}, "required" => ["city"]}'
CITY_PARAMS_ERL = (
    '#{<<"type">> => <<"object">>, <<"properties">> => #{<<"city">> => #{<<"type">> => <<"string">>}},'
    ' <<"required">> => [<<"city">>]}'
)


def weather_spec_erl(handler: str) -> str:
    return (
        f'#{{model => <<"test">>, tools => [#{{name => <<"weather">>, parameters => {CITY_PARAMS_ERL},'
        f" handler => {handler}}}]}}"
    )


async def test_function_tools_run_on_the_home_node_or_the_named_one(erl: BeamNode, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(WEATHER_EX)
    spec = ex_spec("test", "weather", CITY_PARAMS_EX, "{Weather, :lookup}")
    assert await ex.eval(f"GenServer.call({EX_REG}, {{:create_agent, :weather, {spec}}})") == "{:ok, :weather}"
    assert await erl.eval("code:which('Elixir.Weather')") == "non_existing"  # the caller lacks the module

    run = f'{{ok, R}} = gen_server:call({{weather, {PY}}}, {{run, <<"Weather?">>}}, 20000), maps:get(output, R)'
    from_erl = json.loads(decode(await erl.eval_term(run)))
    assert from_erl == {"weather": {"city": "a", "node": "ex1@127.0.0.1", "temp": 21}}

    # {M, F, Node}: the agent's creator (e1) names the node the function lives on.
    named = weather_spec_erl("{'Elixir.Weather', lookup, 'ex1@127.0.0.1'}")
    assert await erl.eval(f"gen_server:call({REG}, {{create_agent, weather_on_ex1, {named}}})") == "{ok,weather_on_ex1}"
    from_named = json.loads(decode(await erl.eval_term(run.replace("{weather,", "{weather_on_ex1,"))))
    assert from_named["weather"]["node"] == "ex1@127.0.0.1"

    # {M, F} runs on the creator's node, not the caller's: e1 creates it, lacks the module, and
    # ex1 (which has it) makes the run; the model is told where it failed.
    here = weather_spec_erl("{'Elixir.Weather', lookup}")
    assert await erl.eval(f"gen_server:call({REG}, {{create_agent, weather_here, {here}}})") == "{ok,weather_here}"
    messages = await ex.eval(
        '{:ok, r} = GenServer.call({:weather_here, :"py@127.0.0.1"}, {:run, "Weather?"}, 20_000); r.messages'
    )
    assert "Weather.lookup/1 is not defined on node e1@127.0.0.1" in messages


async def test_create_agent_4_records_the_home_node_too(erl: BeamNode, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(WEATHER_EX)
    spec = ex_spec("test", "weather", CITY_PARAMS_EX, "{Weather, :lookup}")
    for _ in range(2):  # created, then replaced: both times by ex1
        created = await ex.eval(
            f"GenServer.call({EX_REG}, {{:create_agent, :weather, {spec}, %{{if_exists: :replace}}}})"
        )
        assert created == "{:ok, :weather}"
    run = f'{{ok, R}} = gen_server:call({{weather, {PY}}}, {{run, <<"Weather?">>}}, 20000), maps:get(output, R)'
    assert json.loads(decode(await erl.eval_term(run)))["weather"]["node"] == "ex1@127.0.0.1"


async def test_a_home_node_that_is_gone_fails_the_tool_and_the_run_goes_on(erl: BeamNode, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(WEATHER_EX)
    spec = ex_spec("test", "weather", CITY_PARAMS_EX, "{Weather, :lookup}")
    assert await ex.eval(f"GenServer.call({EX_REG}, {{:create_agent, :weather, {spec}}})") == "{:ok, :weather}"
    await ex.stop()
    got = await term(
        erl,
        f'{{ok, Ref}} = gen_server:call({{weather, {PY}}}, {{start_run, <<"Weather?">>, #{{}}}}),'
        " Loop = fun L(Acc) -> receive"
        "   {pynode_event, Ref, {text_delta, _}} -> L(Acc);"
        "   {pynode_event, Ref, E} -> L([E | Acc]);"
        "   {pynode_result, Ref, R} -> {lists:reverse(Acc), R}"
        " after 20000 -> {lists:reverse(Acc), timeout} end end,"
        " Loop([])",
        timeout=30,
    )
    assert isinstance(got, tuple)
    events, result = got
    assert isinstance(result, tuple) and result[0] == Atom("ok"), result
    kinds = [str(e[0]) for e in events]
    assert kinds == ["tool_call", "tool_error"]
    _, name, message, _ = events[1]
    assert name == b"weather"
    assert message.decode().startswith("Weather.lookup/1 could not run: node ex1@127.0.0.1 is not connected")
    assert message in result[1][Atom("messages")]  # the model was told


SLOW_EX = """
defmodule Slow do
  def wait(_args) do
    Process.register(self(), :slow_tool)
    Process.sleep(60_000)
  end
end
"""


async def test_a_home_node_lost_during_the_call_fails_the_tool_and_the_run_goes_on(
    erl: BeamNode, beam: BeamFactory
) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(SLOW_EX)
    spec = ex_spec("test", "slow", CITY_PARAMS_EX, "{Slow, :wait}")
    assert await ex.eval(f"GenServer.call({EX_REG}, {{:create_agent, :slow, {spec}}})") == "{:ok, :slow}"
    # A caller that outlives the evaluation: it starts the run, collects its events and keeps the outcome.
    started = await erl.eval(
        "spawn(fun() ->"
        f' {{ok, Ref}} = gen_server:call({{slow, {PY}}}, {{start_run, <<"go">>, #{{}}}}),'
        " Loop = fun L(Acc) -> receive"
        "   {pynode_event, Ref, {text_delta, _}} -> L(Acc);"
        "   {pynode_event, Ref, E} -> L([E | Acc]);"
        "   {pynode_result, Ref, R} -> {lists:reverse(Acc), R}"
        " after 20000 -> {lists:reverse(Acc), timeout} end end,"
        " persistent_term:put(outcome, Loop([])) end), ok"
    )
    assert started == "ok"
    polled = await ex.eval(
        "wait = fn w, n -> case Process.whereis(:slow_tool) do\n"
        "  nil when n > 0 -> Process.sleep(20); w.(w, n - 1)\n"
        "  pid -> is_pid(pid) end end\n"
        "wait.(wait, 500)"
    )
    assert polled == "true"  # the tool runs on ex1, the agent's home
    ex.kill()
    await ex.wait()
    got = await term(
        erl,
        "Wait = fun W(0) -> timeout; W(N) -> case persistent_term:get(outcome, pending) of"
        " pending -> timer:sleep(50), W(N - 1); Outcome -> Outcome end end, Wait(400)",
        timeout=30,
    )
    assert isinstance(got, tuple)
    events, result = got
    assert isinstance(result, tuple) and result[0] == Atom("ok"), result
    assert [str(e[0]) for e in events] == ["tool_call", "tool_error"]
    assert events[1][2] == b"Slow.wait/1 could not finish: node ex1@127.0.0.1 disconnected"


# --- 3. dynamic instructions ------------------------------------------------------------------

PROMPTS_EX = """
defmodule Prompts do
  def system(deps), do: "You help #{deps["user"]} (#{map_size(deps)} deps)."
  def broken(_deps), do: raise("no prompt today")
  def number(_deps), do: 42
end
"""


async def test_instructions_from_elixir_are_called_with_the_deps_before_each_run(
    py_node: Node, beam: BeamFactory
) -> None:
    script = scripted(py_node, "listener")
    ex = await beam("ex1", kind="elixir")
    await ex.eval(PROMPTS_EX)
    spec = '%{model: "listener", instructions: ["Be brief.", {Prompts, :system}]}'
    assert await ex.eval(f"GenServer.call({EX_REG}, {{:create_agent, :helper, {spec}}})") == "{:ok, :helper}"
    agent = '{:helper, :"py@127.0.0.1"}'

    async def instructions_of(opts: str) -> str:
        reply = await ex.eval(f'{{:ok, _}} = GenServer.call({agent}, {{:run, "hi", {opts}}}, 20_000); :ok')
        assert reply == ":ok"
        text = script.last_info.instructions
        assert text is not None
        return text

    with_ada = await instructions_of('%{deps: %{user: "ada"}}')
    assert "Be brief." in with_ada and "You help ada (1 deps)." in with_ada
    assert with_ada.index("Be brief.") < with_ada.index("You help ada")
    assert "You help  (0 deps)." in await instructions_of("%{}")  # no deps: #{}
    with_extra = await instructions_of('%{deps: %{"user" => "bob", "n" => 2}, instructions: "Extra."}')
    assert "You help bob (2 deps)." in with_extra and "ada" not in with_extra
    assert with_extra.index("You help bob") < with_extra.index("Extra.")


async def test_instructions_from_erlang_may_be_iolists(py_node: Node, erl: BeamNode, tmp_path: Path) -> None:
    script = scripted(py_node, "listener")
    await load_erlang(erl, tmp_path, SHOP_ERL, "shop_erl")
    spec = '#{model => <<"listener">>, instructions => {shop_erl, prompt}}'
    assert await erl.eval(f"gen_server:call({REG}, {{create_agent, helper, {spec}}})") == "{ok,helper}"
    run = f'element(1, gen_server:call({{helper, {PY}}}, {{run, <<"hi">>, #{{deps => #{{user => <<"eve">>}}}}}}))'
    assert await erl.eval(run) == "ok"
    assert script.last_info.instructions == "You help eve."
    assert await erl.eval(f'element(1, gen_server:call({{helper, {PY}}}, {{run, <<"hi">>}}))') == "ok"
    assert script.last_info.instructions == "You help nobody."


async def test_failing_instructions_fail_the_run_with_tool_error(erl: BeamNode, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(PROMPTS_EX)
    for name, fun in [("broken", ":broken"), ("number", ":number"), ("missing", ":missing"), ("gone", ":system")]:
        spec = f'%{{model: "test", instructions: {{Prompts, {fun}}}}}'
        created = await ex.eval(f"GenServer.call({EX_REG}, {{:create_agent, :{name}, {spec}}})")
        assert created == f"{{:ok, :{name}}}"

    async def run(name: str) -> str:
        return await erl.eval(f'gen_server:call({{{name}, {PY}}}, {{run, <<"hi">>}}, 20000)')

    assert await run("broken") == (
        '{error,{tool_error,<<"instructions Prompts.broken/1 on node ex1@127.0.0.1'
        ' raised RuntimeError: no prompt today">>}}'
    )
    assert await run("number") == (
        '{error,{tool_error,<<"instructions Prompts.number/1 on node ex1@127.0.0.1'
        ' returned 42, not a binary or an iolist">>}}'
    )
    assert await run("missing") == (
        '{error,{tool_error,<<"instructions Prompts.missing/1 is not defined on node ex1@127.0.0.1">>}}'
    )
    await ex.stop()
    gone = await run("gone")
    assert gone.startswith(
        '{error,{tool_error,<<"instructions Prompts.system/1 could not run: node ex1@127.0.0.1 is not connected'
    )


async def test_instructions_that_are_not_text_or_functions_are_bad_specs(erl: BeamNode) -> None:
    for bad in ["{prompts}", '[<<"a">>, {prompts, system, other}]', '[<<"a">>, 42]', "{1, 2}"]:
        spec = f'#{{model => <<"test">>, instructions => {bad}}}'
        got = await erl.eval(f"gen_server:call({REG}, {{create_agent, a, {spec}}})")
        assert got.startswith('{error,{bad_spec,<<"instructions'), (bad, got)


# --- 4. tools for one run ---------------------------------------------------------------------

ASK_SPEC_EX = f'%{{name: "ask", description: "Ask the caller", parameters: {CITY_PARAMS_EX}}}'


async def test_run_tools_go_to_the_start_run_caller_for_that_run_only(py_node: Node, beam: BeamFactory) -> None:
    script = scripted(py_node, "asker_model", [("ask", {"city": "Oslo"})])
    ex = await beam("ex1", kind="elixir")
    assert await ex.eval(f'GenServer.call({EX_REG}, {{:create_agent, :asker, %{{model: "asker_model"}}}})') == (
        "{:ok, :asker}"
    )
    got = await term(
        ex,
        f"""
        agent = {{:asker, :"py@127.0.0.1"}}
        {{:ok, ref}} = GenServer.call(agent, {{:start_run, "hi", %{{tools: [{ASK_SPEC_EX}]}}}})
        call = receive do {{:pynode_tool_call, ^ref, c}} -> c after 20_000 -> :timeout end
        send(call.reply_to, {{:tool_result, call.call_id, {{:ok, %{{sunny: true, on: ~D[2024-05-01]}}}}}})
        result = receive do {{:pynode_result, ^ref, r}} -> r after 20_000 -> :timeout end
        {{:ok, info}} = GenServer.call(agent, :info)
        {{call.name, call.args, elem(result, 0), info.tools}}
        """,
        timeout=30,
    )
    assert got == (b"ask", {b"city": b"Oslo"}, Atom("ok"), [])
    first_info = script.seen[0][1]
    assert [t.name for t in first_info.function_tools] == ["ask"]
    assert first_info.function_tools[0].description == "Ask the caller"
    told = [(p.outcome, p.content) for p in script.returns().values()]
    assert told == [("success", {"sunny": True, "on": "2024-05-01"})]
    # The next run has no such tool.
    script.steps = []
    assert await ex.eval('elem(GenServer.call({:asker, :"py@127.0.0.1"}, {:run, "hi"}), 0)') == ":ok"
    assert script.last_info.function_tools == []


async def test_run_tools_with_handlers_in_a_synchronous_run(py_node: Node, beam: BeamFactory) -> None:
    script = scripted(py_node, "shop_model", [("find", {"item": "apple"}), ("ask", {"city": "Rome"})])
    ex = await beam("ex1", kind="elixir")
    await ex.eval(SHOP_EX)
    assert await ex.eval(f'GenServer.call({EX_REG}, {{:create_agent, :shop, %{{model: "shop_model"}}}})') == (
        "{:ok, :shop}"
    )
    got = await ex.eval(
        f"""
        handler = spawn(fn ->
          receive do
            {{:pynode_tool_call, _ref, %{{call_id: id, reply_to: to, args: %{{"city" => city}}}}}} ->
              send(to, {{:tool_result, id, {{:ok, "sunny in " <> city}}}})
          after 20_000 -> :ok
          end
        end)
        tools = [%{{name: "find", parameters: {FIND_PARAMS_EX}, handler: {{Shop, :find}}}}, {ASK_SPEC_EX}]
        opts = %{{tools: tools, tool_handler: handler}}
        {{:ok, r}} = GenServer.call({{:shop, :"py@127.0.0.1"}}, {{:run, "hi", opts}}, 20_000)
        r.output
        """
    )
    assert got == '"done"'
    told = {p.tool_name: (p.outcome, p.content) for p in script.returns().values()}
    assert told["ask"] == ("success", "sunny in Rome")
    assert told["find"][0] == "success" and told["find"][1]["cost"] == "1.25"


async def test_runs_whose_tool_calls_nobody_could_answer_are_refused(erl: BeamNode, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    assert await ex.eval(f'GenServer.call({EX_REG}, {{:create_agent, :plain, %{{model: "test"}}}})') == (
        "{:ok, :plain}"
    )
    agent = '{:plain, :"py@127.0.0.1"}'

    async def refused(opts: str) -> str:
        got = await term(ex, f'GenServer.call({agent}, {{:run, "hi", {opts}}}, 20_000)', timeout=30)
        assert isinstance(got, tuple) and got[0] == Atom("error"), got
        kind, message = got[1]
        assert kind == Atom("bad_request"), got
        return message.decode()

    orphan = await refused(f"%{{tools: [{ASK_SPEC_EX}]}}")
    assert "ask" in orphan and "no handler" in orphan and "tool_handler" in orphan
    self_handler = await refused(f"%{{tools: [{ASK_SPEC_EX}], tool_handler: self()}}")
    assert "tool_handler is the calling process" in self_handler
    own_pid = await refused(f'%{{tools: [%{{name: "ask", parameters: {CITY_PARAMS_EX}, handler: self()}}]}}')
    assert "ask" in own_pid and "is the calling process" in own_pid
    bad_spec = await refused("%{tools: [%{name: 42}]}")
    assert "tools[0].name" in bad_spec
    twice = await refused(f"%{{tools: [{ASK_SPEC_EX}, {ASK_SPEC_EX}]}}")
    assert "two tools are named 'ask'" in twice

    # A name the agent's own tools already have.
    spec = weather_spec_erl("{'Elixir.Weather', lookup}").replace("weather", "ask", 1)
    assert await erl.eval(f"gen_server:call({REG}, {{create_agent, asker, {spec}}})") == "{ok,asker}"
    clash = await erl.eval(
        f'gen_server:call({{asker, {PY}}}, {{start_run, <<"hi">>, #{{tools => [#{{name => <<"ask">>}}]}}}})'
    )
    assert clash == "{error,{bad_request,<<\"the run's tool 'ask' has the name of one of the agent's tools\">>}}"

    # start_run may serve its own tools: nothing is refused there.
    started = await ex.eval(f'elem(GenServer.call({agent}, {{:start_run, "hi", %{{tools: [{ASK_SPEC_EX}]}}}}), 0)')
    assert started == ":ok"


# --- 5. errors read as Erlang -----------------------------------------------------------------


async def test_error_messages_show_terms_in_erlang_syntax(erl: BeamNode, beam: BeamFactory) -> None:
    assert await erl.eval(f'gen_server:call({REG}, {{create_agent, plain, #{{model => <<"test">>}}}})') == (
        "{ok,plain}"
    )
    agent = f"{{plain, {PY}}}"
    timeout = await erl.eval(f'gen_server:call({agent}, {{run, <<"x">>, #{{timeout => <<"soon">>}}}})')
    assert timeout == '{error,{bad_request,<<"timeout must be an integer, got <<\\"soon\\">>">>}}'
    retries = await erl.eval(f'gen_server:call({REG}, {{create_agent, a, #{{model => <<"test">>, retries => ok}}}})')
    assert retries == '{error,{bad_spec,<<"retries must be an integer, got ok">>}}'
    handler = await erl.eval(
        f'gen_server:call({REG}, {{create_agent, a, #{{model => <<"test">>,'
        ' tools => [#{name => <<"t">>, handler => {1, <<"x">>}}]}})'
    )
    assert handler.startswith("{error,{bad_spec,") and '{1,<<\\"x\\">>}' in handler
    owner = await erl.eval(f'gen_server:call({agent}, {{run, <<"x">>, #{{deps => #{{owner => self()}}}}}})')
    assert owner.startswith('{error,{bad_request,<<"deps: the pid ') and owner.endswith(
        ' at $.owner has no JSON form">>}}'
    )
    unknown = await erl.eval(f'gen_server:call({agent}, {{frobnicate, [1, {{a, <<"b">>}}]}})')
    assert unknown == ('{error,{bad_request,<<"agent plain does not understand {frobnicate,[1,{a,<<\\"b\\">>}]}">>}}')
    ex = await beam("ex1", kind="elixir")
    stream_to = await ex.eval('GenServer.call({:plain, :"py@127.0.0.1"}, {:run, "x", %{stream_to: "me"}})')
    assert stream_to.startswith("{:error, {:bad_request,") and '<<\\"me\\"' in stream_to
    for text in (timeout, retries, handler, owner, unknown, stream_to):
        assert "b'" not in text and "Atom(" not in text and "Pid(" not in text


async def test_a_bad_tool_reply_is_answered_in_erlang_syntax(erl: BeamNode) -> None:
    spec = f'#{{model => <<"test">>, tools => [#{{name => <<"ask">>, parameters => {CITY_PARAMS_ERL}}}]}}'
    assert await erl.eval(f"gen_server:call({REG}, {{create_agent, asker, {spec}}})") == "{ok,asker}"
    got = await term(
        erl,
        f'{{ok, Ref}} = gen_server:call({{asker, {PY}}}, {{start_run, <<"x">>, #{{}}}}),'
        " #{call_id := Id} = receive {pynode_tool_call, Ref, C} -> C after 20000 -> timeout end,"
        f' Reply = gen_server:call({{asker, {PY}}}, {{tool_result, Id, {{maybe, <<"so">>}}}}),'
        " Loop = fun L(Acc) -> receive"
        "   {pynode_event, Ref, {text_delta, _}} -> L(Acc);"
        "   {pynode_event, Ref, E} -> L([E | Acc]);"
        "   {pynode_result, Ref, R} -> {lists:reverse(Acc), element(1, R)}"
        " after 20000 -> {lists:reverse(Acc), timeout} end end,"
        " {Reply, Loop([])}",
        timeout=30,
    )
    assert isinstance(got, tuple)
    reply, (events, result) = got
    assert reply == (
        Atom("error"),
        (
            Atom("bad_request"),
            b'a tool reply must be {ok, Value}, {error, Message} or {retry, Message}, got {maybe,<<"so">>}',
        ),
    )
    assert result == Atom("ok")  # the model was told, the run went on
    assert [str(e[0]) for e in events] == ["tool_call", "tool_error"]
    _, name, message, _ = events[1]
    assert name == b"ask" and message.startswith(b"the tool handler sent an invalid reply: a tool reply must be")


CTX_ERL = """
-module(ctx_erl).
-export([both/2, one/1]).
both(Args, Ctx) -> {ok, #{args => Args, ctx => maps:with([deps, agent, trace_context], Ctx),
                          ids => {is_binary(maps:get(run_id, Ctx)), is_binary(maps:get(call_id, Ctx))}}}.
one(Args) -> {ok, #{args => Args}}.
"""


async def test_function_tools_of_arity_two_get_the_run_context(erl: BeamNode, tmp_path: Path) -> None:
    """``M:F(Args, Ctx)`` when ``M`` exports ``F/2`` (docs/protocol.md section 3); else ``M:F(Args)``."""
    await load_erlang(erl, tmp_path, CTX_ERL, "ctx_erl")
    script = await scripted_models.ScriptedModel.start(
        erl,
        [
            [scripted_models.tool_call("both", {"q": 1}, "c1"), scripted_models.tool_call("one", {"q": 2}, "c2")],
            scripted_models.text("done"),
        ],
    )
    tools = [
        {Atom("name"): name, Atom("parameters"): {"type": "object"}, Atom("handler"): (Atom("ctx_erl"), Atom(name))}
        for name in ("both", "one")
    ]
    created = await erl.call(
        ("pynode", "py@127.0.0.1"),
        (Atom("create_agent"), Atom("ctx"), {Atom("model"): script.model, Atom("tools"): tools}),
    )
    assert created == (Atom("ok"), Atom("ctx"))
    got = await erl.call(("ctx", "py@127.0.0.1"), (Atom("run"), "go", {Atom("deps"): {Atom("user"): "ada"}}))
    assert isinstance(got, tuple) and got[0] == Atom("ok"), got
    _, second = await script.requests()
    returns = {
        p[b"tool_name"]: p[b"content"]  # type: ignore[index]
        for m in second.messages  # type: ignore[union-attr]
        for p in m[b"parts"]  # type: ignore[index]
        if p[b"part_kind"] == b"tool-return"  # type: ignore[index]
    }
    assert returns[b"both"] == {
        b"args": {b"q": 1},
        b"ctx": {b"deps": {b"user": b"ada"}, b"agent": b"ctx", b"trace_context": []},
        b"ids": [True, True],
    }
    assert returns[b"one"] == {b"args": {b"q": 2}}
