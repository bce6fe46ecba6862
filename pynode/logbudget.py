"""Repeated log lines, rate-limited: a few per interval per key, then one line with the count.

A peer can make the node log at will (10,000 undecodable messages would be
10,000 lines). :class:`LogBudget` lets ``lines`` lines per ``interval`` seconds
through for each key (say ``("undecodable", peer)``) and counts the rest; the
count is told with the next line let through, or by :meth:`LogBudget.drain`
(when the connection closes). The clock is passed in, so the budget is tested
on data.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

__all__ = ["LimitedLog", "LogBudget"]


class _Window:
    __slots__ = ("dropped", "lines", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.lines = 1
        self.dropped = 0


class LogBudget:
    """How many lines each key may still log in its current interval, and how many it lost."""

    def __init__(self, *, lines: int = 10, interval: float = 60.0, max_keys: int = 4096) -> None:
        if lines < 1 or interval <= 0 or max_keys < 1:
            raise ValueError("a log budget needs lines >= 1, interval > 0 and max_keys >= 1")
        self.lines = lines
        self.interval = interval
        self.max_keys = max_keys
        self._windows: dict[Hashable, _Window] = {}

    def admit(self, key: Hashable, now: float) -> int | None:
        """``None``: drop this line (it is counted). A number: log it, saying that many were dropped before it."""
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval:
            dropped = window.dropped if window is not None else 0
            if window is None and len(self._windows) >= self.max_keys:
                del self._windows[next(iter(self._windows))]  # the oldest key: its count is lost
            self._windows[key] = _Window(now)
            return dropped
        if window.lines < self.lines:
            window.lines += 1
            return 0
        window.dropped += 1
        return None

    def drain(self, match: Any = None) -> list[tuple[Hashable, int]]:
        """Forget the keys (those ``match`` accepts, or all): the ones that dropped lines, with their counts."""
        gone = [key for key in self._windows if match is None or match(key)]
        counts = []
        for key in gone:
            window = self._windows.pop(key)
            if window.dropped:
                counts.append((key, window.dropped))
        return counts

    def __len__(self) -> int:
        return len(self._windows)


class LimitedLog:
    """A logger whose lines go through a :class:`LogBudget`, keyed by the caller."""

    def __init__(self, logger: logging.Logger, budget: LogBudget) -> None:
        self.logger = logger
        self.budget = budget

    def log(self, level: int, key: Hashable, now: float, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` has spent its budget; True when it was logged."""
        dropped = self.budget.admit(key, now)
        if dropped is None:
            return False
        if dropped:
            msg += " (%d more like this were not logged)"
            args = (*args, dropped)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: Hashable, now: float, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, now, msg, *args)

    def flush(self, match: Any = None, level: int = logging.WARNING) -> None:
        """One line per key that dropped lines, with the count; the keys are forgotten."""
        for key, dropped in self.budget.drain(match):
            self.logger.log(level, "%s: %d more like this were not logged", _describe(key), dropped)


def _describe(key: Hashable) -> str:
    if isinstance(key, tuple):
        return " ".join(map(str, key))
    return str(key)
