"""The node's limits against peers that misbehave, in one documented place.

Every limit has a command-line flag and a default; the sans-IO cores take the
numbers they need as arguments, so a test of a limit needs no socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Generic, TypeVar

__all__ = ["DEFAULT_LIMITS", "Admission", "Limits"]

MiB: Final = 1 << 20
K = TypeVar("K")


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


class Admission(Generic[K]):
    """Which accepted sockets may start a handshake, and which have run out of set-up time.

    Sans-IO: the owner passes ``now`` and how many other connections are open,
    and closes what :meth:`expired` names.
    """

    __slots__ = ("_deadlines", "limits")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._deadlines: dict[K, float] = {}

    @property
    def handshaking(self) -> int:
        return len(self._deadlines)

    def open(self, key: K, arrived: float, *, others: int) -> bool:
        """A socket that arrived at ``arrived`` starts its handshake while ``others`` connections
        (established, dialling) are open. Its set-up time counts from its arrival, so a carrier's
        own handshake before this one (TLS) spends the same ``net_setuptime``."""
        if len(self._deadlines) + others >= self.limits.max_connections:
            return False
        self._deadlines[key] = arrived + self.limits.net_setuptime
        return True

    def settled(self, key: K) -> None:
        """The handshake ended, either way: no deadline for it any more."""
        self._deadlines.pop(key, None)

    def expired(self, now: float) -> list[K]:
        """The sockets whose handshake is still going past their deadline (forgotten here)."""
        # Not in deadline order: a TLS socket opens here once its TLS handshake is done.
        late = [key for key, deadline in self._deadlines.items() if deadline <= now]
        for key in late:
            del self._deadlines[key]
        return late

    def next_deadline(self) -> float | None:
        """When the oldest handshake runs out of time, or None when none is going."""
        return min(self._deadlines.values(), default=None)
