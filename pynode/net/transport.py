"""How a distribution connection reaches the network: the transport factory.

OTP's ``dist_util`` runs one handshake over whatever send/recv functions its
carrier module (``inet_tcp_dist``, ``inet_tls_dist``) hands it. Here a
:class:`DistTransport` plays that carrier: it listens and dials, and says how
long the handshake's length prefix is. The connection manager takes one and
never names TCP or TLS itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeAlias

__all__ = ["AcceptFactory", "DistTransport", "TcpTransport", "peer_address"]

AcceptFactory: TypeAlias = Callable[[float], asyncio.Protocol]
"""Makes the protocol of an accepted socket, given the loop time the socket arrived."""


class DistTransport(Protocol):
    """A carrier for distribution connections (plain TCP, TLS...)."""

    name: str
    """``"inet_tcp"`` / ``"inet_tls"``, as ``erl -proto_dist`` names it."""
    handshake_length_size: int
    """Bytes of each handshake packet's length prefix: 2 over TCP, 4 over TLS."""

    async def listen(self, protocol_factory: AcceptFactory, host: str, port: int) -> asyncio.Server:
        """Accept on host:port; each socket's protocol is made with the loop time it arrived."""
        ...

    async def dial(
        self, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int, *, peer_node: str
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]: ...

    async def aclose(self) -> None:
        """End what the transport still runs on its own (TLS handshakes of accepted sockets)."""
        ...


class TcpTransport:
    """Plain TCP, as ``inet_tcp_dist``: nothing between the handshake and the socket."""

    name = "inet_tcp"
    handshake_length_size = 2

    async def listen(self, protocol_factory: AcceptFactory, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: protocol_factory(loop.time()), host, port, reuse_address=True)

    async def dial(
        self, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int, *, peer_node: str
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        return await loop.create_connection(protocol_factory, host, port)

    async def aclose(self) -> None:
        """Nothing runs here once a socket is handed to its protocol."""


def peer_address(transport: asyncio.BaseTransport | None) -> str:
    """``host:port`` of the socket's far end, for log lines about sockets with no node name yet."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "an unknown peer"
