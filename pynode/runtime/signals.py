"""Links and monitors: who is tied to whom, here and across connections.

The table holds no sockets and reads no clock. It works on the process table
and on one :class:`PeerSignals` per connection, and reaches a peer through
the small :class:`PeerPort` a connection offers (or :class:`Peers` when there
is no connection yet). What it decides is visible as data: messages in
mailboxes, exit signals to processes, control messages handed to a port.
So its tests need neither an event loop nor a socket.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Protocol

from pynode.errors import PynodeError
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.runtime.memory import Table
from pynode.runtime.process import DOWN, KILL, NOCONNECTION, NOPROC, PROCESS, MonitorTarget, Process
from pynode.runtime.table import ProcessTable
from pynode.wire import control as c
from pynode.wire.framing import NO_PAYLOAD, NoPayload

__all__ = ["SPAWN_REPLY", "PeerPort", "PeerSignals", "Peers", "Signals"]

log = logging.getLogger("pynode.signals")

SPAWN_REPLY: Final = Atom("spawn_reply")


@dataclass(slots=True)
class PeerSignals:
    """The links, monitors and spawn requests that cross one connection."""

    monitors_out: dict[Reference, tuple[Pid, Term]] = field(default_factory=dict)
    """Monitors local processes hold on the peer's: ref -> (local watcher, target as named)."""
    monitors_in: dict[Reference, Pid] = field(default_factory=dict)
    """Monitors the peer's processes hold on ours: ref -> local target pid."""
    links: set[tuple[Pid, Pid]] = field(default_factory=set)
    """(local pid, remote pid) pairs that are linked."""
    spawn_requests: dict[Reference, Pid] = field(default_factory=dict)
    """Outstanding SPAWN_REQUESTs we made: request ref -> local requester."""

    def compactable_tables(self) -> Iterator[Table]:
        """Every table above, for the node to compact after a burst (pynode.runtime.memory)."""
        for each in fields(self):
            yield getattr(self, each.name)


class PeerPort(Protocol):
    """What the table needs of one established connection."""

    peer_name: str
    signals: PeerSignals

    def send(self, control: c.ControlMessage, payload: Term | NoPayload = NO_PAYLOAD) -> None: ...

    def send_exit(self, sender: Pid, to: Pid, reason: Term, *, linked: bool) -> None: ...

    def send_monitor_exit(self, target: Pid | Atom, watcher: Pid, ref: Reference, reason: Term) -> None: ...


class Peers(Protocol):
    """The connections, as the table sees them."""

    @property
    def connections(self) -> Mapping[str, PeerPort]:
        """The established connections, by peer node name."""
        ...

    def send_later(self, node: str, control: c.ControlMessage, payload: Term | NoPayload = NO_PAYLOAD) -> None:
        """Send once a connection to ``node`` is up (connecting if need be)."""
        ...


class Signals:
    """The link and monitor rules of the BEAM, for the processes of one node."""

    def __init__(
        self, node_name: Atom, processes: ProcessTable, peers: Peers, make_ref: Callable[[], Reference]
    ) -> None:
        self.node_name = node_name
        self.processes = processes
        self.peers = peers
        self._connections = peers.connections  # one mapping for the node's life: a lookup, no call
        self.make_ref = make_ref
        self.stopping = False
        """Set when the node stops: closing connections then tell peers noconnection."""

    # -- links -----------------------------------------------------------------------

    def link(self, a: Pid, b: Pid) -> None:
        """Link local process ``a`` with ``b`` (local or remote)."""
        process = self.processes.pid(a)
        if process is None:
            raise PynodeError(f"{a} is not a live local process")
        if b in process.links:
            return
        if b.node == self.node_name:
            other = self.processes.pid(b)
            if other is None:
                process.exit_signal(b, NOPROC, linked=True)
                return
            process.links.add(b)
            other.links.add(a)
            return
        process.links.add(b)
        conn = self._connections.get(b.node)
        if conn is None:
            self.peers.send_later(b.node, c.Link(a, b))
        else:
            conn.signals.links.add((a, b))
            conn.send(c.Link(a, b))

    def unlink(self, a: Pid, b: Pid) -> None:
        process = self.processes.pid(a)
        if process is None or b not in process.links:
            return
        process.links.discard(b)
        if b.node == self.node_name:
            other = self.processes.pid(b)
            if other is not None:
                other.links.discard(a)
            return
        conn = self._connections.get(b.node)
        if conn is not None:
            conn.signals.links.discard((a, b))
            conn.send(c.UnlinkId(secrets.randbits(63) or 1, a, b))

    def exit_signal(self, sender: Pid, to: Pid, reason: Term, *, linked: bool) -> None:
        """A link's exit (``linked``) or ``exit(Pid, Reason)`` from ``sender`` to ``to``."""
        if to.node == self.node_name:
            process = self.processes.pid(to)
            if process is not None:
                process.exit_signal(sender, reason, linked=linked)
            return
        if linked and self.stopping:
            return  # the closing connection tells the peer noconnection, as when a BEAM node halts
        conn = self._connections.get(to.node)
        if conn is None:
            if not linked:  # exit(Pid, Reason) connects first, as a message would
                self.peers.send_later(to.node, c.Exit2(sender, to, reason))
            return
        if linked:
            conn.signals.links.discard((sender, to))
        conn.send_exit(sender, to, reason, linked=linked)

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
            down_target: MonitorTarget = target
            wire_target: Pid | Atom = target
        elif type(target) is tuple:
            name, node = Atom(target[0]), str(target[1])
            down_target = (name, Atom(node))
            wire_target = name
        else:
            name, node = Atom(str(target)), self.node_name
            down_target = (name, self.node_name)
            wire_target = name
        if node == self.node_name:
            local = (
                self.processes.pid(wire_target)
                if isinstance(wire_target, Pid)
                else self.processes.name(str(wire_target))
            )
            if local is None:
                process.deliver((DOWN, ref, PROCESS, down_target, NOPROC))
                return ref
            assert local.pid is not None
            local.monitored_by[ref] = (watcher, down_target)
            process.monitors[ref] = local.pid
            return ref
        process.monitors[ref] = down_target
        conn = self._connections.get(node)
        if conn is not None:
            conn.signals.monitors_out[ref] = (watcher, down_target)
            conn.send(c.MonitorP(watcher, wire_target, ref))
        else:
            self.peers.send_later(node, c.MonitorP(watcher, wire_target, ref))
        return ref

    def demonitor(self, watcher: Pid, ref: Reference) -> None:
        process = self.processes.pid(watcher)
        if process is None:
            return
        target = process.monitors.pop(ref, None)
        if target is not None:
            self._drop_monitor(watcher, ref, target)
        # A DOWN already queued for this monitor is flushed, as demonitor(Ref, [flush]) would.
        process.mailbox.take_nowait(lambda m: type(m) is tuple and len(m) == 5 and m[0] == DOWN and m[1] == ref)

    def _drop_monitor(self, watcher: Pid, ref: Reference, target: MonitorTarget) -> None:
        if type(target) is Pid and target.node == self.node_name:
            local = self.processes.pid(target)
            if local is not None and local.monitored_by.pop(ref, None) is not None:
                local.demonitored(ref, watcher)
            return
        node = str(target.node) if isinstance(target, Pid) else str(target[1])
        conn = self._connections.get(node)
        if conn is not None and conn.signals.monitors_out.pop(ref, None) is not None:
            wire = target if isinstance(target, Pid) else target[0]
            conn.send(c.DemonitorP(watcher, wire, ref))

    def _down(self, watcher: Pid, ref: Reference, target: MonitorTarget, reason: Term, *, from_pid: Pid) -> None:
        """A monitored local process ended: tell its watcher, here or remote."""
        if watcher.node == self.node_name:
            self.deliver_down(watcher, ref, target if type(target) is tuple else from_pid, reason)
            return
        if self.stopping:
            return  # the closing connection tells the peer noconnection, as when a BEAM node halts
        conn = self._connections.get(watcher.node)
        if conn is None:
            return
        conn.signals.monitors_in.pop(ref, None)
        conn.send_monitor_exit(target[0] if type(target) is tuple else from_pid, watcher, ref, reason)

    def deliver_down(self, watcher: Pid, ref: Reference, target: Term, reason: Term) -> None:
        """A local watcher's monitor fired (once: a demonitored one stays silent)."""
        process = self.processes.pid(watcher)
        if process is not None and process.monitors.pop(ref, None) is not None:
            process.deliver((DOWN, ref, PROCESS, target, reason))

    # -- ends ------------------------------------------------------------------------

    def process_ended(self, process: Process, reason: Term) -> None:
        """A local process is gone: its links get exit signals, its watchers DOWN."""
        pid = process.pid
        assert pid is not None
        for linked in process.links:
            self.exit_signal(pid, linked, reason, linked=True)
        process.links.clear()
        for ref, (watcher, target) in process.monitored_by.items():
            self._down(watcher, ref, target, reason, from_pid=pid)
        process.monitored_by.clear()
        for ref, target in process.monitors.items():
            self._drop_monitor(pid, ref, target)
        process.monitors.clear()

    def connection_lost(self, conn: PeerPort) -> None:
        """Every link and monitor across the lost connection fires with ``noconnection``."""
        state = conn.signals
        for local, remote in state.links:
            process = self.processes.pid(local)
            if process is not None:
                process.links.discard(remote)
                process.exit_signal(remote, NOCONNECTION, linked=True)
        state.links.clear()
        for ref, (watcher, target) in list(state.monitors_out.items()):
            self.deliver_down(watcher, ref, target, NOCONNECTION)
        state.monitors_out.clear()
        lost = list(state.monitors_in.items())
        state.monitors_in.clear()
        for ref, target_pid in lost:
            process = self.processes.pid(target_pid)
            if process is None:
                continue
            entry = process.monitored_by.pop(ref, None)
            if entry is not None:
                process.watcher_lost(ref, entry[0], NOCONNECTION)
        for req_id, requester in state.spawn_requests.items():
            process = self.processes.pid(requester)
            if process is not None:
                process.deliver((SPAWN_REPLY, req_id, 0, NOCONNECTION))
        state.spawn_requests.clear()

    # -- signals that waited for a connection ----------------------------------------

    def admit_pending(self, conn: PeerPort, control: c.ControlMessage) -> bool:
        """Whether a queued signal still holds now that ``conn`` is up; records links and monitors."""
        if isinstance(control, c.Link):
            process = self.processes.pid(control.from_pid)
            if process is None or control.to_pid not in process.links:
                return False  # unlinked, or ended, before the connection came up
            conn.signals.links.add((control.from_pid, control.to_pid))
        elif isinstance(control, c.MonitorP):
            watcher = self.processes.pid(control.from_pid)
            if watcher is None or control.ref not in watcher.monitors:
                return False  # demonitored, or ended, before the connection came up
            conn.signals.monitors_out[control.ref] = (control.from_pid, watcher.monitors[control.ref])
        return True

    def fail_pending(self, controls: Iterable[c.ControlMessage]) -> int:
        """No connection came: queued links exit and monitors fire with noconnection; messages dropped."""
        dropped = 0
        for control in controls:
            if isinstance(control, c.Link):
                process = self.processes.pid(control.from_pid)
                if process is not None and control.to_pid in process.links:
                    process.links.discard(control.to_pid)
                    process.exit_signal(control.to_pid, NOCONNECTION, linked=True)
            elif isinstance(control, c.MonitorP):
                watcher = self.processes.pid(control.from_pid)
                if watcher is not None and control.ref in watcher.monitors:
                    target = watcher.monitors[control.ref]
                    self.deliver_down(control.from_pid, control.ref, target, NOCONNECTION)
            else:
                dropped += 1
        return dropped

    # -- what peers send ---------------------------------------------------------------

    def on_link(self, conn: PeerPort, msg: Any, payload: Term | NoPayload) -> None:
        process = self.processes.pid(msg.to_pid)
        if process is None:
            conn.send_exit(msg.to_pid, msg.from_pid, NOPROC, linked=True)
            return
        process.links.add(msg.from_pid)
        conn.signals.links.add((msg.to_pid, msg.from_pid))

    def on_unlink_id(self, conn: PeerPort, msg: Any, payload: Term | NoPayload) -> None:
        process = self.processes.pid(msg.to_pid)
        if process is not None:
            process.links.discard(msg.from_pid)
        conn.signals.links.discard((msg.to_pid, msg.from_pid))
        conn.send(c.UnlinkIdAck(msg.id, msg.to_pid, msg.from_pid))

    def on_exit(self, conn: PeerPort, msg: Any, payload: Term | NoPayload) -> None:
        reason = payload if payload is not NO_PAYLOAD else msg.reason
        conn.signals.links.discard((msg.to_pid, msg.from_pid))
        process = self.processes.pid(msg.to_pid)
        if process is not None and msg.from_pid in process.links:
            process.links.discard(msg.from_pid)
            process.exit_signal(msg.from_pid, reason, linked=True)

    def on_exit2(self, conn: PeerPort, msg: Any, payload: Term | NoPayload) -> None:
        reason = payload if payload is not NO_PAYLOAD else msg.reason
        process = self.processes.pid(msg.to_pid)
        if process is not None:
            process.exit_signal(msg.from_pid, reason, linked=False)

    def on_monitor_p(self, conn: PeerPort, msg: Any, payload: Term | NoPayload) -> None:
        target = msg.target
        process = self.processes.pid(target) if type(target) is Pid else self.processes.name(target)
        if process is None:
            conn.send_monitor_exit(target, msg.from_pid, msg.ref, NOPROC)
            return
        assert process.pid is not None
        process.monitored_by[msg.ref] = (msg.from_pid, target if type(target) is Pid else (target, self.node_name))
        conn.signals.monitors_in[msg.ref] = process.pid

    def on_demonitor_p(self, conn: PeerPort, msg: Any, payload: Term | NoPayload) -> None:
        pid = conn.signals.monitors_in.pop(msg.ref, None)
        if pid is not None:
            process = self.processes.pid(pid)
            if process is not None and process.monitored_by.pop(msg.ref, None) is not None:
                process.demonitored(msg.ref, msg.from_pid)

    def on_monitor_p_exit(self, conn: PeerPort, msg: Any, payload: Term | NoPayload) -> None:
        reason = payload if payload is not NO_PAYLOAD else msg.reason
        entry = conn.signals.monitors_out.pop(msg.ref, None)
        if entry is not None:
            watcher, target = entry
            self.deliver_down(watcher, msg.ref, target, reason)

    def on_spawn_reply(self, conn: PeerPort, msg: Any, payload: Term | NoPayload) -> None:
        """The answer to a SPAWN_REQUEST of ours; with the monitor flag, a monitor comes with it."""
        requester = conn.signals.spawn_requests.pop(msg.req_id, None)
        if requester is None:
            return
        process = self.processes.pid(requester)
        if process is None:
            if type(msg.result) is Pid:  # the requester gave up (timeout, cancel) before the reply
                self.exit_signal(requester, msg.result, KILL, linked=False)
            return
        if type(msg.result) is Pid and msg.flags & 2:
            conn.signals.monitors_out[msg.req_id] = (requester, msg.result)
            process.monitors[msg.req_id] = msg.result
        process.deliver((SPAWN_REPLY, msg.req_id, msg.flags, msg.result))
