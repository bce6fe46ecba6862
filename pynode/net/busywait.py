"""Polling the sockets without sleeping for a moment after the last one was ready.

A caller that makes one call after another sends its next request a round trip after the node
replied. If the node has gone to sleep in ``epoll_wait`` by then, the kernel has to wake it: on a
virtual machine that wake-up alone can cost more than the node's whole work for the call. The BEAM
meets the same cost the same way: its schedulers spin for a while after their last work before they
sleep (``+sbwt``). This selector does that for asyncio's loop: for ``spin`` seconds after the last
ready event, ``select`` asks the kernel without blocking, over and over, and only then blocks.

The spin never outlasts the loop's own timeout (a timer due sooner fires on time), and a loop with
callbacks ready never spins (asyncio then selects with a timeout of 0). A node that is idle sleeps
as before, after at most ``spin`` seconds of polling.

Polling only pays when the next event comes within the spin. Events further apart (a stream's
chunks 20 ms apart, a caller that thinks between calls) would each cost a whole spin of CPU for
nothing, so the selector stops spinning once a spin has found nothing, and starts again once a
sleep has ended within ``spin`` of its start: events are close enough again for polling to find
them.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_BUSY_WAIT_US", "BusyWaitSelector"]

DEFAULT_BUSY_WAIT_US: Final = 200
"""Microseconds of polling after the last ready socket before the loop sleeps (0: never poll)."""

_Ready = list[tuple[selectors.SelectorKey, int]]

_yield: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


class BusyWaitSelector(selectors.DefaultSelector):
    """The platform's selector, polling without a sleep for ``spin`` seconds after the last event."""

    def __init__(self, spin: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if spin < 0:
            raise ValueError("spin must not be negative")
        self.spin = spin
        self._clock = clock
        self._last_ready = float("-inf")
        self._polling_pays = True
        self.spins = 0
        """Selects answered by polling, that would have slept (for tests and figures)."""
        self.missed = 0
        """Spins that found nothing before they ended (for tests and figures)."""

    def select(self, timeout: float | None = None) -> _Ready:
        if timeout is not None and timeout <= 0:
            return self._ready(super().select(timeout))
        clock = self._clock
        now = clock()
        until = self._last_ready + self.spin
        if self._polling_pays and now < until:
            if timeout is not None:
                until = min(until, now + timeout)
            poll = super().select
            while True:
                ready = poll(0)
                if ready:
                    self.spins += 1
                    return self._ready(ready)
                if clock() >= until:
                    break
                _yield()  # a process waiting for this core (the peer, say) runs first
            if timeout is not None:
                timeout = max(0.0, timeout - (clock() - now))
                if timeout == 0.0:
                    return []  # the loop's timer is due: the spin did not miss, it was cut short
            self.missed += 1
            self._polling_pays = False
            now = clock()
        ready = super().select(timeout)
        if ready and clock() - now < self.spin:
            self._polling_pays = True  # the sleep was short: a spin would have found this
        return self._ready(ready)

    def _ready(self, ready: _Ready) -> _Ready:
        if ready:
            self._last_ready = self._clock()
        return ready
