"""The node's connections: dialling, accepting, simultaneous connect, limits, the transport.

One manager per node. It listens through a :class:`DistTransport`, dials
peers it finds in EPMD, settles two nodes dialling each other at once, queues
what is sent to a node while the connection is being made, and holds every
socket to the node's limits (set-up time, connections at once). What arrives
on a connection goes to the :class:`ConnectionEvents` it was given; it knows
nothing of processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

from pynode import epmd
from pynode.errors import HandshakeError, NodeDown, PynodeError
from pynode.etf.pretty import TermText
from pynode.etf.types import Atom, Term
from pynode.limits import DEFAULT_LIMITS, Admission, Limits
from pynode.logbudget import LimitedLog, LogBudget
from pynode.net.channel import Connection, DistProtocol
from pynode.net.transport import DistTransport, TcpTransport, peer_address
from pynode.wire import control as c
from pynode.wire.flags import DFlag
from pynode.wire.framing import NO_PAYLOAD, NoPayload
from pynode.wire.handshake import HandshakeAcceptor, HandshakeInitiator, Status

__all__ = ["MAX_PENDING_SENDS", "ConnectionEvents", "ConnectionManager", "split_node_name"]

log = logging.getLogger("pynode.net")

MAX_PENDING_SENDS: Final = 100_000
"""Messages, links and monitors that may wait for a connection being made to one node."""


def split_node_name(name: str) -> tuple[str, str]:
    """``"py@127.0.0.1"`` -> ``("py", "127.0.0.1")``; a name without host is an error."""
    alive, sep, host = name.partition("@")
    if not sep or not alive or not host:
        raise ValueError(f"a node name looks like name@host, not {name!r}")
    return alive, host


class ConnectionEvents(Protocol):
    """What the manager reports to the layer above it (the node's signal routing)."""

    def connection_up(self, conn: Connection) -> None:
        """A connection is established (``nodeup`` for those who watch nodes)."""
        ...

    def connection_lost(self, conn: Connection) -> None:
        """An established connection is gone."""
        ...

    def admit_pending(self, conn: Connection, control: c.ControlMessage) -> bool:
        """Whether a signal queued while connecting still holds now that ``conn`` is up."""
        ...

    def pending_failed(self, node: str, controls: list[c.ControlMessage], exc: BaseException) -> None:
        """No connection to ``node`` came; these queued signals will never be sent."""
        ...


class ConnectionManager:
    """Every connection of one node, established or in its handshake."""

    def __init__(
        self,
        name: Atom,
        cookie: str,
        *,
        events: ConnectionEvents,
        flags: DFlag,
        net_ticktime: float,
        epmd_port: int,
        transport: DistTransport | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.name = name
        self.cookie = cookie
        self.events = events
        self.flags = flags
        self.net_ticktime = net_ticktime
        self.epmd_port = epmd_port
        self.transport: DistTransport = transport if transport is not None else TcpTransport()
        self.limits = limits
        # Lines a peer can repeat at will (bad messages, refused requests) share one budget per kind and peer.
        self.log_budget = LogBudget(lines=limits.log_lines, interval=limits.log_interval)
        self._limited_log = LimitedLog(log, self.log_budget)
        self.creation = 0
        self.stopping = False
        self.connections: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Future[Connection]] = {}
        self._pending_sends: dict[str, list[tuple[c.ControlMessage, Term | NoPayload]]] = {}
        self._dialling: set[DistProtocol] = set()
        self._accepting: set[DistProtocol] = set()
        self._admission: Admission[DistProtocol] = Admission(limits)
        self._setup_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.dispatch_control: Callable[[Connection, c.ControlMessage, Term | NoPayload], None] = _no_dispatcher
        """Every control message read, called in the callback that read it: the owner sets it."""

    # -- lifecycle -------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        """Accept connections on ``host:port``; the port listened on."""
        self._server = await self.transport.listen(self._accepting_protocol, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    def close_server(self) -> None:
        if self._server is not None:
            self._server.close()

    async def stop(self) -> None:
        """Close every connection and handshake, and the listener."""
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        if self._setup_timer is not None:
            self._setup_timer.cancel()
        for conn in list(self.connections.values()):
            conn.close()
        for proto in list(self._dialling | self._accepting):
            proto.transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.transport.aclose()

    def _background(self, coro: Any, name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def nodes(self) -> list[str]:
        return list(self.connections)

    @property
    def open_connections(self) -> int:
        """What ``max_connections`` counts: established, dialling, and accepted in their handshake."""
        return len(self.connections) + len(self._dialling) + self._admission.handshaking

    # -- sending ---------------------------------------------------------------------

    def send_later(self, node: str, control: c.ControlMessage, payload: Term | NoPayload = NO_PAYLOAD) -> None:
        """Send to ``node``, connecting first (as the BEAM does) if there is no connection yet."""
        conn = self.connections.get(node)
        if conn is not None:
            conn.send(control, payload)
            return
        if self.stopping:
            return
        # Messages, links and monitors wait for the connection in one queue, so a link made
        # before a send still reaches the peer first.
        queue = self._pending_sends.setdefault(node, [])
        if len(queue) >= MAX_PENDING_SENDS:
            # Bounded like everything between a socket and a run: past this the node is as good
            # as unreachable, and the BEAM drops messages to unreachable nodes too.
            self._limited_log.warning(
                ("dropped sends", node),
                asyncio.get_running_loop().time(),
                "%s: still connecting with %d messages queued; dropped %s",
                node,
                len(queue),
                TermText(control.to_term(), 200),
            )
            return
        queue.append((control, payload))
        if node not in self._connecting:
            self._background(self._connect_quietly(node), name=f"connect {node}")

    async def _connect_quietly(self, node: str) -> None:
        with contextlib.suppress(PynodeError, OSError):  # _fail_pending has said why
            await self.connect(node)

    def _fail_pending(self, node: str, exc: BaseException) -> None:
        pending = self._pending_sends.pop(node, [])
        if pending:
            self.events.pending_failed(node, [control for control, _ in pending], exc)

    # -- dialling --------------------------------------------------------------------

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
            self._background(self._dial(node, pending), name=f"dial {node}")
        return await asyncio.shield(pending)

    async def _dial(self, node: str, result: asyncio.Future[Connection]) -> None:
        setuptime = self.limits.net_setuptime
        try:
            # One net_setuptime for the whole set-up, EPMD lookup included, as OTP's setup timer.
            deadline = asyncio.get_running_loop().time() + setuptime
            alive, host = split_node_name(node)
            async with asyncio.timeout_at(deadline):
                address = await epmd.port_please(alive, host=host, epmd_port=self.epmd_port)
                if address is None:
                    raise NodeDown(node, f"{alive} is not registered in EPMD on {host}")
                handshake = HandshakeInitiator(
                    our_name=self.name,
                    cookie=self.cookie,
                    flags=self.flags,
                    creation=self.creation,
                    peer_name=node,
                    length_bytes=self.transport.handshake_length_size,
                )
                _, protocol = await self.transport.dial(
                    lambda: DistProtocol(self, handshake), host, address.port, peer_node=node
                )
            assert isinstance(protocol, DistProtocol)
            self._dialling.add(protocol)
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await asyncio.shield(protocol.established)
            except TimeoutError:
                protocol.give_up(_setup_over(setuptime))
                raise
            except HandshakeError as exc:
                if exc.step != "recv_status" or not exc.reason.startswith("nok"):
                    raise
                # Both sides dialled at once and the peer keeps its own attempt: that one brings
                # the connection, and connection_up() resolves ``result``.
                await asyncio.wait_for(asyncio.shield(result), setuptime)
                return
            finally:
                self._dialling.discard(protocol)
            if not result.done():
                result.set_result(conn)
        except BaseException as exc:
            self._fail_pending(node, exc)
            if not result.done():
                result.set_exception(exc if isinstance(exc, PynodeError | OSError) else NodeDown(node, repr(exc)))
                result.exception()  # retrieved by connect() callers, if any
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if self._connecting.get(node) is result:
                del self._connecting[node]

    # -- accepting -------------------------------------------------------------------

    def _accepting_protocol(self, arrived: float) -> DistProtocol:
        handshake = HandshakeAcceptor(
            our_name=self.name,
            cookie=self.cookie,
            flags=self.flags,
            creation=self.creation,
            length_bytes=self.transport.handshake_length_size,
        )
        return DistProtocol(self, handshake, arrived)

    def handshake_started(self, proto: DistProtocol) -> bool:
        """Admit an accepted socket under ``max_connections`` and start its set-up clock."""
        if not isinstance(proto.handshake, HandshakeAcceptor):
            return True  # we dialled: connect() has its own set-up timeout
        if self.stopping:
            return False
        loop = asyncio.get_running_loop()
        others = len(self.connections) + len(self._dialling)
        assert proto.arrived is not None  # every accepted socket's protocol is made with its arrival time
        if not self._admission.open(proto, proto.arrived, others=others):
            self._limited_log.warning(
                ("refused connections",),
                loop.time(),
                "refused a connection from %s: %d connections open (max_connections %d)",
                peer_address(proto.transport),
                self.open_connections,
                self.limits.max_connections,
            )
            return False
        self._accepting.add(proto)
        proto.established.add_done_callback(lambda f: self._handshake_settled(proto, f))
        if self._setup_timer is None:
            self._arm_setup_timer(loop)
        return True

    def _arm_setup_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = self._admission.next_deadline()
        self._setup_timer = None if deadline is None else loop.call_at(deadline, self._setup_expired)

    def _setup_expired(self) -> None:
        loop = asyncio.get_running_loop()
        for proto in self._admission.expired(loop.time()):
            proto.give_up(_setup_over(self.limits.net_setuptime))
        self._arm_setup_timer(loop)

    def accept_status(self, peer: str, proto: DistProtocol) -> Status:
        """The acceptor's answer to a peer's name: ok, nok, alive or ok_simultaneous."""
        if self.stopping:
            return "not_allowed"
        if peer in self.connections:
            return "alive"
        if peer in self._connecting:
            # Both sides dialled at once: the greater name keeps its own attempt.
            return "nok" if self.name > peer else "ok_simultaneous"
        return "ok"

    def _handshake_settled(self, proto: DistProtocol, done: asyncio.Future[Connection]) -> None:
        self._accepting.discard(proto)
        self._admission.settled(proto)
        if not done.cancelled():
            done.exception()  # failures were logged by the protocol; mark them retrieved

    def handshake_aborted(self, proto: DistProtocol) -> None:
        self._dialling.discard(proto)
        self._accepting.discard(proto)
        self._admission.settled(proto)

    # -- established -----------------------------------------------------------------

    def connection_up(self, conn: Connection) -> None:
        old = self.connections.get(conn.peer_name)
        if old is not None and old is not conn:
            old.close()
        self.connections[conn.peer_name] = conn
        pending = self._connecting.get(conn.peer_name)
        if pending is not None and not pending.done():
            pending.set_result(conn)
        admit = self.events.admit_pending
        for control, payload in self._pending_sends.pop(conn.peer_name, []):
            if not admit(conn, control):
                continue
            if type(control) is c.Exit2:  # queued before the peer's flags were known
                conn.send_exit(control.from_pid, control.to_pid, control.reason, linked=False)
            else:
                conn.send(control, payload)
        log.info("connected to %s (flags %#x)", conn.peer_name, int(conn.flags))
        self.events.connection_up(conn)

    def connection_lost(self, conn: Connection) -> None:
        if self.connections.get(conn.peer_name) is conn:
            del self.connections[conn.peer_name]
        log.info("connection to %s closed", conn.peer_name)
        self.events.connection_lost(conn)


def _setup_over(setuptime: float) -> HandshakeError:
    return HandshakeError("setup", f"no complete handshake within net_setuptime ({setuptime:g} s)")


def _no_dispatcher(conn: Connection, control: c.ControlMessage, payload: Term | NoPayload) -> None:
    raise PynodeError("the connection manager was given no dispatcher")
