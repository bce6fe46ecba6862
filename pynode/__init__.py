"""pynode: pydantic-ai agents as named processes in an Erlang cluster.

The Python API puts any asyncio program in a cluster as a hidden node::

    async with Node("py@127.0.0.1", cookie="secret") as node:
        node.spawn(MyServer(), name="my_server")        # a GenServer the BEAM can call
        reply = await node.call(("some_server", "app@127.0.0.1"), "ping")

Importing the package, the codec or the node loads no pydantic-ai: the names of the agent side
(:func:`cluster`, :class:`ClusterContext`) are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pynode._version import __version__
from pynode.errors import (
    CallExit,
    CallTimeout,
    CodecError,
    EpmdError,
    ErpcError,
    HandshakeError,
    NodeDown,
    PynodeError,
    RemoteProtocolError,
)
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, BitBinary, Export, ImproperList, MapKey, OpaqueFun, Pid, Port, Reference, Term
from pynode.net.tls import TlsTransport
from pynode.node import Node
from pynode.runtime.genserver import NOREPLY, From, GenServer
from pynode.runtime.mailbox import ReceiveTimeout
from pynode.runtime.process import Process, ProcessExit

if TYPE_CHECKING:
    from pynode.bridge.context import ClusterContext, cluster

_BRIDGE_NAMES = frozenset({"ClusterContext", "cluster"})


def __getattr__(name: str) -> Any:
    """The bridge's names, imported on first use: ``pynode.bridge`` brings pydantic-ai with it."""
    if name in _BRIDGE_NAMES:
        from pynode.bridge import context

        value = getattr(context, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pynode' has no attribute {name!r}")


__all__ = [
    "NOREPLY",
    "Atom",
    "BitBinary",
    "CallExit",
    "CallTimeout",
    "ClusterContext",
    "CodecError",
    "EpmdError",
    "ErpcError",
    "Export",
    "From",
    "GenServer",
    "HandshakeError",
    "ImproperList",
    "MapKey",
    "Node",
    "NodeDown",
    "OpaqueFun",
    "Pid",
    "Port",
    "Process",
    "ProcessExit",
    "PynodeError",
    "ReceiveTimeout",
    "Reference",
    "RemoteProtocolError",
    "Term",
    "TlsTransport",
    "__version__",
    "cluster",
    "format_term",
]
