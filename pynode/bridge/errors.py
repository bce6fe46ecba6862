"""Error kinds of the wire protocol (PROTOCOL.md section 6) and the one place that maps exceptions to them.

Every failure a BEAM caller sees is ``{error, {Kind, Message}}``: ``Kind`` says whose fault it is
(the request, the spec, the model, the run's limits, this node) and ``Message`` is for a person.
"""

from __future__ import annotations

import asyncio
from typing import Final, Literal, TypeAlias, get_args

from pydantic_ai import exceptions as pai

from pynode.etf.types import Atom

__all__ = ["ERROR_KINDS", "BridgeError", "ErrorKind", "classify", "error_term", "quoted"]

ErrorKind: TypeAlias = Literal[
    "bad_request",
    "bad_spec",
    "unknown_agent",
    "already_exists",
    "model_unavailable",
    "model_http_error",
    "model_error",
    "unexpected_model_behavior",
    "usage_limit_exceeded",
    "tool_error",
    "timeout",
    "cancelled",
    "overloaded",
    "internal_error",
]

ERROR_KINDS: Final[frozenset[str]] = frozenset(get_args(ErrorKind))

ERROR: Final = Atom("error")

# Words in a pydantic-ai ``UserError`` (or ``ImportError``) raised while resolving a model name:
# unknown model, missing provider package, missing key or endpoint.
_MODEL_SETUP_HINTS: Final = (
    "unknown model",
    "provider",
    "api key",
    "api_key",
    "environment variable",
    "pip install",
)


class BridgeError(Exception):
    """A failure that goes back to the BEAM caller as ``{error, {kind, message}}``."""

    kind: ErrorKind
    message: str

    def __init__(self, kind: ErrorKind, message: str) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    def to_term(self) -> tuple[Atom, tuple[Atom, str]]:
        """This error as the reply term."""
        return error_term(self.kind, self.message)


def error_term(kind: ErrorKind, message: str) -> tuple[Atom, tuple[Atom, str]]:
    """``{error, {Kind, Message}}``; the message encodes as a binary."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}")
    return (ERROR, (Atom(kind), message))


def quoted(name: str) -> str:
    """A name (a key, a tool) in a message, in single quotes as Erlang quotes an atom: ``'colour'``."""
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """The error kind and message for an exception escaping a run (the one mapping of pydantic-ai errors).

    Order matters: pydantic-ai's classes overlap (``RunTimedOut`` is a ``RunCancelled`` and a
    ``TimeoutError``; an HTTP error is also one of the category classes).
    """
    if isinstance(exc, BridgeError):
        return exc.kind, exc.message
    if isinstance(exc, pai.RunTimedOut):
        return "timeout", _text(exc, "the run timed out")
    if isinstance(exc, (asyncio.CancelledError, pai.RunCancelled)):
        return "cancelled", _text(exc, "the run was cancelled")
    if isinstance(exc, TimeoutError):
        return "timeout", _text(exc, "timed out")
    if isinstance(exc, pai.UsageLimitExceeded):
        return "usage_limit_exceeded", exc.message
    if isinstance(exc, pai.ConcurrencyLimitExceeded):
        return "overloaded", exc.message
    if isinstance(exc, pai.ModelHTTPError):
        return "model_http_error", f"HTTP {exc.status_code} from model {exc.model_name}: {exc.body}"
    if isinstance(exc, pai.ModelAPIError):
        return "model_error", f"{type(exc).__name__} from model {exc.model_name}: {exc.message}"
    if isinstance(exc, pai.FallbackExceptionGroup):
        causes = "; ".join(classify(e)[1] for e in exc.exceptions)
        return "model_error", f"every fallback model failed: {causes}"
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return classify(exc.exceptions[0])  # a task group's wrapping of the one real failure
    if isinstance(exc, pai.UnexpectedModelBehavior):
        return "unexpected_model_behavior", str(exc)
    if isinstance(exc, (pai.UserError, ImportError)) and _about_model_setup(str(exc)):
        return "model_unavailable", str(exc)
    return "internal_error", f"{type(exc).__name__}: {exc}"


def _about_model_setup(message: str) -> bool:
    lowered = message.lower()
    return any(hint in lowered for hint in _MODEL_SETUP_HINTS)


def _text(exc: BaseException, default: str) -> str:
    return str(exc) or default
