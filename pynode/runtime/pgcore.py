"""The peer side of OTP's ``pg`` protocol (``lib/kernel/src/pg.erl``), without I/O.

A ``pg`` scope never finds a hidden node by itself: its ``init`` sends ``{discover, Pid}`` only to
``nodes()``, and ``net_kernel:monitor_nodes(true)`` reports visible nodes only. So this node does
the discovering: it sends ``{discover, ScopePid}`` to ``{Scope, Node}`` on every connection (and
again, every few hundred milliseconds, while a connected node has no scope that answered),
answers a peer's ``discover`` with its ``sync`` cast, and sends ``join``/``leave`` as its members
change. What peers tell of their own members is not kept: nothing here reads remote groups.

A remote scope's catch-all clauses raise ``badarg`` and crash it, so only these exact shapes
ever go out (OTP 23 to 28 accept them all; the three-element ``discover`` is accepted from OTP 26
only, so it is read but never sent):

- ``{discover, Self}`` to ``{Scope, Node}`` or to a peer scope's pid;
- ``{'$gen_cast', {sync, Self, [{Group, [Pid]}]}}`` to a peer scope's pid;
- ``{join, Self, Group, [Pid]}`` and ``{leave, Self, [Pid], [Group]}`` to every peer scope.

The owner feeds events in (connections, messages, the wanted members) and carries out what
comes back: :class:`Send` and :class:`Monitor`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from pynode.etf.types import Atom, Pid, Term
from pynode.runtime.genserver import GEN_CAST
from pynode.runtime.process import DOWN

__all__ = ["Monitor", "Out", "PgPeer", "Send"]

DISCOVER: Final = Atom("discover")
SYNC: Final = Atom("sync")
JOIN: Final = Atom("join")
LEAVE: Final = Atom("leave")
PROCESS: Final = Atom("process")


@dataclass(frozen=True, slots=True)
class Send:
    """``Dest ! Message``: ``Dest`` a peer scope's pid or ``(Scope, Node)``."""

    dest: Pid | tuple[Atom, Atom]
    message: Term


@dataclass(frozen=True, slots=True)
class Monitor:
    """Monitor a peer scope's process: its ``'DOWN'`` means its members are gone from it."""

    pid: Pid


Out: TypeAlias = Send | Monitor


class PgPeer:
    """One scope's view from this node: the peers that know it, and the members it announced."""

    def __init__(self, scope: Atom, me: Pid) -> None:
        self.scope = scope
        self.me = me
        self.peers: set[Pid] = set()
        """Remote scope processes that know this node (each monitored)."""
        self.connected: set[Atom] = set()
        self.searching: set[Atom] = set()
        """Connected nodes with no known scope process: discovered again on every :meth:`rediscover`."""
        self.members: dict[Term, list[Pid]] = {}
        """What the peers were told: group -> this node's pids in it."""

    # -- connections -------------------------------------------------------------------

    def node_up(self, node: Atom) -> list[Out]:
        self.connected.add(node)
        self.searching.add(node)
        return [self._discover(node)]

    def node_down(self, node: Atom) -> None:
        """Its peers go too (their monitors also fire, with ``noconnection``)."""
        self.connected.discard(node)
        self.searching.discard(node)
        self.peers = {p for p in self.peers if p.node != node}

    def rediscover(self) -> list[Out]:
        """``discover`` again to every connected node without a known scope process."""
        return [self._discover(node) for node in sorted(self.searching)]

    # -- messages ----------------------------------------------------------------------

    def received(self, message: Term) -> list[Out]:
        """A message to this scope process; anything it does not know is ignored, never an error."""
        if type(message) is not tuple or not message:
            return []
        tag = message[0]
        if tag == DISCOVER and len(message) in (2, 3) and type(message[1]) is Pid:
            return self._discovered(message[1])
        if tag == GEN_CAST and len(message) == 2:
            cast = message[1]
            if type(cast) is tuple and len(cast) == 3 and cast[0] == SYNC and type(cast[1]) is Pid:
                return self._known(cast[1])
            return []
        if tag == DOWN and len(message) == 5 and message[2] == PROCESS and type(message[3]) is Pid:
            self._peer_down(message[3])
        # join and leave of remote members: this node keeps no view of other nodes' groups.
        return []

    def set_members(self, wanted: Mapping[Term, Iterable[Pid]]) -> list[Out]:
        """Make the announced members ``wanted``: a ``join`` or ``leave`` per group that changed."""
        new = {group: list(dict.fromkeys(pids)) for group, pids in wanted.items()}
        new = {group: pids for group, pids in new.items() if pids}
        out: list[Out] = []
        for group, old_pids in self.members.items():
            gone = [p for p in old_pids if p not in new.get(group, ())]
            if gone:
                out += self._broadcast((LEAVE, self.me, gone, [group]))
        for group, pids in new.items():
            old = self.members.get(group, [])
            came = [p for p in pids if p not in old]
            if came:
                out += self._broadcast((JOIN, self.me, group, came))
        self.members = new
        return out

    # -- inside ------------------------------------------------------------------------

    def _discover(self, node: Atom) -> Send:
        return Send((self.scope, node), (DISCOVER, self.me))

    def _sync(self, peer: Pid) -> Send:
        groups: list[Term] = [(group, list(pids)) for group, pids in self.members.items()]
        return Send(peer, (GEN_CAST, (SYNC, self.me, groups)))

    def _discovered(self, peer: Pid) -> list[Out]:
        """As ``pg:handle_discover``: answer with ``sync``; a peer not known yet is monitored and
        discovered in turn."""
        out: list[Out] = [self._sync(peer)]
        if peer not in self.peers:
            out += self._known(peer)
            out.append(Send(peer, (DISCOVER, self.me)))
        return out

    def _known(self, peer: Pid) -> list[Out]:
        if peer in self.peers or peer.node not in self.connected:
            return []
        self.peers.add(peer)
        self.searching.discard(peer.node)
        return [Monitor(peer)]

    def _peer_down(self, peer: Pid) -> None:
        """A peer scope ended (it restarts, or its node went): look for its successor."""
        if peer in self.peers:
            self.peers.discard(peer)
            if peer.node in self.connected and not any(p.node == peer.node for p in self.peers):
                self.searching.add(peer.node)

    def _broadcast(self, message: Term) -> list[Out]:
        return [Send(peer, message) for peer in sorted(self.peers, key=_order)]


def _order(pid: Pid) -> tuple[str, int, int]:
    return (str(pid.node), pid.id, pid.serial)
