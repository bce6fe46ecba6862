"""One run from prompt and options to the Result term, with real pydantic-ai runs on offline models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import (
    ConcurrencyLimitExceeded,
    ModelAPIError,
    ModelConnectionError,
    ModelHTTPError,
    RunCancelled,
    RunTimedOut,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
    UserError,
)
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, infer_model
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.test import TestModel

from pynode.bridge.errors import BridgeError, classify, error_term
from pynode.bridge.models import ModelCache
from pynode.bridge.runner import (
    AgentDefinition,
    OutputDelta,
    RunEvent,
    TextDelta,
    ToolCallFailed,
    ToolCallFinished,
    ToolCallStarted,
    build_agent,
    execute_run,
)
from pynode.bridge.spec import AgentSpec, RunOptions, ToolSpec, parse_agent_spec, parse_run_options
from pynode.bridge.tools import ToolFailed, ToolOk, ToolReply
from pynode.etf.types import Atom

A = Atom
NO_OPTIONS = RunOptions()
ECHO = ToolSpec(name="echo", description="Echoes.", parameters={"type": "object", "properties": {}})


def cache_with(**models: Model) -> ModelCache:
    """A cache that knows a few scripted models by name, and every real name as pydantic-ai does."""
    return ModelCache(lambda name: models[name] if name in models else infer_model(name))


class Dispatch:
    def __init__(self, reply: ToolReply | None = None) -> None:
        self.reply = reply or ToolOk("done")
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
        self.calls.append((tool.name, call_id, args))
        return self.reply


class Seen:
    """A text model that records what it was given and answers with the last user prompt."""

    def __init__(self) -> None:
        self.infos: list[AgentInfo] = []
        self.messages: list[list[ModelMessage]] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.infos.append(info)
        self.messages.append(list(messages))
        prompts = [
            p.content for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart)
        ]
        return ModelResponse(parts=[TextPart(f"you said {prompts[-1]}")])


async def run(
    defn: AgentDefinition,
    prompt: str = "hello",
    options: RunOptions = NO_OPTIONS,
    *,
    models: ModelCache | None = None,
    dispatch: Any = None,
    on_event: Any = None,
) -> dict[Atom, Any]:
    return await execute_run(
        defn,
        prompt,
        options,
        models=models or ModelCache(),
        dispatch=dispatch or Dispatch(),
        on_event=on_event,
        run_id="run-1",
    )


def remote(models: ModelCache, **spec: Any) -> AgentDefinition:
    return build_agent(AgentSpec(**spec), models, name="helper")


def python_agent(agent: Agent[Any, Any]) -> AgentDefinition:
    return AgentDefinition(name="py", agent=agent, spec=None, origin="python", model_name="test")


async def failure(defn: AgentDefinition, options: RunOptions = NO_OPTIONS, **kwargs: Any) -> BridgeError:
    with pytest.raises(BridgeError) as exc:
        await run(defn, options=options, **kwargs)
    return exc.value


# --- definitions ------------------------------------------------------------------------------


def test_build_agent_from_a_spec() -> None:
    spec = parse_agent_spec(
        {
            A("model"): b"test",
            A("tools"): [{A("name"): b"echo"}, {A("name"): b"mf", A("handler"): (A("m"), A("f"))}],
            A("max_concurrency"): 2,
        }
    )
    defn = build_agent(spec, ModelCache(), name="helper")
    assert defn.name == "helper"
    assert defn.origin == "remote"
    assert defn.spec is spec
    assert defn.model_name == "test"
    assert isinstance(defn.agent.model, TestModel)
    assert defn.max_concurrency == 2
    assert defn.tool_names() == ["echo", "mf"]
    assert defn.tools_without_handler() == ["echo"]


def test_build_agent_with_an_unavailable_model() -> None:
    with pytest.raises(BridgeError) as exc:
        build_agent(AgentSpec(model="nope:x"), ModelCache(), name="helper")
    assert exc.value.kind == "model_unavailable"


def test_python_agent_tool_names() -> None:
    agent = Agent(TestModel())

    @agent.tool_plain
    def lookup(word: str) -> str:
        return word

    defn = AgentDefinition(name="py", agent=agent, spec=None, origin="python", model_name="test", tools=[ECHO])
    assert defn.tool_names() == ["echo", "lookup"]


# --- the Result term --------------------------------------------------------------------------


async def test_result_term() -> None:
    models = cache_with(seen=FunctionModel(Seen()))
    result = await run(remote(models, model="seen"), "hi there", models=models)
    assert set(result) == {A("output"), A("messages"), A("new_messages"), A("usage"), A("run_id")}
    assert all(type(k) is Atom for k in result)
    assert result[A("output")] == "you said hi there"
    assert result[A("run_id")] == "run-1"
    messages = ModelMessagesTypeAdapter.validate_json(result[A("messages")])
    assert [type(m) for m in messages] == [ModelRequest, ModelResponse]
    assert messages[0].run_id == "run-1"
    assert result[A("new_messages")] == result[A("messages")]
    usage = result[A("usage")]
    assert set(usage) == {A("requests"), A("input_tokens"), A("output_tokens"), A("tool_calls")}
    assert usage[A("requests")] == 1
    assert usage[A("tool_calls")] == 0
    assert usage[A("output_tokens")] > 0


async def test_message_history_continues_the_conversation() -> None:
    seen = Seen()
    models = cache_with(seen=FunctionModel(seen))
    defn = remote(models, model="seen")
    first = await run(defn, "my name is Ada", models=models)
    options = parse_run_options({A("message_history"): first[A("messages")]})
    second = await execute_run(
        defn, "what is my name?", options, models=models, dispatch=Dispatch(), on_event=None, run_id="run-2"
    )
    assert len(seen.messages[1]) == 3  # the first request and answer, then the new request
    all_messages = ModelMessagesTypeAdapter.validate_json(second[A("messages")])
    new_messages = ModelMessagesTypeAdapter.validate_json(second[A("new_messages")])
    assert len(all_messages) == 4
    assert len(new_messages) == 2
    assert new_messages[0].run_id == "run-2"


async def test_spec_prompts_and_run_instructions_reach_the_model() -> None:
    seen = Seen()
    models = cache_with(seen=FunctionModel(seen))
    defn = remote(models, model="seen", instructions=("Be brief.",), system_prompt=("You are terse.",))
    await run(defn, options=RunOptions(instructions=("Answer in French.",)), models=models)
    instructions = seen.infos[0].instructions or ""
    assert "Be brief." in instructions
    assert "Answer in French." in instructions
    first_request = seen.messages[0][0]
    assert isinstance(first_request, ModelRequest)
    assert any(isinstance(p, SystemPromptPart) and p.content == "You are terse." for p in first_request.parts)


async def test_model_and_settings_per_run() -> None:
    seen = Seen()
    models = cache_with(seen=FunctionModel(seen))
    defn = remote(models, model="test", model_settings={"temperature": 0.5})
    options = RunOptions(model="seen", model_settings={"max_tokens": 10})
    result = await run(defn, options=options, models=models)
    assert result[A("output")] == "you said hello"
    settings = seen.infos[0].model_settings or {}
    assert settings.get("max_tokens") == 10
    assert settings.get("temperature") == 0.5


# --- output -----------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


async def test_output_schema_of_the_spec() -> None:
    models = ModelCache()
    result = await run(remote(models, model="test", output_schema=SCHEMA), models=models)
    assert result[A("output")] == {"answer": 0}


async def test_output_schema_per_run() -> None:
    models = ModelCache()
    defn = remote(models, model="test")
    other = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris"]}},
        "required": ["city"],
    }
    result = await run(defn, options=RunOptions(output_schema=other), models=models)
    assert result[A("output")] == {"city": "Paris"}


async def test_output_schema_text_turns_the_schema_off_for_one_run() -> None:
    models = ModelCache()
    defn = remote(models, model="test", output_schema=SCHEMA)
    events: list[RunEvent] = []
    result = await run(defn, options=RunOptions(output_schema="text"), models=models, on_event=events.append)
    assert result[A("output")] == "success (no tool calls)"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "success (no tool calls)"
    assert not [e for e in events if isinstance(e, OutputDelta)]
    assert (await run(defn, models=models))[A("output")] == {"answer": 0}


async def test_structured_output_streams_its_partial_output() -> None:
    pieces = ['{"answer": 4', "2, ", '"note": "fo', 'rty-two"}']

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[DeltaToolCalls]:
        name = info.output_tools[0].name
        for i, piece in enumerate(pieces):
            first = i == 0
            yield {0: DeltaToolCall(name=name if first else None, json_args=piece, tool_call_id="o" if first else None)}

    models = cache_with(pieces=FunctionModel(stream_function=stream))
    schema = {**SCHEMA, "properties": {"answer": {"type": "integer"}, "note": {"type": "string"}}}
    events: list[RunEvent] = []
    result = await run(remote(models, model="pieces", output_schema=schema), models=models, on_event=events.append)
    partials = [e.partial for e in events if isinstance(e, OutputDelta)]
    # "answer": 4 is a whole number already; the next piece makes it 42.
    assert partials == [
        {"answer": 4},
        {"answer": 42},
        {"answer": 42, "note": "fo"},
        {"answer": 42, "note": "forty-two"},
    ]
    assert partials[-1] == result[A("output")]


async def test_text_output_streams_no_output_delta() -> None:
    events: list[RunEvent] = []
    await run(remote(ModelCache(), model="test"), on_event=events.append)
    assert events and all(isinstance(e, TextDelta) for e in events)


async def test_messages_as_terms_are_the_json_dump_as_terms() -> None:
    seen = Seen()
    models = cache_with(seen=FunctionModel(seen))
    defn = remote(models, model="seen")
    first = await run(defn, "my name is Ada", RunOptions(messages_as="terms"), models=models)
    messages = first[A("messages")]
    assert isinstance(messages, list) and messages == first[A("new_messages")]
    assert [m["kind"] for m in messages] == ["request", "response"]
    as_json = ModelMessagesTypeAdapter.dump_python(ModelMessagesTypeAdapter.validate_python(messages), mode="json")
    assert messages == as_json
    options = parse_run_options({A("message_history"): messages, A("messages_as"): A("terms")})
    second = await execute_run(
        defn, "what is my name?", options, models=models, dispatch=Dispatch(), on_event=None, run_id="run-2"
    )
    assert len(seen.messages[1]) == 3
    assert len(second[A("messages")]) == 4 and len(second[A("new_messages")]) == 2


async def test_output_that_never_fits_the_schema() -> None:
    def wrong(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"answer": "forty-two"})])

    models = cache_with(wrong=FunctionModel(wrong))
    error = await failure(remote(models, model="wrong", output_schema=SCHEMA), models=models)
    assert error.kind == "unexpected_model_behavior"


class Person(BaseModel):
    name: str
    langs: list[str]


async def test_python_agent_pydantic_output_becomes_a_map_with_str_keys() -> None:
    agent = Agent(TestModel(custom_output_args={"name": "Joe", "langs": ["erlang"]}), output_type=Person)
    result = await run(python_agent(agent))
    assert result[A("output")] == {"name": "Joe", "langs": ["erlang"]}


async def test_output_schema_refused_by_an_agent_with_output_validators() -> None:
    agent = Agent(TestModel())

    @agent.output_validator
    def keep(text: str) -> str:
        return text

    error = await failure(python_agent(agent), RunOptions(output_schema=SCHEMA))
    assert error.kind == "bad_request"
    assert "output_schema" in error.message


# --- deps -------------------------------------------------------------------------------------


class Who(BaseModel):
    user: str
    level: int = 1


def agent_with_deps() -> Agent[Who, str]:
    agent = Agent(TestModel(), deps_type=Who)

    @agent.tool
    def whoami(ctx: RunContext[Who]) -> str:
        return f"{ctx.deps.user} at level {ctx.deps.level}"

    return agent


async def test_deps_are_converted_to_the_agents_deps_type() -> None:
    result = await run(python_agent(agent_with_deps()), options=RunOptions(deps={"user": "ada", "level": 3}))
    assert result[A("output")] == '{"whoami":"ada at level 3"}'


async def test_deps_that_do_not_fit_are_bad_request() -> None:
    error = await failure(python_agent(agent_with_deps()), RunOptions(deps={"level": "high"}))
    assert error.kind == "bad_request"
    assert "user: Field required" in error.message
    assert "level:" in error.message
    error = await failure(python_agent(agent_with_deps()))
    assert error.kind == "bad_request"


async def test_remote_agents_get_deps_as_a_map() -> None:
    got: list[Any] = []
    agent = Agent(TestModel())

    @agent.tool
    def look(ctx: RunContext[Any]) -> str:
        got.append(ctx.deps)
        return "ok"

    await run(python_agent(agent), options=RunOptions(deps={"a": 1}))
    assert got == [{"a": 1}]


# --- BEAM tools and streaming -----------------------------------------------------------------


async def test_beam_tools_are_dispatched_with_the_models_call_id() -> None:
    dispatch = Dispatch(ToolOk({"temp": 21}))
    models = ModelCache()
    result = await run(remote(models, model="test", tools=(ECHO,)), models=models, dispatch=dispatch)
    assert dispatch.calls == [("echo", "pyd_ai_tool_call_id__echo", {})]
    assert result[A("output")] == '{"echo":{"temp":21}}'
    assert result[A("usage")][A("tool_calls")] == 1


async def test_streamed_tool_calls_results_and_text_in_order() -> None:
    events: list[RunEvent] = []
    models = ModelCache()
    defn = remote(models, model="test", tools=(ECHO,))
    await run(defn, models=models, dispatch=Dispatch(ToolOk({"temp": 21})), on_event=events.append)
    call_id = "pyd_ai_tool_call_id__echo"
    assert events[0] == ToolCallStarted("echo", {}, call_id)
    assert events[1] == ToolCallFinished("echo", {"temp": 21}, call_id)
    assert all(isinstance(e, TextDelta) for e in events[2:])
    assert "".join(e.text for e in events[2:] if isinstance(e, TextDelta)) == '{"echo":{"temp":21}}'


async def test_streamed_tool_failure() -> None:
    events: list[RunEvent] = []
    models = ModelCache()
    defn = remote(models, model="test", tools=(ECHO,))
    await run(defn, models=models, dispatch=Dispatch(ToolFailed("broken")), on_event=events.append)
    # A failed tool is a tool_error event (docs/protocol.md section 5), never a tool_result.
    assert ToolCallFailed("echo", "broken", "pyd_ai_tool_call_id__echo") in events
    assert not any(isinstance(event, ToolCallFinished) for event in events)


async def chunks(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    if len(messages) == 1:
        yield {0: DeltaToolCall("echo", '{"x": ', tool_call_id="c1")}
        yield {0: DeltaToolCall(json_args="1}")}
        return
    for piece in ("Hel", "lo, ", "world"):
        yield piece


async def test_streamed_text_includes_the_first_chunk() -> None:
    events: list[RunEvent] = []
    models = cache_with(chunky=FunctionModel(stream_function=chunks))
    defn = remote(models, model="chunky", tools=(ECHO,))
    result = await run(defn, models=models, on_event=events.append)
    assert events == [
        ToolCallStarted("echo", {"x": 1}, "c1"),
        ToolCallFinished("echo", "done", "c1"),
        TextDelta("Hel"),
        TextDelta("lo, "),
        TextDelta("world"),
    ]
    assert result[A("output")] == "Hello, world"


async def test_a_failing_listener_does_not_fail_the_run() -> None:
    def broken(event: RunEvent) -> None:
        raise RuntimeError("listener gone")

    models = cache_with(chunky=FunctionModel(stream_function=chunks))
    result = await run(remote(models, model="chunky", tools=(ECHO,)), models=models, on_event=broken)
    assert result[A("output")] == "Hello, world"


# --- errors -----------------------------------------------------------------------------------


def raising(exc: Exception) -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise exc

    return FunctionModel(respond)


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (ModelHTTPError(500, "gpt-x", {"error": "overloaded"}), "model_http_error", "500"),
        (ModelHTTPError(429, "gpt-x", {"error": "slow down"}), "rate_limited", "slow down"),
        (ModelHTTPError(401, "gpt-x", {"error": "bad key"}), "auth_failed", "bad key"),
        (UnexpectedModelBehavior("garbled"), "unexpected_model_behavior", "garbled"),
        (ZeroDivisionError("oops"), "internal_error", "ZeroDivisionError: oops"),
    ],
)
async def test_model_failures_are_classified(exc: Exception, kind: str, words: str) -> None:
    models = cache_with(bad=raising(exc))
    error = await failure(remote(models, model="bad"), models=models)
    assert error.kind == kind
    assert words in error.message


async def test_usage_limit() -> None:
    models = ModelCache()
    defn = remote(models, model="test", tools=(ECHO,))
    error = await failure(defn, RunOptions(usage_limits=parse_run_limits(request_limit=1)), models=models)
    assert error.kind == "usage_limit_exceeded"


def parse_run_limits(**limits: int) -> Any:
    options = parse_run_options({A("usage_limits"): {A(k): v for k, v in limits.items()}})
    return options.usage_limits


async def test_spec_usage_limits_apply() -> None:
    models = ModelCache()
    defn = remote(models, model="test", tools=(ECHO,), usage_limits=parse_run_limits(tool_calls_limit=0))
    error = await failure(defn, models=models)
    assert error.kind == "usage_limit_exceeded"


async def test_unavailable_run_model() -> None:
    models = ModelCache()
    error = await failure(remote(models, model="test"), RunOptions(model="nope:x"), models=models)
    assert error.kind == "model_unavailable"


async def test_python_agent_without_a_model() -> None:
    error = await failure(python_agent(Agent()))
    assert error.kind == "model_unavailable"
    assert "model option" in error.message


# --- cancellation and timeout (the caller's job) ----------------------------------------------


class Blocked:
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def __call__(self, tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
        self.started.set()
        await asyncio.Future()
        raise AssertionError("unreachable")


async def test_cancelled_run_propagates_and_leaves_nothing_running() -> None:
    blocked = Blocked()
    models = ModelCache()
    before = asyncio.all_tasks()
    task = asyncio.create_task(run(remote(models, model="test", tools=(ECHO,)), models=models, dispatch=blocked))
    await asyncio.wait_for(blocked.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


async def test_timeout_around_the_run() -> None:
    blocked = Blocked()
    models = ModelCache()
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await run(remote(models, model="test", tools=(ECHO,)), models=models, dispatch=blocked)
    assert blocked.started.is_set()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


# --- the one mapping of exceptions to error kinds ---------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (BridgeError("overloaded", "busy"), "overloaded"),
        (RunTimedOut("too slow"), "timeout"),
        (RunCancelled("stopped by the app"), "cancelled"),
        (asyncio.CancelledError(), "cancelled"),
        (TimeoutError(), "timeout"),
        (UsageLimitExceeded("request_limit of 1 exceeded"), "usage_limit_exceeded"),
        (ConcurrencyLimitExceeded("queue full"), "overloaded"),
        (ModelHTTPError(503, "claude-x", "overloaded"), "model_http_error"),
        (ModelConnectionError("gpt-x", "connection reset"), "model_http_error"),
        (ModelAPIError("gpt-x", "bad gateway"), "model_error"),
        (UnexpectedModelBehavior("Exceeded maximum output retries (1)"), "unexpected_model_behavior"),
        (UserError("Unknown model: foo"), "model_unavailable"),
        (ImportError("Please install the `openai` package ... `pip install x`"), "model_unavailable"),
        (UserError("Cannot use this tool twice"), "internal_error"),
        (ExceptionGroup("one", [UsageLimitExceeded("tool_calls_limit")]), "usage_limit_exceeded"),
        (KeyError("x"), "internal_error"),
    ],
)
def test_classify(exc: BaseException, kind: str) -> None:
    assert classify(exc)[0] == kind


def test_classify_messages() -> None:
    assert "503" in classify(ModelHTTPError(503, "claude-x", "overloaded"))[1]
    assert classify(KeyError("x"))[1] == "KeyError: 'x'"
    assert classify(BridgeError("bad_spec", "no model")) == ("bad_spec", "no model")
    assert classify(asyncio.CancelledError())[1] == "the run was cancelled"


def test_error_term() -> None:
    assert error_term("timeout", "too slow") == (A("error"), (A("timeout"), "too slow"))
    assert BridgeError("cancelled", "bye").to_term() == (A("error"), (A("cancelled"), "bye"))
    with pytest.raises(ValueError):
        error_term("made_up", "x")  # type: ignore[arg-type]


def test_a_python_tool_result_reaches_the_beam_in_its_json_form_not_as_a_repr() -> None:
    import dataclasses
    import datetime

    from pynode.bridge.runs import _content_term

    @dataclasses.dataclass
    class Stock:
        item: str
        count: int
        seen: datetime.date

    assert _content_term(Stock("lime", 3, datetime.date(2026, 12, 1))) == {
        "item": "lime",
        "count": 3,
        "seen": "2026-12-01",
    }
    assert _content_term({"a": [1, 2.5, None]}) == {"a": [1, 2.5, None]}
