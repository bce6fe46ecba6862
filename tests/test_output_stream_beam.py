"""Structured output as it streams, and ``output_schema => text`` for one run (docs/protocol.md sections 4 and 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from agent_support import PY, REG, registry_of, term
from beam import BeamFactory, BeamNode
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from pynode.etf.types import Atom, Term
from pynode.node import Node

pytestmark = pytest.mark.beam


SCHEMA = (
    '#{<<"type">> => <<"object">>,'
    ' <<"properties">> => #{<<"city">> => #{<<"type">> => <<"string">>},'
    '   <<"temp">> => #{<<"type">> => <<"integer">>},'
    '   <<"tags">> => #{<<"type">> => <<"array">>, <<"items">> => #{<<"type">> => <<"string">>}}},'
    ' <<"required">> => [<<"city">>, <<"temp">>]}'
)

PIECES = ['{"city": "Pa', 'ris", "te', 'mp": 21, "tags": ["sun', 'ny", "dry"', "]}"]

# Collects a run's stream: {Events in arrival order, Result}; the receive is bounded.
COLLECT = (
    "Collect = fun Loop(Ref, Acc) -> receive"
    " {pynode_event, Ref, E} -> Loop(Ref, [E | Acc]);"
    " {pynode_result, Ref, R} -> {lists:reverse(Acc), R}"
    " after 15000 -> {lists:reverse(Acc), timeout} end end,"
)


def piecewise_output(pieces: list[str]) -> FunctionModel:
    """A model that writes its output tool's arguments in ``pieces``, as a provider streams them."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[DeltaToolCalls]:
        assert info.output_tools, "this model answers only runs with an output schema"
        name = info.output_tools[0].name
        for i, piece in enumerate(pieces):
            first = i == 0
            call = DeltaToolCall(name=name if first else None, json_args=piece, tool_call_id="out" if first else None)
            yield {0: call}

    return FunctionModel(stream_function=stream)


def of_kind(events: Term, kind: str) -> list[Term]:
    assert isinstance(events, list)
    return [e[1] for e in events if isinstance(e, tuple) and e[0] == Atom(kind)]


async def test_output_delta_events_grow_to_the_output(erl: BeamNode, py_node: Node) -> None:
    registry_of(py_node).models.register("piecewise", piecewise_output(PIECES))
    created = await erl.eval(
        f'gen_server:call({REG}, {{create_agent, weather, #{{model => <<"piecewise">>, output_schema => {SCHEMA}}}}})'
    )
    assert created == "{ok,weather}"
    got = await term(
        erl,
        COLLECT + f'{{ok, Ref}} = gen_server:call({{weather, {PY}}}, {{start_run, <<"go">>, #{{}}}}), Collect(Ref, [])',
    )
    assert isinstance(got, tuple)
    events, result = got
    assert isinstance(result, tuple) and result[0] == Atom("ok")
    output = result[1][Atom("output")]
    assert output == {b"city": b"Paris", b"temp": 21, b"tags": [b"sunny", b"dry"]}
    partials = of_kind(events, "output_delta")
    assert partials == [
        {b"city": b"Pa"},  # an unfinished string is kept as far as it goes
        {b"city": b"Paris"},  # an unfinished key ("te") is left out
        {b"city": b"Paris", b"temp": 21, b"tags": [b"sun"]},
        {b"city": b"Paris", b"temp": 21, b"tags": [b"sunny", b"dry"]},
    ]
    assert partials[-1] == output
    assert of_kind(events, "text_delta") == []
    assert len(events) == len(partials)  # every event of this run is an output_delta


async def test_output_delta_from_elixir_with_test_model(py_node: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    schema = '%{"type" => "object", "properties" => %{"n" => %{"type" => "integer"}}, "required" => ["n"]}'
    created = await ex.eval(
        'GenServer.call({:pynode, :"py@127.0.0.1"},'
        f' {{:create_agent, :counter, %{{model: "test", output_schema: {schema}}}}})'
    )
    assert created == "{:ok, :counter}"
    got = await term(
        ex,
        '{:ok, ref} = GenServer.call({:counter, :"py@127.0.0.1"}, {:start_run, "count", %{}});'
        " collect = fn collect, acc -> receive do"
        " {:pynode_event, ^ref, e} -> collect.(collect, [e | acc]);"
        " {:pynode_result, ^ref, r} -> {Enum.reverse(acc), r}"
        " after 15_000 -> {Enum.reverse(acc), :timeout} end end;"
        " collect.(collect, [])",
    )
    assert isinstance(got, tuple)
    events, result = got
    assert isinstance(result, tuple) and result[0] == Atom("ok")
    partials = of_kind(events, "output_delta")
    assert partials and partials[-1] == result[1][Atom("output")]
    assert isinstance(partials[-1], dict) and isinstance(partials[-1][b"n"], int)


async def test_output_schema_text_turns_the_schema_off_for_one_run(erl: BeamNode, py_node: Node) -> None:
    registry_of(py_node).models.register("piecewise", piecewise_output(PIECES))
    created = await erl.eval(
        f'gen_server:call({REG}, {{create_agent, weather, #{{model => <<"test">>, output_schema => {SCHEMA}}}}})'
    )
    assert created == "{ok,weather}"
    got = await term(
        erl,
        COLLECT + f"A = {{weather, {PY}}},"
        ' {ok, Ref} = gen_server:call(A, {start_run, <<"go">>, #{output_schema => text}}),'
        " Text = Collect(Ref, []),"
        ' {ok, Plain} = gen_server:call(A, {run, <<"go">>, #{<<"output_schema">> => <<"text">>}}),'
        # The next run has the agent's schema again.
        ' {ok, Structured} = gen_server:call(A, {run, <<"go">>}),'
        " {Text, maps:get(output, Plain), maps:get(output, Structured)}",
    )
    assert isinstance(got, tuple)
    (events, result), plain, structured = got
    assert isinstance(result, tuple) and result[0] == Atom("ok")
    text = result[1][Atom("output")]
    assert isinstance(text, bytes) and text == plain
    assert b"".join(of_kind(events, "text_delta")) == text
    assert of_kind(events, "output_delta") == []
    assert isinstance(structured, dict) and set(structured) >= {b"city", b"temp"}


async def test_output_schema_text_on_a_python_agent_with_an_output_model(erl: BeamNode, py_node: Node) -> None:
    from pydantic import BaseModel
    from pydantic_ai import Agent
    from pydantic_ai.models.test import TestModel

    from pynode.bridge.runner import AgentDefinition

    class Forecast(BaseModel):
        city: str
        temp: int

    agent: Agent[None, Forecast] = Agent(TestModel(), output_type=Forecast, name="forecaster")
    registry_of(py_node).add_agent(
        AgentDefinition(name="forecaster", agent=agent, spec=None, origin="python", model_name="test")
    )
    got = await term(
        erl,
        f"A = {{forecaster, {PY}}},"
        ' {ok, S} = gen_server:call(A, {run, <<"go">>}),'
        ' {ok, T} = gen_server:call(A, {run, <<"go">>, #{output_schema => text}}),'
        " {maps:get(output, S), maps:get(output, T)}",
    )
    assert isinstance(got, tuple)
    structured, text = got
    assert isinstance(structured, dict) and set(structured) == {b"city", b"temp"}
    assert text == b"success (no tool calls)"
