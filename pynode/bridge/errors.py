"""Error kinds of the wire protocol (docs/protocol.md section 6) and the one place that maps exceptions to them.

Every failure a BEAM caller sees is ``{error, {Kind, Message}}``: ``Kind`` says whose fault it is
(the request, the spec, the model, the run's limits, this node) and ``Message`` is for a person.
"""

from __future__ import annotations

import asyncio
import re
from typing import Final, Literal, TypeAlias, get_args

from pydantic_ai import exceptions as pai

from pynode.bridge.secrets import SECRETS
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
    "rate_limited",
    "auth_failed",
    "model_timeout",
    "draining",
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
        message = plain_text(message)
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    def to_term(self) -> tuple[Atom, tuple[Atom, str]]:
        """This error as the reply term."""
        return error_term(self.kind, self.message)


def error_term(kind: ErrorKind, message: str) -> tuple[Atom, tuple[Atom, str]]:
    """``{error, {Kind, Message}}``; the message encodes as a binary, with every known secret taken out."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}")
    return (ERROR, (Atom(kind), plain_text(message)))


# pydantic's "For further information visit https://errors.pydantic.dev/..." and pydantic-ai's
# "(see https://ai.pydantic.dev/...)" point a Python programmer at Python docs; a BEAM caller reads
# the error without them.
_PYTHON_DOC_LINKS: Final = re.compile(
    r"\s*(?:For further information visit|\(?see) https://(?:errors\.pydantic\.dev|ai\.pydantic\.dev)\S*\)?",
    re.IGNORECASE,
)


def plain_text(message: str) -> str:
    """An error text as a BEAM caller gets it: no known secret, no links to Python docs."""
    return _PYTHON_DOC_LINKS.sub("", SECRETS.redact(message))


def quoted(name: str) -> str:
    """A name (a key, a tool) in a message, in single quotes as Erlang quotes an atom: ``'colour'``."""
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """The error kind and message for an exception escaping a run (the one mapping of pydantic-ai errors).

    Its message reaches a caller only through :class:`BridgeError` or :func:`error_term`, which take
    every known secret out.

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
    if isinstance(exc, pai.ModelAPIError):
        return _provider_error(exc)
    if isinstance(exc, pai.FallbackExceptionGroup):
        failures = [classify(e) for e in exc.exceptions]
        kinds = {kind for kind, _ in failures}
        causes = "; ".join(message for _, message in failures)
        return (kinds.pop() if len(kinds) == 1 else "model_error"), f"every fallback model failed: {causes}"
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return classify(exc.exceptions[0])  # a task group's wrapping of the one real failure
    if isinstance(exc, pai.UnexpectedModelBehavior):
        return "unexpected_model_behavior", str(exc)
    if isinstance(exc, (pai.UserError, ImportError)) and _about_model_setup(str(exc)):
        return "model_unavailable", str(exc)
    return "internal_error", f"{type(exc).__name__}: {exc}"


def _provider_error(exc: pai.ModelAPIError) -> tuple[ErrorKind, str]:
    """A provider's failure as its section 6 kind, with the provider's own message as the text."""
    model = exc.model_name
    said = _provider_message(exc.body) or exc.message
    status = exc.status_code if isinstance(exc, pai.ModelHTTPError) else None
    if isinstance(exc, pai.ModelAuthenticationError) or status in (401, 403):
        return "auth_failed", f"model {model} refused the API key (HTTP {status}): {said}"
    if isinstance(exc, pai.ModelRateLimitError) or status == 429:
        wait = f"; it asked to retry after {exc.retry_after:g} s" if exc.retry_after is not None else ""
        return "rate_limited", f"model {model} is rate limited (HTTP 429): {said}{wait}"
    if isinstance(exc, (pai.ModelTimeoutError, pai.ModelRequestTimeout)):
        return "model_timeout", f"model {model} did not answer in time: {exc.message}"
    if status is not None:
        return "model_http_error", f"HTTP {status} from model {model}: {said}"
    if isinstance(exc, pai.ModelConnectionError):
        return "model_http_error", f"model {model} could not be reached: {exc.message}"
    return "model_error", f"{type(exc).__name__} from model {model}: {exc.message}"


def _provider_message(body: object) -> str | None:
    """The human part of a provider's error body: OpenAI's ``message``, Anthropic's ``error.message``."""
    if isinstance(body, dict):
        for candidate in (body, body.get("error")):
            if isinstance(candidate, dict) and isinstance(candidate.get("message"), str):
                return str(candidate["message"])
    if isinstance(body, str) and body:
        return body
    return None


def _about_model_setup(message: str) -> bool:
    lowered = message.lower()
    return any(hint in lowered for hint in _MODEL_SETUP_HINTS)


def _text(exc: BaseException, default: str) -> str:
    return str(exc) or default
