"""BEAM tools as a pydantic-ai toolset, run by real agents on scripted models; dispatch is the seam."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.exceptions import UnexpectedModelBehavior
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pynode.bridge.errors import BridgeError
from pynode.bridge.spec import ToolSpec
from pynode.bridge.tools import ToolFailed, ToolOk, ToolReply, ToolRetry, beam_toolset, parse_tool_reply
from pynode.etf.types import Atom, Pid

WEATHER = ToolSpec(
    name="weather",
    description="The weather in a city now.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "minLength": 2}},
        "required": ["city"],
        "additionalProperties": False,
    },
)


class Recorder:
    """A dispatcher that records calls and answers from a script."""

    def __init__(self, *replies: ToolReply | BaseException) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
        self.calls.append((tool.name, call_id, args))
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply


def tool_returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [
        part
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    ]


def calling(*args_per_call: dict[str, Any]) -> tuple[FunctionModel, list[AgentInfo]]:
    """A model that calls `weather` once per given args (ids call-1, call-2...), then answers in text."""
    seen: list[AgentInfo] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(info)
        step = len(seen)
        if step <= len(args_per_call):
            return ModelResponse(parts=[ToolCallPart("weather", args_per_call[step - 1], f"call-{step}")])
        returns = tool_returns(messages)
        if not returns:
            return ModelResponse(parts=[TextPart("no tool was called")])
        return ModelResponse(parts=[TextPart(f"{returns[-1].outcome}: {returns[-1].content}")])

    return FunctionModel(respond), seen


async def run(model: FunctionModel, dispatch: Recorder, **agent_options: Any) -> Any:
    agent = Agent(model, **agent_options)
    return await agent.run("Weather in Paris?", toolsets=[beam_toolset([WEATHER], dispatch)])


# --- parse_tool_reply -------------------------------------------------------------------------


def test_ok_reply_value_becomes_json() -> None:
    reply = parse_tool_reply((Atom("ok"), {Atom("temp"): 21, b"sky": b"clear", b"wind": Atom("nil")}))
    assert reply == ToolOk({"temp": 21, "sky": "clear", "wind": None})


def test_ok_reply_with_atom_and_list() -> None:
    assert parse_tool_reply((Atom("ok"), [Atom("sunny"), 1.5])) == ToolOk(["sunny", 1.5])


def test_error_reply() -> None:
    assert parse_tool_reply((Atom("error"), b"no such city")) == ToolFailed("no such city")
    assert parse_tool_reply((Atom("error"), Atom("not_found"))) == ToolFailed("not_found")
    assert parse_tool_reply((Atom("error"), list(b"charlist"))) == ToolFailed("charlist")
    assert parse_tool_reply((Atom("error"), {Atom("code"): 404})) == ToolFailed('{"code": 404}')


def test_retry_reply() -> None:
    assert parse_tool_reply((Atom("retry"), b"use a capital city")) == ToolRetry("use a capital city")


@pytest.mark.parametrize(
    "term",
    [
        Atom("ok"),
        (Atom("ok"),),
        (Atom("ok"), 1, 2),
        (b"ok", 1),
        (Atom("maybe"), 1),
        [Atom("ok"), 1],
        (Atom("ok"), Pid(Atom("a@b"), 1, 0, 1)),
    ],
)
def test_other_replies_are_bad_request(term: Any) -> None:
    with pytest.raises(BridgeError) as exc:
        parse_tool_reply(term)
    assert exc.value.kind == "bad_request"


# --- the toolset in real runs -----------------------------------------------------------------


async def test_model_sees_the_tool_with_its_schema() -> None:
    model, seen = calling()
    await run(model, Recorder())
    (tool,) = seen[0].function_tools
    assert tool.name == "weather"
    assert tool.description == "The weather in a city now."
    assert tool.parameters_json_schema == WEATHER.parameters


async def test_ok_value_goes_to_the_model() -> None:
    model, _ = calling({"city": "Paris"})
    dispatch = Recorder(ToolOk({"temp": 21}))
    result = await run(model, dispatch)
    assert dispatch.calls == [("weather", "call-1", {"city": "Paris"})]
    (ret,) = tool_returns(result.all_messages())
    assert ret.content == {"temp": 21}
    assert ret.tool_call_id == "call-1"
    assert result.output == "success: {'temp': 21}"


async def test_invalid_arguments_are_retried_before_any_dispatch() -> None:
    model, _ = calling({"city": 5}, {"town": "Paris"}, {"city": "Paris"})
    dispatch = Recorder(ToolOk("sunny"))
    result = await run(model, dispatch, retries=2)
    assert dispatch.calls == [("weather", "call-3", {"city": "Paris"})]
    first, second, third = tool_returns(result.all_messages())
    assert first.outcome == "retried"
    assert "$.city: 5 is not of type 'string'" in str(first.content)
    assert second.outcome == "retried"
    assert "'city' is a required property" in str(second.content)
    assert third.content == "sunny"


async def test_too_many_invalid_calls_end_the_run() -> None:
    model, _ = calling({"city": "P"}, {"city": "P"}, {"city": "P"})
    dispatch = Recorder()
    with pytest.raises(UnexpectedModelBehavior):
        await run(model, dispatch, retries=1)
    assert dispatch.calls == []


async def test_failure_is_told_to_the_model_and_the_run_goes_on() -> None:
    model, _ = calling({"city": "Atlantis"})
    result = await run(model, Recorder(ToolFailed("no such city")))
    (ret,) = tool_returns(result.all_messages())
    assert ret.outcome == "failed"
    assert ret.content == "no such city"
    assert result.output == "failed: no such city"


async def test_retry_asks_the_model_to_call_again() -> None:
    model, _ = calling({"city": "Paris, TX"}, {"city": "Paris"})
    dispatch = Recorder(ToolRetry("which Paris? give a country"), ToolOk(18))
    result = await run(model, dispatch)
    first, second = tool_returns(result.all_messages())
    assert first.outcome == "retried"
    assert "which Paris? give a country" in str(first.content)
    assert second.content == 18
    assert len(dispatch.calls) == 2


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RuntimeError("handler node went away"), "RuntimeError: handler node went away"),
        (BridgeError("tool_error", "the handler exited"), "the handler exited"),
    ],
)
async def test_dispatch_exception_is_a_tool_failure(error: Exception, expected: str) -> None:
    model, _ = calling({"city": "Paris"})
    result = await run(model, Recorder(error))
    (ret,) = tool_returns(result.all_messages())
    assert ret.outcome == "failed"
    assert expected in str(ret.content)
    assert result.output.startswith("failed: tool 'weather' failed")


async def test_cancellation_goes_through_and_leaves_nothing_running() -> None:
    started = asyncio.Event()

    async def never_answers(tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
        started.set()
        await asyncio.Future()
        raise AssertionError("unreachable")

    model, _ = calling({"city": "Paris"})
    before = asyncio.all_tasks()
    task = asyncio.create_task(Agent(model).run("x", toolsets=[beam_toolset([WEATHER], never_answers)]))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()
