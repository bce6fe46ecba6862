"""Two pynode nodes against each other (and a private epmd): races no BEAM test can time."""

from __future__ import annotations

import asyncio

import pytest

from pynode.etf import Atom, Pid
from pynode.node import Node
from pynode.runtime.process import Process

pytestmark = pytest.mark.beam  # needs epmd


async def test_both_nodes_dialling_at_once_both_get_the_one_connection(epmd_port: int, cookie: str) -> None:
    for attempt in range(5):  # the race can go either way: run it a few times
        async with (
            Node("a@127.0.0.1", cookie, epmd_port=epmd_port) as a,
            Node("b@127.0.0.1", cookie, epmd_port=epmd_port) as b,
        ):
            a_to_b, b_to_a = await asyncio.wait_for(
                asyncio.gather(a.connect("b@127.0.0.1"), b.connect("a@127.0.0.1")), 15
            )
            assert a.connections["b@127.0.0.1"] is a_to_b and not a_to_b.closed, attempt
            assert b.connections["a@127.0.0.1"] is b_to_a and not b_to_a.closed, attempt
            inbox = b.spawn(Process(), name="inbox")
            a.send(("inbox", "b@127.0.0.1"), Atom("hello"))
            assert await inbox.receive(timeout=5) == Atom("hello")


async def test_links_and_monitors_to_an_unreachable_node_fire_noconnection(epmd_port: int, cookie: str) -> None:
    async with Node("a@127.0.0.1", cookie, epmd_port=epmd_port) as a:
        ghost = Pid(Atom("ghost@127.0.0.1"), 1, 0, 1)
        trapper = Process()
        trapper.trap_exit = True
        a.spawn(trapper)
        a.send(ghost, Atom("lost"), sender=trapper.pid)
        ref = trapper.monitor(ghost)
        trapper.link(ghost)
        assert await trapper.receive(timeout=10) == (Atom("DOWN"), ref, Atom("process"), ghost, Atom("noconnection"))
        assert await trapper.receive(timeout=5) == (Atom("EXIT"), ghost, Atom("noconnection"))
        assert not trapper.links and not trapper.monitors


async def test_signals_undone_before_the_connection_is_up_never_reach_the_peer(epmd_port: int, cookie: str) -> None:
    async with (
        Node("a@127.0.0.1", cookie, epmd_port=epmd_port) as a,
        Node("b@127.0.0.1", cookie, epmd_port=epmd_port) as b,
    ):
        target = b.spawn(Process())
        assert target.pid is not None
        watcher = a.spawn(Process())
        ref = watcher.monitor(target.pid)
        watcher.link(target.pid)
        watcher.demonitor(ref)
        watcher.unlink(target.pid)
        watcher.send(target.pid, Atom("after"))
        assert await target.receive(timeout=10) == Atom("after")
        assert not target.monitored_by and not target.links
        assert not a.connections["b@127.0.0.1"].signals.monitors_out and not a.connections["b@127.0.0.1"].signals.links
