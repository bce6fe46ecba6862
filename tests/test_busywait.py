"""The busy-wait selector: it polls after an event, never past the loop's timeout, and sleeps when idle."""

from __future__ import annotations

import asyncio
import selectors
import socket
from collections.abc import Iterator

import pytest

from pynode.cli import build_parser, run_loop
from pynode.net.busywait import DEFAULT_BUSY_WAIT_US, BusyWaitSelector


class StepClock:
    """A clock that moves ``step`` seconds each time it is read, so a spin ends after a known count."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.step
        return self.now


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def one_event(selector: BusyWaitSelector, reader: socket.socket, writer: socket.socket) -> None:
    """Register ``reader`` and have one byte arrive on it and be read: the selector has seen an event."""
    selector.register(reader, selectors.EVENT_READ)
    writer.send(b"a")
    assert [key.fileobj for key, _ in selector.select(None)] == [reader]
    reader.recv(1)


def test_a_request_after_an_event_is_found_by_polling(pair: tuple[socket.socket, socket.socket]) -> None:
    reader, writer = pair
    with BusyWaitSelector(spin=1.0, clock=StepClock(0.001)) as selector:
        selector.register(reader, selectors.EVENT_READ)
        writer.send(b"a")
        assert [key.fileobj for key, _ in selector.select(None)] == [reader]
        assert selector.spins == 0  # nothing had been ready before: it blocked (and returned at once)
        reader.recv(1)
        writer.send(b"b")
        assert [key.fileobj for key, _ in selector.select(None)] == [reader]
        assert selector.spins == 1  # within a second of the first event: found without blocking


def test_the_spin_never_outlasts_the_loops_timeout(pair: tuple[socket.socket, socket.socket]) -> None:
    reader, writer = pair
    clock = StepClock(0.001)
    with BusyWaitSelector(spin=1000.0, clock=clock) as selector:
        one_event(selector, reader, writer)
        reads = clock.reads
        assert selector.select(0.01) == []  # a timer is due in 10 ms: the spin stops there
        assert clock.reads - reads < 30  # about ten polls of 1 ms, not 1000 s of them
        assert selector.spins == 0


def test_an_idle_selector_does_not_poll(pair: tuple[socket.socket, socket.socket]) -> None:
    reader, writer = pair
    clock = StepClock(0.001)
    with BusyWaitSelector(spin=0.005, clock=clock) as selector:
        selector.register(reader, selectors.EVENT_READ)
        assert selector.select(0.001) == []  # never an event: straight to the kernel
        assert clock.reads == 1
        selector.unregister(reader)
        one_event(selector, reader, writer)
        clock.now += 1.0  # long after the last event: the spin window is over
        reads = clock.reads
        assert selector.select(0.001) == []
        assert clock.reads - reads == 1
        assert selector.spins == 0


def test_a_spin_that_finds_nothing_stops_the_polling_until_events_come_close_again(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reader, writer = pair
    clock = StepClock(0.001)
    with BusyWaitSelector(spin=0.005, clock=clock) as selector:
        one_event(selector, reader, writer)
        assert selector.select(0.05) == []  # five polls of 1 ms find nothing; then it sleeps
        assert (selector.spins, selector.missed) == (0, 1)
        writer.send(b"b")
        reads = clock.reads
        assert [key.fileobj for key, _ in selector.select(0.05)] == [reader]
        assert clock.reads - reads == 3  # no polling: straight to the kernel (and the sleep timed)
        assert selector.spins == 0
        reader.recv(1)
        writer.send(b"c")  # that sleep ended at once: the next event is looked for by polling again
        assert [key.fileobj for key, _ in selector.select(None)] == [reader]
        assert (selector.spins, selector.missed) == (1, 1)


def test_a_negative_spin_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        BusyWaitSelector(spin=-1.0)


def test_the_flag_has_a_default_and_refuses_what_is_not_a_duration(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    base = ["--name", "py@127.0.0.1", "--cookie", "c"]
    assert parser.parse_args(base).busy_wait == DEFAULT_BUSY_WAIT_US
    assert parser.parse_args([*base, "--busy-wait", "0"]).busy_wait == 0
    for bad in ("-1", "2000000", "soon"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--busy-wait", bad])
    assert "--busy-wait" in capsys.readouterr().err


def test_the_node_loop_busy_waits_when_asked() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        selector = getattr(loop, "_selector", None)
        assert isinstance(selector, BusyWaitSelector)
        assert selector.spin == pytest.approx(0.0002)
        reader, writer = await asyncio.open_connection(*await _echo_server())
        for _ in range(20):  # one round trip after another: the later ones are found by polling
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
        writer.close()
        await writer.wait_closed()
        return selector.spins

    assert run_loop(main(), "asyncio", busy_wait=0.0002) > 0


async def _echo_server() -> tuple[str, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    return host, port
