"""Selective receive on a mailbox: order kept, matches taken, timeouts bounded."""

import asyncio

import pytest

from pynode.runtime.mailbox import Mailbox, ReceiveTimeout


async def test_fifo_without_match() -> None:
    box = Mailbox()
    for i in range(5):
        box.put(i)
    assert [await box.receive() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_selective_receive_leaves_others_in_order() -> None:
    box = Mailbox()
    for item in ["a", 1, "b", 2, "c"]:
        box.put(item)
    assert await box.receive(lambda m: isinstance(m, int)) == 1
    assert await box.receive(lambda m: isinstance(m, int)) == 2
    assert [await box.receive() for _ in range(3)] == ["a", "b", "c"]


async def test_falsy_messages_are_delivered() -> None:
    box = Mailbox()
    for item in [0, [], False, None, b""]:
        box.put(item)
    assert [await box.receive() for _ in range(5)] == [0, [], False, None, b""]


async def test_receive_waits_for_a_later_match() -> None:
    box = Mailbox()
    box.put("noise")

    async def later() -> None:
        await asyncio.sleep(0.01)
        box.put("more noise")
        box.put(("reply", 7))

    task = asyncio.create_task(later())
    got = await box.receive(lambda m: isinstance(m, tuple), timeout=2)
    await task
    assert got == ("reply", 7)
    assert len(box) == 2


async def test_timeout_raises_and_keeps_messages() -> None:
    box = Mailbox()
    box.put("x")
    with pytest.raises(ReceiveTimeout):
        await box.receive(lambda m: m == "y", timeout=0.01)
    assert await box.receive() == "x"


async def test_closed_mailbox_drops() -> None:
    box = Mailbox()
    box.close()
    box.put("lost")
    assert len(box) == 0
    assert box.take_nowait() == (False, None)
