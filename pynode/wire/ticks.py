"""Tick decisions for one connection, as a pure function of times passed in.

Like OTP's net_kernel: we send a tick (an empty frame) when we have written
nothing for ``net_ticktime / 4``, and give the peer up when nothing at all has
arrived for ``net_ticktime``. Any received bytes count as liveness, not only
ticks. The owner reads the clock and arms one timer at :meth:`next_deadline`.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["TickAction", "TickTimer"]


class TickAction(Enum):
    """What the owner should do now."""

    NOTHING = "nothing"
    SEND_TICK = "send_tick"
    PEER_TIMEOUT = "peer_timeout"


class TickTimer:
    """Tracks when we last wrote and last heard from the peer."""

    __slots__ = ("interval", "last_received", "last_sent", "net_ticktime")

    def __init__(self, net_ticktime: float, now: float) -> None:
        if net_ticktime <= 0:
            raise ValueError("net_ticktime must be positive")
        self.net_ticktime = net_ticktime
        self.interval = net_ticktime / 4
        self.last_received = now
        self.last_sent = now

    def data_received(self, now: float) -> None:
        """Any bytes from the peer (a tick or a message)."""
        self.last_received = now

    def data_sent(self, now: float) -> None:
        """Any bytes written to the peer, including the tick that :meth:`poll` asked for."""
        self.last_sent = now

    def poll(self, now: float) -> TickAction:
        """The action due at ``now``; a silent peer wins over our own tick."""
        if now - self.last_received >= self.net_ticktime:
            return TickAction.PEER_TIMEOUT
        if now - self.last_sent >= self.interval:
            return TickAction.SEND_TICK
        return TickAction.NOTHING

    def next_deadline(self) -> float:
        """When :meth:`poll` may next return something other than ``NOTHING``."""
        return min(self.last_sent + self.interval, self.last_received + self.net_ticktime)
