"""The pg peer core, message by message, against the shapes ``lib/kernel/src/pg.erl`` matches.

A remote scope raises ``badarg`` on any message its clauses do not match, so each shape here is
the one its ``handle_info``/``handle_cast`` clause takes (OTP 23 to 28):

- ``handle_info({discover, Peer}, _)``; ``{discover, Peer, _Version}`` from OTP 26 only (never sent);
- ``handle_cast({sync, Peer, Groups}, _)`` with ``Groups = [{Group, [Pid]}]``;
- ``handle_info({join, Peer, Group, PidOrPids}, _)``;
- ``handle_info({leave, Peer, PidOrPids, Groups}, _)``.
"""

from __future__ import annotations

from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.runtime.pgcore import Monitor, PgPeer, Send

A = Atom
SCOPE = A("pynode_agents")
PY = A("py@127.0.0.1")
E1 = A("e1@127.0.0.1")
ME = Pid(PY, 1, 0, 1)
PEER = Pid(E1, 50, 0, 7)
AGENT = Pid(PY, 9, 0, 1)
AGENT2 = Pid(PY, 10, 0, 1)


def connected_with_peer() -> PgPeer:
    core = PgPeer(SCOPE, ME)
    core.node_up(E1)
    core.received((A("$gen_cast"), (A("sync"), PEER, [])))
    return core


def test_a_connection_is_discovered_with_the_two_element_form() -> None:
    core = PgPeer(SCOPE, ME)
    assert core.node_up(E1) == [Send((SCOPE, E1), (A("discover"), ME))]
    assert core.rediscover() == [Send((SCOPE, E1), (A("discover"), ME))]


def test_a_peers_sync_makes_it_known_and_monitored_and_ends_the_search() -> None:
    core = PgPeer(SCOPE, ME)
    core.node_up(E1)
    assert core.received((A("$gen_cast"), (A("sync"), PEER, [(A("g"), [Pid(E1, 3, 0, 7)])]))) == [Monitor(PEER)]
    assert core.peers == {PEER} and core.rediscover() == []


def test_discover_is_answered_with_sync_of_every_member() -> None:
    core = PgPeer(SCOPE, ME)
    core.set_members({A("shop"): [AGENT], A("pynode"): [AGENT2]})
    core.node_up(E1)
    for discover in [(A("discover"), PEER), (A("discover"), PEER, 1)]:
        out = core.received(discover)
        sync = Send(PEER, (A("$gen_cast"), (A("sync"), ME, [(A("shop"), [AGENT]), (A("pynode"), [AGENT2])])))
        assert out[0] == sync
    # The first discover from an unknown peer also monitors it and discovers it back, as pg does.
    fresh = PgPeer(SCOPE, ME)
    fresh.node_up(E1)
    assert fresh.received((A("discover"), PEER)) == [
        Send(PEER, (A("$gen_cast"), (A("sync"), ME, []))),
        Monitor(PEER),
        Send(PEER, (A("discover"), ME)),
    ]


def test_joins_and_leaves_go_to_every_peer_in_pg_shapes() -> None:
    core = connected_with_peer()
    assert core.set_members({A("shop"): [AGENT]}) == [Send(PEER, (A("join"), ME, A("shop"), [AGENT]))]
    assert core.set_members({A("shop"): [AGENT]}) == []  # nothing changed, nothing sent
    assert core.set_members({A("shop"): [AGENT2]}) == [
        Send(PEER, (A("leave"), ME, [AGENT], [A("shop")])),
        Send(PEER, (A("join"), ME, A("shop"), [AGENT2])),
    ]
    assert core.set_members({}) == [Send(PEER, (A("leave"), ME, [AGENT2], [A("shop")]))]


def test_anything_else_is_ignored_never_answered() -> None:
    core = connected_with_peer()
    ignored: list[Term] = [
        A("hello"),
        (A("join"), PEER, A("g"), [Pid(E1, 3, 0, 7)]),
        (A("leave"), PEER, [Pid(E1, 3, 0, 7)], [A("g")]),
        (A("discover"), A("not_a_pid")),
        (A("$gen_cast"), (A("sync"), A("x"), [])),
        (A("$gen_cast"), A("other")),
        (),
    ]
    for message in ignored:
        assert core.received(message) == []


def test_a_peer_that_goes_is_looked_for_again_while_its_node_is_connected() -> None:
    core = connected_with_peer()
    down = (A("DOWN"), Reference(PY, 1, (1, 2, 3)), A("process"), PEER, A("killed"))
    assert core.received(down) == []
    assert core.peers == set() and core.rediscover() == [Send((SCOPE, E1), (A("discover"), ME))]
    core.node_down(E1)
    assert core.rediscover() == []
    # A sync from a node that is not connected (a late message) makes no peer.
    assert core.received((A("$gen_cast"), (A("sync"), PEER, []))) == []
