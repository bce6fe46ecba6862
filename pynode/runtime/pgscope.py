"""This node's process in a ``pg`` scope of the cluster (docs/protocol.md section 9).

Registered under the scope's name, as a scope process is on every node, it carries out what
:class:`~pynode.runtime.pgcore.PgPeer` decides. Its members are not joined one by one: the owner
gives a function that says who the members are now (the agents by name, the registry as
``pynode``) and calls :meth:`PgScope.changed` whenever that may have changed; the scope announces
the difference. A restarted scope process (or one started on a node with members already)
announces them all, so nothing is lost between a crash and the next change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from pynode.etf.types import Atom, Pid, Term
from pynode.runtime.mailbox import ReceiveTimeout
from pynode.runtime.pgcore import Monitor, Out, PgPeer, Send
from pynode.runtime.process import Process

__all__ = ["DEFAULT_SCOPE", "Members", "PgScope"]

log = logging.getLogger("pynode.pg")

DEFAULT_SCOPE: Final = "pynode_agents"
NODEUP: Final = Atom("nodeup")
NODEDOWN: Final = Atom("nodedown")
_CHANGED: Final = ("$pynode_pg", "changed")

Members = Callable[[], Mapping[Term, Iterable[Pid]]]
"""Who this node's members are now: group -> pids."""


class PgScope(Process):
    """The scope ``scope`` on this node: discovers its peers, keeps them told of ``members()``."""

    def __init__(
        self, scope: str, members: Members, *, rediscover_interval: float = 0.25, rediscover_max: float = 5.0
    ) -> None:
        super().__init__()
        self.scope = scope
        self.members = members
        self.rediscover_interval = rediscover_interval
        """Seconds before ``discover`` goes again to a connected node whose scope has not answered;
        doubled each time up to ``rediscover_max`` (a node that runs no scope costs little), and
        back to this when a node connects or a peer scope ends (a restart is found at once)."""
        self.rediscover_max = rediscover_max
        self.core: PgPeer | None = None

    def changed(self) -> None:
        """The members may have changed: announce the difference (from any code on the loop)."""
        if self.alive:
            self.deliver(_CHANGED)

    async def run(self) -> None:
        node = self._node()
        core = self.core = PgPeer(Atom(self.scope), self._self_pid())
        self._carry_out(core.set_members(self.members()))
        node.monitor_nodes(self._self_pid())
        for name in list(node.connections):
            self._carry_out(core.node_up(Atom(name)))
        interval = self.rediscover_interval
        while True:
            searching = len(core.searching)
            try:
                message = await self.receive(timeout=interval if searching else None)
            except ReceiveTimeout:
                self._carry_out(core.rediscover())
                interval = min(interval * 2, self.rediscover_max)
                continue
            if message == _CHANGED:
                self._carry_out(core.set_members(self.members()))
            elif type(message) is tuple and len(message) == 2 and message[0] == NODEUP:
                self._carry_out(core.node_up(message[1]))
            elif type(message) is tuple and len(message) == 2 and message[0] == NODEDOWN:
                core.node_down(message[1])
            else:
                self._carry_out(core.received(message))
            if len(core.searching) > searching:
                interval = self.rediscover_interval

    def ended(self, reason: Term) -> None:
        if self.node is not None and self.pid is not None:
            self.node.monitor_nodes(self.pid, False)
        super().ended(reason)

    def _carry_out(self, outs: list[Out]) -> None:
        for out in outs:
            if isinstance(out, Send):
                self.send(out.dest, out.message)
            elif isinstance(out, Monitor):
                self.monitor(out.pid)
