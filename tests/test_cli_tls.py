"""The command's TLS flags: what they build, and the error a person sees when they cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest
from tls_certs import NodeCert, issue, make_ca

from pynode.cli import build_parser, dist_transport, limits_from
from pynode.limits import DEFAULT_LIMITS
from pynode.net.tls import TlsTransport

NAME = ["--name", "py@127.0.0.1", "--cookie", "c"]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> NodeCert:
    directory = tmp_path_factory.mktemp("cli-tls")
    return issue(make_ca(directory, "ca"), directory, "py")


def transport_for(*flags: str) -> object:
    args = build_parser().parse_args([*NAME, *flags])
    return dist_transport(args, limits_from(args))


def refusal(*flags: str) -> str:
    with pytest.raises(SystemExit) as raised:
        transport_for(*flags)
    assert isinstance(raised.value.code, str), raised.value.code
    return raised.value.code


def tls_flags(cert: NodeCert) -> list[str]:
    return [
        "--proto-dist", "inet_tls", "--tls-certfile", str(cert.certfile),
        "--tls-keyfile", str(cert.keyfile), "--tls-cacertfile", str(cert.ca.certfile),
    ]  # fmt: skip


def test_plain_tcp_is_the_default() -> None:
    assert transport_for() is None
    assert transport_for("--proto-dist", "inet_tcp") is None


def test_inet_tls_builds_a_tls_transport(cert: NodeCert) -> None:
    tls = transport_for(*tls_flags(cert))
    assert isinstance(tls, TlsTransport) and tls.verify == "peer"
    assert (tls.handshake_timeout, tls.max_handshakes) == (DEFAULT_LIMITS.net_setuptime, DEFAULT_LIMITS.max_connections)
    limited = transport_for(*tls_flags(cert), "--net-setuptime", "3", "--max-connections", "5")
    assert isinstance(limited, TlsTransport) and (limited.handshake_timeout, limited.max_handshakes) == (3.0, 5)
    unverified = transport_for(*tls_flags(cert)[:-2], "--tls-verify", "none")
    assert isinstance(unverified, TlsTransport) and unverified.verify == "none"


def test_inet_tls_without_a_certificate_says_which_flag(cert: NodeCert) -> None:
    assert refusal("--proto-dist", "inet_tls") == (
        "pynode: --proto-dist inet_tls needs --tls-certfile (and --tls-keyfile unless it holds the key)"
    )
    assert "--tls-cacertfile" in refusal("--proto-dist", "inet_tls", "--tls-certfile", str(cert.certfile))


def test_a_certificate_file_without_its_key_needs_the_key_flag(cert: NodeCert) -> None:
    message = refusal(
        "--proto-dist", "inet_tls", "--tls-certfile", str(cert.certfile), "--tls-cacertfile", str(cert.ca.certfile)
    )
    assert message.startswith("pynode: --tls-certfile: ") and "private key" in message


def test_a_missing_file_is_named_with_its_flag(cert: NodeCert, tmp_path: Path) -> None:
    flags = tls_flags(cert)
    flags[flags.index("--tls-keyfile") + 1] = str(tmp_path / "gone.key")
    assert refusal(*flags) == f"pynode: --tls-keyfile: TLS keyfile {tmp_path / 'gone.key'}: no such file"
    flags = tls_flags(cert)
    flags[flags.index("--tls-cacertfile") + 1] = str(tmp_path / "gone-ca.pem")
    assert refusal(*flags).startswith("pynode: --tls-cacertfile: ")


def test_tls_flags_without_inet_tls_are_refused(cert: NodeCert) -> None:
    assert refusal("--tls-certfile", str(cert.certfile)) == (
        "pynode: --tls-certfile only apply with --proto-dist inet_tls"
    )
    assert refusal("--tls-verify", "none") == "pynode: --tls-verify only apply with --proto-dist inet_tls"
