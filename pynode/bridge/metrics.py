"""What the node has done since it started, for the registry's ``info`` (docs/protocol.md section 3).

Counted once per run, where the run ends: its outcome (``ok`` or its error kind), pydantic-ai's
usage of it (requests, tokens, tool calls, cost, also for a run that failed part way), and how
long it took. The totals live in :class:`~pynode.bridge.agents.RunLimits`, so a restarted
registry goes on counting from where the last one was.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, TypeAlias

from pydantic_ai.usage import RunUsage

from pynode.etf.types import Atom, Term

__all__ = ["DURATION_WINDOW", "MAX_DURATIONS", "NodeMetrics", "RecentDurations", "RunEndedListener"]

log = logging.getLogger("pynode.metrics")

RunEndedListener: TypeAlias = Callable[[str | None, str, float], None]
"""Told of every run that ends: its agent (``None`` when not given), its kind, its duration in seconds."""

DURATION_WINDOW: Final = 60.0
"""Seconds of run durations the percentiles cover."""
MAX_DURATIONS: Final = 10_000
"""The most durations kept: past that many runs a minute, the percentiles cover the latest ones."""

_OK: Final = Atom("ok")
_ERROR: Final = Atom("error")
_NIL: Final = Atom("nil")


class RecentDurations:
    """Run durations of the last ``window`` seconds, at most ``limit`` of them (the newest).

    A ring of two preallocated arrays of doubles rather than a deque of ``(end, duration)`` tuples:
    a tuple and two floats per run, made as each run of a burst ends, would outlive the burst by the
    window and keep hundreds of the allocator's arenas (each mostly empty) from going back to the
    system; the arrays are two blocks made once.
    """

    __slots__ = ("_count", "_durations", "_ends", "_first", "limit", "window")

    def __init__(self, window: float = DURATION_WINDOW, limit: int = MAX_DURATIONS) -> None:
        self.window = window
        self.limit = limit
        self._ends = array("d", bytes(8 * limit))
        """End times in seconds of ``time.monotonic()``; slot ``(_first + i) % limit`` is the i-th oldest."""
        self._durations = array("d", bytes(8 * limit))
        self._first = 0
        self._count = 0

    def add(self, duration: float, now: float) -> None:
        self._prune(now)
        slot = (self._first + self._count) % self.limit
        self._ends[slot] = now
        self._durations[slot] = duration
        if self._count < self.limit:
            self._count += 1
        else:  # full: the oldest is overwritten
            self._first = (self._first + 1) % self.limit

    def recent(self, now: float) -> list[float]:
        """The durations of runs that ended in the window before ``now``, sorted."""
        self._prune(now)
        first, count, limit, durations = self._first, self._count, self.limit, self._durations
        return sorted(durations[(first + i) % limit] for i in range(count))

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        ends, limit = self._ends, self.limit
        while self._count and ends[self._first] < horizon:
            self._first = (self._first + 1) % limit
            self._count -= 1


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of a sorted, non-empty list: the smallest value with at least
    ``fraction`` of the values at or below it."""
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass(slots=True)
class NodeMetrics:
    """Totals of every run that ended on this node, and the durations of the last minute's."""

    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """Runs that ended with ``{error, {Kind, _}}``, by kind."""
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    cost: Decimal | None = None
    """USD, summed over the runs whose usage had a cost; ``None`` while none had."""
    durations: RecentDurations = field(default_factory=RecentDurations)
    runs: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Runs ended by ``(agent, kind)``; the agent is ``""`` when the caller of :meth:`run_ended` did not name it."""
    listeners: list[RunEndedListener] = field(default_factory=list)
    """Called after each run is counted (the OpenTelemetry duration histogram, when metrics are exported)."""

    def run_ended(
        self,
        kind: str,
        usage: RunUsage | None,
        duration: float,
        now: float | None = None,
        *,
        agent: str | None = None,
    ) -> None:
        """One run ended: ``kind`` is ``ok`` or its error kind; ``duration`` in seconds."""
        if kind == "ok":
            self.ok += 1
        else:
            self.errors[kind] += 1
        self.runs[(agent or "", kind)] += 1
        if usage is not None:
            self.requests += usage.requests
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.tool_calls += usage.tool_calls
            if usage.cost is not None:
                self.cost = (self.cost or Decimal(0)) + usage.cost
        self.durations.add(duration, time.monotonic() if now is None else now)
        for listener in self.listeners:
            try:
                listener(agent, kind, duration)
            except Exception:  # a listener never stops a run from being counted or answered
                log.warning("metrics: a run-ended listener failed", exc_info=True)

    def outcomes_term(self) -> dict[Atom, Term]:
        """``#{ok => N, error => #{Kind => N}}``."""
        return {_OK: self.ok, _ERROR: {Atom(kind): count for kind, count in sorted(self.errors.items())}}

    def usage_term(self) -> dict[Atom, Term]:
        """``#{requests, input_tokens, output_tokens, tool_calls, cost}``, as a run's Result has them."""
        return {
            Atom("requests"): self.requests,
            Atom("input_tokens"): self.input_tokens,
            Atom("output_tokens"): self.output_tokens,
            Atom("tool_calls"): self.tool_calls,
            Atom("cost"): _NIL if self.cost is None else float(self.cost),
        }

    def durations_term(self, now: float | None = None) -> dict[Atom, Term]:
        """``#{runs => N, p50 => Ms, p99 => Ms}`` over the last minute; ``nil`` percentiles when no run ended."""
        recent = self.durations.recent(time.monotonic() if now is None else now)
        if not recent:
            return {Atom("runs"): 0, Atom("p50"): _NIL, Atom("p99"): _NIL}
        return {
            Atom("runs"): len(recent),
            Atom("p50"): _ms(percentile(recent, 0.50)),
            Atom("p99"): _ms(percentile(recent, 0.99)),
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
