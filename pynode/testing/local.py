"""A pynode node inside the test's own event loop, with the registry and the user's Python agents.

It runs in the test process rather than as a ``pynode`` subprocess, so a test can reach what it
serves: the pydantic-ai ``Agent`` objects loaded from the agents folder (to give one a
``TestModel``, or to look at its tools), the registry, and the node's Python API. BEAM nodes
reach it as they would reach ``pynode --name ...``: it is registered with the test's epmd and
answers ``{pynode, Node}`` and ``{AgentName, Node}``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_ai import Agent

from pynode import Node
from pynode.bridge.registry import Registry, start_registry
from pynode.etf import Atom
from pynode.net.transport import DistTransport

__all__ = ["AgentsNotLoaded", "PynodeNode", "running_pynode"]

_LOADING_LOGGERS = ("pynode.bridge.loader", "pynode.registry")
"""Where a file that gives no agent, or an agent whose name is taken, is reported."""


class AgentsNotLoaded(Exception):
    """Files of the agents folder gave no agent: a test would only meet ``noproc`` for them."""


@dataclass(frozen=True, slots=True)
class PynodeNode:
    """A running pynode node: its :class:`~pynode.Node`, its registry, and the agents it loaded."""

    node: Node
    registry: Registry
    agents_dir: Path | None
    """The folder its Python agents came from (``None``: no Python agents)."""

    @property
    def name(self) -> str:
        """The node's name, e.g. ``pynode@127.0.0.1``."""
        return self.node.name

    def address(self, process: str) -> tuple[Atom, Atom]:
        """``{Process, Node}``, how a BEAM caller names one of its processes (``"pynode"``, an agent)."""
        return (Atom(process), Atom(self.node.name))

    def agent(self, name: str) -> Agent[Any, Any]:
        """The pydantic-ai ``Agent`` the node serves as ``name`` (a ``KeyError`` if there is none)."""
        return self.registry.agents[name].definition.agent


@contextlib.asynccontextmanager
async def running_pynode(
    name: str,
    *,
    cookie: str,
    epmd_port: int,
    agents_dir: Path | None,
    transport: DistTransport | None = None,
) -> AsyncIterator[PynodeNode]:
    """Start a node, its registry and the agents of ``agents_dir``; stop them when the block ends.

    ``transport``: how the node's connections are carried (``None``: plain TCP).

    Raises :class:`AgentsNotLoaded` (after stopping the node) if a file of ``agents_dir`` gave no
    agent, with the loader's reasons.
    """
    node = Node(name, cookie, epmd_port=epmd_port, transport=transport)
    await node.start()
    try:
        with _loading_errors() as errors:
            registry = await start_registry(node, agents_dir=agents_dir)
        if errors:
            raise AgentsNotLoaded(f"agents from {agents_dir}:\n" + "\n".join(errors))
        try:
            yield PynodeNode(node=node, registry=registry, agents_dir=agents_dir)
        finally:
            await registry.shutdown()
    finally:
        await node.stop()


@contextlib.contextmanager
def _loading_errors() -> Iterator[list[str]]:
    """Collect what the loader and the registry report as errors while the agents load."""
    errors: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage())

    handler = _Collect(level=logging.ERROR)
    loggers = [logging.getLogger(name) for name in _LOADING_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield errors
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
