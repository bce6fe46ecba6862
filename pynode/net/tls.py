"""TLS distribution, as OTP's ``inet_tls_dist``: TLS from the connection's first byte.

The distribution handshake runs unchanged inside TLS, with 4-byte packet lengths
(``handshake_length_size``); EPMD is not this module's business and stays plain.

What is checked, as ``inet_tls_dist`` does with ``verify_peer`` (the default):

- both sides present a certificate and verify the peer's against the CA file
  (the acceptor refuses a peer without one, as ``fail_if_no_peer_cert``);
- the dialling side checks the certificate against the host part of the node
  name it dialled, as OTP's ``ssl`` does with the ``server_name_indication``
  that ``inet_tls_dist`` sets: a ``dNSName`` entry that equals it (or a
  ``*.`` wildcard for its first label), an ``iPAddress`` entry when the host is
  an IP literal, or the subject's commonName when the certificate has no
  subjectAltName at all. OTP 25 compares an IP literal such as ``127.0.0.1``
  with ``dNSName`` entries only; accepting an ``iPAddress`` entry as well lets
  one certificate serve both;
- the accepting side checks no name, as OTP does unless told to.

``verify="none"`` turns every check off (``--tls-verify none``); the link is
then encrypted but the peer is not authenticated.

Each connection is upgraded with ``loop.start_tls`` before the distribution
protocol sees it, so a refused TLS handshake is logged once here and the
distribution protocol never starts; bytes that arrive between the end of the
TLS handshake and the hand-over are kept and replayed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeAlias, cast

from pynode.errors import HandshakeError, PynodeError
from pynode.net.transport import AcceptFactory, peer_address

__all__ = ["TlsConfigError", "TlsTransport", "TlsVerify", "certificate_matches_host"]

log = logging.getLogger("pynode.net.tls")

TlsVerify: TypeAlias = Literal["peer", "none"]

DEFAULT_HANDSHAKE_TIMEOUT = 7.0
"""Seconds a TLS handshake may take, in and out (OTP's default ``net_setuptime``)."""

DEFAULT_MAX_HANDSHAKES = 1024
"""TLS handshakes of accepted sockets at once (the node's ``max_connections`` counts only from the
distribution handshake on, which starts after TLS); more sockets are closed at once."""


class TlsConfigError(PynodeError):
    """The TLS configuration cannot work (a missing file, a key that does not fit); ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class TlsTransport:
    """Distribution connections over TLS 1.2 or later, both ways, with certificates from PEM files."""

    name = "inet_tls"
    handshake_length_size = 4

    def __init__(
        self,
        *,
        certfile: str | Path,
        keyfile: str | Path | None = None,
        cacertfile: str | Path | None = None,
        verify: TlsVerify = "peer",
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
    ) -> None:
        if verify not in ("peer", "none"):
            raise TlsConfigError("verify", f"TLS verify must be peer or none, not {verify!r}")
        cert = _readable("certfile", certfile)
        key = _readable("keyfile", keyfile) if keyfile is not None else None
        ca = _readable("cacertfile", cacertfile) if cacertfile is not None else None
        if verify == "peer" and ca is None:
            raise TlsConfigError(
                "cacertfile", "TLS peer verification needs the CA certificate file that signed the peers"
            )
        self.verify: TlsVerify = verify
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self.server_context = _context(ssl.Purpose.CLIENT_AUTH, cert, key, ca, verify)
        self.client_context = _context(ssl.Purpose.SERVER_AUTH, cert, key, ca, verify)
        self._accepting: set[asyncio.Task[None]] = set()

    async def listen(self, protocol_factory: AcceptFactory, host: str, port: int) -> asyncio.Server:
        """Accept TCP connections on host:port; each becomes ``protocol_factory``'s once TLS is up,
        with the time the TCP connection arrived (the set-up time covers the TLS handshake too)."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Accepting(self, protocol_factory), host, port, reuse_address=True)

    async def dial(
        self, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int, *, peer_node: str
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        """Connect to ``peer_node`` at host:port, do the TLS handshake, then hand over to the protocol.

        Raises :class:`HandshakeError` (step ``tls_connect``) when TLS fails or the peer's
        certificate does not fit; that failure is logged here, once.
        """
        loop = asyncio.get_running_loop()
        raw, waiting = await loop.create_connection(_Handover, host, port)
        where = f"{peer_node} ({host}:{port})"
        try:
            secure = await loop.start_tls(
                raw,
                waiting,
                self.client_context,
                server_hostname=_node_host(peer_node),
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except asyncio.CancelledError:  # the node's set-up time ran out first, or the node stops
            raw.close()
            log.warning("TLS handshake with %s failed: tls_connect: given up (set-up time over or stopping)", where)
            raise
        except OSError as exc:  # ssl.SSLError and TimeoutError are OSErrors
            raw.close()
            error = HandshakeError("tls_connect", _describe(exc))
            log.warning("TLS handshake with %s failed: %s", where, error)
            raise error from None
        if secure is None:  # the peer closed before TLS was up
            raw.close()
            error = HandshakeError("tls_connect", "connection closed by the peer")
            log.warning("TLS handshake with %s failed: %s", where, error)
            raise error
        host_name = _node_host(peer_node)
        if self.verify == "peer":
            cert = secure.get_extra_info("peercert")
            if not isinstance(cert, dict) or not certificate_matches_host(cert, host_name):
                secure.close()
                error = HandshakeError("tls_connect", f"the certificate is not for {host_name} ({_names_in(cert)})")
                log.warning("TLS handshake with %s failed: %s", where, error)
                raise error
        protocol = protocol_factory()
        waiting.hand_over(secure, protocol)
        return secure, protocol

    async def aclose(self) -> None:
        """Cancel the TLS handshakes of incoming connections still in flight, and wait for them."""
        tasks = list(self._accepting)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- accepting ------------------------------------------------------------------------

    def _accept(self, raw: asyncio.Transport, waiting: _Accepting, factory: AcceptFactory) -> None:
        if len(self._accepting) >= self.max_handshakes:
            log.warning(
                "refused a connection from %s: %d TLS handshakes in flight (max %d)",
                peer_address(raw),
                len(self._accepting),
                self.max_handshakes,
            )
            raw.abort()
            return
        task = asyncio.get_running_loop().create_task(self._upgrade_accepted(raw, waiting, factory))
        self._accepting.add(task)
        task.add_done_callback(self._accepting.discard)

    async def _upgrade_accepted(self, raw: asyncio.Transport, waiting: _Accepting, factory: AcceptFactory) -> None:
        peer = peer_address(raw)
        try:
            secure = await asyncio.get_running_loop().start_tls(
                raw,
                waiting,
                self.server_context,
                server_side=True,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except asyncio.CancelledError:
            raw.close()
            raise
        except OSError as exc:
            raw.close()
            log.warning("TLS handshake with %s failed: tls_accept: %s", peer, _describe(exc))
            return
        if secure is None:
            raw.close()
            log.warning("TLS handshake with %s failed: tls_accept: connection closed by the peer", peer)
            return
        try:
            waiting.hand_over(secure, factory(waiting.arrived))
        except Exception:  # a bug in the protocol: this connection goes, the listener stays
            log.exception("TLS connection from %s: the distribution protocol failed to start", peer)
            secure.abort()


class _Handover(asyncio.Protocol):
    """Stands in for the distribution protocol until TLS is up, keeping what arrives meanwhile."""

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._eof = False
        self._lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self._data.append(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = (exc,)

    def hand_over(self, transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
        """Make ``protocol`` the owner of ``transport`` and replay what came in the meantime."""
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for chunk in self._data:
            protocol.data_received(chunk)
        self._data.clear()
        if self._eof and not protocol.eof_received():
            transport.close()
        if self._lost is not None:
            protocol.connection_lost(self._lost[0])


class _Accepting(_Handover):
    """The protocol of a freshly accepted TCP connection: reading stops until the TLS handshake starts."""

    def __init__(self, tls: TlsTransport, factory: AcceptFactory) -> None:
        super().__init__()
        self._tls = tls
        self._factory = factory
        self.arrived = asyncio.get_running_loop().time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)  # uvloop's transports have the methods, not the class
        raw.pause_reading()  # the ClientHello must reach start_tls, not this protocol
        self._tls._accept(raw, self, self._factory)


# -- certificates and names --------------------------------------------------------------------


def certificate_matches_host(cert: dict[str, Any], host: str) -> bool:
    """Whether a verified peer certificate (``SSLSocket.getpeercert()``) names ``host``."""
    host = host.rstrip(".").lower()
    alt_names = cert.get("subjectAltName", ())
    dns = [value for kind, value in alt_names if kind == "DNS"]
    if any(_dns_matches(pattern, host) for pattern in dns):
        return True
    ip = _ip(host)
    if ip is not None and any(kind == "IP Address" and _ip(value) == ip for kind, value in alt_names):
        return True
    if alt_names:
        return False
    return any(_dns_matches(value, host) for value in _common_names(cert))


def _dns_matches(pattern: str, host: str) -> bool:
    pattern = pattern.rstrip(".").lower()
    if pattern == host:
        return True
    first, dot, rest = pattern.partition(".")
    if first != "*" or not dot or "." not in rest:  # a wildcard covers one label of a name of three or more
        return False
    label, _, host_rest = host.partition(".")
    return bool(label) and host_rest == rest and _ip(host) is None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _common_names(cert: dict[str, Any]) -> list[str]:
    return [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]


def _names_in(cert: object) -> str:
    if not isinstance(cert, dict):
        return "no verified certificate"
    names = [f"{kind}:{value}" for kind, value in cert.get("subjectAltName", ())]
    names = names or [f"CN={cn}" for cn in _common_names(cert)]
    return "it names " + (", ".join(names) if names else "nothing")


def _node_host(node: str) -> str:
    return node.rpartition("@")[2]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | ConnectionAbortedError):  # asyncio aborts a handshake that is late
        return "no TLS handshake within the setup time (is the peer speaking plain TCP?)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate refused: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        if reason in _NOT_TLS:
            return f"not TLS ({reason}): the peer speaks plain TCP?"
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "certificate refused: the peer presented none"
        if "ALERT" in reason:
            return f"the peer refused the TLS handshake ({reason}): does it trust our certificate?"
        return reason
    if isinstance(exc, ConnectionError):
        return "the peer closed the connection in the TLS handshake (does it trust our certificate?)"
    return str(exc) or type(exc).__name__


_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"})


# -- contexts -----------------------------------------------------------------------------------


def _readable(option: str, path: str | Path) -> Path:
    file = Path(path)
    try:
        with file.open("rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise TlsConfigError(option, f"TLS {option} {file}: no such file") from None
    except IsADirectoryError:
        raise TlsConfigError(option, f"TLS {option} {file}: is a directory") from None
    except OSError as exc:
        raise TlsConfigError(option, f"TLS {option} {file}: cannot read it ({exc.strerror})") from None
    return file


def _context(purpose: ssl.Purpose, cert: Path, key: Path | None, ca: Path | None, verify: TlsVerify) -> ssl.SSLContext:
    server = purpose is ssl.Purpose.CLIENT_AUTH
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the dialling side checks the node's host itself, as OTP does
    context.verify_mode = ssl.CERT_REQUIRED if verify == "peer" else ssl.CERT_NONE
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if key is None:
            raise TlsConfigError(
                "certfile", f"TLS certfile {cert}: no PEM certificate with its private key in it ({exc.reason or exc})"
            ) from None
        raise TlsConfigError(
            "keyfile",
            f"TLS keyfile {key}: not a PEM private key of certificate {cert} ({exc.reason or exc})",
        ) from None
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise TlsConfigError(
                "cacertfile", f"TLS cacertfile {ca}: no PEM CA certificate in it ({exc.reason or exc})"
            ) from None
    return context
