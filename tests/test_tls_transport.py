"""TlsTransport on its own: configuration errors, the host check on data, and TLS between two
transports on 127.0.0.1 with certificates made by openssl (no BEAM, no node)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from tls_certs import Ca, NodeCert, issue, make_ca

from pynode.errors import HandshakeError
from pynode.net.tls import TlsConfigError, TlsTransport, certificate_matches_host

TLS_LOG = "pynode.net.tls"


@dataclass(frozen=True)
class Pki:
    ca: Ca
    server: NodeCert
    client: NodeCert
    stranger: NodeCert
    """Signed by another CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = make_ca(directory, "cluster-ca"), make_ca(directory, "other-ca")
    return Pki(
        ca,
        issue(ca, directory, "server"),
        issue(ca, directory, "client"),
        issue(other, directory, "stranger"),
    )


def transport(cert: NodeCert, *, ca: Ca | None = None, **options: Any) -> TlsTransport:
    trust = ca or cert.ca
    return TlsTransport(certfile=cert.certfile, keyfile=cert.keyfile, cacertfile=trust.certfile, **options)


class Recorder(asyncio.Protocol):
    """Keeps what it gets; answers every chunk with b"echo:" + chunk; greets on connect."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.got_data = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass asyncio's
        assert hasattr(transport, "write")
        if self.greeting:
            self.transport.write(self.greeting)

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.got_data.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def _wait_for(condition: Callable[[], bool], what: str, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the condition is set by callbacks of asyncio's own
            await asyncio.sleep(0.01)
    assert condition(), what


# -- configuration ------------------------------------------------------------------------------


def test_a_missing_certificate_file_is_named(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TlsConfigError) as raised:
        TlsTransport(certfile=tmp_path / "nope.pem", keyfile=pki.server.keyfile, cacertfile=pki.ca.certfile)
    assert raised.value.option == "certfile"
    assert f"{tmp_path / 'nope.pem'}: no such file" in str(raised.value)


def test_a_directory_given_as_a_key_file_is_named(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TlsConfigError) as raised:
        TlsTransport(certfile=pki.server.certfile, keyfile=tmp_path, cacertfile=pki.ca.certfile)
    assert raised.value.option == "keyfile"
    assert f"{tmp_path}: is a directory" in str(raised.value)


def test_a_key_that_is_not_the_certificates_is_refused(pki: Pki) -> None:
    with pytest.raises(TlsConfigError) as raised:
        TlsTransport(certfile=pki.server.certfile, keyfile=pki.client.keyfile, cacertfile=pki.ca.certfile)
    assert raised.value.option == "keyfile"
    assert "not a PEM private key of certificate" in str(raised.value)


def test_a_file_that_holds_no_ca_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError) as raised:
        TlsTransport(certfile=pki.server.certfile, keyfile=pki.server.keyfile, cacertfile=junk)
    assert raised.value.option == "cacertfile"


def test_peer_verification_needs_a_ca_file_and_verify_none_does_not(pki: Pki) -> None:
    with pytest.raises(TlsConfigError) as raised:
        TlsTransport(certfile=pki.server.certfile, keyfile=pki.server.keyfile)
    assert raised.value.option == "cacertfile"
    unverified = TlsTransport(certfile=pki.server.certfile, keyfile=pki.server.keyfile, verify="none")
    assert unverified.verify == "none"
    assert (unverified.name, unverified.handshake_length_size) == ("inet_tls", 4)


def test_verify_takes_peer_or_none(pki: Pki) -> None:
    with pytest.raises(TlsConfigError) as raised:
        transport(pki.server, verify="sometimes")
    assert raised.value.option == "verify"


# -- the host check -----------------------------------------------------------------------------


def _cert(*alt: tuple[str, str], cn: str = "node") -> dict[str, Any]:
    cert: dict[str, Any] = {"subject": ((("commonName", cn),),)}
    if alt:
        cert["subjectAltName"] = alt
    return cert


@pytest.mark.parametrize(
    ("cert", "host", "matches"),
    [
        (_cert(("DNS", "db1.example.com")), "db1.example.com", True),
        (_cert(("DNS", "DB1.Example.com")), "db1.example.COM.", True),
        (_cert(("DNS", "db1.example.com")), "db2.example.com", False),
        (_cert(("DNS", "*.example.com")), "db1.example.com", True),
        (_cert(("DNS", "*.example.com")), "a.db1.example.com", False),
        (_cert(("DNS", "*.com")), "example.com", False),
        # OTP 25 compares an IP-literal host with dNSName entries...
        (_cert(("DNS", "127.0.0.1")), "127.0.0.1", True),
        # ...and an iPAddress entry is accepted too.
        (_cert(("IP Address", "127.0.0.1")), "127.0.0.1", True),
        (_cert(("IP Address", "::1")), "::1", True),
        (_cert(("IP Address", "10.0.0.1")), "127.0.0.1", False),
        (_cert(("DNS", "*.0.0.1")), "127.0.0.1", False),
        # commonName only when there is no subjectAltName at all.
        (_cert(cn="db1"), "db1", True),
        (_cert(("DNS", "other"), cn="db1"), "db1", False),
        ({}, "db1", False),
    ],
)
def test_certificate_matches_host(cert: dict[str, Any], host: str, matches: bool) -> None:
    assert certificate_matches_host(cert, host) is matches


# -- connections --------------------------------------------------------------------------------


async def _serve(tls: TlsTransport, greeting: bytes = b"") -> tuple[asyncio.Server, int, list[Recorder]]:
    accepted: list[Recorder] = []

    def factory(arrived: float) -> Recorder:
        # Made once TLS is up, with the time the TCP connection came: the set-up clock's start.
        assert arrived < asyncio.get_running_loop().time()
        accepted.append(Recorder(greeting))
        return accepted[-1]

    server = await tls.listen(factory, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port, accepted


async def test_tls_both_ways_and_data_right_after_the_handshake_is_kept(pki: Pki) -> None:
    server_tls, client_tls = transport(pki.server), transport(pki.client)
    # The acceptor speaks first, in connection_made: its bytes may come before the dialler's
    # hand-over and must not be lost.
    server, port, accepted = await _serve(server_tls, greeting=b"hello")
    try:
        secure, protocol = await client_tls.dial(lambda: Recorder(b"ping"), "127.0.0.1", port, peer_node="s@127.0.0.1")
        assert isinstance(protocol, Recorder) and protocol.transport is secure
        await _wait_for(lambda: bytes(protocol.received) == b"hello", "the greeting arrives")
        await _wait_for(lambda: len(accepted) == 1 and bytes(accepted[0].received) == b"ping", "ping arrives")
        ssl_object = secure.get_extra_info("ssl_object")
        assert ssl_object is not None and ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        assert secure.get_extra_info("peercert")["subject"] == ((("commonName", "server"),),)
        secure.close()
        await asyncio.wait_for(accepted[0].lost, 20)  # the acceptor's side sees the close
    finally:
        server.close()
        await server.wait_closed()
        await server_tls.aclose()


async def test_a_plain_tcp_peer_is_refused_with_one_log_line(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    server_tls = transport(pki.server)
    server, port, accepted = await _serve(server_tls)
    try:
        with caplog.at_level(logging.WARNING, logger=TLS_LOG):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x00\x0fN" + bytes(14))  # a distribution name packet, not a ClientHello
            answer = await asyncio.wait_for(reader.read(), 20)
            assert answer[:1] in (b"", b"\x15")  # closed, at most after a TLS alert record
            writer.close()
            await _wait_for(lambda: bool(caplog.records), "the refusal is logged")
            await _wait_for(lambda: not server_tls._accepting, "no handshake left in flight")
        assert not accepted
        lines = [r for r in caplog.records if r.name == TLS_LOG]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert "TLS handshake with 127.0.0.1:" in lines[0].getMessage()
        assert "tls_accept" in lines[0].getMessage()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_certificate_another_ca_signed_is_refused_both_ways(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    # The dialler refuses a server whose certificate another CA signed...
    stranger_tls = TlsTransport(
        certfile=pki.stranger.certfile, keyfile=pki.stranger.keyfile, cacertfile=pki.ca.certfile
    )
    server, port, accepted = await _serve(stranger_tls)
    try:
        with caplog.at_level(logging.WARNING, logger=TLS_LOG), pytest.raises(HandshakeError) as raised:
            await transport(pki.client).dial(Recorder, "127.0.0.1", port, peer_node="s@127.0.0.1")
        assert raised.value.step == "tls_connect"
        assert "certificate" in raised.value.reason
        await _wait_for(lambda: not stranger_tls._accepting, "the acceptor's side ended")
        assert not accepted
    finally:
        server.close()
        await server.wait_closed()
    # ...and the acceptor refuses such a client.
    caplog.clear()
    server_tls = transport(pki.server)
    server, port, accepted = await _serve(server_tls)
    try:
        with caplog.at_level(logging.WARNING, logger=TLS_LOG):
            try:
                _, protocol = await stranger_tls.dial(Recorder, "127.0.0.1", port, peer_node="s@127.0.0.1")
            except HandshakeError:
                pass  # TLS 1.2: the client learns at once
            else:  # TLS 1.3: the client's handshake ends first, then the server's alert closes it
                assert isinstance(protocol, Recorder)
                await asyncio.wait_for(protocol.lost, 20)
            await _wait_for(lambda: any("tls_accept" in r.getMessage() for r in caplog.records), "logged")
        assert not accepted
        assert "certificate" in next(r.getMessage() for r in caplog.records if "tls_accept" in r.getMessage())
    finally:
        server.close()
        await server.wait_closed()


async def test_the_dialler_checks_the_node_host_against_the_certificate(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = issue(pki.ca, tmp_path, "elsewhere", dns=("db9.example.com",), ips=())
    server_tls = transport(elsewhere)
    server, port, _ = await _serve(server_tls)
    try:
        with caplog.at_level(logging.WARNING, logger=TLS_LOG), pytest.raises(HandshakeError) as raised:
            await transport(pki.client).dial(Recorder, "127.0.0.1", port, peer_node="s@127.0.0.1")
        assert "not for 127.0.0.1" in raised.value.reason and "DNS:db9.example.com" in raised.value.reason
        lines = [r.getMessage() for r in caplog.records if r.name == TLS_LOG]
        assert len(lines) == 1 and "not for 127.0.0.1" in lines[0], lines
        # The same certificate is fine for a node whose name says db9.example.com (no DNS needed:
        # the address is given; the name is what the certificate must fit).
        secure, _ = await transport(pki.client).dial(Recorder, "127.0.0.1", port, peer_node="s@db9.example.com")
        secure.close()
        # With verification off, nothing is checked.
        unverified = TlsTransport(certfile=pki.client.certfile, keyfile=pki.client.keyfile, verify="none")
        secure, _ = await unverified.dial(Recorder, "127.0.0.1", port, peer_node="s@127.0.0.1")
        secure.close()
    finally:
        server.close()
        await server.wait_closed()
        await server_tls.aclose()


async def test_a_dial_to_a_peer_that_never_answers_tls_times_out(pki: Pki) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(HandshakeError) as raised:
            await transport(pki.client, handshake_timeout=0.5).dial(
                Recorder, "127.0.0.1", port, peer_node="s@127.0.0.1"
            )
    assert "no TLS handshake within the setup time" in raised.value.reason


async def test_a_client_without_a_certificate_is_refused(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    server_tls = transport(pki.server)
    server, port, accepted = await _serve(server_tls)
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.load_verify_locations(pki.ca.certfile)
    bare.check_hostname = False
    bare.maximum_version = ssl.TLSVersion.TLSv1_2  # so the refusal reaches the client in its handshake
    try:
        with caplog.at_level(logging.WARNING, logger=TLS_LOG):
            with pytest.raises(OSError):  # an alert (ssl.SSLError) or a reset, by timing
                reader, _ = await asyncio.open_connection("127.0.0.1", port, ssl=bare)
                await asyncio.wait_for(reader.read(), 20)
            await _wait_for(lambda: any("tls_accept" in r.getMessage() for r in caplog.records), "logged")
        assert not accepted
        line = one_of(caplog.records)
        assert "certificate" in line, line
    finally:
        server.close()
        await server.wait_closed()


def one_of(records: list[logging.LogRecord]) -> str:
    lines = [r.getMessage() for r in records if r.name == TLS_LOG]
    assert len(lines) == 1, lines
    return lines[0]


def test_tls_both_ways_on_uvloop(pki: Pki) -> None:
    """uvloop's TLS transports take the same hand-over (``--loop uvloop``)."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[bytes, bytes]:
        server_tls = transport(pki.server)
        server, port, accepted = await _serve(server_tls, greeting=b"hello")
        try:
            secure, protocol = await transport(pki.client).dial(
                lambda: Recorder(b"ping"), "127.0.0.1", port, peer_node="s@127.0.0.1"
            )
            assert isinstance(protocol, Recorder)
            await _wait_for(lambda: bool(protocol.received) and bool(accepted and accepted[0].received), "data")
            secure.close()
            return bytes(protocol.received), bytes(accepted[0].received)
        finally:
            server.close()
            await server.wait_closed()

    assert uvloop.run(scenario()) == (b"hello", b"ping")


async def test_tls_handshakes_in_flight_are_bounded(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    server_tls = transport(pki.server, max_handshakes=1)
    server, port, _ = await _serve(server_tls)
    try:
        with caplog.at_level(logging.WARNING, logger=TLS_LOG):
            _, first = await asyncio.open_connection("127.0.0.1", port)  # silent: its handshake waits
            await _wait_for(lambda: len(server_tls._accepting) == 1, "the first handshake started")
            second, second_writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(second.read(), 20) == b""  # closed at once
            assert len(server_tls._accepting) == 1
        assert one_of(caplog.records).endswith("1 TLS handshakes in flight (max 1)")
        # Once the silent one is gone, a handshake has room again.
        first.close()
        second_writer.close()
        await _wait_for(lambda: not server_tls._accepting, "the silent handshake ended")
        secure, _ = await transport(pki.client).dial(Recorder, "127.0.0.1", port, peer_node="s@127.0.0.1")
        secure.close()
    finally:
        server.close()
        await server.wait_closed()
        await server_tls.aclose()
