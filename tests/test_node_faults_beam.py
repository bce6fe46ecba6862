"""Faults against real OTP nodes: a BEAM node killed outright, and a BEAM node that stops answering.

Node loss must look to Python processes as it looks to Erlang ones: monitors fire with
``noconnection``, links exit with ``noconnection``, calls in flight end with it.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from beam import BeamFactory
from test_node_beam import E1, beam_term, evals_to, eventually, idle_process, term_expr

from pynode.errors import CallExit
from pynode.etf import Atom
from pynode.node import Node

pytestmark = pytest.mark.beam

NOCONNECTION = Atom("noconnection")
WAIT_FOREVER = "spawn(fun() -> receive after infinity -> ok end end)"


async def test_beam_killed_fires_monitors_links_and_calls_with_noconnection(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    await py_node.connect(E1)
    watched, linked, linked_too = [await beam_term(erl, WAIT_FOREVER) for _ in range(3)]
    await erl.eval(f"register(named_one, {WAIT_FOREVER}), register(sink, {WAIT_FOREVER})")

    watcher = idle_process(py_node)
    by_pid = watcher.monitor(watched)
    by_name = watcher.monitor(("named_one", E1))
    trapper = idle_process(py_node, trap_exit=True)
    trapper.link(linked)
    victim = idle_process(py_node)
    victim.link(linked_too)
    in_flight = asyncio.create_task(py_node.call(("sink", E1), Atom("never_answered"), timeout=30))

    await eventually(
        lambda: evals_to(
            erl.eval(
                f"{{links, L1}} = process_info({term_expr(linked)}, links), "
                f"{{links, L2}} = process_info({term_expr(linked_too)}, links), "
                f"{{monitored_by, M}} = process_info({term_expr(watched)}, monitored_by), "
                f"{{monitored_by, N}} = process_info(whereis(sink), monitored_by), "
                "{length(L1), length(L2), length(M), length(N)}"
            ),
            "{1,1,1,1}",
        ),
        what="links and monitors set up on the BEAM",
    )
    erl.kill()
    await erl.wait()

    downs = {await watcher.receive(timeout=5), await watcher.receive(timeout=5)}
    assert downs == {
        (Atom("DOWN"), by_pid, Atom("process"), watched, NOCONNECTION),
        (Atom("DOWN"), by_name, Atom("process"), (Atom("named_one"), Atom(E1)), NOCONNECTION),
    }
    assert await trapper.receive(timeout=5) == (Atom("EXIT"), linked, NOCONNECTION)
    assert await victim.join(5) == NOCONNECTION
    with pytest.raises(CallExit) as call_exit:
        await asyncio.wait_for(in_flight, 5)
    assert call_exit.value.reason == NOCONNECTION
    assert E1 not in py_node.connections
    assert not watcher.monitors and not trapper.links

    # The same name comes back as a new incarnation: it connects, and the old pids are dead there.
    again = await beam("e1")
    assert await again.eval("net_adm:ping('py@127.0.0.1')") == "pong"
    stale = watcher.monitor(watched)
    assert await watcher.receive(timeout=5) == (Atom("DOWN"), stale, Atom("process"), watched, Atom("noproc"))


async def test_idle_connection_survives_ticks_and_a_frozen_peer_is_dropped(
    epmd_port: int, cookie: str, beam: BeamFactory
) -> None:
    ticktime = 4
    node = Node("pyt@127.0.0.1", cookie, epmd_port=epmd_port, net_ticktime=ticktime)
    await node.start()
    try:
        erl = await beam("e1", net_ticktime=ticktime)
        conn = await node.connect(E1)
        await asyncio.sleep(3 * ticktime)  # idle: only ticks cross the connection
        assert node.connections.get(E1) is conn
        assert await erl.eval("lists:member('pyt@127.0.0.1', nodes(hidden))") == "true"
        watcher = idle_process(node)
        ref = watcher.monitor(("init", E1))

        os.kill(erl.os_pid, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        frozen_at = loop.time()
        try:
            await eventually(lambda: E1 not in node.connections, within=ticktime + 3, what="dropped")
            assert loop.time() - frozen_at <= ticktime + 3
            assert await watcher.receive(timeout=1) == (
                Atom("DOWN"),
                ref,
                Atom("process"),
                (Atom("init"), Atom(E1)),
                NOCONNECTION,
            )
        finally:
            erl.kill()  # SIGKILL ends a stopped process too
            await erl.wait()
    finally:
        await node.stop()


async def test_disconnect_by_the_beam_then_reconnect(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    first = await py_node.connect(E1)
    remote = await beam_term(erl, WAIT_FOREVER)
    watcher = idle_process(py_node)
    ref = watcher.monitor(remote)
    trapper = idle_process(py_node, trap_exit=True)
    trapper.link(remote)
    await eventually(
        lambda: evals_to(
            erl.eval(f"{{{{links, L}}, {{monitored_by, M}}}} = {{process_info({term_expr(remote)}, links), "
                     f"process_info({term_expr(remote)}, monitored_by)}}, {{length(L), length(M)}}"),
            "{1,1}",
        ),
        what="link and monitor on the BEAM",
    )  # fmt: skip
    assert await erl.eval("erlang:disconnect_node('py@127.0.0.1')") == "true"
    assert await watcher.receive(timeout=5) == (Atom("DOWN"), ref, Atom("process"), remote, NOCONNECTION)
    assert await trapper.receive(timeout=5) == (Atom("EXIT"), remote, NOCONNECTION)
    await eventually(lambda: E1 not in py_node.connections, what="connection gone")
    # The next message reconnects, and everything works on the new connection.
    assert await py_node.call(("net_kernel", E1), (Atom("is_auth"), py_node.name)) == Atom("yes")
    second = py_node.connections[E1]
    assert second is not first and first.closed
    assert await erl.eval("gen_server:call({pynode, 'py@127.0.0.1'}, ping)") == "pong"


async def test_both_sides_dialling_at_once_end_with_one_working_connection(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    for attempt in range(5):  # the race goes differently from run to run: try it a few times
        dialled, pinged = await asyncio.gather(
            asyncio.wait_for(py_node.connect(E1), 15), erl.eval("net_adm:ping('py@127.0.0.1')")
        )
        assert pinged == "pong", attempt
        assert py_node.connections[E1] is dialled and not dialled.closed, attempt
        assert await py_node.call(("net_kernel", E1), (Atom("is_auth"), py_node.name)) == Atom("yes")
        assert await erl.eval("gen_server:call({pynode, 'py@127.0.0.1'}, ping)") == "pong"
        assert await erl.eval("length([N || N <- nodes(hidden), N =:= 'py@127.0.0.1'])") == "1"
        assert await erl.eval("erlang:disconnect_node('py@127.0.0.1')") == "true"
        await eventually(lambda: E1 not in py_node.connections, what="disconnected")
