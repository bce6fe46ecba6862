"""A process mailbox: FIFO delivery with Erlang's selective receive.

``receive(match)`` takes the first message that ``match`` accepts and leaves
the others in order, as ``receive ... end`` does. Each message is examined
once per receive (a scan position is kept), so a receive stays linear even
when many unmatched messages wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Mailbox", "ReceiveTimeout"]


class ReceiveTimeout(TimeoutError):
    """No matching message arrived within the receive's timeout."""


def _any(_: Any) -> bool:
    return True


class Mailbox:
    """Messages for one process, in arrival order."""

    __slots__ = ("_closed", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message: Any) -> None:
        """Deliver a message (after the process ended: dropped, as on the BEAM)."""
        if self._closed:
            return
        self._items.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self._closed = True
        self._items.clear()

    def take_nowait(self, match: Callable[[Any], bool] | None = None) -> tuple[bool, Any]:
        """``(True, message)`` for the first match, else ``(False, None)``."""
        items = self._items
        if match is None:
            if items:
                return True, items.popleft()
            return False, None
        for index, message in enumerate(items):
            if match(message):
                del items[index]
                return True, message
        return False, None

    async def receive(self, match: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
        """The first message ``match`` accepts, waiting up to ``timeout`` seconds."""
        items = self._items
        if match is None and items:
            return items.popleft()
        accept = match or _any
        scanned = 0
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            while scanned < len(items):
                message = items[scanned]
                if accept(message):
                    del items[scanned]
                    return message
                scanned += 1
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise ReceiveTimeout(f"no message within {timeout} s")
            waiter = loop.create_future()
            self._waiter = waiter
            try:
                if remaining is None:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                raise ReceiveTimeout(f"no message within {timeout} s") from None
            finally:
                self._waiter = None
