"""The cluster as seen from inside a run: Python tools reach back to the BEAM through it.

A Python-defined agent's tool calls :func:`cluster` to get the node, the run's
caller and helpers to send, call and erpc. It is a context variable set by
the run's process, so concurrent runs each see their own caller.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pynode.etf.types import Atom, Pid, Reference, Term

if TYPE_CHECKING:
    from pynode.runtime.kernel import Dest, Kernel
    from pynode.runtime.process import Process

__all__ = ["ClusterContext", "cluster"]


@dataclass(frozen=True, slots=True)
class ClusterContext:
    """Who asked for this run, and a way back to them."""

    node: Kernel[Process]
    """The pynode node running the agent."""
    caller: Pid
    """The BEAM process that started the run."""
    run_ref: Reference
    """The run's ``RunRef``."""
    agent: str
    """The agent's registered name."""

    @property
    def caller_node(self) -> str:
        return str(self.caller.node)

    def send(self, dest: Dest, message: Term) -> None:
        """``Dest ! Message``."""
        self.node.send(dest, message)

    async def call(self, dest: Dest, request: Term, timeout: float | None = 5.0) -> Term:
        """``gen_server:call(Dest, Request, Timeout)``; a bare name means that name on the caller's node."""
        if isinstance(dest, str) and not isinstance(dest, Atom | Pid):
            dest = (Atom(dest), Atom(self.caller_node))
        elif isinstance(dest, Atom):
            dest = (dest, Atom(self.caller_node))
        return await self.node.call(dest, request, timeout=timeout)

    async def erpc(
        self, module: str, function: str, args: list[Term], *, node: str | None = None, timeout: float | None = 15.0
    ) -> Term:
        """``erpc:call(Node, M, F, Args)``, on the caller's node unless ``node`` is given."""
        return await self.node.erpc(node or self.caller_node, module, function, args, timeout=timeout)


current_cluster: ContextVar[ClusterContext | None] = ContextVar("pynode_cluster", default=None)


def cluster() -> ClusterContext:
    """The cluster context of the run this code is part of (raises outside a run)."""
    context = current_cluster.get()
    if context is None:
        raise RuntimeError("pynode.cluster() is only available inside an agent run on a pynode node")
    return context
