"""A model that a BEAM function plays: ``{function, Fun}`` (docs/protocol.md section 3).

For each model request the node calls ``Fun(Messages, Info)`` on the node where the fun was
made (an ``fun M:F/2`` export: on the run caller's node), as ``erpc:call`` would: ``Messages``
is the conversation so far as ``messages_as => terms`` gives it, ``Info`` says what the model is
offered (tools, output schema, instructions). What the fun returns is the model's response: a
binary (text), ``{text, Bin | [Bin]}`` (a list: the chunks a streamed run sends one by one),
``{tool_call, Name, Args}`` or ``{tool_call, Name, Args, CallId}``, ``{output, Map}`` (the
structured output), or a list of those. This is how a BEAM test decides what the model says.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponse,
    ModelResponsePart,
    TextPart,
    ToolCallPart,
)
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import ToolDefinition

from pynode.bridge.context import current_cluster
from pynode.bridge.errors import BridgeError
from pynode.bridge.functions import failure_text
from pynode.bridge.termmap import from_json, key, to_json
from pynode.errors import ErpcError, PynodeError
from pynode.etf.decode import decode_at
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Export, OpaqueFun, Pid, Term

__all__ = ["FunctionRef", "function_model"]

BeamFun: TypeAlias = OpaqueFun | Export

_TEXT: Final = Atom("text")
_TOOL_CALL: Final = Atom("tool_call")
_OUTPUT: Final = Atom("output")
_EXPECTED: Final = (
    "a binary, {text, Bin | [Bin]}, {tool_call, Name, Args}, {tool_call, Name, Args, CallId}, {output, Map},"
    " or a list of those"
)
# NEW_FUN_EXT: tag, Size:32, Arity:8, Uniq:16 bytes, Index:32, NumFree:32, then Module, OldIndex, OldUniq, Pid.
_FUN_ARITY_AT: Final = 5
_FUN_MODULE_AT: Final = 1 + 4 + 1 + 16 + 4 + 4


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """``{function, Fun}``: a model whose responses a BEAM function of arity 2 gives."""

    fun: BeamFun

    @property
    def label(self) -> str:
        """How ``info`` and ``list_agents`` show it."""
        if isinstance(self.fun, Export):
            return f"function {format_term(self.fun)}"
        return "function"

    @property
    def home(self) -> str | None:
        """The node the fun was made on (its creator's); ``None`` for an export, which any node has."""
        if isinstance(self.fun, Export):
            return None
        return str(fun_creator(self.fun).node)


def fun_arity(fun: BeamFun) -> int:
    """How many arguments ``fun`` takes."""
    if isinstance(fun, Export):
        return fun.arity
    return fun.raw[_FUN_ARITY_AT]


def fun_creator(fun: OpaqueFun) -> Pid:
    """The process a local fun was made in, read from its NEW_FUN_EXT bytes (checked when decoded)."""
    offset = _FUN_MODULE_AT
    for _ in range(3):  # Module, OldIndex, OldUniq
        _, offset = decode_at(fun.raw, offset)
    pid, _ = decode_at(fun.raw, offset)
    assert isinstance(pid, Pid)
    return pid


def function_model(ref: FunctionRef) -> Model:
    """The pydantic-ai model that asks ``ref``'s fun for every response, plain or streamed."""

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=_parts(await _ask(ref, messages, info), info))

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        reply = await _ask(ref, messages, info)
        for index, (part, chunks) in enumerate(_streamed(reply, info)):
            if isinstance(part, TextPart):
                for chunk in chunks:
                    yield chunk
            elif isinstance(part, ToolCallPart):
                yield {index: DeltaToolCall(part.tool_name, part.args_as_json_str(), tool_call_id=part.tool_call_id)}

    return FunctionModel(respond, stream_function=stream, model_name=ref.label)


async def _ask(ref: FunctionRef, messages: list[ModelMessage], info: AgentInfo) -> Term:
    """``Fun(Messages, Info)`` on the fun's node; ``BridgeError(model_error)`` if it does not return."""
    cluster = current_cluster.get()
    if cluster is None:
        raise BridgeError("model_error", "a function model answers only runs made from the BEAM")
    where = ref.home or cluster.caller_node
    args: list[Term] = [from_json(ModelMessagesTypeAdapter.dump_python(messages, mode="json")), _info_term(info)]
    try:
        return await cluster.node.erpc(where, "erlang", "apply", [ref.fun, args], timeout=None)
    except ErpcError as exc:
        raise BridgeError("model_error", failure_text(ref.label, where, exc.kind, exc.reason, exc.stack)) from None
    except (PynodeError, OSError, ValueError) as exc:
        message = f"the function model could not run: node {where} is not connected ({exc})"
        raise BridgeError("model_error", message) from None


def _info_term(info: AgentInfo) -> Term:
    output_tools = info.output_tools
    return {
        key("tools"): [_tool_term(tool) for tool in info.function_tools],
        key("output_schema"): from_json(output_tools[0].parameters_json_schema) if output_tools else None,
        key("text_output"): info.allow_text_output,
        key("instructions"): info.instructions,
    }


def _tool_term(tool: ToolDefinition) -> Term:
    return {
        key("name"): tool.name,
        key("description"): tool.description or "",
        key("parameters"): from_json(tool.parameters_json_schema),
    }


def _parts(reply: Term, info: AgentInfo) -> list[ModelResponsePart]:
    return [part for part, _ in _streamed(reply, info)]


def _streamed(reply: Term, info: AgentInfo) -> list[tuple[ModelResponsePart, list[str]]]:
    """Each part of the fun's reply with the text chunks a stream sends for it."""
    items = reply if isinstance(reply, list) and not _is_charlist(reply) else [reply]
    if not items:
        raise BridgeError("model_error", f"the function model returned an empty list; expected {_EXPECTED}")
    return [_part(item, info) for item in items]


def _part(item: Term, info: AgentInfo) -> tuple[ModelResponsePart, list[str]]:
    if isinstance(item, (bytes, str)) or _is_charlist(item):
        text = _text(item)
        return TextPart(text), [text]
    if type(item) is tuple and item and item[0] == _TEXT and len(item) == 2:
        chunks = [_text(c) for c in item[1]] if isinstance(item[1], list) and not _is_charlist(item[1]) else None
        chunks = chunks if chunks is not None else [_text(item[1])]
        return TextPart("".join(chunks)), chunks
    if type(item) is tuple and len(item) in (3, 4) and item[0] == _TOOL_CALL:
        args = _args(item[2])
        if len(item) == 4:
            return ToolCallPart(_text(item[1]), args, tool_call_id=_text(item[3])), []
        return ToolCallPart(_text(item[1]), args), []
    if type(item) is tuple and len(item) == 2 and item[0] == _OUTPUT:
        output = _args(item[1])
        if info.output_tools:
            return ToolCallPart(info.output_tools[0].name, output), []
        text = json.dumps(output)
        return TextPart(text), [text]
    shown = format_term(item, limit=300)
    raise BridgeError("model_error", f"the function model returned {shown}; expected {_EXPECTED}")


def _text(term: Term) -> str:
    if isinstance(term, str):
        return term
    if isinstance(term, bytes):
        return term.decode("utf-8", "replace")
    if _is_charlist(term):
        assert isinstance(term, list)
        return "".join(chr(c) for c in term)
    raise BridgeError("model_error", f"the function model gave {format_term(term, limit=300)} where text belongs")


def _args(term: Term) -> dict[str, Any]:
    value = to_json(term) if isinstance(term, dict) else None
    if not isinstance(value, dict):
        raise BridgeError("model_error", f"the function model gave {format_term(term, limit=300)} where a map belongs")
    return value


def _is_charlist(term: Term) -> bool:
    return isinstance(term, list) and bool(term) and all(type(c) is int and 0 <= c <= 0x10FFFF for c in term)
