"""Where a message goes: to a local mailbox, or onto the connection to its node.

The router sends what processes send (to pids, names, ``{Name, Node}`` and
aliases) and acts on every control message a connection reads, in the
callback that read it: messages land in mailboxes here, link and monitor
signals go to the :class:`~pynode.runtime.signals.Signals` table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from pynode.etf.pretty import TermText
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.logbudget import LimitedLog
from pynode.net.channel import Connection
from pynode.net.manager import ConnectionManager
from pynode.runtime.process import Dest
from pynode.runtime.signals import Signals
from pynode.runtime.table import ProcessTable
from pynode.wire import control as c
from pynode.wire.framing import NoPayload

__all__ = ["Router"]

log = logging.getLogger("pynode.router")

_NOTSUP: Final = Atom("notsup")

Handler = Callable[[Connection, Any, Any], None]
"""A handler of one control type: those that carry a payload are always handed a term, the others
``NO_PAYLOAD``; the framing guarantees which, so each handler types its payload as it gets it."""


class Router:
    """Sends for local processes; dispatches what peers send."""

    def __init__(
        self,
        node_name: Atom,
        processes: ProcessTable,
        signals: Signals,
        net: ConnectionManager,
        system_pid: Callable[[], Pid],
    ) -> None:
        self.node_name = node_name
        self.processes = processes
        self.signals = signals
        self.net = net
        self.system_pid = system_pid
        self._limited_log = LimitedLog(log, net.log_budget)
        self._handlers: dict[type, Handler] = {
            c.Send: self._on_send,
            c.SendSender: self._on_send,
            c.SendTT: self._on_send,
            c.SendSenderTT: self._on_send,
            c.RegSend: self._on_reg_send,
            c.RegSendTT: self._on_reg_send,
            c.AliasSend: self._on_alias_send,
            c.AliasSendTT: self._on_alias_send,
            c.Link: signals.on_link,
            c.UnlinkId: signals.on_unlink_id,
            c.Exit: signals.on_exit,
            c.ExitTT: signals.on_exit,
            c.PayloadExit: signals.on_exit,
            c.PayloadExitTT: signals.on_exit,
            c.Exit2: signals.on_exit2,
            c.Exit2TT: signals.on_exit2,
            c.PayloadExit2: signals.on_exit2,
            c.PayloadExit2TT: signals.on_exit2,
            c.MonitorP: signals.on_monitor_p,
            c.DemonitorP: signals.on_demonitor_p,
            c.MonitorPExit: signals.on_monitor_p_exit,
            c.PayloadMonitorPExit: signals.on_monitor_p_exit,
            c.SpawnRequest: self._on_spawn_request,
            c.SpawnRequestTT: self._on_spawn_request,
            c.SpawnReply: signals.on_spawn_reply,
            c.SpawnReplyTT: signals.on_spawn_reply,
        }

    # -- outgoing --------------------------------------------------------------------

    def send(self, dest: Dest, message: Term, *, sender: Pid | None = None) -> None:
        """``Dest ! Message``: a pid, a name, ``(name, node)`` or an alias reference."""
        kind = type(dest)
        if kind is Pid:
            assert isinstance(dest, Pid)
            if dest.node == self.node_name:
                target = self.processes.pid(dest)
                if target is not None:
                    target.deliver(message)
                return
            self.net.send_later(dest.node, c.SendSender(sender, dest) if sender else c.Send(dest), message)
        elif kind is Atom or kind is str:
            target = self.processes.name(dest)  # type: ignore[arg-type]
            if target is not None:
                target.deliver(message)
            else:
                log.debug("send to unregistered name %s dropped", dest)
        elif kind is tuple:
            name, node = dest  # type: ignore[str-unpack,misc]
            if node == self.node_name:
                self.send(Atom(name), message, sender=sender)
            else:
                self.net.send_later(str(node), c.RegSend(sender or self.system_pid(), Atom(name)), message)
        elif kind is Reference:
            assert isinstance(dest, Reference)
            if dest.node != self.node_name:
                self.net.send_later(dest.node, c.AliasSend(sender or self.system_pid(), dest), message)
        else:
            raise TypeError(f"cannot send to {dest!r}")

    def reply(self, to: Pid, alias: Reference | None, message: Term, *, sender: Pid | None = None) -> None:
        """A call's reply, as ``gen:reply`` sends it: to the alias of an ``[alias|Mref]`` tag.

        The caller's ``gen:call`` deactivates that alias when it stops waiting, so the BEAM drops a
        reply that arrives too late instead of leaving it in the caller's mailbox. A connection
        without ALIAS (a peer that does not offer it) gets the reply at the caller's pid.
        """
        if alias is not None and alias.node == to.node:
            conn = self.net.connections.get(to.node)
            if conn is not None and conn.aliases:
                conn.send(c.AliasSend(sender or self.system_pid(), alias), message)
                return
        self.send(to, message, sender=sender)

    # -- incoming --------------------------------------------------------------------

    def dispatch_control(self, conn: Connection, control: c.ControlMessage, payload: Term | NoPayload) -> None:
        """Act on one control message from ``conn`` (called for every packet)."""
        handler = self._handlers.get(type(control))
        if handler is None:
            log.debug("%s: ignored %s", conn.peer_name, TermText(control.to_term(), 200))
            return
        handler(conn, control, payload)

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
        log.debug("%s: message to unknown alias %s dropped", conn.peer_name, TermText(msg.alias))

    def _on_spawn_request(self, conn: Connection, msg: Any, payload: Term) -> None:
        self._limited_log.warning(
            ("spawn refused", conn.peer_name),
            asyncio.get_running_loop().time(),
            "%s asked to spawn %s here; refused (no code from the cluster runs on this node)",
            conn.peer_name,
            TermText(msg.mfa, 200),
        )
        conn.send(c.SpawnReply(msg.req_id, msg.from_pid, 0, _NOTSUP))
