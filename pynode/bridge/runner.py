"""One agent run, from a checked prompt and options to the Result term (docs/protocol.md section 4).

No node here: BEAM tools go through the ``dispatch`` seam and stream events through ``on_event``.
Timeouts and cancellation belong to the caller (``asyncio.timeout``/``task.cancel()`` around
:func:`execute_run`); a cancelled run raises ``CancelledError`` and leaves no task behind.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import jsonschema
import pydantic
import pydantic_core
from pydantic_ai import Agent, RunContext
from pydantic_ai.capabilities import AbstractCapability, HandleDeferredToolCalls
from pydantic_ai.exceptions import ModelRetry, UnexpectedModelBehavior, UserError
from pydantic_ai.messages import (
    AgentStreamEvent,
    FinalResultEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPartDelta,
)
from pydantic_ai.models import Model
from pydantic_ai.result import AgentStream
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset
from pydantic_ai.usage import RunUsage

from pynode.bridge.approvals import deferred_term, parse_decision
from pynode.bridge.errors import BridgeError, classify, quoted
from pynode.bridge.mcp import McpServerToolset
from pynode.bridge.models import ModelCache
from pynode.bridge.output import SchemaOutput
from pynode.bridge.spec import AgentSpec, Instruction, MessagesAs, MFHandler, RunOptions, ToolSpec
from pynode.bridge.termmap import JSONValue, from_json, key
from pynode.bridge.tools import ToolDispatcher, beam_toolset, tool_validators
from pynode.bridge.tracing import joined
from pynode.etf.types import Atom, Term

__all__ = [
    "AgentDefinition",
    "ApprovalHandler",
    "InstructionResolver",
    "OutputDelta",
    "RunEvent",
    "TextDelta",
    "ToolCallFailed",
    "ToolCallFinished",
    "ToolCallStarted",
    "build_agent",
    "execute_run",
    "model_label",
]

logger = logging.getLogger(__name__)


EventSink: TypeAlias = Callable[["RunEvent"], Awaitable[None] | None]
"""Receives a run's events; an awaitable result is awaited, which is how a slow reader slows the run."""

InstructionResolver: TypeAlias = Callable[[MFHandler, dict[str, JSONValue]], Awaitable[str]]
"""Calls an ``{M, F}`` instruction with the run's deps and returns its text (the node's side of the seam);
a failure is a ``BridgeError``, which fails the run."""


ApprovalHandler: TypeAlias = Callable[[RunContext[Any], DeferredToolRequests], Awaitable[DeferredToolResults | None]]
"""Settles, during the run, the calls that wait for approval (the node asks the run's approver);
``None`` in its place: such calls end the run, listed in its Result's ``deferred``."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Text the model produced, in arrival order (``{text_delta, Bin}``)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """The model called a tool, any tool (``{tool_call, Name, Args, CallId}``)."""

    name: str
    args: dict[str, JSONValue]
    call_id: str


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    """A tool call returned (``{tool_result, Name, Content, CallId}``)."""

    name: str
    content: JSONValue
    call_id: str


@dataclass(frozen=True, slots=True)
class ToolCallFailed:
    """A tool call failed and the model was told (``{tool_error, Name, Message, CallId}``).

    ``retried`` when the model was asked to call again (``{retry, Msg}``, arguments that broke the
    tool's schema) rather than told the tool failed for good.
    """

    name: str
    message: str
    call_id: str
    retried: bool = False


@dataclass(frozen=True, slots=True)
class OutputDelta:
    """The structured output so far, as pydantic-ai validated it while it streams (``{output_delta, Partial}``)."""

    partial: dict[str, JSONValue]


RunEvent: TypeAlias = TextDelta | ToolCallStarted | ToolCallFinished | ToolCallFailed | OutputDelta

_FAILED_OUTCOMES: Final = frozenset({"failed", "retried"})


@dataclass(kw_only=True)
class AgentDefinition:
    """An agent the node serves: a pydantic-ai ``Agent`` and what the node must know about it."""

    name: str
    """Its registered name."""
    agent: Agent[Any, Any]
    spec: AgentSpec | None
    """The spec it was created from; ``None`` for an agent defined in Python."""
    origin: Literal["python", "remote"]
    model_name: str
    """The model name reported by ``info``/``list_agents``."""
    tools: list[ToolSpec] = field(default_factory=list)
    """Its BEAM-implemented tools (a Python agent's own tools live in its ``Agent``)."""
    home: Atom | None = None
    """The node of the process that created it: where ``{M, F}`` tools and instructions run.
    ``None`` (an agent defined in Python): the node of each run's caller."""
    instructions: tuple[Instruction, ...] = ()
    """Instructions with ``{M, F}`` entries, resolved before each run (in order, with the run's deps);
    empty when every instruction is a fixed text (those live in its ``Agent``)."""
    max_concurrency: int | None = None
    """Runs at once; ``None``: the node's default."""
    output: SchemaOutput | None = None
    """The spec's ``output_schema`` as output type and check, built once for every run of the agent."""
    tool_validators: dict[str, jsonschema.Draft202012Validator] = field(default_factory=dict)
    """The ``parameters`` validators of ``tools`` by name, built once for every run of the agent."""
    mcp_toolsets: list[McpServerToolset] = field(default_factory=list)
    """Its MCP servers (the spec's ``toolsets``) as its runs use them: set by the agent process that
    holds their sessions (pynode/bridge/mcp.py), each process with sessions of its own."""

    def tool_names(self) -> list[str]:
        """Every tool the model can call: BEAM tools, its MCP servers' tools, then its own function tools."""
        names = [tool.name for tool in self.tools]
        for server in self.mcp_toolsets:
            names.extend(name for name in server.tool_names if name not in names)
        for toolset in self.agent.toolsets:
            if isinstance(toolset, FunctionToolset):
                names.extend(name for name in toolset.tools if name not in names)
        return names

    def tools_without_handler(self) -> list[str]:
        """BEAM tools whose calls go to the run's ``tool_handler`` or the caller of ``start_run``."""
        return [tool.name for tool in self.tools if tool.handler is None]


def model_label(model: Model | str | None) -> str:
    """A model as a name a BEAM user recognises (``openai:gpt-4o``, ``test``)."""
    if model is None:
        return "none"
    if isinstance(model, str):
        return model
    if model.system == model.model_name:
        return model.model_name
    return f"{model.system}:{model.model_name}"


def build_agent(spec: AgentSpec, models: ModelCache, *, name: str, home: Atom | None = None) -> AgentDefinition:
    """The agent for a ``create_agent`` spec; ``BridgeError(model_unavailable)`` if its model is.

    ``home`` is the creator's node. Fixed instructions go to the ``Agent``; a list with an ``{M, F}``
    entry is kept whole, to be resolved in order before each run.
    """
    dynamic = any(isinstance(entry, MFHandler) for entry in spec.instructions)
    static = [entry for entry in spec.instructions if isinstance(entry, str)]
    agent: Agent[Any, Any] = Agent(
        models.get_with_fallbacks(spec.model, spec.fallback),
        instructions=None if dynamic else static or None,
        system_prompt=spec.system_prompt,
        model_settings=spec.model_settings,
        retries=spec.retries,
        name=name,
    )
    return AgentDefinition(
        name=name,
        agent=agent,
        spec=spec,
        origin="remote",
        model_name=models.label(spec.model),
        tools=list(spec.tools),
        home=home,
        instructions=spec.instructions if dynamic else (),
        max_concurrency=spec.max_concurrency,
        output=spec.output,
        tool_validators=tool_validators(spec.tools),
    )


async def execute_run(
    defn: AgentDefinition,
    prompt: str,
    options: RunOptions,
    *,
    models: ModelCache,
    dispatch: ToolDispatcher,
    on_event: EventSink | None,
    run_id: str,
    resolve: InstructionResolver | None = None,
    usage: RunUsage | None = None,
    approve: ApprovalHandler | None = None,
) -> dict[Atom, Term]:
    """Run ``defn`` once and return the Result map; every failure is a :class:`BridgeError`.

    ``usage``: pydantic-ai adds the run's usage to it as the run goes, so it holds what a run that
    failed part way had spent.
    """
    try:
        with joined(options.trace_context):  # on a node that traces: the run's spans are the caller's children
            result = await _run(
                defn,
                prompt,
                options,
                models=models,
                dispatch=dispatch,
                on_event=on_event,
                run_id=run_id,
                resolve=resolve,
                usage=usage,
                approve=approve,
            )
        return _result_term(result, run_id, messages_as=options.messages_as)
    except asyncio.CancelledError:
        raise
    except BridgeError:
        raise
    except Exception as exc:
        if isinstance(exc, UserError) and options.output_schema is not None and "output_type" in exc.message:
            # pydantic-ai refuses a run's own output type on an agent with output validators.
            message = f"agent {defn.name} cannot take output_schema: {exc.message}"
            raise BridgeError("bad_request", message) from exc
        kind, message = classify(exc)
        if kind == "internal_error":
            logger.warning("run %s of agent %s failed", run_id, defn.name, exc_info=True)
        raise BridgeError(kind, message) from exc


async def _run(
    defn: AgentDefinition,
    prompt: str,
    options: RunOptions,
    *,
    models: ModelCache,
    dispatch: ToolDispatcher,
    on_event: EventSink | None,
    run_id: str,
    resolve: InstructionResolver | None,
    usage: RunUsage | None = None,
    approve: ApprovalHandler | None = None,
) -> AgentRunResult[Any]:
    spec = defn.spec
    model = models.get(options.model) if options.model is not None else None
    if model is None and defn.agent.model is None:
        raise BridgeError("model_unavailable", f"agent {defn.name} has no model: give the run a model option")
    output_type: Any = None
    capabilities: list[AbstractCapability[Any]] = []
    schema = options.output_schema
    output = defn.output
    if schema == "text":
        output_type = str  # the agent's schema (or a Python agent's output type) is off for this run
        output = None
    elif options.output is not None:
        output = options.output
    if output is not None:
        output_type = output.output_type
        capabilities.append(output.check)
    beam_tools = [*defn.tools, *options.tools]
    toolsets: list[AbstractToolset[Any]] = (
        [beam_toolset(beam_tools, dispatch, validators=defn.tool_validators)] if beam_tools else []
    )
    for server in defn.mcp_toolsets:  # sessions the agent process holds: the run only borrows them
        server.check_connected()
        toolsets.append(server)
    structured = _structured(defn, output_type)
    deferred_results = _deferred_results(options)
    if approve is not None:
        capabilities.append(HandleDeferredToolCalls(handler=approve))
    elif _may_defer(defn, beam_tools, deferred_results):
        # The run ends with the calls to approve as its output (pydantic-ai's DeferredToolRequests).
        chosen = output_type if output_type is not None else defn.agent.output_type
        output_type = [chosen, DeferredToolRequests]
    usage_limits = options.usage_limits or (spec.usage_limits if spec is not None else None)
    instructions = [*await _agent_instructions(defn, options, resolve), *options.instructions]
    return await defn.agent.run(
        prompt if prompt or deferred_results is None else None,
        output_type=output_type,
        deferred_tool_results=deferred_results,
        message_history=options.message_history,
        run_id=run_id,
        model=model,
        instructions=instructions or None,
        deps=_deps(defn, options.deps),
        model_settings=options.model_settings,
        usage_limits=usage_limits,
        infer_name=False,
        toolsets=toolsets or None,
        event_stream_handler=(_stream_handler(on_event, structured=structured) if on_event is not None else None),
        capabilities=capabilities or None,
        usage=usage,
    )


def _may_defer(defn: AgentDefinition, beam_tools: list[ToolSpec], resumed: DeferredToolResults | None) -> bool:
    """Whether a call of this run may wait for approval, so that its output type must allow deferred calls.

    BEAM tools and MCP toolsets say so (``requires_approval``); a Python agent's tool may raise
    ``ApprovalRequired`` at any time, but a run's own output type is refused on an agent with output
    validators.
    """
    if resumed is not None or any(tool.requires_approval for tool in beam_tools):
        return True
    if any(server.spec.requires_approval for server in defn.mcp_toolsets):
        return True
    return defn.origin == "python" and not getattr(defn.agent, "_output_validators", None)


def _deferred_results(options: RunOptions) -> DeferredToolResults | None:
    """The run's ``approvals`` for the calls its ``message_history`` ends on; ``bad_request`` for any other id."""
    if options.approvals is None:
        return None
    history = options.message_history
    pending: set[str] = set()
    for message in reversed(history or []):
        if isinstance(message, ModelResponse):
            pending = {call.tool_call_id for call in message.tool_calls}
            break
    unknown = sorted(call_id for call_id in options.approvals if call_id not in pending)
    if unknown:
        where = "its message_history" if history else "the run, which has no message_history"
        raise BridgeError(
            "bad_request",
            f"approvals name call(s) {', '.join(quoted(c) for c in unknown)} that do not wait for approval in {where}",
        )
    approvals: dict[str, Any] = {}
    for call_id, term in options.approvals.items():
        try:
            approvals[call_id] = parse_decision(term)
        except BridgeError as exc:
            raise BridgeError("bad_request", f"approvals of {quoted(call_id)}: {exc.message}") from None
    return DeferredToolResults(approvals=approvals)


def _structured(defn: AgentDefinition, output_type: Any) -> bool:
    """Whether the run's output is structured (a schema, or a Python agent's own output type)."""
    chosen = output_type if output_type is not None else defn.agent.output_type
    return chosen is not str


async def _agent_instructions(
    defn: AgentDefinition, options: RunOptions, resolve: InstructionResolver | None
) -> list[str]:
    """The agent's instructions for this run, ``{M, F}`` entries called in order with its deps."""
    if not defn.instructions:
        return []
    if resolve is None:
        raise BridgeError("internal_error", f"agent {defn.name} has {{M, F}} instructions and no way to call them")
    deps = options.deps or {}
    return [entry if isinstance(entry, str) else await resolve(entry, deps) for entry in defn.instructions]


def _deps(defn: AgentDefinition, deps: dict[str, JSONValue] | None) -> Any:
    """The run's deps map, converted to the agent's ``deps_type`` when it declares one."""
    deps_type = defn.agent.deps_type
    if deps_type is object:
        return deps
    try:
        return _adapter(deps_type).validate_python(deps if deps is not None else {})
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'deps'}: {e['msg']}" for e in exc.errors()[:5])
        raise BridgeError("bad_request", f"deps do not fit agent {defn.name}: {problems}") from None


@functools.lru_cache(maxsize=64)
def _adapter(deps_type: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(deps_type)


def _result_term(result: AgentRunResult[Any], run_id: str, *, messages_as: MessagesAs = "json") -> dict[Atom, Term]:
    usage = result.usage
    everything, new = result.all_messages(), result.new_messages()
    dump = _messages_json if messages_as == "json" else _messages_terms
    messages = dump(everything)
    # A run without history is all new: the same dump serves both keys.
    new_messages = messages if len(new) == len(everything) else dump(new)
    output = result.output
    deferred: list[Term] | None = None
    if isinstance(output, DeferredToolRequests):
        deferred = [deferred_term(call) for call in [*output.approvals, *output.calls]]
        output = None
    term: dict[Atom, Term] = {
        key("output"): from_json(output),
        key("messages"): messages,
        key("new_messages"): new_messages,
        key("usage"): {
            key("requests"): usage.requests,
            key("input_tokens"): usage.input_tokens,
            key("output_tokens"): usage.output_tokens,
            key("tool_calls"): usage.tool_calls,
        },
        key("run_id"): run_id,
    }
    if deferred is not None:
        term[Atom("deferred")] = deferred
    return term


def _messages_json(messages: list[ModelMessage]) -> Term:
    return ModelMessagesTypeAdapter.dump_json(messages)


def _messages_terms(messages: list[ModelMessage]) -> Term:
    """What ``dump_json`` writes, as terms: lists of maps with binary keys (``messages_as => terms``)."""
    return from_json(ModelMessagesTypeAdapter.dump_python(messages, mode="json"))


def _stream_handler(
    on_event: EventSink, *, structured: bool
) -> Callable[[RunContext[Any], AsyncIterable[AgentStreamEvent]], Any]:
    """``structured``: the run has an output schema. A model that writes it as text (native or
    prompted structured output) then sends JSON text: that is the output, streamed as
    ``output_delta``, never as ``text_delta``."""

    async def handle(ctx: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
        # A model response's stream can validate its output so far; a tool-calling step's cannot.
        partials = _PartialOutput(events) if isinstance(events, AgentStream) else None
        held: RunEvent | None = None  # a structured run's first text: output or chatter? the next event says
        output_text = False
        async for event in events:
            if held is not None:
                if isinstance(event, FinalResultEvent) and event.tool_name is None:
                    output_text = True
                else:
                    await _emit(on_event, held)
                held = None
            run_event = _run_event(event)
            if isinstance(run_event, TextDelta) and structured:
                if output_text:
                    run_event = None
                elif isinstance(event, PartStartEvent):
                    held, run_event = run_event, None
            if run_event is not None:
                await _emit(on_event, run_event)
            if partials is not None and (partial := await partials.after(event, structured=structured)) is not None:
                await _emit(on_event, OutputDelta(partial))
        if held is not None:
            await _emit(on_event, held)

    return handle


class _PartialOutput:
    """The output of one streamed model response as it grows, once the model writes its output.

    That is an output tool's arguments, or, in a structured run, JSON text. pydantic-ai validates
    it with ``allow_partial`` (an unfinished string is kept as far as it goes, an unfinished key is
    left out); a snapshot that does not validate yet, or equals the last one, gives nothing.
    """

    def __init__(self, stream: AgentStream[Any, Any]) -> None:
        self.stream = stream
        self.writing = False
        self.last: JSONValue = None

    async def after(self, event: AgentStreamEvent, *, structured: bool) -> dict[str, JSONValue] | None:
        if isinstance(event, FinalResultEvent):
            # ``None``: the output is text: plain text (text_delta), or a structured run's JSON text.
            self.writing = event.tool_name is not None or structured
        elif not isinstance(event, PartDeltaEvent) or not isinstance(event.delta, (ToolCallPartDelta, TextPartDelta)):
            return None
        if not self.writing:
            return None
        try:
            partial = await self.stream.validate_response_output(self.stream.response, allow_partial=True)
        except (pydantic.ValidationError, ModelRetry, UnexpectedModelBehavior):
            return None
        value = _jsonable(partial)
        if not isinstance(value, dict) or value == self.last:
            return None
        self.last = value
        return value


def _run_event(event: AgentStreamEvent) -> RunEvent | None:
    """The protocol's view of one pydantic-ai stream event (most have none)."""
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return TextDelta(event.part.content) if event.part.content else None
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return TextDelta(event.delta.content_delta) if event.delta.content_delta else None
    if isinstance(event, FunctionToolCallEvent):
        call = event.part
        args = _jsonable(call.args_as_dict())
        return ToolCallStarted(call.tool_name, args if isinstance(args, dict) else {}, call.tool_call_id)
    if isinstance(event, FunctionToolResultEvent):
        done = event.part
        if done.outcome in _FAILED_OUTCOMES:
            return ToolCallFailed(
                done.tool_name, _message(done.content), done.tool_call_id, retried=done.outcome == "retried"
            )
        return ToolCallFinished(done.tool_name, _jsonable(done.content), done.tool_call_id)
    return None


def _message(content: Any) -> str:
    """A failed call's content (the message the model was told) as text."""
    if isinstance(content, str):
        return content
    return json.dumps(_jsonable(content), ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    return pydantic_core.to_jsonable_python(value, fallback=str)


async def _emit(on_event: EventSink, event: RunEvent) -> None:
    """A failing listener loses its events (logged), never the run."""
    try:
        pending = on_event(event)
        if pending is not None:
            await pending
    except Exception:
        logger.warning("stream listener failed on a %s event", type(event).__name__, exc_info=True)
