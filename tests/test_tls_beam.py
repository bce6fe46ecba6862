"""TLS distribution against real OTP nodes started with `-proto_dist inet_tls` (docs/protocol.md §1).

Certificates come from openssl, made per module: a cluster CA that signs the nodes, and another
CA whose certificates must be refused. Every refusal is checked to log one line and to leave no
connection, handshake or socket behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_support import PY, REG
from beam import BeamFactory
from tls_certs import Ca, NodeCert, issue, make_ca, tls_dist_args, write_optfile

from pynode.errors import HandshakeError, PynodeError
from pynode.limits import Limits
from pynode.net.tls import TlsTransport
from pynode.node import Node
from pynode.testing.local import running_pynode

pytestmark = pytest.mark.beam


ROOT = Path(__file__).resolve().parent.parent
PY_NODE = "py@127.0.0.1"
WITHIN = 30.0
"""Seconds anything here may take on a loaded machine."""


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Ca
    py: NodeCert
    e1: NodeCert
    stranger: NodeCert
    """Signed by another CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("tls")
    ca, other = make_ca(directory, "cluster-ca"), make_ca(directory, "other-ca")
    # OTP 25 checks a dialled node's host (here 127.0.0.1) against dNSName entries; pynode also
    # accepts the iPAddress entry.
    names = {"dns": ("localhost", "127.0.0.1"), "ips": ("127.0.0.1",)}
    return Pki(
        directory,
        ca,
        issue(ca, directory, "py", **names),
        issue(ca, directory, "e1", **names),
        issue(other, directory, "stranger", **names),
    )


def tls_args(pki: Pki, name: str, cert: NodeCert, *, trust: Ca | None = None) -> list[str]:
    """`erl` arguments for a TLS node presenting `cert` and trusting `trust` (default: its CA)."""
    return tls_dist_args(write_optfile(pki.directory / f"{name}.optfile", cert, trust=trust))


def py_transport(pki: Pki, **options: float) -> TlsTransport:
    return TlsTransport(certfile=pki.py.certfile, keyfile=pki.py.keyfile, cacertfile=pki.ca.certfile, **options)


@contextlib.asynccontextmanager
async def tls_node(epmd_port: int, cookie: str, transport: TlsTransport) -> AsyncIterator[Node]:
    async with running_pynode(
        PY_NODE, cookie=cookie, epmd_port=epmd_port, agents_dir=None, transport=transport
    ) as running:
        yield running.node


@pytest.fixture
async def py_tls(epmd_port: int, cookie: str, pki: Pki) -> AsyncIterator[Node]:
    """`py@127.0.0.1` over TLS, with its registry."""
    async with tls_node(epmd_port, cookie, py_transport(pki)) as node:
        yield node


def _sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


async def _settle(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WITHIN):
        while not condition():  # noqa: ASYNC110 - sockets and tasks end in asyncio's callbacks
            await asyncio.sleep(0.05)
    assert condition(), what


@contextlib.contextmanager
def refusals(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """Collect the WARNING+ records of pynode's loggers while the block runs."""
    records: list[logging.LogRecord] = []
    with caplog.at_level(logging.INFO, logger="pynode"):
        start = len(caplog.records)
        yield records
        records.extend(r for r in caplog.records[start:] if r.levelno >= logging.WARNING)


async def assert_nothing_left(node: Node, sockets_before: int) -> None:
    """No connection, no TLS handshake in flight, and no socket more than before the attempt."""
    assert node.connections == {} and node.nodes() == []
    tls = node.transport
    assert isinstance(tls, TlsTransport)
    await _settle(lambda: not tls._accepting, "no TLS handshake in flight")
    await _settle(lambda: _sockets() <= sockets_before, f"sockets back to {sockets_before} (now {_sockets()})")


def one_line(records: list[logging.LogRecord], *needles: str) -> str:
    lines = [r.getMessage() for r in records]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- it works -----------------------------------------------------------------------------------


async def test_ping_both_ways_and_the_link_is_tls(py_tls: Node, beam: BeamFactory, pki: Pki) -> None:
    e1 = await beam("e1", extra_args=tls_args(pki, "e1", pki.e1))
    assert await e1.eval(f"net_adm:ping({PY})") == "pong"
    assert await e1.eval("{nodes(hidden), nodes()}") == f"{{[{PY}],[]}}"
    assert await e1.eval("init:get_argument(proto_dist)") == '{ok,[["inet_tls"]]}'
    conn = py_tls.connections["e1@127.0.0.1"]
    ssl_object = conn.protocol.transport.get_extra_info("ssl_object")
    assert ssl_object is not None and ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    assert conn.protocol.transport.get_extra_info("peercert")["subject"] == ((("commonName", "e1"),),)
    # pynode dials: a second TLS node it has never heard from.
    e2 = await beam("e2", extra_args=tls_args(pki, "e2", pki.e1))
    await asyncio.wait_for(py_tls.connect("e2@127.0.0.1"), WITHIN)
    assert await e2.eval("nodes(hidden)") == f"[{PY}]"
    assert await e2.eval(f"net_adm:ping({PY})") == "pong"
    assert set(py_tls.nodes()) == {"e1@127.0.0.1", "e2@127.0.0.1"}


async def test_calls_and_an_agent_run_over_tls(py_tls: Node, beam: BeamFactory, pki: Pki) -> None:
    e1 = await beam("e1", extra_args=tls_args(pki, "e1", pki.e1))
    assert await e1.eval(f"gen_server:call({REG}, ping)") == "pong"
    big = "lists:seq(1, 100000)"  # about 500 KB: fragmented frames, many TLS records
    assert await e1.eval(f"{{ok, L}} = gen_server:call({REG}, {{echo, {big}}}), L =:= {big}") == "true"
    assert await e1.eval(f'gen_server:call({REG}, {{create_agent, tlsbot, #{{model => <<"test">>}}}})') == (
        "{ok,tlsbot}"
    )
    got = await e1.eval(
        f'{{ok, R}} = gen_server:call({{tlsbot, {PY}}}, {{run, <<"hello">>, #{{}}}}, 30000),'
        " {maps:get(output, R), maps:get(requests, maps:get(usage, R))}",
        timeout=WITHIN,
    )
    assert got == '{<<"success (no tool calls)">>,1}'
    assert await e1.eval("catch gen_server:call({nobody, 'py@127.0.0.1'}, ping, 5000)") == (
        "{'EXIT',{noproc,{gen_server,call,[{nobody,'py@127.0.0.1'},ping,5000]}}}"
    )


async def test_an_elixir_node_over_tls(py_tls: Node, beam: BeamFactory, pki: Pki) -> None:
    args = " ".join(tls_args(pki, "ex1", pki.e1))
    ex1 = await beam("ex1", kind="elixir", extra_args=["--erl", args])
    assert await ex1.eval('Node.ping(:"py@127.0.0.1")') == ":pong"
    assert await ex1.eval('GenServer.call({:pynode, :"py@127.0.0.1"}, {:echo, %{"é" => [1, 2.5, :x]}})') == (
        '{:ok, %{"é" => [1, 2.5, :x]}}'
    )
    assert "ex1@127.0.0.1" in py_tls.connections


async def test_the_cli_connects_to_a_tls_node(epmd_port: int, cookie: str, beam: BeamFactory, pki: Pki) -> None:
    e1 = await beam("e1", extra_args=tls_args(pki, "e1", pki.e1))
    agents = pki.directory / "no-agents"
    agents.mkdir(exist_ok=True)  # an empty folder: no Python agents (a missing one stops the command)
    argv = [
        sys.executable, "-m", "pynode", "--name", "py7@127.0.0.1", "--cookie", cookie,
        "--epmd-port", str(epmd_port), "--agents", str(agents),
        "--proto-dist", "inet_tls", "--tls-certfile", str(pki.py.certfile),
        "--tls-keyfile", str(pki.py.keyfile), "--tls-cacertfile", str(pki.ca.certfile),
        "--connect", "e1@127.0.0.1",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    output: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(WITHIN):
            while not any(" ready (port " in line for line in output):
                line = (await proc.stdout.readline()).decode()
                assert line, "pynode exited before it was ready:\n" + "".join(output)
                output.append(line)
        assert "inet_tls)" in output[-1]
        # e1 never dialled: the node is there because pynode connected to it at start.
        assert await e1.eval("nodes(hidden)") == "['py7@127.0.0.1']"
        assert await e1.eval("gen_server:call({pynode, 'py7@127.0.0.1'}, ping)") == "pong"
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), WITHIN)
    assert proc.returncode == 0


# -- refusals -----------------------------------------------------------------------------------


async def test_a_plain_tcp_erl_node_is_refused(
    py_tls: Node, beam: BeamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    plain = await beam("plain")
    before = _sockets()
    with refusals(caplog) as records:
        assert await plain.eval(f"net_adm:ping({PY})", timeout=WITHIN) == "pang"
        await assert_nothing_left(py_tls, before)
    one_line(records, "TLS handshake with 127.0.0.1:", "tls_accept")


async def test_pynode_over_tls_refuses_to_dial_a_plain_tcp_node(
    epmd_port: int, cookie: str, beam: BeamFactory, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    await beam("plain")
    # The plain node waits for a 5,635-byte handshake packet (a ClientHello's first two bytes
    # read as a length) until its net_setuptime: the TLS side gives up first.
    async with tls_node(epmd_port, cookie, py_transport(pki, handshake_timeout=2.0)) as py:
        before = _sockets()
        with refusals(caplog) as records:
            with pytest.raises(HandshakeError) as raised:
                await asyncio.wait_for(py.connect("plain@127.0.0.1"), WITHIN)
            assert raised.value.step == "tls_connect"
            await assert_nothing_left(py, before)
        one_line(records, "TLS handshake with plain@127.0.0.1", "no TLS handshake within the setup time")


async def test_a_certificate_another_ca_signed_is_refused_both_ways(
    py_tls: Node, beam: BeamFactory, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # The stranger trusts the cluster CA, so only pynode's own check can refuse it.
    stranger = await beam("stranger", extra_args=tls_args(pki, "stranger", pki.stranger, trust=pki.ca))
    before = _sockets()
    with refusals(caplog) as records:
        assert await stranger.eval(f"net_adm:ping({PY})", timeout=WITHIN) == "pang"
        await assert_nothing_left(py_tls, before)
    one_line(records, "TLS handshake with 127.0.0.1:", "tls_accept", "certificate")
    with refusals(caplog) as records:
        with pytest.raises(HandshakeError) as raised:
            await asyncio.wait_for(py_tls.connect("stranger@127.0.0.1"), WITHIN)
        assert raised.value.step == "tls_connect" and "certificate refused" in raised.value.reason
        await assert_nothing_left(py_tls, before)
    one_line(records, "TLS handshake with stranger@127.0.0.1", "certificate refused")
    # And the cluster's own nodes still get in.
    e1 = await beam("e1", extra_args=tls_args(pki, "e1", pki.e1))
    assert await e1.eval(f"net_adm:ping({PY})") == "pong"


async def test_the_cookie_is_still_checked_over_tls(
    py_tls: Node, beam: BeamFactory, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    e1 = await beam("e1", cookie="not_the_cookie", extra_args=tls_args(pki, "e1", pki.e1))
    before = _sockets()
    with refusals(caplog) as records:
        assert await e1.eval(f"net_adm:ping({PY})", timeout=WITHIN) == "pang"
        await assert_nothing_left(py_tls, before)
    one_line(records, "e1@127.0.0.1", "bad cookie")
    with refusals(caplog) as records:
        with pytest.raises(PynodeError) as raised:
            await asyncio.wait_for(py_tls.connect("e1@127.0.0.1"), WITHIN)
        assert "bad cookie" in str(raised.value)
        await assert_nothing_left(py_tls, before)
    one_line(records, "e1@127.0.0.1", "bad cookie")


async def test_verify_none_encrypts_without_authenticating(
    epmd_port: int, cookie: str, beam: BeamFactory, pki: Pki
) -> None:
    unverified = TlsTransport(certfile=pki.py.certfile, keyfile=pki.py.keyfile, verify="none")
    optfile = write_optfile(pki.directory / "loose.optfile", pki.stranger, verify=False)
    async with tls_node(epmd_port, cookie, unverified) as py:
        stranger = await beam("stranger", extra_args=tls_dist_args(optfile))
        assert await stranger.eval(f"net_adm:ping({PY})") == "pong"
        conn = py.connections["stranger@127.0.0.1"]
        assert conn.protocol.transport.get_extra_info("ssl_object") is not None
        await stranger.eval("erlang:disconnect_node('py@127.0.0.1')")
        await _settle(lambda: not py.connections, "the stranger's connection closed")
        await asyncio.wait_for(py.connect("stranger@127.0.0.1"), WITHIN)
        assert await stranger.eval("nodes(hidden)") == f"[{PY}]"


async def test_stopping_the_node_ends_tls_handshakes_in_flight(epmd_port: int, cookie: str, pki: Pki) -> None:
    tls = py_transport(pki)
    async with tls_node(epmd_port, cookie, tls) as py:
        reader, writer = await asyncio.open_connection("127.0.0.1", py.port)  # says nothing: TLS waits
        await _settle(lambda: len(tls._accepting) == 1, "the TLS handshake has started")
    assert not tls._accepting  # node.stop() ended it, without waiting for the set-up time
    assert await asyncio.wait_for(reader.read(), WITHIN) == b""
    writer.close()


async def test_a_peer_that_stalls_after_tls_is_closed_one_net_setuptime_after_it_arrived(
    epmd_port: int, cookie: str, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """The TLS handshake spends the same net_setuptime as the distribution handshake after it,
    as OTP's set-up timer does: a socket is not held up to twice that."""
    setuptime = 3.0
    node = Node(
        PY_NODE,
        cookie,
        epmd_port=epmd_port,
        transport=py_transport(pki, handshake_timeout=setuptime),
        limits=Limits(net_setuptime=setuptime),
    )
    await node.start()
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca.certfile))
        client.load_cert_chain(str(pki.e1.certfile), str(pki.e1.keyfile))
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        arrived = loop.time()
        await asyncio.sleep(setuptime * 0.7)  # TLS starts late and is up in time; then not a byte
        await writer.start_tls(client, server_hostname="127.0.0.1")
        tls_up = loop.time() - arrived
        assert await asyncio.wait_for(reader.read(), WITHIN) == b""  # closed by the node
        closed = loop.time() - arrived
        writer.close()
        # Counted from TLS up, it would close at about 1.7 net_setuptimes.
        assert closed < setuptime * 1.35, (tls_up, closed)
        assert any("net_setuptime" in r.getMessage() for r in caplog.records)
    finally:
        await node.stop()
