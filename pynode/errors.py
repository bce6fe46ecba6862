"""Errors that say whose fault it is and at which step.

``Local*`` errors mean this node broke a rule (a bug here or a misuse of the
API); ``Remote*`` errors mean the peer or its data did. Either closes only
what it must: a bad term drops one message, a protocol breach one connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: the codec imports this module
    from pynode.etf.types import Term


class PynodeError(Exception):
    """Base of every error raised by pynode."""


class CodecError(PynodeError):
    """A term could not be decoded (bad input) or encoded (no Erlang form)."""


class RemoteProtocolError(PynodeError):
    """The peer broke the distribution or EPMD protocol."""


class LocalProtocolError(PynodeError):
    """This node was asked to do something the protocol does not allow."""


class HandshakeError(RemoteProtocolError):
    """A handshake failed; ``step`` names where, as OTP's dist_util does."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class EpmdError(PynodeError):
    """EPMD could not be reached or refused a request."""


class NodeDown(PynodeError):
    """The connection to a node is gone (or could not be made)."""

    def __init__(self, node: str, reason: str = "noconnection") -> None:
        super().__init__(f"{node}: {reason}")
        self.node = node
        self.reason = reason


class CallTimeout(PynodeError):
    """A call got no reply within its timeout."""


class CallExit(PynodeError):
    """A call ended because the callee exited (``noproc``, ``noconnection``, ...)."""

    def __init__(self, reason: object, shown: str | None = None) -> None:
        """``shown``: the reason in Erlang syntax, made by the caller (the codec sits above this module)."""
        super().__init__(f"callee exited: {shown if shown is not None else reason!r}")
        self.reason = reason


class ErpcError(PynodeError):
    """``erpc:call`` raised on the remote node: ``kind`` is throw, exit or error."""

    def __init__(self, kind: str, reason: Term, stack: Term = None, *, shown: str | None = None) -> None:
        """``shown``: the reason in Erlang syntax, made by the caller (the codec sits above this module)."""
        super().__init__(f"{kind}: {shown if shown is not None else reason!r}")
        self.kind = kind
        self.reason = reason
        self.stack = stack
