"""One distribution channel: a socket to one peer node, its handshake, then its frames.

All protocol decisions live in the sans-IO cores (``wire.handshake``,
``wire.framing``, ``wire.ticks``); this module only moves bytes between them
and the socket, runs the tick timer, and hands decoded control messages to
its owner (the connection manager). It is an ``asyncio.Protocol`` rather than
a stream reader loop so that a packet is parsed and dispatched in the callback
that received it, with no task switch per packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from pynode.errors import HandshakeError, RemoteProtocolError
from pynode.etf.pretty import TermText
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.limits import DEFAULT_LIMITS, Limits
from pynode.logbudget import LimitedLog, LogBudget
from pynode.runtime.signals import PeerSignals
from pynode.wire import control as c
from pynode.wire.control import ControlMessage
from pynode.wire.flags import DFlag
from pynode.wire.framing import NO_PAYLOAD, TICK_FRAME, BadPayload, DistMessage, DistReader, DistWriter, NoPayload, Tick
from pynode.wire.handshake import (
    AliveQuery,
    HandshakeAcceptor,
    HandshakeComplete,
    HandshakeInitiator,
    PeerNamed,
    Status,
)
from pynode.wire.ticks import TickAction, TickTimer

__all__ = ["ChannelOwner", "Connection", "DistProtocol"]

_Pair = tuple[Term, Term] | None


def _pair(control: ControlMessage) -> _Pair:
    """The (sender, receiver) a control message is ordered by, or None when it has no sender."""
    sender = getattr(control, "from_pid", None)
    if sender is None:
        return None
    receiver = getattr(control, "to_pid", None) or getattr(control, "to_name", None)
    receiver = receiver or getattr(control, "target", None) or getattr(control, "alias", None)
    return (sender, receiver)


log = logging.getLogger("pynode.channel")

_HIGH_WATER = 4 << 20
_LOW_WATER = 1 << 20


class ChannelOwner(Protocol):
    """What a channel reports to, and asks of, whoever keeps the node's connections."""

    net_ticktime: float
    limits: Limits
    """What the readers may hold (message size, unfinished fragments)."""
    log_budget: LogBudget
    """The rate limit on lines a peer can make the node repeat."""
    dispatch_control: Callable[[Connection, ControlMessage, Term | NoPayload], None]
    """Called for every control message, in the callback that read it."""

    def handshake_started(self, proto: DistProtocol) -> bool:
        """A socket is open; False closes it at once (too many connections)."""
        ...

    def accept_status(self, peer: str, proto: DistProtocol) -> Status:
        """The acceptor's answer to a peer's name: ok, nok, alive, ok_simultaneous..."""
        ...

    def connection_up(self, conn: Connection) -> None: ...

    def connection_lost(self, conn: Connection) -> None: ...

    def handshake_aborted(self, proto: DistProtocol) -> None: ...


class Connection:
    """An established connection to one peer node, with the state tied to it."""

    def __init__(
        self,
        owner: ChannelOwner,
        protocol: DistProtocol,
        *,
        peer_name: str,
        peer_creation: int,
        flags: DFlag,
        net_ticktime: float,
        limits: Limits = DEFAULT_LIMITS,
        log_budget: LogBudget | None = None,
    ) -> None:
        self.owner = owner
        self.protocol = protocol
        self.transport = protocol.transport
        self.peer_name = peer_name
        self.peer_creation = peer_creation
        self.flags = flags
        self.reader = DistReader(
            flags,
            max_message_size=limits.max_message_size,
            max_fragment_bytes=limits.max_fragment_bytes,
            max_fragment_sequences=limits.max_fragment_sequences,
        )
        self._log = LimitedLog(log, log_budget if log_budget is not None else LogBudget())
        self.writer = DistWriter(flags)
        self.aliases = bool(flags & DFlag.ALIAS)
        """Whether the peer takes ALIAS_SEND (a call's reply goes to the caller's alias)."""
        self._batch: list[bytes] | None = None
        """While :meth:`feed` dispatches: the frames sent meanwhile, written together when it is done."""
        self.closed = False
        self.signals = PeerSignals()
        """The links, monitors and spawn requests across this connection."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ticks = TickTimer(net_ticktime, loop.time())
        self._tick_handle: asyncio.TimerHandle | None = None
        # Frames of big messages, sent one fragment at a time, and the (sender, receiver) pairs they
        # are for: a message of another pair may pass them, one of the same pair may not (order).
        self._fragments: deque[tuple[_Pair, bytes]] = deque()
        self._blocked: Counter[_Pair] = Counter()
        self._pump: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._arm_ticks()

    # -- reading ---------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the socket: parse every complete frame and dispatch it.

        What the dispatched messages send back on this connection (the replies to a burst of
        calls) leaves in one write when the bytes are done: one system call, not one per reply.
        """
        self._ticks.data_received(self._loop.time())
        reader = self.reader
        reader.receive_data(data)
        dispatch = self.owner.dispatch_control
        outer = self._batch
        batch: list[bytes] = [] if outer is None else outer
        self._batch = batch
        try:
            while True:
                event = reader.next_event()
                if type(event) is DistMessage:
                    dispatch(self, event.control, event.payload)
                elif type(event) is Tick:
                    continue
                elif type(event) is BadPayload:
                    self._log.warning(
                        ("undecodable", self.peer_name),
                        self._loop.time(),
                        "%s: dropped a message whose payload could not be decoded (%s): %s",
                        self.peer_name,
                        event.error,
                        TermText(event.control.to_term(), 200),
                    )
                else:
                    return
        finally:
            if outer is None:
                self._batch = None
                self._flush(batch)

    # -- writing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """The frames sent on this connection within the block leave in one write, in order.

        For a process that sends several messages in one step (a run's last DEMONITOR and its
        result): one system call instead of one each. Inside :meth:`feed`, or inside another
        ``together``, the frames simply join the batch already open.
        """
        if self._batch is not None:
            yield
            return
        batch: list[bytes] = []
        self._batch = batch
        try:
            yield
        finally:
            self._batch = None
            self._flush(batch)

    def _flush(self, batch: list[bytes]) -> None:
        if batch and not self.closed:
            self.transport.write(batch[0] if len(batch) == 1 else b"".join(batch))
            self._ticks.data_sent(self._loop.time())

    def send(self, control: ControlMessage, payload: Term | NoPayload = NO_PAYLOAD) -> None:
        """Queue one control message (and payload) for the peer; never blocks.

        The BEAM keeps order per (sender, receiver) pair only, so a small message passes the
        fragments of a big one unless it goes between the same two processes.
        """
        if self.closed:
            return
        frames = self.writer.encode(control, payload)
        if len(frames) == 1 and not self._fragments:
            self._write(frames[0])  # the common case: no pair to look up
            return
        pair = _pair(control)
        if len(frames) == 1 and pair is not None and pair not in self._blocked:
            self._write(frames[0])
            return
        self._blocked[pair] += len(frames)
        self._fragments.extend((pair, frame) for frame in frames)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._pump_fragments())

    def send_exit(self, sender: Pid, to: Pid, reason: Term, *, linked: bool) -> None:
        """A link's EXIT (``linked``) or ``exit/2``'s EXIT2, in the form the peer negotiated."""
        if self.flags & DFlag.EXIT_PAYLOAD:
            self.send(c.PayloadExit(sender, to) if linked else c.PayloadExit2(sender, to), reason)
        else:
            self.send(c.Exit(sender, to, reason) if linked else c.Exit2(sender, to, reason))

    def send_monitor_exit(self, target: Pid | Atom, watcher: Pid, ref: Reference, reason: Term) -> None:
        """Tell a remote watcher its monitor fired, in the form the peer negotiated."""
        if self.flags & DFlag.EXIT_PAYLOAD:
            self.send(c.PayloadMonitorPExit(target, watcher, ref), reason)
        else:
            self.send(c.MonitorPExit(target, watcher, ref, reason))

    def _write(self, frame: bytes) -> None:
        """One frame: into the open batch (:meth:`feed`, :meth:`together`; order is kept), else to the socket."""
        batch = self._batch
        if batch is not None:
            batch.append(frame)
            return
        self.transport.write(frame)
        self._ticks.data_sent(self._loop.time())

    async def _pump_fragments(self) -> None:
        while self._fragments and not self.closed:
            pair, frame = self._fragments.popleft()
            self._write(frame)
            self._blocked[pair] -= 1
            if not self._blocked[pair]:
                del self._blocked[pair]
            if self.transport.get_write_buffer_size() > _LOW_WATER:
                await self.drain()
            else:
                await asyncio.sleep(0)

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark."""
        if not self.closed:
            await self._writable.wait()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- ticks -----------------------------------------------------------------------

    def _arm_ticks(self) -> None:
        delay = max(0.0, self._ticks.next_deadline() - self._loop.time())
        self._tick_handle = self._loop.call_later(delay, self._on_tick_timer)

    def _on_tick_timer(self) -> None:
        if self.closed:
            return
        now = self._loop.time()
        action = self._ticks.poll(now)
        if action is TickAction.SEND_TICK:
            self.transport.write(TICK_FRAME)
            self._ticks.data_sent(now)
        elif action is TickAction.PEER_TIMEOUT:
            log.warning("%s: no data within net_ticktime; closing the connection", self.peer_name)
            self.close()
            return
        self._arm_ticks()

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        if not self.closed:
            self.transport.close()
            self.lost()

    def lost(self) -> None:
        """The socket is gone: tell the owner once, stop timers and the pump."""
        if self.closed:
            return
        self.closed = True
        self._writable.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._pump is not None:
            self._pump.cancel()
        self._fragments.clear()
        self._blocked.clear()
        self.reader.close()
        peer = self.peer_name
        self._log.flush(lambda key: type(key) is tuple and key[-1] == peer)
        self.owner.connection_lost(self)


class DistProtocol(asyncio.Protocol):
    """The asyncio side of one socket: the handshake first, then a :class:`Connection`."""

    def __init__(
        self,
        owner: ChannelOwner,
        handshake: HandshakeInitiator | HandshakeAcceptor,
        arrived: float | None = None,
    ) -> None:
        self.owner = owner
        self.arrived = arrived
        """Loop time an accepted socket arrived (before any TLS handshake); ``None`` when we dialled."""
        self.handshake: HandshakeInitiator | HandshakeAcceptor | None = handshake
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.connection: Connection | None = None
        self.established: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self.peer_hint: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER, low=_LOW_WATER)
        if not self.owner.handshake_started(self):
            # Refused before a byte is read (the owner has said why): no handshake, no log here.
            self.handshake = None
            self.established.cancel()
            self.transport.abort()
            return
        self._flush_handshake()

    def data_received(self, data: bytes) -> None:
        if self.connection is not None:
            try:
                self.connection.feed(data)
            except RemoteProtocolError as exc:
                LimitedLog(log, self.owner.log_budget).log(
                    logging.ERROR, ("protocol error",), asyncio.get_running_loop().time(),
                    "%s: protocol error, closing: %s", self.connection.peer_name, exc,
                )  # fmt: skip
                self.connection.close()
            return
        handshake = self.handshake
        if handshake is None:
            return
        try:
            handshake.receive_data(data)
            self._handshake_events(handshake)
        except HandshakeError as exc:
            self._fail(exc)

    def _handshake_events(self, handshake: HandshakeInitiator | HandshakeAcceptor) -> None:
        while True:
            event: Any = handshake.next_event()
            if isinstance(event, PeerNamed):
                assert isinstance(handshake, HandshakeAcceptor)
                self.peer_hint = event.name
                handshake.send_status(self.owner.accept_status(event.name, self))
                self._flush_handshake()
            elif isinstance(event, AliveQuery):
                assert isinstance(handshake, HandshakeInitiator)
                handshake.answer_alive(True)
                self._flush_handshake()
            elif isinstance(event, HandshakeComplete):
                self._flush_handshake()
                self._established(event, handshake)
                return
            else:
                self._flush_handshake()
                return

    def _established(self, event: HandshakeComplete, handshake: HandshakeInitiator | HandshakeAcceptor) -> None:
        leftover = handshake.leftover()
        self.handshake = None
        connection = Connection(
            self.owner,
            self,
            peer_name=event.peer_name,
            peer_creation=event.peer_creation,
            flags=event.flags,
            net_ticktime=self.owner.net_ticktime,
            limits=self.owner.limits,
            log_budget=self.owner.log_budget,
        )
        self.connection = connection
        self.owner.connection_up(connection)
        if not self.established.done():
            self.established.set_result(connection)
        if leftover:
            self.data_received(leftover)

    def _flush_handshake(self) -> None:
        if self.handshake is not None:
            out = self.handshake.data_to_send()
            if out:
                self.transport.write(out)

    def give_up(self, exc: HandshakeError) -> None:
        """End a handshake that is still going (its set-up time is over)."""
        if self.connection is None and self.handshake is not None:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        peer = self.peer_hint or getattr(self.handshake, "peer_name", None) or "?"
        self._handshake_failed(peer, exc)
        self._flush_handshake()  # a status such as not_allowed still reaches the peer
        self.handshake = None
        if not self.established.done():
            self.established.set_exception(exc)
        self.transport.close()

    def _handshake_failed(self, peer: str, exc: Exception) -> None:
        if isinstance(exc, HandshakeError) and exc.step == "setup":
            # One line per socket given up: max_connections already bounds how many per net_setuptime.
            log.warning("handshake with %s failed: %s", peer[:300], exc)
            return
        # One budget for all other failures: whoever reaches the port can fail handshakes under any name.
        LimitedLog(log, self.owner.log_budget).warning(
            ("handshake failed",), asyncio.get_running_loop().time(), "handshake with %s failed: %s", peer[:300], exc
        )

    def pause_writing(self) -> None:
        if self.connection is not None:
            self.connection.pause_writing()

    def resume_writing(self) -> None:
        if self.connection is not None:
            self.connection.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.connection.lost()
        elif not self.established.done():
            error: Exception = HandshakeError("connection", f"closed during the handshake ({exc or 'eof'})")
            peer = self.peer_hint or getattr(self.handshake, "peer_name", None) or "?"
            if self.handshake is not None:
                try:
                    self.handshake.receive_eof()
                except HandshakeError as named:
                    error = named
            self._handshake_failed(peer, error)
            self.established.set_exception(error)
            self.handshake = None
            self.owner.handshake_aborted(self)
