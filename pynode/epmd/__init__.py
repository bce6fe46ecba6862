"""EPMD, the port mapper: wire messages (pure), an asyncio client, and a launcher.

A node registers its short name and distribution port here and stays
registered as long as the returned :class:`Registration` is open; peers look
the port up with :func:`port_please` before they dial.
"""

from pynode.epmd.client import Registration, epmd_port_from_env, names, port_please, register
from pynode.epmd.launcher import ensure_epmd, find_epmd_executable
from pynode.epmd.messages import DEFAULT_EPMD_PORT, NodeAddress, NodeType

__all__ = [
    "DEFAULT_EPMD_PORT",
    "NodeAddress",
    "NodeType",
    "Registration",
    "ensure_epmd",
    "epmd_port_from_env",
    "find_epmd_executable",
    "names",
    "port_please",
    "register",
]
