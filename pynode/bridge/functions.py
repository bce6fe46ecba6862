"""``{M, F}`` handlers called on a BEAM node: where they run, and their failures in words.

Tools and dynamic instructions given as ``{M, F}`` run on the agent's home node (its creator's),
``{M, F, Node}`` on ``Node``, each in a process spawned there as ``erpc:call`` does. Whatever goes
wrong (an exception, an exit, a node that cannot be reached) comes back as one
``BridgeError(tool_error)`` whose message says which function, on which node, and what happened,
with terms in Erlang syntax and Elixir exceptions by their message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pynode.bridge.errors import BridgeError
from pynode.bridge.structs import struct_name
from pynode.errors import ErpcError, PynodeError
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Term
from pynode.runtime.kernel import Kernel
from pynode.runtime.process import Process

if TYPE_CHECKING:  # the spec's parser names function models, which report failures through here
    from pynode.bridge.spec import MFHandler

__all__ = ["call_function", "failure_text", "function_node", "takes_context"]

_STRUCT: Final = Atom("__struct__")
_EXCEPTION: Final = Atom("__exception__")
_MESSAGE: Final = Atom("message")
_ERPC: Final = Atom("erpc")
_NOCONNECTION: Final = Atom("noconnection")
_UNDEF: Final = Atom("undef")
_EXPORTS: Final = Atom("exports")
_SHOWN_LIMIT: Final = 500


def function_node(handler: MFHandler, home: Atom | None, caller_node: Atom) -> str:
    """The node ``handler`` runs on: its own, else the agent's home, else the run caller's."""
    if handler.node is not None:
        return str(handler.node)
    return str(home if home is not None else caller_node)


async def call_function(node: Kernel[Process], where: str, handler: MFHandler, arg: Term, *, ctx: Term = None) -> Term:
    """``Module:Function(Arg)`` on node ``where``; ``BridgeError(tool_error)`` if it does not return.

    With ``ctx`` (a tool's context, for a function :func:`takes_context` said yes to),
    ``Module:Function(Arg, Ctx)``. No timeout of its own: the run's timeout and cancellation end
    the wait (and the remote process).
    """
    args = [arg] if ctx is None else [arg, ctx]
    try:
        return await node.erpc(where, str(handler.module), str(handler.function), args, timeout=None)
    except ErpcError as exc:
        raise BridgeError("tool_error", failure_text(handler, where, exc.kind, exc.reason, exc.stack)) from None
    except (PynodeError, OSError, ValueError) as exc:
        raise BridgeError("tool_error", f"{handler} could not run: node {where} is not connected ({exc})") from None


async def takes_context(node: Kernel[Process], where: str, handler: MFHandler) -> bool:
    """Whether ``Module`` on ``where`` exports ``Function/2`` (``module_info`` loads it if need be).

    Any failure is a no: the call with one argument then says what is wrong.
    """
    try:
        exports = await node.erpc(where, str(handler.module), "module_info", [_EXPORTS], timeout=None)
    except (ErpcError, PynodeError, OSError, ValueError):
        return False
    return isinstance(exports, list) and (handler.function, 2) in exports


def failure_text(handler: MFHandler | str, where: str, kind: str, reason: Term, stack: Term = None) -> str:
    """How ``erpc:call`` of ``handler`` (or of what a text names) failed, as a person reads it.

    ``kind``: error, exit or throw.
    """
    if kind == "error" and reason == (_ERPC, _NOCONNECTION):
        return f"{handler} could not finish: node {where} disconnected"
    if kind == "error" and reason == _UNDEF and not isinstance(handler, str) and _undefined_itself(handler, stack):
        return f"{handler} is not defined on node {where}"
    if kind == "error":
        return f"{handler} on node {where} raised {_exception_text(reason)}"
    if kind == "throw":
        return f"{handler} on node {where} threw {format_term(reason, limit=_SHOWN_LIMIT)}"
    return f"{handler} on node {where} exited: {format_term(reason, limit=_SHOWN_LIMIT)}"


def _exception_text(reason: Term) -> str:
    """An Elixir exception as ``RuntimeError: its message``; any other reason in Erlang syntax."""
    if type(reason) is dict and reason.get(_EXCEPTION) is True and isinstance(reason.get(_STRUCT), Atom):
        name = struct_name(reason[_STRUCT])
        message = reason.get(_MESSAGE)
        if isinstance(message, bytes | str):
            text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
            return f"{name}: {text}"
        fields = {k: v for k, v in reason.items() if k not in (_STRUCT, _EXCEPTION)}
        return f"{name} {format_term(fields, limit=_SHOWN_LIMIT)}"
    return format_term(reason, limit=_SHOWN_LIMIT)


def _undefined_itself(handler: MFHandler, stack: Term) -> bool:
    """True when the stack's top frame is ``handler`` itself (not a function it called)."""
    if not isinstance(stack, list) or not stack:
        return False
    top = stack[0]
    return type(top) is tuple and len(top) >= 2 and top[0] == handler.module and top[1] == handler.function
