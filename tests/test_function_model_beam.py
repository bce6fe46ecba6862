"""Models scripted from the BEAM: ``model => {function, Fun}`` (docs/protocol.md section 3).

The fun lives on the erl node, as an ExUnit test's would; the node calls it for every model
request, with the conversation as terms and what the model is offered.
"""

from __future__ import annotations

import pytest
from agent_support import COUNT_TOOL
from beam import BeamNode

from pynode.etf import decode
from pynode.etf.types import Atom, Reference, Term
from pynode.testing.script import ScriptedModel, output, text, tool_call

pytestmark = pytest.mark.beam

A = Atom
AGENT = ("shop", "py@127.0.0.1")
REGISTRY = ("pynode", "py@127.0.0.1")
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


async def create(erl: BeamNode, spec: dict[Term, Term]) -> Term:
    return await erl.call(REGISTRY, (A("create_agent"), A("shop"), spec, {A("if_exists"): A("replace")}))


def parts(messages: Term, kind: bytes) -> list[dict[bytes, Term]]:
    assert isinstance(messages, list)
    return [p for m in messages if isinstance(m, dict) for p in m[b"parts"] if p[b"part_kind"] == kind]  # type: ignore[union-attr]


async def test_a_scripted_tool_call_then_text(erl: BeamNode) -> None:
    script = await ScriptedModel.start(erl, [tool_call("count", {"a": 1, "b": 2}), text("two keys")])
    assert await create(erl, {A("model"): script.model, A("tools"): [COUNT_TOOL]}) == (A("ok"), A("shop"))
    got = await erl.call(AGENT, (A("run"), "how many?", {A("messages_as"): A("terms")}))
    assert isinstance(got, tuple) and got[0] == A("ok"), got
    result = got[1]
    assert isinstance(result, dict)
    assert result[A("output")] == b"two keys"
    first, second = await script.requests()
    # What the model was offered: the tool, its schema, text output allowed.
    assert isinstance(first.info, dict)
    tools = first.info[A("tools")]
    assert isinstance(tools, list) and [t[A("name")] for t in tools] == [b"count"]  # type: ignore[index]
    assert tools[0][A("parameters")][b"properties"][b"a"] == {b"type": b"integer"}  # type: ignore[index]
    assert (first.info[A("text_output")], first.info[A("output_schema")]) == (True, A("nil"))
    # The first request held the prompt; the second the tool's return (maps:size of the args).
    assert [p[b"content"] for p in parts(first.messages, b"user-prompt")] == [b"how many?"]
    assert [(p[b"tool_name"], p[b"content"]) for p in parts(second.messages, b"tool-return")] == [(b"count", 2)]
    assert parts(result[A("messages")], b"tool-call")[0][b"args"] == {b"a": 1, b"b": 2}


async def test_scripted_structured_output_is_validated(erl: BeamNode) -> None:
    script = await ScriptedModel.start(erl, [output({"n": "three"}), output({"n": 3})])
    assert await create(erl, {A("model"): script.model, A("output_schema"): SCHEMA}) == (A("ok"), A("shop"))
    got = await erl.call(AGENT, (A("run"), "count"))
    assert isinstance(got, tuple) and got[0] == A("ok"), got
    assert got[1][A("output")] == {b"n": 3}  # type: ignore[index]
    first, second = await script.requests()
    assert isinstance(first.info, dict)
    assert first.info[A("output_schema")] == {
        b"type": b"object",
        b"properties": {b"n": {b"type": b"integer"}},
        b"required": [b"n"],
    }
    assert first.info[A("text_output")] is False
    # The wrong first answer went back to the model as a retry, saying what was wrong.
    (retry,) = parts(second.messages, b"tool-return")
    assert retry[b"outcome"] == b"retried" and b"'three' is not of type 'integer'" in retry[b"content"]  # type: ignore[operator]


async def test_a_streamed_run_sends_the_scripted_chunks(erl: BeamNode) -> None:
    script = await ScriptedModel.start(erl, [text(["Hel", "lo ", "there"])])
    assert await create(erl, {A("model"): script.model}) == (A("ok"), A("shop"))
    started = await erl.call(AGENT, (A("start_run"), "hi", {}))
    assert isinstance(started, tuple) and started[0] == A("ok")
    ref = started[1]
    assert isinstance(ref, Reference)
    deltas: list[Term] = []
    for _ in range(20):
        message = await erl.receive(timeout=10)
        assert isinstance(message, tuple) and message[1] == ref
        if message[0] == A("pynode_result"):
            assert message[2][0] == A("ok") and message[2][1][A("output")] == b"Hello there"  # type: ignore[index]
            break
        if message[2][0] == A("text_delta"):  # type: ignore[index]
            deltas.append(message[2][1])  # type: ignore[index]
    assert deltas == [b"Hel", b"lo ", b"there"]


async def test_a_turn_can_be_a_fun_and_a_run_past_the_script_fails(erl: BeamNode) -> None:
    counted = await erl.eval_term("fun(Messages, _Info) -> {text, integer_to_binary(length(Messages))} end")
    script = await ScriptedModel.start(erl, [decode(counted)])
    assert await create(erl, {A("model"): script.model}) == (A("ok"), A("shop"))
    assert (await erl.call(AGENT, (A("run"), "hi")))[1][A("output")] == b"1"  # type: ignore[index]
    got = await erl.call(AGENT, (A("run"), "again"))
    assert isinstance(got, tuple) and got[0] == A("error"), got
    kind, message = got[1]  # type: ignore[misc]
    assert kind == A("model_error")
    assert b"script_has_no_turn,2" in message, message


async def test_a_fun_that_raises_or_answers_nonsense_fails_the_run(erl: BeamNode) -> None:
    for fun, expected in [
        ("fun(_, _) -> erlang:error(boom) end", b"raised boom"),
        ("fun(_, _) -> {nonsense} end", b"returned {nonsense}; expected a binary"),
    ]:
        model = (A("function"), decode(await erl.eval_term(fun)))
        assert await create(erl, {A("model"): model}) == (A("ok"), A("shop"))
        got = await erl.call(AGENT, (A("run"), "hi"))
        assert isinstance(got, tuple) and got[0] == A("error"), got
        assert got[1][0] == A("model_error") and expected in got[1][1], got  # type: ignore[index,operator]


async def test_a_function_model_needs_a_fun_of_arity_two(erl: BeamNode) -> None:
    for bad in [A("nope"), decode(await erl.eval_term("fun(X) -> X end"))]:
        got = await create(erl, {A("model"): (A("function"), bad)})
        assert isinstance(got, tuple) and got[0] == A("error"), got
        assert got[1][0] == A("bad_spec") and b"fun of arity 2" in got[1][1], got  # type: ignore[index,operator]
    # An export of arity 2 is called on the caller's node, here as a run's model: erlang:max/2 of
    # the messages (a list) and the info (a map) is the list of messages, which is no response.
    assert await create(erl, {A("model"): "test"}) == (A("ok"), A("shop"))
    exported = (A("function"), decode(await erl.eval_term("fun erlang:max/2")))
    got = await erl.call(AGENT, (A("run"), "hi", {A("model"): exported}))
    assert isinstance(got, tuple) and got[0] == A("error"), got
    assert got[1][0] == A("model_error") and b"the function model returned #{" in got[1][1], got  # type: ignore[index,operator]
