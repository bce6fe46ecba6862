"""Python processes: a pid, a mailbox, links and monitors, and one owner task.

A process behaves as a BEAM process does towards the rest of the cluster:
messages to its pid or name land in its mailbox, links and monitors fire
when it ends, and an exit signal from a linked process ends it unless it
traps exits. Its task is owned by the node, which awaits or cancels it; the process
reaches the node through the :class:`~pynode.runtime.kernel.Kernel` interface.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeAlias

from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.runtime.kernel import Dest, Kernel
from pynode.runtime.mailbox import Mailbox
from pynode.runtime.memory import Table

__all__ = [
    "KILL",
    "KILLED",
    "NOCONNECTION",
    "NOPROC",
    "NORMAL",
    "SHUTDOWN",
    "Dest",
    "MonitorTarget",
    "Process",
    "ProcessExit",
]

log = logging.getLogger("pynode.process")

NORMAL: Final = Atom("normal")
SHUTDOWN: Final = Atom("shutdown")
KILL: Final = Atom("kill")
KILLED: Final = Atom("killed")
NOPROC: Final = Atom("noproc")
NOCONNECTION: Final = Atom("noconnection")
EXIT: Final = Atom("EXIT")
DOWN: Final = Atom("DOWN")
PROCESS: Final = Atom("process")

MonitorTarget: TypeAlias = Pid | tuple[Atom, Atom]
"""What a monitor watches, as its ``DOWN`` names it: a pid, or ``{Name, Node}``."""


class ProcessExit(Exception):
    """Raise inside a process to end it with ``reason`` (``exit(Reason)``)."""

    def __init__(self, reason: Term) -> None:
        super().__init__(reason)
        self.reason = reason


class Process:
    """One process on this node. Subclass and override :meth:`run`, or use ``node.spawn``."""

    def __init__(self) -> None:
        self.node: Kernel[Process] | None = None
        self.pid: Pid | None = None
        self.name: Atom | None = None
        self.mailbox = Mailbox()
        self.trap_exit = False
        self.links: set[Pid] = set()
        # Monitors other processes hold on this one: ref -> (watcher pid, target as the watcher named it).
        self.monitored_by: dict[Reference, tuple[Pid, MonitorTarget]] = {}
        # Monitors this process holds: ref -> target (pid, or (name, node)).
        self.monitors: dict[Reference, MonitorTarget] = {}
        self.task: asyncio.Task[None] | None = None
        self.exit_reason: Term | None = None
        self.kill_reason: Term | None = None
        self._exited = asyncio.Event()

    # -- what a process does ---------------------------------------------------------

    async def run(self) -> None:
        """The body of the process; by default it waits until it is told to exit."""
        await asyncio.Event().wait()

    # -- its view of the world ---------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.exit_reason is None and self.node is not None

    def compactable_tables(self) -> Iterator[Table]:
        """The dicts and sets this process keeps entries in, for the node to compact after a burst
        (pynode.runtime.memory); a subclass with tables of its own adds them."""
        yield self.links
        yield self.monitored_by
        yield self.monitors

    def _node(self) -> Kernel[Process]:
        if self.node is None:
            raise RuntimeError("the process is not running on a node")
        return self.node

    def _self_pid(self) -> Pid:
        if self.pid is None:
            raise RuntimeError("the process is not running on a node")
        return self.pid

    def deliver(self, message: Term) -> None:
        """A message for this process arrived (the node calls this for every one)."""
        self.mailbox.put(message)

    def send(self, dest: Dest, message: Term) -> None:
        """``Dest ! Message``: never blocks, never fails for a missing receiver."""
        self._node().send(dest, message, sender=self.pid)

    async def receive(self, match: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
        """Selective receive from this process's mailbox."""
        return await self.mailbox.receive(match, timeout)

    async def call(self, dest: Dest, request: Term, timeout: float | None = 5.0) -> Term:
        """``gen_server:call(Dest, Request, Timeout)`` from this process."""
        return await self._node().call(dest, request, timeout=timeout)

    def link(self, pid: Pid) -> None:
        self._node().link(self._self_pid(), pid)

    def unlink(self, pid: Pid) -> None:
        self._node().unlink(self._self_pid(), pid)

    def monitor(self, target: Pid | Atom | tuple[Atom | str, Atom | str]) -> Reference:
        """``monitor(process, Target)``: a ``('DOWN', Ref, process, Target, Reason)`` follows its end."""
        return self._node().monitor(self._self_pid(), target)

    def demonitor(self, ref: Reference) -> None:
        self._node().demonitor(self._self_pid(), ref)

    async def join(self, timeout: float | None = None) -> Term:
        """Wait until the process has ended; its exit reason."""
        async with asyncio.timeout(timeout):
            await self._exited.wait()
        return self.exit_reason

    def demonitored(self, ref: Reference, watcher: Pid) -> None:
        """``watcher`` removed its monitor ``ref`` on this process (``demonitor/1`` on its side).

        A ``gen_server:call`` removes the monitor it made for the call when it stops waiting
        (a reply or a timeout), so a server can tell when nobody waits for a reply any more.
        """

    def watcher_lost(self, ref: Reference, watcher: Pid, reason: Term) -> None:
        """``watcher``'s monitor ``ref`` on this process is gone with its node's connection (``reason``).

        No ``DOWN`` is owed to a watcher that is unreachable; a server that counted on the monitor
        to know whether a caller still waits (:meth:`demonitored`) learns here that none does.
        """
        self.demonitored(ref, watcher)

    def ended(self, reason: Term) -> None:
        """Called once by the node when the process is gone."""
        self.exit_reason = reason
        self._exited.set()

    def exit(self, reason: Term = NORMAL) -> None:
        """End this process (from outside its task, or from it) with ``reason``."""
        self.terminate(reason)

    # -- signals, called by the node ---------------------------------------------------

    def exit_signal(self, sender: Pid, reason: Term, *, linked: bool) -> None:
        """An exit signal arrived: from a link (``linked``) or ``exit(Pid, Reason)``."""
        if not self.alive:
            return
        if linked:
            self.links.discard(sender)
        if not linked and reason == KILL:
            self.terminate(KILLED)
            # Untrappable: gone for the cluster now (links, monitors, its name), even while its
            # task, cancelled, is still on its way out, or refuses to go.
            if self.node is not None and self.exit_reason is None:
                self.node.process_ended(self, KILLED)
        elif self.trap_exit:
            self.mailbox.put((EXIT, sender, reason))
        elif reason != NORMAL:
            self.terminate(reason)

    def terminate(self, reason: Term) -> None:
        """Stop the task with ``reason``; the node cleans up once the task has ended."""
        if self.exit_reason is not None or self.kill_reason is not None:
            return
        self.kill_reason = reason
        task = self.task
        if task is not None and not task.done():
            if task is asyncio.current_task():
                raise ProcessExit(reason)
            task.cancel()
        elif task is None and self.node is not None:
            self.node.process_ended(self, reason)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.pid} {self.name or ''}>".replace(" >", ">")


class FunctionProcess(Process):
    """A process whose body is an async function of the process."""

    def __init__(self, body: Callable[[Process], Awaitable[None]]) -> None:
        super().__init__()
        self._body = body

    async def run(self) -> None:
        await self._body(self)
