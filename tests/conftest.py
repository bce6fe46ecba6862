"""Fixtures shared by the tests: a private epmd per test, a cookie, and a factory of BEAM nodes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
from beam import BeamFactory, BeamKind, BeamNode, Epmd, running_epmd

from pynode.bridge.registry import start_registry
from pynode.node import Node


@pytest.fixture
def epmd() -> Iterator[Epmd]:
    """A private epmd (`epmd -port N`, a child of the test run), ended by its pid after the test."""
    with running_epmd() as server:
        yield server


@pytest.fixture
def epmd_port(epmd: Epmd, monkeypatch: pytest.MonkeyPatch) -> int:
    """The private epmd's port, also in $ERL_EPMD_PORT for the test's duration."""
    monkeypatch.setenv("ERL_EPMD_PORT", str(epmd.port))
    return epmd.port


@pytest.fixture
def cookie() -> str:
    """A fresh random cookie for the test."""
    return "pynode_" + secrets.token_hex(12)


@pytest.fixture
async def beam(epmd_port: int, cookie: str) -> AsyncIterator[BeamFactory]:
    """Start BEAM nodes with the test's cookie and epmd; every one is stopped at teardown."""
    nodes: list[BeamNode] = []

    async def start(
        name: str,
        *,
        kind: BeamKind = "erl",
        cookie: str | None = None,
        net_ticktime: int | None = None,
        hidden: bool = False,
        extra_args: Sequence[str] = (),
    ) -> BeamNode:
        node = await BeamNode.start(
            name,
            cookie=test_cookie if cookie is None else cookie,
            epmd_port=epmd_port,
            kind=kind,
            net_ticktime=net_ticktime,
            hidden=hidden,
            extra_args=extra_args,
        )
        nodes.append(node)
        return node

    test_cookie = cookie
    try:
        yield start
    finally:
        outcomes = await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


@pytest.fixture
async def py_node(epmd_port: int, cookie: str) -> AsyncIterator[Node]:
    """A pynode node ``py@127.0.0.1`` in this test's event loop, with its registry ``pynode``."""
    node = Node("py@127.0.0.1", cookie, epmd_port=epmd_port)
    await node.start()
    await start_registry(node, agents_dir=None)
    try:
        yield node
    finally:
        await node.stop()


@pytest.fixture
async def erl(py_node: Node, beam: BeamFactory) -> AsyncIterator[BeamNode]:
    """An erl node ``e1@127.0.0.1`` already connected to ``py_node``."""
    node = await beam("e1")
    assert await node.eval("net_adm:ping('py@127.0.0.1')") == "pong"
    yield node
