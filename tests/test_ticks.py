"""Tick decisions with time moved by hand: no sleeping."""

import pytest

from pynode.wire.ticks import TickAction, TickTimer


def test_quiet_connection_sends_a_tick_every_quarter() -> None:
    timer = TickTimer(60.0, now=1000.0)
    assert timer.next_deadline() == 1015.0
    assert timer.poll(1014.9) is TickAction.NOTHING
    assert timer.poll(1015.0) is TickAction.SEND_TICK
    timer.data_sent(1015.0)
    timer.data_received(1015.0)
    assert timer.poll(1015.1) is TickAction.NOTHING
    assert timer.next_deadline() == 1030.0


def test_writing_postpones_our_tick() -> None:
    timer = TickTimer(60.0, now=0.0)
    timer.data_sent(10.0)
    assert timer.poll(15.0) is TickAction.NOTHING
    assert timer.next_deadline() == 25.0
    assert timer.poll(25.0) is TickAction.SEND_TICK


def test_silent_peer_times_out_after_net_ticktime() -> None:
    timer = TickTimer(60.0, now=0.0)
    now = 0.0
    for _ in range(10):  # we keep ticking; the peer says nothing
        now = timer.next_deadline()
        action = timer.poll(now)
        if action is TickAction.PEER_TIMEOUT:
            break
        assert action is TickAction.SEND_TICK
        timer.data_sent(now)
    assert action is TickAction.PEER_TIMEOUT
    assert now == 60.0


def test_any_received_bytes_count_as_liveness() -> None:
    timer = TickTimer(8.0, now=0.0)
    timer.data_received(7.0)
    timer.data_sent(7.0)
    assert timer.poll(8.5) is TickAction.NOTHING
    assert timer.poll(14.9) is TickAction.SEND_TICK
    assert timer.poll(15.0) is TickAction.PEER_TIMEOUT


def test_timeout_wins_over_tick() -> None:
    timer = TickTimer(4.0, now=0.0)
    assert timer.poll(100.0) is TickAction.PEER_TIMEOUT


def test_next_deadline_is_the_earlier_of_the_two() -> None:
    timer = TickTimer(60.0, now=0.0)
    timer.data_sent(50.0)
    assert timer.next_deadline() == 60.0  # the peer's deadline comes before our next tick (65)


def test_rejects_nonpositive_ticktime() -> None:
    with pytest.raises(ValueError):
        TickTimer(0, now=0.0)
