"""What the ``beam`` fixture gives a test: a factory of BEAM nodes that also drives a default one.

``await beam("e1", kind="elixir")`` starts a node and returns its :class:`BeamNode`; the test
may start as many as it likes. ``await beam.call(...)``, ``beam.send``, ``beam.receive`` and
``beam.eval`` act on a default erl node, ``test@127.0.0.1``, started on first use, so a test
that needs one BEAM node never names it. Every node is stopped when the test ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from pynode.etf import Term
from pynode.testing.beam import BeamKind, BeamNode, Destination

__all__ = ["Beam", "BeamFactory"]

DEFAULT_NODE = "test"
"""The default node's short name: ``test@127.0.0.1``."""


class Beam:
    """Start BEAM nodes with the test's cookie and epmd (``await beam("e1")``), or use the default one."""

    def __init__(self, *, cookie: str, epmd_port: int, otp: str | None = None) -> None:
        self.cookie = cookie
        self.epmd_port = epmd_port
        self.otp = otp
        """The release nodes start on unless a start asks for another (``None``: the erl on PATH)."""
        self.nodes: list[BeamNode] = []
        """Every node started, in order; all are stopped by :meth:`stop_all`."""
        self._default: BeamNode | None = None
        self._default_lock = asyncio.Lock()

    async def __call__(
        self,
        name: str,
        *,
        kind: BeamKind = "erl",
        cookie: str | None = None,
        net_ticktime: int | None = None,
        hidden: bool = False,
        extra_args: Sequence[str] = (),
        otp: str | None = None,
    ) -> BeamNode:
        """Start ``name@127.0.0.1`` (see :meth:`BeamNode.start`); ``otp=None``: this factory's release."""
        node = await BeamNode.start(
            name,
            cookie=self.cookie if cookie is None else cookie,
            epmd_port=self.epmd_port,
            kind=kind,
            net_ticktime=net_ticktime,
            hidden=hidden,
            extra_args=extra_args,
            otp=self.otp if otp is None else otp,
        )
        self.nodes.append(node)
        return node

    async def node(self) -> BeamNode:
        """The default node, ``test@127.0.0.1`` (erl), started on first use."""
        async with self._default_lock:
            if self._default is None:
                self._default = await self(DEFAULT_NODE)
            return self._default

    @property
    def name(self) -> str:
        """The default node's name (whether it has started or not)."""
        return f"{DEFAULT_NODE}@127.0.0.1"

    async def eval(self, expr: str, timeout: float = 15) -> str:
        """:meth:`BeamNode.eval` on the default node."""
        return await (await self.node()).eval(expr, timeout)

    async def eval_term(self, expr: str, timeout: float = 15) -> bytes:
        """:meth:`BeamNode.eval_term` on the default node."""
        return await (await self.node()).eval_term(expr, timeout)

    async def call(self, dest: Destination, request: Term, timeout: float = 15) -> Term:
        """:meth:`BeamNode.call` from the default node's test process."""
        return await (await self.node()).call(dest, request, timeout)

    async def send(self, dest: Destination, message: Term) -> None:
        """:meth:`BeamNode.send` from the default node's test process."""
        await (await self.node()).send(dest, message)

    async def receive(self, timeout: float = 5, match: Callable[[Term], bool] | None = None) -> Term:
        """:meth:`BeamNode.receive` on the default node's test process."""
        return await (await self.node()).receive(timeout, match)

    async def stop_all(self, *, orderly: bool = False) -> None:
        """Stop every node started (halted, unless ``orderly``: see :meth:`BeamNode.stop`).

        The first failure to stop one is raised after all have been tried.
        """
        stops = (node.stop(orderly=orderly) for node in self.nodes)
        outcomes = await asyncio.gather(*stops, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


BeamFactory = Beam
"""The name tests annotate the ``beam`` fixture with: it is a :class:`Beam`."""
