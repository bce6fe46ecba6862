"""Rate-limited log lines, on data: the clock is passed in."""

from __future__ import annotations

import logging

import pytest

from pynode.logbudget import LimitedLog, LogBudget


def test_lines_per_interval_per_key_then_a_count() -> None:
    budget = LogBudget(lines=3, interval=10.0)
    admitted = [budget.admit("k", 0.5 + i * 0.001) for i in range(10_000)]
    assert admitted[:3] == [0, 0, 0] and admitted[3:] == [None] * 9_997
    assert budget.admit("other", 1.0) == 0  # keys do not share a budget
    # The next interval: the first line carries the count of those dropped.
    assert budget.admit("k", 10.6) == 9_997
    assert budget.admit("k", 10.7) == 0


def test_drain_reports_and_forgets_the_counts() -> None:
    budget = LogBudget(lines=1, interval=60.0)
    for key in (("undecodable", "a@h"), ("undecodable", "b@h")):
        for _ in range(5):
            budget.admit(key, 0.0)
    budget.admit(("quiet", "a@h"), 0.0)
    assert budget.drain(lambda key: key[-1] == "a@h") == [(("undecodable", "a@h"), 4)]
    assert len(budget) == 1
    assert budget.drain() == [(("undecodable", "b@h"), 4)] and len(budget) == 0


def test_the_number_of_keys_is_bounded() -> None:
    budget = LogBudget(lines=1, interval=60.0, max_keys=100)
    for i in range(10_000):
        assert budget.admit(("handshake", i), 0.0) == 0
    assert len(budget) == 100
    with pytest.raises(ValueError):
        LogBudget(lines=0)


def test_a_flood_logs_a_handful_of_lines_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("pynode.test_logbudget")
    limited = LimitedLog(logger, LogBudget(lines=5, interval=60.0))
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logged = sum(limited.warning(("undecodable", "e@h"), 1.0, "bad message %d", n) for n in range(10_000))
        limited.warning(("undecodable", "e@h"), 62.0, "bad message %d", 10_000)
        for n in range(3):
            limited.warning(("undecodable", "e@h"), 63.0, "bad message %d", n)
        limited.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert logged == 5
    assert lines[:5] == [f"bad message {n}" for n in range(5)]
    assert lines[5] == "bad message 10000 (9995 more like this were not logged)"
    assert lines[6:] == [f"bad message {n}" for n in range(3)]  # within the new budget: nothing to flush
    assert len(lines) == 9
    limited.flush()
    assert len(caplog.records) == 9


def test_flush_tells_the_count_once(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("pynode.test_logbudget")
    limited = LimitedLog(logger, LogBudget(lines=2, interval=60.0))
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for _ in range(1000):
            limited.warning(("undecodable", "e@h"), 0.0, "bad")
        limited.flush(lambda key: key[-1] == "e@h")
        limited.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad", "bad", "undecodable e@h: 998 more like this were not logged"]
