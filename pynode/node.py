"""A hidden distribution node: the pieces that make one, put together.

The node owns its process table and its EPMD registration, and composes the
rest: a :class:`~pynode.net.manager.ConnectionManager` (sockets, handshakes,
limits), a :class:`~pynode.runtime.signals.Signals` table (links and
monitors), a :class:`~pynode.router.Router` (where messages go) and the calls
of :mod:`pynode.calls`. Processes see it through the
:class:`~pynode.runtime.kernel.Kernel` interface.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from pynode import calls, epmd
from pynode.errors import PynodeError
from pynode.etf.pretty import TermText
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.limits import DEFAULT_LIMITS, Limits
from pynode.logbudget import LimitedLog
from pynode.net.channel import Connection
from pynode.net.manager import ConnectionManager, split_node_name
from pynode.net.transport import DistTransport
from pynode.router import Router
from pynode.runtime.genserver import GEN_CAST
from pynode.runtime.ids import IdMint
from pynode.runtime.memory import MemoryRelease, Table, release_memory
from pynode.runtime.process import (
    KILLED,
    NORMAL,
    SHUTDOWN,
    Dest,
    FunctionProcess,
    Process,
    ProcessExit,
)
from pynode.runtime.services import start_services
from pynode.runtime.signals import Signals
from pynode.runtime.supervisor import RestartIntensity
from pynode.runtime.table import ProcessTable
from pynode.wire import control as c
from pynode.wire.flags import DEFAULT_FLAGS, DFlag

__all__ = ["NODE_FLAGS", "Node", "split_node_name"]

log = logging.getLogger("pynode.node")

NODE_FLAGS = DEFAULT_FLAGS | DFlag.SPAWN
_NODEUP = Atom("nodeup")
_NODEDOWN = Atom("nodedown")


def _short_host() -> str:
    return socket.gethostname().split(".")[0]


class Node:
    """A hidden Erlang node in this asyncio program.

    ``async with Node("py@127.0.0.1", cookie="secret") as node:`` registers it
    in EPMD and accepts connections; ``node.spawn``/``node.register`` add
    processes; ``node.send``/``node.call``/``node.erpc`` reach the cluster.
    """

    def __init__(
        self,
        name: str,
        cookie: str,
        *,
        listen_host: str | None = None,
        listen_port: int = 0,
        epmd_port: int | None = None,
        net_ticktime: float = 60.0,
        flags: DFlag = NODE_FLAGS,
        transport: DistTransport | None = None,
        limits: Limits = DEFAULT_LIMITS,
        restart_intensity: RestartIntensity | None = None,
    ) -> None:
        if "@" not in name:
            name = f"{name}@{_short_host()}"
        alive, host = split_node_name(name)
        self.name = Atom(name)
        self.alive_name = alive
        self.host = host
        self.cookie = cookie
        self.listen_host = listen_host or ("127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0")
        self.listen_port = listen_port
        self.epmd_port = epmd.epmd_port_from_env(epmd_port)
        self.net_ticktime = net_ticktime
        self.flags = flags
        self.limits = limits
        self.restart_intensity = restart_intensity
        """How often ``pynode_sup`` restarts the node's processes before giving up (default 10 in 10 s)."""
        self.processes = ProcessTable()
        self.net = ConnectionManager(
            self.name,
            cookie,
            events=self,
            flags=flags,
            net_ticktime=net_ticktime,
            epmd_port=self.epmd_port,
            transport=transport,
            limits=limits,
        )
        self.signals = Signals(self.name, self.processes, self.net, self.make_ref)
        self.router = Router(self.name, self.processes, self.signals, self.net, self._system_pid)
        # The hot path: a connection hands every control message to the router directly.
        self.net.dispatch_control = self.router.dispatch_control
        self._tasks: set[asyncio.Task[Any]] = set()
        self._registration: epmd.Registration | None = None
        self._ids: IdMint | None = None
        self._system: Process | None = None
        self._stopping = False
        self._node_watchers: set[Pid] = set()
        self.memory = MemoryRelease(release=self._release_memory)
        """Gives a burst's memory back to the system once its processes have ended and the node is quiet."""
        self.creation = 0
        self.port = 0

    def _release_memory(self) -> None:
        release_memory(self._tables())

    def _tables(self) -> Iterator[Table]:
        """The node's dicts and sets that grow with a burst: its processes', the process table, and
        the links and monitors that cross each connection."""
        yield from self.processes.compactable_tables()
        yield self._tasks
        for connection in self.net.connections.values():
            yield from connection.signals.compactable_tables()
        for process in self.processes.by_pid.values():
            yield from process.compactable_tables()

    @property
    def connections(self) -> dict[str, Connection]:
        """The established connections, by peer node name."""
        return self.net.connections

    @property
    def transport(self) -> DistTransport:
        return self.net.transport

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, *, register_epmd: bool = True) -> None:
        """Listen, register in EPMD, and start the node's own processes."""
        self.port = await self.net.listen(self.listen_host, self.listen_port)
        if register_epmd:
            try:
                self._registration = await epmd.register(self.alive_name, self.port, epmd_port=self.epmd_port)
            except BaseException:
                self.net.close_server()
                raise
            self.creation = self._registration.creation
        else:
            self.creation = secrets.randbits(32) or 1
        self.net.creation = self.creation
        self._ids = IdMint(self.name, self.creation)
        self._system = start_services(self, self.restart_intensity)
        log.info("node %s up on port %d (epmd port %d)", self.name, self.port, self.epmd_port)

    async def stop(self) -> None:
        """Stop every process, close every connection, leave EPMD."""
        if self._stopping:
            return
        self._stopping = True
        self.signals.stopping = True
        self.net.stopping = True
        for process in list(self.processes.by_pid.values()):
            process.terminate(SHUTDOWN)
        tasks = [p.task for p in self.processes.by_pid.values() if p.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        await self.net.stop()
        self.memory.cancel()
        if self._registration is not None:
            await self._registration.close()
        log.info("node %s stopped", self.name)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _ids_or_fail(self) -> IdMint:
        if self._ids is None:
            raise PynodeError("the node is not started")
        return self._ids

    def make_ref(self) -> Reference:
        return self._ids_or_fail().ref()

    def background(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run a task the node owns: cancelled and awaited when the node stops."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- processes -------------------------------------------------------------------

    def spawn(
        self,
        body: Process | Callable[[Process], Awaitable[None]],
        *,
        name: str | None = None,
        link: Pid | None = None,
    ) -> Process:
        """Start a process (a :class:`Process` instance, or an async function of one)."""
        process = body if isinstance(body, Process) else FunctionProcess(body)
        self.attach(process, name=name)
        if link is not None:
            self.link(process.pid, link)  # type: ignore[arg-type]
        task = asyncio.get_running_loop().create_task(process.run())
        process.task = task
        task.add_done_callback(lambda t: self._process_done(process, t))
        return process

    def attach(self, process: Process, *, name: str | None = None) -> Process:
        """Give a process a pid (and a name) without starting a task for it."""
        process.node = self
        process.pid = self._ids_or_fail().pid()
        self.processes.add(process)
        if name is not None:
            try:
                self.processes.register(Atom(name), process)
            except Exception:
                self.processes.remove(process)
                raise
        return process

    def _process_done(self, process: Process, task: asyncio.Task[None]) -> None:
        """The task of a process ended (even before it ever ran): find the exit reason."""
        reason: Term
        if task.cancelled():
            reason = KILLED
        else:
            exc = task.exception()
            if exc is None:
                reason = NORMAL
            elif isinstance(exc, ProcessExit):
                reason = exc.reason
            else:
                log.error("process %s (%s) crashed", process.pid, type(process).__name__, exc_info=exc)
                reason = (Atom("python_error"), f"{type(exc).__name__}: {exc}")
        if process.kill_reason is not None:
            reason = process.kill_reason
        self.process_ended(process, reason)

    def register(self, name: str, process: Process) -> None:
        self.processes.register(Atom(name), process)

    def unregister(self, name: str) -> None:
        self.processes.unregister(name)

    def whereis(self, name: str) -> Pid | None:
        process = self.processes.name(name)
        return process.pid if process is not None else None

    def process_ended(self, process: Process, reason: Term) -> None:
        """Clean up after a process: links get EXIT, monitors get DOWN."""
        if process.exit_reason is not None:
            return
        process.ended(reason)
        self.processes.remove(process)
        process.mailbox.close()
        self.signals.process_ended(process, reason)
        self.memory.process_ended()
        if reason not in (NORMAL, SHUTDOWN):
            name = process.name or type(process).__name__
            log.info("process %s (%s) exited: %s", process.pid, name, TermText(reason))

    def _system_pid(self) -> Pid:
        assert self._system is not None and self._system.pid is not None
        return self._system.pid

    def io_server_pid(self) -> Pid:
        """The group leader of functions this node runs elsewhere with erpc."""
        pid = self.whereis("pynode_io")
        return pid if pid is not None else self._system_pid()

    # -- messages, links, monitors -----------------------------------------------------

    def send(self, dest: Dest, message: Term, *, sender: Pid | None = None) -> None:
        """``Dest ! Message``: a pid, a name, ``(name, node)`` or an alias reference."""
        self.router.send(dest, message, sender=sender)

    def reply(self, to: Pid, alias: Reference | None, message: Term, *, sender: Pid | None = None) -> None:
        """``gen:reply``: to the caller's alias when it has one, so a reply after a timeout is dropped."""
        self.router.reply(to, alias, message, sender=sender)

    def link(self, a: Pid, b: Pid) -> None:
        """Link local process ``a`` with ``b`` (local or remote)."""
        self.signals.link(a, b)

    def unlink(self, a: Pid, b: Pid) -> None:
        self.signals.unlink(a, b)

    def exit(self, pid: Pid, reason: Term, *, sender: Pid | None = None) -> None:
        """``exit(Pid, Reason)``: an exit signal that is not a link's."""
        self.signals.exit_signal(sender or self._system_pid(), pid, reason, linked=False)

    def monitor(self, watcher: Pid, target: Pid | Atom | str | tuple[Any, Any]) -> Reference:
        """``monitor(process, Target)`` on behalf of local process ``watcher``."""
        return self.signals.monitor(watcher, target)

    def demonitor(self, watcher: Pid, ref: Reference) -> None:
        self.signals.demonitor(watcher, ref)

    # -- connections -------------------------------------------------------------------

    async def connect(self, node: str) -> Connection:
        """Connect to ``node`` (or return the existing connection)."""
        return await self.net.connect(node)

    def nodes(self) -> list[str]:
        return self.net.nodes()

    # What the connection manager reports (ConnectionEvents).

    def connection_up(self, conn: Connection) -> None:
        self._tell_watchers(_NODEUP, conn.peer_name)

    def connection_lost(self, conn: Connection) -> None:
        self.signals.connection_lost(conn)
        self._tell_watchers(_NODEDOWN, conn.peer_name)

    def monitor_nodes(self, pid: Pid, on: bool = True) -> None:
        """``net_kernel:monitor_nodes(On)``: ``pid`` gets ``{nodeup, Node}`` and ``{nodedown, Node}``."""
        if on:
            self._node_watchers.add(pid)
        else:
            self._node_watchers.discard(pid)

    def _tell_watchers(self, event: Atom, peer: str) -> None:
        for pid in list(self._node_watchers):
            process = self.processes.pid(pid)
            if process is None:
                self._node_watchers.discard(pid)
            else:
                process.deliver((event, Atom(peer)))

    def admit_pending(self, conn: Connection, control: c.ControlMessage) -> bool:
        return self.signals.admit_pending(conn, control)

    def pending_failed(self, node: str, controls: list[c.ControlMessage], exc: BaseException) -> None:
        dropped = self.signals.fail_pending(controls)
        # A peer can name any node in a pid it sends, and so make this line as often as it likes.
        LimitedLog(log, self.net.log_budget).warning(
            ("could not connect",),
            asyncio.get_running_loop().time(),
            "could not connect to %s (%s); %d message(s) dropped",
            node[:300],
            exc,
            dropped,
        )

    # -- calls -----------------------------------------------------------------------

    async def call(self, dest: Dest, request: Term, *, timeout: float | None = 5.0) -> Term:
        """``gen_server:call(Dest, Request, Timeout)`` from a short-lived process of this node.

        Raises :class:`CallTimeout` after ``timeout`` seconds and :class:`CallExit`
        (``noproc``, ``noconnection``, the callee's exit reason) when the callee goes.
        """
        return await calls.call(self, dest, request, timeout=timeout)

    def cast(self, dest: Dest, request: Term) -> None:
        """``gen_server:cast(Dest, Request)``."""
        self.send(dest, (GEN_CAST, request))

    async def erpc(
        self,
        node: str,
        module: str,
        function: str,
        args: list[Term],
        *,
        timeout: float | None = 15.0,
        group_leader: Pid | None = None,
    ) -> Term:
        """``erpc:call(Node, M, F, Args)``: spawn on ``node``, result from its exit reason.

        Output the function prints goes to ``group_leader`` (default: the node's
        io server, which logs it).
        """
        conn = await self.connect(node)
        return await calls.erpc(self, conn, module, function, args, timeout=timeout, group_leader=group_leader)
