"""What a process may ask of the node it runs on.

Processes, the node's own services and the bridge's agents are written
against this interface, not against :class:`pynode.node.Node`: they need a
few primitives (send, link, monitor, spawn...), not the node's connections,
listener and EPMD registration. ``Node`` provides it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from pynode.etf.types import Atom, Pid, Reference, Term

__all__ = ["Dest", "Kernel", "PeerChannel"]

Dest = Pid | Atom | str | tuple[Atom | str, Atom | str] | Reference
"""Where a message can go: a pid, a local name, ``(name, node)``, or an alias."""

P = TypeVar("P")
"""The kind of process the kernel runs (:class:`pynode.runtime.process.Process`); a parameter, so
this interface sits below the processes written against it."""


class PeerChannel(Protocol):
    """One connection, as far as a process looks at it: to wait until it can take more, or to send
    several messages in one write."""

    @property
    def closed(self) -> bool: ...

    @property
    def transport(self) -> asyncio.WriteTransport: ...

    async def drain(self) -> None: ...

    def together(self) -> AbstractContextManager[None]:
        """The frames sent on this connection within the block leave in one write."""
        ...


class Kernel(Protocol[P]):
    """The node's primitives, as processes use them (``Kernel[Process]``)."""

    @property
    def name(self) -> Atom: ...

    @property
    def connections(self) -> Mapping[str, PeerChannel]: ...

    def send(self, dest: Dest, message: Term, *, sender: Pid | None = None) -> None: ...

    def reply(self, to: Pid, alias: Reference | None, message: Term, *, sender: Pid | None = None) -> None:
        """A call's reply: to the caller's ``alias`` when it has one its connection carries, else to ``to``."""
        ...

    async def call(self, dest: Dest, request: Term, *, timeout: float | None = 5.0) -> Term: ...

    async def erpc(
        self,
        node: str,
        module: str,
        function: str,
        args: list[Term],
        *,
        timeout: float | None = 15.0,
        group_leader: Pid | None = None,
    ) -> Term: ...

    def spawn(
        self,
        body: P | Callable[[P], Awaitable[None]],
        *,
        name: str | None = None,
        link: Pid | None = None,
    ) -> P: ...

    def link(self, a: Pid, b: Pid) -> None: ...

    def unlink(self, a: Pid, b: Pid) -> None: ...

    def monitor(self, watcher: Pid, target: Pid | Atom | str | tuple[Any, Any]) -> Reference: ...

    def demonitor(self, watcher: Pid, ref: Reference) -> None: ...

    def exit(self, pid: Pid, reason: Term, *, sender: Pid | None = None) -> None: ...

    def make_ref(self) -> Reference: ...

    def monitor_nodes(self, pid: Pid, on: bool = True) -> None:
        """``net_kernel:monitor_nodes(On)`` for ``pid``: ``{nodeup, Node}``, ``{nodedown, Node}``."""
        ...

    def whereis(self, name: str) -> Pid | None: ...

    def unregister(self, name: str) -> None: ...

    def background(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]: ...

    def process_ended(self, process: P, reason: Term) -> None:
        """Called once when a process that never had a task ends."""
        ...
