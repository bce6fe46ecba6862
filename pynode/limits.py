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

    def open(self, key: K, now: float, *, others: int) -> bool:
        """A socket was accepted while ``others`` connections (established, dialling) are open."""
        if len(self._deadlines) + others >= self.limits.max_connections:
            return False
        self._deadlines[key] = now + self.limits.net_setuptime
        return True

    def settled(self, key: K) -> None:
        """The handshake ended, either way: no deadline for it any more."""
        self._deadlines.pop(key, None)

    def expired(self, now: float) -> list[K]:
        """The sockets whose handshake is still going past their deadline (forgotten here)."""
        # Deadlines are ``now`` plus one constant, so insertion order is deadline order.
        late: list[K] = []
        for key, deadline in self._deadlines.items():
            if deadline > now:
                break
            late.append(key)
        for key in late:
            del self._deadlines[key]
        return late

    def next_deadline(self) -> float | None:
        """When the oldest handshake runs out of time, or None when none is going."""
        return next(iter(self._deadlines.values()), None)
