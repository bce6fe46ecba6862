"""A hidden distribution node: processes, connections, and the signals between them.

The node owns the process table, the connections, the EPMD registration and
the listening socket. It routes messages (to pids, names, ``{Name, Node}``)
and the link, monitor and exit signals that tie processes together, on this
node and across connections, the way the BEAM does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from pynode import epmd
from pynode.errors import CallExit, CallTimeout, HandshakeError, NodeDown, PynodeError
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.link import Connection, DistProtocol
from pynode.runtime.genserver import GEN_CALL, GEN_CAST
from pynode.runtime.ids import IdMint
from pynode.runtime.mailbox import ReceiveTimeout
from pynode.runtime.process import (
    DOWN,
    KILLED,
    NOCONNECTION,
    NOPROC,
    NORMAL,
    PROCESS,
    SHUTDOWN,
    Dest,
    FunctionProcess,
    Process,
    ProcessExit,
)
from pynode.runtime.table import ProcessTable
from pynode.wire import control as c
from pynode.wire.flags import DEFAULT_FLAGS, DFlag
from pynode.wire.framing import NO_PAYLOAD
from pynode.wire.handshake import HandshakeAcceptor, HandshakeInitiator, Status

__all__ = ["ErpcError", "Node", "split_node_name"]

log = logging.getLogger("pynode.node")

MAX_PENDING_SENDS: Final = 100_000
"""Messages, links and monitors that may wait for a connection being made to one node."""
NODE_FLAGS: Final = DEFAULT_FLAGS | DFlag.SPAWN
_EMPTY: Final = Atom("")
_SPAWN_REPLY: Final = Atom("spawn_reply")
_ERPC: Final = Atom("erpc")
_EXECUTE_CALL: Final = Atom("execute_call")
_MONITOR: Final = Atom("monitor")
_RETURN: Final = Atom("return")
_NOTSUP: Final = Atom("notsup")
_KILL: Final = Atom("kill")


class ErpcError(PynodeError):
    """``erpc:call`` raised on the remote node: ``kind`` is throw, exit or error."""

    def __init__(self, kind: str, reason: Term, stack: Term = None) -> None:
        super().__init__(f"{kind}: {reason!r}")
        self.kind = kind
        self.reason = reason
        self.stack = stack


def split_node_name(name: str) -> tuple[str, str]:
    """``"py@127.0.0.1"`` -> ``("py", "127.0.0.1")``; a name without host is an error."""
    alive, sep, host = name.partition("@")
    if not sep or not alive or not host:
        raise ValueError(f"a node name looks like name@host, not {name!r}")
    return alive, host


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
        handshake_timeout: float = 7.0,
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
        self.handshake_timeout = handshake_timeout
        self.processes = ProcessTable()
        self.connections: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Future[Connection]] = {}
        self._pending_sends: dict[str, list[tuple[c.ControlMessage, Term]]] = {}
        self._handshakes: set[DistProtocol] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._registration: epmd.Registration | None = None
        self._ids: IdMint | None = None
        self._system: Process | None = None
        self._stopping = False
        self.creation = 0
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, *, register_epmd: bool = True) -> None:
        """Listen, register in EPMD, and start the node's own processes."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accepting_protocol, self.listen_host, self.listen_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if register_epmd:
            try:
                self._registration = await epmd.register(self.alive_name, self.port, epmd_port=self.epmd_port)
            except BaseException:
                self._server.close()
                raise
            self.creation = self._registration.creation
        else:
            self.creation = secrets.randbits(32) or 1
        self._ids = IdMint(self.name, self.creation)
        from pynode.runtime.services import start_services

        self._system = start_services(self)
        log.info("node %s up on port %d (epmd port %d)", self.name, self.port, self.epmd_port)

    async def stop(self) -> None:
        """Stop every process, close every connection, leave EPMD."""
        if self._stopping:
            return
        self._stopping = True
        for process in list(self.processes.by_pid.values()):
            process.terminate(SHUTDOWN)
        tasks = [p.task for p in self.processes.by_pid.values() if p.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for conn in list(self.connections.values()):
            conn.close()
        for proto in list(self._handshakes):
            proto.transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
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
        pid = process.pid
        assert pid is not None
        for linked in process.links:
            self._exit_signal(pid, linked, reason, linked=True)
        process.links.clear()
        for ref, (watcher, target) in process.monitored_by.items():
            self._down(watcher, ref, target, reason, from_pid=pid)
        process.monitored_by.clear()
        for ref, target in process.monitors.items():
            self._drop_monitor(pid, ref, target)
        process.monitors.clear()
        if reason not in (NORMAL, SHUTDOWN):
            log.info("process %s (%s) exited: %r", pid, process.name or type(process).__name__, reason)

    # -- sending ---------------------------------------------------------------------

    def send(self, dest: Dest, message: Term, *, sender: Pid | None = None) -> None:
        """``Dest ! Message``: a pid, a name, ``(name, node)`` or an alias reference."""
        kind = type(dest)
        if kind is Pid:
            assert isinstance(dest, Pid)
            if dest.node == self.name:
                target = self.processes.pid(dest)
                if target is not None:
                    target.deliver(message)
                return
            self._send_remote(dest.node, c.SendSender(sender, dest) if sender else c.Send(dest), message)
        elif kind is Atom or kind is str:
            target = self.processes.name(dest)  # type: ignore[arg-type]
            if target is not None:
                target.deliver(message)
            else:
                log.debug("send to unregistered name %s dropped", dest)
        elif kind is tuple:
            name, node = dest  # type: ignore[str-unpack,misc]
            if node == self.name:
                self.send(Atom(name), message, sender=sender)
            else:
                self._send_remote(str(node), c.RegSend(sender or self._system_pid(), Atom(name)), message)
        elif kind is Reference:
            assert isinstance(dest, Reference)
            if dest.node != self.name:
                self._send_remote(dest.node, c.AliasSend(sender or self._system_pid(), dest), message)
        else:
            raise TypeError(f"cannot send to {dest!r}")

    def _system_pid(self) -> Pid:
        assert self._system is not None and self._system.pid is not None
        return self._system.pid

    def _send_remote(self, node: str, control: c.ControlMessage, payload: Term = NO_PAYLOAD) -> None:
        conn = self.connections.get(node)
        if conn is not None:
            conn.send(control, payload)
            return
        if self._stopping:
            return
        # Connect on first send, as the BEAM does. Messages, links and monitors wait for the
        # connection in one queue, so a link made before a send still reaches the peer first.
        queue = self._pending_sends.setdefault(node, [])
        if len(queue) >= MAX_PENDING_SENDS:
            # Bounded like everything between a socket and a run: past this the node is as good
            # as unreachable, and the BEAM drops messages to unreachable nodes too.
            log.warning("%s: still connecting with %d messages queued; dropped %r", node, len(queue), control)
            return
        queue.append((control, payload))
        if node not in self._connecting:
            self.background(self._connect_quietly(node), name=f"connect {node}")

    async def _connect_quietly(self, node: str) -> None:
        with contextlib.suppress(PynodeError, OSError):  # _fail_pending has said why
            await self.connect(node)

    def _fail_pending(self, node: str, exc: BaseException) -> None:
        """No connection to ``node``: queued links exit and queued monitors fire with noconnection."""
        pending = self._pending_sends.pop(node, [])
        if not pending:
            return
        dropped = 0
        for control, _ in pending:
            if isinstance(control, c.Link):
                process = self.processes.pid(control.from_pid)
                if process is not None and control.to_pid in process.links:
                    process.links.discard(control.to_pid)
                    process.exit_signal(control.to_pid, NOCONNECTION, linked=True)
            elif isinstance(control, c.MonitorP):
                watcher = self.processes.pid(control.from_pid)
                if watcher is not None and control.ref in watcher.monitors:
                    target = watcher.monitors[control.ref]
                    self._deliver_down(control.from_pid, control.ref, target, NOCONNECTION)
            else:
                dropped += 1
        log.warning("could not connect to %s (%s); %d message(s) dropped", node, exc, dropped)

    def _admit_pending(self, conn: Connection, control: c.ControlMessage) -> bool:
        """Whether a queued signal still holds now that ``conn`` is up; records links and monitors."""
        if isinstance(control, c.Link):
            process = self.processes.pid(control.from_pid)
            if process is None or control.to_pid not in process.links:
                return False  # unlinked, or ended, before the connection came up
            conn.links.add((control.from_pid, control.to_pid))
        elif isinstance(control, c.MonitorP):
            watcher = self.processes.pid(control.from_pid)
            if watcher is None or control.ref not in watcher.monitors:
                return False  # demonitored, or ended, before the connection came up
            conn.monitors_out[control.ref] = (control.from_pid, watcher.monitors[control.ref])
        return True

    # -- connections -----------------------------------------------------------------

    async def connect(self, node: str) -> Connection:
        """Connect to ``node`` (or return the existing connection)."""
        node = str(node)
        conn = self.connections.get(node)
        if conn is not None:
            return conn
        if node == self.name:
            raise ValueError("a node does not connect to itself")
        pending = self._connecting.get(node)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._connecting[node] = pending
            self.background(self._dial(node, pending), name=f"dial {node}")
        return await asyncio.shield(pending)

    async def _dial(self, node: str, result: asyncio.Future[Connection]) -> None:
        try:
            alive, host = split_node_name(node)
            address = await epmd.port_please(alive, host=host, epmd_port=self.epmd_port)
            if address is None:
                raise NodeDown(node, f"{alive} is not registered in EPMD on {host}")
            handshake = HandshakeInitiator(
                our_name=self.name,
                cookie=self.cookie,
                flags=self.flags,
                creation=self.creation,
                peer_name=node,
            )
            loop = asyncio.get_running_loop()
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: DistProtocol(self, handshake), host, address.port),
                self.handshake_timeout,
            )
            self._handshakes.add(proto)
            try:
                conn = await asyncio.wait_for(asyncio.shield(proto.established), self.handshake_timeout)
            except HandshakeError as exc:
                if exc.step != "recv_status" or not exc.reason.startswith("nok"):
                    raise
                # Both sides dialled at once and the peer keeps its own attempt: that one brings
                # the connection, and connection_up() resolves ``result``.
                await asyncio.wait_for(asyncio.shield(result), self.handshake_timeout)
                return
            finally:
                self._handshakes.discard(proto)
            if not result.done():
                result.set_result(conn)
        except BaseException as exc:
            self._fail_pending(node, exc)
            if not result.done():
                result.set_exception(
                    exc if isinstance(exc, PynodeError | OSError) else NodeDown(node, repr(exc))
                )
                result.exception()  # retrieved by connect() callers, if any
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if self._connecting.get(node) is result:
                del self._connecting[node]

    def _accepting_protocol(self) -> DistProtocol:
        handshake = HandshakeAcceptor(
            our_name=self.name, cookie=self.cookie, flags=self.flags, creation=self.creation
        )
        proto = DistProtocol(self, handshake)
        self._handshakes.add(proto)
        proto.established.add_done_callback(lambda f: self._handshake_settled(proto, f))
        return proto

    def accept_status(self, peer: str, proto: DistProtocol) -> Status:
        """The acceptor's answer to a peer's name: ok, nok, alive or ok_simultaneous."""
        if self._stopping:
            return "not_allowed"
        if peer in self.connections:
            return "alive"
        if peer in self._connecting:
            # Both sides dialled at once: the greater name keeps its own attempt.
            return "nok" if self.name > peer else "ok_simultaneous"
        return "ok"

    def _handshake_settled(self, proto: DistProtocol, done: asyncio.Future[Connection]) -> None:
        self._handshakes.discard(proto)
        if not done.cancelled():
            done.exception()  # failures were logged by the protocol; mark them retrieved

    def handshake_aborted(self, proto: DistProtocol) -> None:
        self._handshakes.discard(proto)

    def connection_up(self, conn: Connection) -> None:
        old = self.connections.get(conn.peer_name)
        if old is not None and old is not conn:
            old.close()
        self.connections[conn.peer_name] = conn
        pending = self._connecting.get(conn.peer_name)
        if pending is not None and not pending.done():
            pending.set_result(conn)
        for control, payload in self._pending_sends.pop(conn.peer_name, []):
            if self._admit_pending(conn, control):
                conn.send(control, payload)
        log.info("connected to %s (flags %#x)", conn.peer_name, int(conn.flags))

    def connection_lost(self, conn: Connection) -> None:
        """Every link and monitor across the lost connection fires with ``noconnection``."""
        if self.connections.get(conn.peer_name) is conn:
            del self.connections[conn.peer_name]
        log.info("connection to %s closed", conn.peer_name)
        for local, remote in conn.links:
            process = self.processes.pid(local)
            if process is not None:
                process.links.discard(remote)
                process.exit_signal(remote, NOCONNECTION, linked=True)
        conn.links.clear()
        for ref, (watcher, target) in list(conn.monitors_out.items()):
            self._deliver_down(watcher, ref, target, NOCONNECTION)
        conn.monitors_out.clear()
        for ref, target_pid in conn.monitors_in.items():
            process = self.processes.pid(target_pid)
            if process is not None:
                process.monitored_by.pop(ref, None)
        conn.monitors_in.clear()
        for req_id, requester in conn.spawn_requests.items():
            self.send(requester, (_SPAWN_REPLY, req_id, 0, NOCONNECTION))
        conn.spawn_requests.clear()

    def nodes(self) -> list[str]:
        return list(self.connections)

    # -- links -----------------------------------------------------------------------

    def link(self, a: Pid, b: Pid) -> None:
        """Link local process ``a`` with ``b`` (local or remote)."""
        process = self.processes.pid(a)
        if process is None:
            raise PynodeError(f"{a} is not a live local process")
        if b in process.links:
            return
        if b.node == self.name:
            other = self.processes.pid(b)
            if other is None:
                process.exit_signal(b, NOPROC, linked=True)
                return
            process.links.add(b)
            other.links.add(a)
            return
        process.links.add(b)
        conn = self.connections.get(b.node)
        if conn is None:
            self._send_remote(b.node, c.Link(a, b))
        else:
            conn.links.add((a, b))
            conn.send(c.Link(a, b))

    def unlink(self, a: Pid, b: Pid) -> None:
        process = self.processes.pid(a)
        if process is None or b not in process.links:
            return
        process.links.discard(b)
        if b.node == self.name:
            other = self.processes.pid(b)
            if other is not None:
                other.links.discard(a)
            return
        conn = self.connections.get(b.node)
        if conn is not None:
            conn.links.discard((a, b))
            conn.send(c.UnlinkId(secrets.randbits(63) or 1, a, b))

    def _exit_signal(self, sender: Pid, to: Pid, reason: Term, *, linked: bool) -> None:
        if to.node == self.name:
            process = self.processes.pid(to)
            if process is not None:
                process.exit_signal(sender, reason, linked=linked)
            return
        if linked and self._stopping:
            return  # the closing connection tells the peer noconnection, as when a BEAM node halts
        conn = self.connections.get(to.node)
        if conn is None:
            if not linked:  # exit(Pid, Reason) connects first, as a message would
                self._send_remote(to.node, c.Exit2(sender, to, reason))
            return
        if linked:
            conn.links.discard((sender, to))
        conn.send_exit(sender, to, reason, linked=linked)

    def exit(self, pid: Pid, reason: Term, *, sender: Pid | None = None) -> None:
        """``exit(Pid, Reason)``: an exit signal that is not a link's."""
        self._exit_signal(sender or self._system_pid(), pid, reason, linked=False)

    # -- monitors --------------------------------------------------------------------

    def monitor(self, watcher: Pid, target: Pid | Atom | str | tuple[Any, Any]) -> Reference:
        """``monitor(process, Target)`` on behalf of local process ``watcher``."""
        ref = self.make_ref()
        process = self.processes.pid(watcher)
        if process is None:
            raise PynodeError(f"{watcher} is not a live local process")
        node: str
        if type(target) is Pid:
            node = target.node
            down_target: Term = target
            wire_target: Pid | Atom = target
        elif type(target) is tuple:
            name, node = Atom(target[0]), str(target[1])
            down_target = (name, Atom(node))
            wire_target = name
        else:
            name, node = Atom(str(target)), self.name
            down_target = (name, self.name)
            wire_target = name
        if node == self.name:
            local = (
                self.processes.pid(wire_target)
                if isinstance(wire_target, Pid)
                else self.processes.name(str(wire_target))
            )
            if local is None:
                process.deliver((DOWN, ref, PROCESS, down_target, NOPROC))
                return ref
            local.monitored_by[ref] = (watcher, down_target)
            process.monitors[ref] = local.pid
            return ref
        process.monitors[ref] = down_target
        conn = self.connections.get(node)
        if conn is not None:
            conn.monitors_out[ref] = (watcher, down_target)
            conn.send(c.MonitorP(watcher, wire_target, ref))
        else:
            self._send_remote(node, c.MonitorP(watcher, wire_target, ref))
        return ref

    def demonitor(self, watcher: Pid, ref: Reference) -> None:
        process = self.processes.pid(watcher)
        if process is None:
            return
        target = process.monitors.pop(ref, None)
        if target is not None:
            self._drop_monitor(watcher, ref, target)
        # A DOWN already queued for this monitor is flushed, as demonitor(Ref, [flush]) would.
        process.mailbox.take_nowait(
            lambda m: type(m) is tuple and len(m) == 5 and m[0] == DOWN and m[1] == ref
        )

    def _drop_monitor(self, watcher: Pid, ref: Reference, target: Term) -> None:
        if type(target) is Pid and target.node == self.name:
            local = self.processes.pid(target)
            if local is not None and local.monitored_by.pop(ref, None) is not None:
                local.demonitored(ref, watcher)
            return
        node = str(target.node) if type(target) is Pid else str(target[1])
        conn = self.connections.get(node)
        if conn is not None and conn.monitors_out.pop(ref, None) is not None:
            wire = target if type(target) is Pid else target[0]
            conn.send(c.DemonitorP(watcher, wire, ref))

    def _down(self, watcher: Pid, ref: Reference, target: Term, reason: Term, *, from_pid: Pid) -> None:
        """A monitored local process ended: tell its watcher, here or remote."""
        if watcher.node == self.name:
            self._deliver_down(watcher, ref, target if type(target) is tuple else from_pid, reason)
            return
        if self._stopping:
            return  # the closing connection tells the peer noconnection, as when a BEAM node halts
        conn = self.connections.get(watcher.node)
        if conn is None:
            return
        conn.monitors_in.pop(ref, None)
        conn.send_monitor_exit(target[0] if type(target) is tuple else from_pid, watcher, ref, reason)

    def _deliver_down(self, watcher: Pid, ref: Reference, target: Term, reason: Term) -> None:
        process = self.processes.pid(watcher)
        if process is not None and process.monitors.pop(ref, None) is not None:
            process.deliver((DOWN, ref, PROCESS, target, reason))

    # -- incoming control messages -------------------------------------------------

    def dispatch_control(self, conn: Connection, control: c.ControlMessage, payload: Term) -> None:
        """Act on one control message from ``conn`` (called for every packet)."""
        handler = _HANDLERS.get(type(control))
        if handler is None:
            log.debug("%s: ignored %r", conn.peer_name, control)
            return
        handler(self, conn, control, payload)

    def _on_send(self, conn: Connection, msg: Any, payload: Term) -> None:
        target = self.processes.pid(msg.to_pid)
        if target is not None:
            target.deliver(payload)

    def _on_reg_send(self, conn: Connection, msg: Any, payload: Term) -> None:
        target = self.processes.name(msg.to_name)
        if target is not None:
            target.deliver(payload)
        else:
            log.debug("%s: message to unregistered name %s dropped", conn.peer_name, msg.to_name)

    def _on_alias_send(self, conn: Connection, msg: Any, payload: Term) -> None:
        log.debug("%s: message to unknown alias %r dropped", conn.peer_name, msg.alias)

    def _on_link(self, conn: Connection, msg: Any, payload: Term) -> None:
        process = self.processes.pid(msg.to_pid)
        if process is None:
            conn.send_exit(msg.to_pid, msg.from_pid, NOPROC, linked=True)
            return
        process.links.add(msg.from_pid)
        conn.links.add((msg.to_pid, msg.from_pid))

    def _on_unlink_id(self, conn: Connection, msg: Any, payload: Term) -> None:
        process = self.processes.pid(msg.to_pid)
        if process is not None:
            process.links.discard(msg.from_pid)
        conn.links.discard((msg.to_pid, msg.from_pid))
        conn.send(c.UnlinkIdAck(msg.id, msg.to_pid, msg.from_pid))

    def _on_exit(self, conn: Connection, msg: Any, payload: Term) -> None:
        reason = payload if payload is not NO_PAYLOAD else msg.reason
        conn.links.discard((msg.to_pid, msg.from_pid))
        process = self.processes.pid(msg.to_pid)
        if process is not None and msg.from_pid in process.links:
            process.links.discard(msg.from_pid)
            process.exit_signal(msg.from_pid, reason, linked=True)

    def _on_exit2(self, conn: Connection, msg: Any, payload: Term) -> None:
        reason = payload if payload is not NO_PAYLOAD else msg.reason
        process = self.processes.pid(msg.to_pid)
        if process is not None:
            process.exit_signal(msg.from_pid, reason, linked=False)

    def _on_monitor_p(self, conn: Connection, msg: Any, payload: Term) -> None:
        target = msg.target
        process = self.processes.pid(target) if type(target) is Pid else self.processes.name(target)
        if process is None:
            conn.send_monitor_exit(target, msg.from_pid, msg.ref, NOPROC)
            return
        assert process.pid is not None
        process.monitored_by[msg.ref] = (msg.from_pid, target if type(target) is Pid else (target, self.name))
        conn.monitors_in[msg.ref] = process.pid

    def _on_demonitor_p(self, conn: Connection, msg: Any, payload: Term) -> None:
        pid = conn.monitors_in.pop(msg.ref, None)
        if pid is not None:
            process = self.processes.pid(pid)
            if process is not None and process.monitored_by.pop(msg.ref, None) is not None:
                process.demonitored(msg.ref, msg.from_pid)

    def _on_monitor_p_exit(self, conn: Connection, msg: Any, payload: Term) -> None:
        reason = payload if payload is not NO_PAYLOAD else msg.reason
        entry = conn.monitors_out.pop(msg.ref, None)
        if entry is not None:
            watcher, target = entry
            self._deliver_down(watcher, msg.ref, target, reason)

    def _on_spawn_request(self, conn: Connection, msg: Any, payload: Term) -> None:
        log.warning(
            "%s asked to spawn %r here; refused (no code from the cluster runs on this node)",
            conn.peer_name,
            msg.mfa,
        )
        conn.send(c.SpawnReply(msg.req_id, msg.from_pid, 0, _NOTSUP))

    def _on_spawn_reply(self, conn: Connection, msg: Any, payload: Term) -> None:
        requester = conn.spawn_requests.pop(msg.req_id, None)
        if requester is None:
            return
        process = self.processes.pid(requester)
        if process is None:
            if type(msg.result) is Pid:  # the requester gave up (timeout, cancel) before the reply
                self.exit(msg.result, _KILL, sender=requester)
            return
        if type(msg.result) is Pid and msg.flags & 2:
            conn.monitors_out[msg.req_id] = (requester, msg.result)
            process.monitors[msg.req_id] = msg.result
        self.send(requester, (_SPAWN_REPLY, msg.req_id, msg.flags, msg.result))

    # -- calls -----------------------------------------------------------------------

    async def call(self, dest: Dest, request: Term, *, timeout: float | None = 5.0) -> Term:
        """``gen_server:call(Dest, Request, Timeout)`` from a short-lived process of this node.

        Raises :class:`CallTimeout` after ``timeout`` seconds and :class:`CallExit`
        (``noproc``, ``noconnection``, the callee's exit reason) when the callee goes.
        """
        with self._reply_slot() as (slot, pid):
            if type(dest) is Reference:
                raise TypeError("call an alias through its owner's pid instead")
            ref = self.monitor(pid, dest)  # type: ignore[arg-type]
            self.send(dest, (GEN_CALL, (pid, ref), request), sender=pid)
            try:
                reply = await slot.mailbox.receive(
                    lambda m: type(m) is tuple and (m[0] == ref or (len(m) == 5 and m[1] == ref)),
                    timeout,
                )
            except ReceiveTimeout:
                raise CallTimeout(f"no reply from {dest!r} within {timeout} s") from None
            if len(reply) == 5 and reply[0] == DOWN:
                raise CallExit(reply[4])
            return reply[1]

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
        with self._reply_slot() as (slot, pid):
            return await self._erpc_via(conn, slot, pid, module, function, args, timeout, group_leader)

    async def _erpc_via(
        self,
        conn: Connection,
        slot: Process,
        pid: Pid,
        module: str,
        function: str,
        args: list[Term],
        timeout: float | None,
        group_leader: Pid | None,
    ) -> Term:
        node = conn.peer_name
        req_id = self.make_ref()
        result_ref = self.make_ref()
        gl = group_leader or self._io_server_pid()
        conn.spawn_requests[req_id] = pid
        conn.send(
            c.SpawnRequest(req_id, pid, gl, (_ERPC, _EXECUTE_CALL, 4), [_MONITOR]),
            [result_ref, Atom(module), Atom(function), list(args)],
        )
        spawned: Pid | None = None
        replied = False
        try:
            reply = await slot.mailbox.receive(
                lambda m: type(m) is tuple and m[0] == _SPAWN_REPLY and m[1] == req_id, timeout
            )
            replied = True
            if type(reply[3]) is not Pid:
                raise ErpcError("error", (_ERPC, reply[3]))
            spawned = reply[3]
            down = await slot.mailbox.receive(
                lambda m: type(m) is tuple and len(m) == 5 and m[0] == DOWN and m[1] == req_id, timeout
            )
            spawned = None
            return _erpc_result(down[4], result_ref)
        except ReceiveTimeout:
            raise CallTimeout(f"erpc {module}:{function} on {node} took over {timeout} s") from None
        finally:
            if spawned is not None:
                # Timed out or cancelled while the function runs: end it, as erpc's timeout does.
                self.exit(spawned, _KILL, sender=pid)
            if replied:
                conn.spawn_requests.pop(req_id, None)
            # Else the request stays listed: a late SPAWN_REPLY finds us gone and ends what it started.

    @contextlib.contextmanager
    def _reply_slot(self) -> Iterator[tuple[Process, Pid]]:
        """A short-lived process that receives one call's reply (and its DOWN), then ends."""
        slot = self.attach(Process())
        assert slot.pid is not None
        try:
            yield slot, slot.pid
        finally:
            slot.exit(NORMAL)

    def _io_server_pid(self) -> Pid:
        pid = self.whereis("pynode_io")
        return pid if pid is not None else self._system_pid()


def _erpc_result(reason: Term, result_ref: Reference) -> Term:
    if type(reason) is tuple and len(reason) >= 3 and reason[0] == result_ref:
        kind = str(reason[1])
        if reason[1] == _RETURN:
            return reason[2]
        raise ErpcError(kind, reason[2], reason[3] if len(reason) > 3 else None)
    if reason == NOCONNECTION:
        raise ErpcError("error", (_ERPC, NOCONNECTION))
    raise ErpcError("exit", (Atom("signal"), reason))


_HANDLERS: dict[type, Callable[[Node, Connection, Any, Term], None]] = {
    c.Send: Node._on_send,
    c.SendSender: Node._on_send,
    c.SendTT: Node._on_send,
    c.SendSenderTT: Node._on_send,
    c.RegSend: Node._on_reg_send,
    c.RegSendTT: Node._on_reg_send,
    c.AliasSend: Node._on_alias_send,
    c.AliasSendTT: Node._on_alias_send,
    c.Link: Node._on_link,
    c.UnlinkId: Node._on_unlink_id,
    c.Exit: Node._on_exit,
    c.ExitTT: Node._on_exit,
    c.PayloadExit: Node._on_exit,
    c.PayloadExitTT: Node._on_exit,
    c.Exit2: Node._on_exit2,
    c.Exit2TT: Node._on_exit2,
    c.PayloadExit2: Node._on_exit2,
    c.PayloadExit2TT: Node._on_exit2,
    c.MonitorP: Node._on_monitor_p,
    c.DemonitorP: Node._on_demonitor_p,
    c.MonitorPExit: Node._on_monitor_p_exit,
    c.PayloadMonitorPExit: Node._on_monitor_p_exit,
    c.SpawnRequest: Node._on_spawn_request,
    c.SpawnRequestTT: Node._on_spawn_request,
    c.SpawnReply: Node._on_spawn_reply,
    c.SpawnReplyTT: Node._on_spawn_reply,
}
