"""Approval decisions, as the BEAM writes them, and pydantic-ai's form of them (docs/protocol.md section 5).

``approve``, ``{approve, NewArgs}``, ``deny`` and ``{deny, Message}`` become pydantic-ai's
:class:`~pydantic_ai.tools.ToolApproved` and :class:`~pydantic_ai.tools.ToolDenied`; the run
settles deferred calls with them through pydantic-ai's own deferred-tools machinery.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

from pydantic_ai.messages import ToolCallPart
from pydantic_ai.tools import ToolApproved, ToolDenied

from pynode.bridge.errors import BridgeError
from pynode.bridge.termmap import from_json, to_json
from pynode.bridge.tools import message_text
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Term

__all__ = ["Decision", "decision_term", "deferred_term", "denied_unclear", "parse_decision"]

Decision: TypeAlias = ToolApproved | ToolDenied

APPROVE: Final = Atom("approve")
DENY: Final = Atom("deny")


def parse_decision(term: Term) -> Decision:
    """A ``Decision`` term -> pydantic-ai's decision, or ``BridgeError(bad_request)`` saying what is wrong."""
    if term == APPROVE:
        return ToolApproved()
    if term == DENY:
        return ToolDenied()
    if type(term) is tuple and len(term) == 2:
        tag, value = term
        if tag == APPROVE:
            if not isinstance(value, dict):
                raise BridgeError(
                    "bad_request", f"{{approve, NewArgs}} needs a map, got {format_term(value, limit=80)}"
                )
            args = to_json(value)
            assert isinstance(args, dict)
            return ToolApproved(override_args=args)
        if tag == DENY:
            return ToolDenied(message_text(value))
    raise BridgeError(
        "bad_request",
        "a decision must be approve, {approve, NewArgs}, deny or {deny, Message},"
        f" got {format_term(term, limit=80)}",
    )


def denied_unclear(term: Term) -> ToolDenied:
    """What an approver's decision that is none of the four means: the call is denied, and the model told why."""
    return ToolDenied(
        f"The tool call was denied: the approver's decision {format_term(term, limit=80)} was not understood."
    )


def decision_term(decision: Decision) -> Term:
    """The decision as the ``{approval, CallId, Decision}`` event shows it."""
    if isinstance(decision, ToolApproved):
        return APPROVE if decision.override_args is None else (APPROVE, from_json(decision.override_args))
    return (DENY, decision.message)


def deferred_term(call: ToolCallPart) -> dict[Atom, Term]:
    """One entry of a Result's ``deferred``: the model's own call id, so that a later run can resume it."""
    args: Any = call.args_as_dict()
    return {Atom("call_id"): call.tool_call_id, Atom("name"): call.tool_name, Atom("args"): from_json(args)}
