"""Tools implemented on the BEAM, offered to the model as a pydantic-ai toolset.

The toolset knows nothing of the node: it validates the model's arguments against the tool's JSON
Schema, hands the call to a :class:`ToolDispatcher` (the node supplies one that sends the
``pynode_tool_call`` message or calls ``M:F(Args)`` and waits), and turns the reply into what the
model sees. Nothing a handler does can crash the run: failures become tool failures the model is
told about; only cancellation of the run itself goes through.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias, assert_never

import jsonschema
from pydantic_ai import RunContext
from pydantic_ai import exceptions as pai
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.toolsets.abstract import ToolsetTool
from pydantic_core import SchemaValidator, core_schema

from pynode.bridge.errors import BridgeError, quoted
from pynode.bridge.output import JSONSchemaValidator, schema_error_message
from pynode.bridge.spec import ProcessHandler, RunOptions, ToolSpec
from pynode.bridge.termmap import JSONValue, text_from_prompt, to_json
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Pid, Term

__all__ = [
    "BeamToolset",
    "ToolDispatcher",
    "ToolFailed",
    "ToolOk",
    "ToolReply",
    "ToolRetry",
    "beam_toolset",
    "message_text",
    "parse_tool_reply",
]

logger = logging.getLogger(__name__)

# pydantic-ai only has to hand over a JSON object; the tool's schema is applied by jsonschema.
_ARGS_OBJECT: Final = SchemaValidator(core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema()))
_SHOWN_LIMIT: Final = 200


@dataclass(frozen=True, slots=True)
class ToolOk:
    """``{ok, Value}``: the value goes to the model."""

    value: JSONValue


@dataclass(frozen=True, slots=True)
class ToolFailed:
    """``{error, Message}``: the model is told the tool failed."""

    message: str


@dataclass(frozen=True, slots=True)
class ToolRetry:
    """``{retry, Message}``: the model is asked to call again with other arguments."""

    message: str


ToolReply: TypeAlias = ToolOk | ToolFailed | ToolRetry


def parse_tool_reply(term: Term) -> ToolReply:
    """A handler's ``ToolReply`` term -> :class:`ToolReply`, or ``BridgeError(bad_request)``.

    The message of ``{error, _}`` and ``{retry, _}`` is best a binary, but an atom or any other
    term (``{error, not_found}``) is accepted and shown to the model as text.
    """
    reply = _tagged_reply(term)
    if reply is None:
        raise BridgeError(
            "bad_request",
            f"a tool reply must be {{ok, Value}}, {{error, Message}} or {{retry, Message}},"
            f" got {format_term(term, limit=_SHOWN_LIMIT)}",
        )
    return reply


def function_reply(term: Term) -> ToolReply:
    """What an ``{M, F}`` tool returned, read as Elixir code means it.

    ``{ok, V}`` gives ``V`` to the model, ``{error, Msg}`` is a failure the model is told about,
    ``{retry, Msg}`` asks it to call again, and any other term is itself the value. A value with no
    JSON form (a pid, a reference, a fun) is a tool failure naming it.
    """
    try:
        return _tagged_reply(term) or ToolOk(to_json(term))
    except BridgeError as exc:
        return ToolFailed(f"the tool returned a value with no JSON form: {exc.message}")


def _tagged_reply(term: Term) -> ToolReply | None:
    if type(term) is tuple and len(term) == 2 and type(term[0]) is Atom:
        tag, value = str(term[0]), term[1]
        if tag == "ok":
            return ToolOk(to_json(value))
        if tag == "error":
            return ToolFailed(message_text(value))
        if tag == "retry":
            return ToolRetry(message_text(value))
    return None


def message_text(term: Term) -> str:
    """A failure message as the model reads it: text as text, an atom by its name, a map as JSON,
    anything else in Erlang syntax."""
    if isinstance(term, Atom):
        return str(term)
    if isinstance(term, (bytes, bytearray, str, list)):
        try:
            return text_from_prompt(term)
        except BridgeError:
            pass
    if isinstance(term, dict):
        try:
            return json.dumps(to_json(term), ensure_ascii=False)
        except BridgeError:
            pass
    return format_term(term)


class ToolDispatcher(Protocol):
    """Runs one BEAM tool call and waits for its reply (the node's side of the seam)."""

    async def __call__(self, tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply: ...


class BeamToolset(AbstractToolset[Any]):
    """The BEAM tools of one agent, for one run (the dispatcher knows that run's caller)."""

    def __init__(
        self,
        tools: Sequence[ToolSpec],
        dispatch: ToolDispatcher,
        *,
        id: str = "beam",
        max_retries: int | None = None,
        validators: Mapping[str, jsonschema.Draft202012Validator] | None = None,
    ) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._validators = tool_validators(tools, known=validators)
        self._dispatch = dispatch
        self._id = id
        self._max_retries = max_retries

    @property
    def id(self) -> str | None:
        return self._id

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        retries = ctx.max_retries if self._max_retries is None else self._max_retries
        return {
            name: ToolsetTool(
                toolset=self,
                tool_def=ToolDefinition(
                    name=name, description=tool.description or None, parameters_json_schema=tool.parameters
                ),
                max_retries=retries,
                args_validator=_ARGS_OBJECT,
            )
            for name, tool in self._tools.items()
        }

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        spec = self._tools[name]
        problem = schema_error_message(self._validators[name], tool_args)
        if problem is not None:
            raise pai.ModelRetry(f"The arguments do not match the tool's JSON Schema:\n{problem}")
        if spec.requires_approval and not ctx.tool_call_approved:
            raise pai.ApprovalRequired  # pydantic-ai defers the call until a decision comes (runs.py, runner.py)
        call_id = ctx.tool_call_id or f"call_{uuid.uuid4().hex}"
        try:
            reply = await self._dispatch(spec, call_id, tool_args)
        except asyncio.CancelledError:
            raise
        except BridgeError as exc:
            raise pai.ToolFailed(f"tool {quoted(name)} failed: {exc.message}") from None
        except Exception as exc:
            logger.warning("tool %s (call %s) could not be dispatched", name, call_id, exc_info=True)
            raise pai.ToolFailed(f"tool {quoted(name)} failed: {type(exc).__name__}: {exc}") from None
        return _to_model(reply)


def _to_model(reply: ToolReply) -> Any:
    if isinstance(reply, ToolOk):
        return reply.value
    if isinstance(reply, ToolFailed):
        raise pai.ToolFailed(reply.message)
    if isinstance(reply, ToolRetry):
        raise pai.ModelRetry(reply.message)
    assert_never(reply)


def beam_toolset(
    tools: Sequence[ToolSpec],
    dispatch: ToolDispatcher,
    *,
    validators: Mapping[str, jsonschema.Draft202012Validator] | None = None,
) -> AbstractToolset[Any]:
    """A toolset exposing ``tools`` to the model, each call going through ``dispatch``.

    ``validators`` are the ones already built for some of the tools (an agent's, once for all its runs).
    """
    return BeamToolset(tools, dispatch, validators=validators)


def tool_validators(
    tools: Sequence[ToolSpec], *, known: Mapping[str, jsonschema.Draft202012Validator] | None = None
) -> dict[str, jsonschema.Draft202012Validator]:
    """A validator of each tool's ``parameters`` by tool name, reusing one in ``known`` built for that schema."""
    validators: dict[str, jsonschema.Draft202012Validator] = {}
    for tool in tools:
        validator = (known or {}).get(tool.name)
        if validator is None or validator.schema is not tool.parameters:
            validator = JSONSchemaValidator(tool.parameters)
        validators[tool.name] = validator
    return validators


def check_run_tools(
    agent_tools: Sequence[ToolSpec],
    agent_tool_names: Sequence[str],
    options: RunOptions,
    caller: Pid,
    *,
    synchronous: bool,
) -> None:
    """Refuse, before it starts, a run whose tool calls could never be answered (``bad_request``).

    The run's own ``tools`` must not reuse a name the agent's tools have. A synchronous run's
    caller is blocked in its call until the run ends, so a tool call sent to it would wait for
    ever: refuse tools with no handler when there is no ``tool_handler``, and any tool whose
    calls would go to the caller itself.
    """
    taken = set(agent_tool_names)
    for tool in options.tools:
        if tool.name in taken:
            raise BridgeError(
                "bad_request", f"the run's tool {quoted(tool.name)} has the name of one of the agent's tools"
            )
    if not synchronous:
        return
    tools = [*agent_tools, *options.tools]
    if options.tool_handler == caller:
        raise BridgeError(
            "bad_request",
            "the run's tool_handler is the calling process, which waits for this run's reply and"
            " could never answer a tool call; use start_run, or another process as tool_handler",
        )
    if options.approver == caller:
        raise BridgeError(
            "bad_request",
            "the run's approver is the calling process, which waits for this run's reply and could"
            " never decide a call; use start_run, another process as approver, or approver => defer",
        )
    orphans = [tool.name for tool in tools if tool.handler is None]
    if orphans and options.tool_handler is None:
        raise BridgeError(
            "bad_request",
            f"tool(s) {', '.join(orphans)} have no handler and the run has no tool_handler: "
            "a synchronous run could never answer them; use start_run or pass tool_handler",
        )
    selves = [tool.name for tool in tools if isinstance(tool.handler, ProcessHandler) and tool.handler.dest == caller]
    if selves:
        raise BridgeError(
            "bad_request",
            f"the handler of tool(s) {', '.join(selves)} is the calling process, which waits for this"
            " run's reply and could never answer them; use start_run, or another process as handler",
        )
