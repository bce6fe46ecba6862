"""Accept-side limits against real sockets: set-up time and connections at once (issue 9).

A peer that opens a socket and sends half a handshake, or nothing, loses it after
``net_setuptime``; past ``max_connections`` a new socket is closed at once. Real erl nodes
connect and call through it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from beam import BeamFactory
from command_support import ready_command
from test_node_beam import E1, eventually

from pynode import epmd
from pynode.bridge.registry import start_registry
from pynode.cli import build_parser, limits_from
from pynode.limits import Limits
from pynode.node import Node

pytestmark = pytest.mark.beam

PY = "'py@127.0.0.1'"
CLOSED_WITHIN = 30.0
"""Generous: a closed socket is seen long before this on any machine; an open one never."""

NodeFactory = Callable[[Limits], Awaitable[Node]]


@pytest.fixture
async def limited_node(epmd_port: int, cookie: str) -> AsyncIterator[NodeFactory]:
    """``py@127.0.0.1`` with the limits a test picks, and its registry ``pynode``."""
    started: list[Node] = []

    async def start(limits: Limits) -> Node:
        node = Node("py@127.0.0.1", cookie, epmd_port=epmd_port, limits=limits)
        await node.start()
        await start_registry(node, agents_dir=None)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            await node.stop()


async def open_socket(node: Node, first_bytes: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    if first_bytes:
        writer.write(first_bytes)
        await writer.drain()
    return reader, writer


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """Read until the node closes the socket (EOF or reset); False if it is still open after the wait."""
    try:
        async with asyncio.timeout(CLOSED_WITHIN):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def half_a_name_packet() -> bytes:
    """The 2-byte length of a 20-byte ``N`` packet, then only its first 5 bytes."""
    return struct.pack(">H", 20) + b"N" + b"\x00\x00\x00\x00"


async def test_stalled_handshakes_are_closed_after_net_setuptime_while_erl_connects_and_calls(
    limited_node: NodeFactory, beam: BeamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pynode")
    node = await limited_node(Limits(net_setuptime=1.0))
    erl = await beam("e1")
    half = [await open_socket(node, half_a_name_packet()) for _ in range(5)]
    idle = [await open_socket(node) for _ in range(40)]
    await eventually(lambda: node.net.open_connections == 45, what="the node holds every socket")

    # A real node still gets in and is served while the stalled sockets wait for their end.
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    assert await erl.eval(f"gen_server:call({{pynode, {PY}}}, ping)") == "pong"

    for reader, _ in half + idle:
        assert await closed_by_peer(reader), "a stalled socket outlived net_setuptime"
    for _, writer in half + idle:
        writer.close()
    await eventually(lambda: node.net.open_connections == 1, what="only erl's connection left")
    given_up = [r for r in caplog.records if "net_setuptime" in r.getMessage()]
    assert len(given_up) == 45  # one line per socket given up
    # The erl node's connection was not one of them, and carries on.
    assert E1 in node.connections and not node.connections[E1].closed
    assert await erl.eval(f"gen_server:call({{pynode, {PY}}}, ping)") == "pong"


async def test_past_max_connections_a_new_socket_is_refused_while_existing_ones_carry_on(
    limited_node: NodeFactory, beam: BeamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pynode")
    node = await limited_node(Limits(max_connections=4, net_setuptime=120.0))
    erl = await beam("e1")
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    held = [await open_socket(node) for _ in range(3)]
    await eventually(lambda: node.net.open_connections == 4, what="4 connections open")

    over_reader, over_writer = await open_socket(node)
    assert await closed_by_peer(over_reader), "a socket over max_connections was kept"
    over_writer.close()
    refusals = [r for r in caplog.records if "max_connections" in r.getMessage()]
    assert len(refusals) == 1
    # A second BEAM node is refused as well; the first one is still served.
    e2 = await beam("e2")
    assert await e2.eval(f"net_adm:ping({PY})") == "pang"
    assert await erl.eval(f"gen_server:call({{pynode, {PY}}}, ping)") == "pong"
    assert node.net.open_connections == 4
    for reader, _ in held:
        assert not reader.at_eof()

    # Room again once held sockets go: e2 gets in.
    for _, writer in held[:2]:
        writer.close()
    await eventually(lambda: node.net.open_connections == 2, what="two held sockets gone")
    assert await e2.eval(f"net_adm:ping({PY})") == "pong"
    assert await e2.eval(f"gen_server:call({{pynode, {PY}}}, ping)") == "pong"
    for _, writer in held[2:]:
        writer.close()


def test_the_command_line_sets_the_limits_and_refuses_nonsense() -> None:
    args = build_parser().parse_args(["--name", "py@127.0.0.1", "--net-setuptime", "0.5", "--max-connections", "3"])
    assert limits_from(args) == Limits(net_setuptime=0.5, max_connections=3)
    defaults = limits_from(build_parser().parse_args(["--name", "py@127.0.0.1"]))
    assert defaults == Limits() and defaults.net_setuptime == 7.0
    for bad in (["--net-setuptime", "0"], ["--max-connections", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--name", "py@127.0.0.1", *bad])


async def test_the_pynode_command_closes_a_stalled_handshake_after_its_net_setuptime(
    epmd_port: int, cookie: str, tmp_path: Path
) -> None:
    async with ready_command(cookie, epmd_port, "--agents", str(tmp_path), "--net-setuptime", "0.5") as (_, line):
        ready = re.search(rb"ready \(port (\d+),", line)
        assert ready, line
        reader, writer = await asyncio.open_connection("127.0.0.1", int(ready.group(1)))
        writer.write(half_a_name_packet())
        await writer.drain()
        assert await closed_by_peer(reader), "the stalled socket outlived --net-setuptime 0.5"
        writer.close()


async def test_a_dialled_peer_that_never_answers_the_handshake_is_given_up_after_net_setuptime(
    limited_node: NodeFactory, epmd_port: int
) -> None:
    node = await limited_node(Limits(net_setuptime=0.5))
    heard: asyncio.Queue[bytes] = asyncio.Queue()

    async def silent_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(4096):
                received += chunk
        heard.put_nowait(received)  # the dialler closed the socket
        writer.close()

    server = await asyncio.start_server(silent_peer, "127.0.0.1", 0)
    registration = await epmd.register("mute", server.sockets[0].getsockname()[1], epmd_port=epmd_port)
    try:
        with pytest.raises(OSError):  # the set-up timeout (TimeoutError is an OSError)
            await node.connect("mute@127.0.0.1")
        async with asyncio.timeout(CLOSED_WITHIN):
            received = await heard.get()
        assert received[2:3] == b"N"  # our name packet went out; then we gave up and closed
        assert "mute@127.0.0.1" not in node.connections and node.net.open_connections == 0
    finally:
        await registration.close()
        server.close()
        await server.wait_closed()
