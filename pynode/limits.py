"""The node's limits against peers that misbehave, in one documented place.

Every limit has a command-line flag and a default; the sans-IO cores take the
numbers they need as arguments, so a test of a limit needs no socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_LIMITS", "Limits"]

MiB: Final = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """What one peer, or all of them together, may cost the node."""

    net_setuptime: float = 7.0
    """Seconds a connection has to finish its handshake, in and out (``erl -kernel net_setuptime``)."""

    max_connections: int = 1024
    """Connections at once, established or still in their handshake; more are closed at once."""

    max_message_size: int = 256 * MiB
    """Bytes of one message once fragments are joined and compressed terms inflated."""

    max_fragment_bytes: int = 256 * MiB
    """Bytes of unfinished fragmented messages one connection may hold; released when it closes."""

    max_fragment_sequences: int = 1024
    """Fragmented messages one connection may have started and not finished."""

    log_lines: int = 10
    """Lines of one kind (say, undecodable messages from one peer) logged per ``log_interval``; the rest counted."""

    log_interval: float = 60.0
    """Seconds of the window ``log_lines`` counts in."""


DEFAULT_LIMITS: Final = Limits()
