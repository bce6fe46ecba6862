"""Conversations as terms (docs/protocol.md section 4, ``messages_as``): stored and passed back without JSON."""

from __future__ import annotations

import json

import pytest
from agent_support import PY, REG, registry_of, term
from beam import BeamFactory, BeamNode
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pynode.etf.types import Atom, Term
from pynode.node import Node

pytestmark = pytest.mark.beam


EX_PY = ':"py@127.0.0.1"'


class Recorder:
    """A model that answers with how many requests it has seen, and keeps what each one held."""

    def __init__(self) -> None:
        self.seen: list[list[ModelMessage]] = []

    def model(self) -> FunctionModel:
        def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            self.seen.append(list(messages))
            return ModelResponse(parts=[TextPart(f"answer {len(self.seen)}")])

        return FunctionModel(respond)

    def prompts(self, index: int) -> list[str]:
        """The user prompts the model saw in request ``index``, oldest first."""
        return [
            part.content
            for message in self.seen[index]
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, UserPromptPart) and isinstance(part.content, str)
        ]


def is_message_list(value: Term) -> bool:
    """A list of maps whose keys are all binaries, as ``messages_as => terms`` promises."""
    return isinstance(value, list) and all(isinstance(m, dict) and all(isinstance(k, bytes) for k in m) for m in value)


async def test_elixir_round_trip_of_a_conversation_as_terms(py_node: Node, beam: BeamFactory) -> None:
    recorder = Recorder()
    registry_of(py_node).models.register("recorder", recorder.model())
    ex = await beam("ex1", kind="elixir")
    created = await ex.eval(f'GenServer.call({{:pynode, {EX_PY}}}, {{:create_agent, :chat, %{{model: "recorder"}}}})')
    assert created == "{:ok, :chat}"
    # The Elixir app keeps the conversation as plain terms (an Agent holds them here), with no JSON library.
    got = await term(
        ex,
        f"agent = {{:chat, {EX_PY}}};"
        " {:ok, store} = Agent.start_link(fn -> [] end);"
        ' {:ok, r1} = GenServer.call(agent, {:run, "my name is Ada", %{messages_as: :terms}});'
        " Agent.update(store, fn _ -> r1.messages end);"
        ' {:ok, r2} = GenServer.call(agent, {:run, "what is my name?",'
        "   %{messages_as: :terms, message_history: Agent.get(store, & &1)}});"
        # The history goes back as the JSON binary too, when the app asks for JSON.
        ' {:ok, r3} = GenServer.call(agent, {:run, "and again?", %{message_history: r2.messages}});'
        ' kinds = Enum.map(r2.messages, fn m -> m["kind"] end);'
        " {r1.messages, r2.messages, r2.new_messages, kinds, r2.output, is_binary(r3.messages), r3.output}",
    )
    assert isinstance(got, tuple)
    first, second, new, kinds, output2, json_again, output3 = got
    assert is_message_list(first) and is_message_list(second) and is_message_list(new)
    assert kinds == [b"request", b"response", b"request", b"response"]
    assert len(second) == len(first) + len(new) and second[: len(first)] == first
    assert (output2, output3, json_again) == (b"answer 2", b"answer 3", True)
    # The model saw the stored history.
    assert recorder.prompts(1) == ["my name is Ada", "what is my name?"]
    assert recorder.prompts(2) == ["my name is Ada", "what is my name?", "and again?"]
    assert recorder.seen[1][1] == recorder.seen[2][1]  # the first answer, as it was


async def test_terms_are_what_the_json_says(erl: BeamNode, py_node: Node) -> None:
    """The terms are pydantic-ai's JSON dump as terms: binary keys and strings, numbers, nil, lists."""
    created = await erl.eval(f'gen_server:call({REG}, {{create_agent, chat, #{{model => <<"test">>}}}})')
    assert created == "{ok,chat}"
    got = await term(
        erl,
        f"A = {{chat, {PY}}},"
        ' {ok, R} = gen_server:call(A, {run, <<"hello">>, #{messages_as => terms}}),'
        " #{messages := M, new_messages := N} = R,"
        ' {ok, J} = gen_server:call(A, {run, <<"hello">>, #{message_history => M}}),'
        " {M, N, maps:get(new_messages, J)}",
    )
    assert isinstance(got, tuple)
    messages, new, json_new = got
    assert messages == new  # a run without history: all of it is new
    assert is_message_list(messages)
    as_json = json.loads(json_new)
    assert [m["kind"] for m in as_json] == ["request", "response"]
    # The same dump, term for term, once strings are binaries and null is nil.
    parsed = ModelMessagesTypeAdapter.validate_python(_plain(messages))
    assert [type(m) for m in parsed] == [ModelRequest, ModelResponse]
    assert isinstance(parsed[0].parts[0], UserPromptPart) and parsed[0].parts[0].content == "hello"


async def test_bad_history_lists_are_refused(erl: BeamNode) -> None:
    created = await erl.eval(f'gen_server:call({REG}, {{create_agent, chat, #{{model => <<"test">>}}}})')
    assert created == "{ok,chat}"
    got = await term(
        erl,
        f"A = {{chat, {PY}}},"
        ' [gen_server:call(A, {run, <<"x">>, #{message_history => H}}) || H <- ['
        '   [#{<<"kind">> => <<"nonsense">>}], [1, 2], [#{<<"kind">> => self()}]]]',
    )
    assert isinstance(got, list)
    assert [reply[1][0] for reply in got] == [Atom("bad_request")] * 3
    assert b"is not the messages of an earlier Result" in got[0][1][1]
    assert b"must be the messages of a Result" in got[1][1][1]
    assert b"message_history" in got[2][1][1]


def _plain(term: Term) -> object:
    """Terms as the JSON values they stand for (binaries to str, nil to None)."""
    if isinstance(term, bytes):
        return term.decode()
    if isinstance(term, list):
        return [_plain(t) for t in term]
    if isinstance(term, dict):
        return {_plain(k): _plain(v) for k, v in term.items()}
    if term == Atom("nil"):
        return None
    return term
