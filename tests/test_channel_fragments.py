"""A big message goes out in fragments; small messages of other process pairs pass it, same-pair ones wait."""

import asyncio
from typing import Any

from pynode.etf.types import Atom, Pid
from pynode.net.channel import Connection
from pynode.wire import control as c
from pynode.wire.flags import DEFAULT_FLAGS, DFlag
from pynode.wire.framing import DistMessage, DistReader


class RecordingTransport:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


class FakeProtocol:
    def __init__(self) -> None:
        self.transport: Any = RecordingTransport()


def pid(n: int) -> Pid:
    return Pid(Atom("py@127.0.0.1"), n, 0, 1)


def payloads(frames: list[bytes], flags: DFlag) -> list[tuple[object, object]]:
    reader = DistReader(flags)
    out = []
    for frame in frames:
        reader.receive_data(frame)
        while True:
            event = reader.next_event()
            if isinstance(event, DistMessage):
                out.append((event.control, event.payload))
            elif not hasattr(event, "control") and type(event).__name__ != "Tick":
                break
    return out


async def test_small_message_of_another_pair_passes_a_fragmented_one() -> None:
    flags = DEFAULT_FLAGS
    assert flags & DFlag.FRAGMENTS
    proto = FakeProtocol()
    conn = Connection(None, proto, peer_name="e1@127.0.0.1", peer_creation=1, flags=flags, net_ticktime=60)  # type: ignore[arg-type]
    big = b"x" * (300 * 1024)
    a, b, other, d = pid(1), pid(2), pid(3), pid(4)
    conn.send(c.SendSender(a, b), big)
    conn.send(c.SendSender(other, d), "small, other pair")
    conn.send(c.SendSender(a, b), "small, same pair")
    for _ in range(100):
        if not conn._fragments:
            break
        await asyncio.sleep(0)
    conn.closed = True
    received = payloads(proto.transport.frames, flags)
    order = [p if isinstance(p, str | bytes) and len(p) < 100 else "BIG" for _, p in received]
    assert order == [b"small, other pair", "BIG", b"small, same pair"]
    assert received[1][1] == big


class EchoOwner:
    """Dispatches every SEND by sending its payload back to its sender, as a call's reply would be."""

    def __init__(self) -> None:
        self.dispatched = 0

    def dispatch_control(self, conn: Connection, control: Any, payload: Any) -> None:
        self.dispatched += 1
        conn.send(c.Send(control.from_pid), ("reply", payload))


async def test_replies_to_a_burst_read_at_once_leave_in_one_write_in_order() -> None:
    flags = DEFAULT_FLAGS
    owner = EchoOwner()
    proto = FakeProtocol()
    conn = Connection(owner, proto, peer_name="e1@127.0.0.1", peer_creation=1, flags=flags, net_ticktime=60)  # type: ignore[arg-type]
    peer = Connection(owner, FakeProtocol(), peer_name="py@127.0.0.1", peer_creation=1, flags=flags, net_ticktime=60)  # type: ignore[arg-type]
    burst = b"".join(peer.writer.encode(c.SendSender(pid(9), pid(n)), n)[0] for n in range(1, 11))
    conn.feed(burst)
    assert owner.dispatched == 10
    assert len(proto.transport.frames) == 1
    assert [p for _, p in payloads(proto.transport.frames, flags)] == [(b"reply", n) for n in range(1, 11)]
    conn.send(c.Send(pid(9)), "outside a read")  # no read in progress: written at once
    assert len(proto.transport.frames) == 2
    conn.closed = True


async def test_what_is_sent_together_leaves_in_one_write_in_order() -> None:
    flags = DEFAULT_FLAGS
    proto = FakeProtocol()
    conn = Connection(None, proto, peer_name="e1@127.0.0.1", peer_creation=1, flags=flags, net_ticktime=60)  # type: ignore[arg-type]
    with conn.together():
        conn.send(c.Send(pid(1)), "first")
        with conn.together():  # a block inside another joins it
            conn.send(c.Send(pid(1)), "second")
        assert proto.transport.frames == []  # nothing leaves before the outer block ends
        conn.send(c.Send(pid(1)), "third")
    assert len(proto.transport.frames) == 1
    assert [p for _, p in payloads(proto.transport.frames, flags)] == [b"first", b"second", b"third"]
    with conn.together():
        pass
    assert len(proto.transport.frames) == 1  # an empty block writes nothing
    conn.send(c.Send(pid(1)), "alone")
    assert len(proto.transport.frames) == 2
    conn.closed = True
    with conn.together():
        conn.send(c.Send(pid(1)), "after close")
    assert len(proto.transport.frames) == 2


async def test_a_block_that_raises_still_sends_what_it_sent() -> None:
    proto = FakeProtocol()
    conn = Connection(None, proto, peer_name="e1@127.0.0.1", peer_creation=1, flags=DEFAULT_FLAGS, net_ticktime=60)  # type: ignore[arg-type]
    try:
        with conn.together():
            conn.send(c.Send(pid(1)), "sent before the error")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert [p for _, p in payloads(proto.transport.frames, DEFAULT_FLAGS)] == [b"sent before the error"]
    conn.closed = True
