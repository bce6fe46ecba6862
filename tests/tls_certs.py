"""Certificates for the TLS distribution tests, made with the `openssl` command, and OTP's optfile.

A test asks for a certificate authority (`make_ca`), node certificates it signs (`issue`), and
the `-ssl_dist_optfile` an OTP node reads (`write_optfile`, `tls_dist_args`). Keys are EC P-256,
so making a CA and two node certificates takes a few openssl runs of milliseconds each.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Ca", "NodeCert", "erl_string", "issue", "make_ca", "tls_dist_args", "write_optfile"]

OPENSSL_TIMEOUT = 60.0
"""Seconds one openssl run may take on a loaded machine."""

_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True, slots=True)
class Ca:
    """A certificate authority: its self-signed certificate and its key."""

    name: str
    certfile: Path
    keyfile: Path


@dataclass(frozen=True, slots=True)
class NodeCert:
    """A node's certificate (signed by `ca`) and its private key."""

    certfile: Path
    keyfile: Path
    ca: Ca


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.fail("the openssl command is not on PATH: the TLS tests make their certificates with it")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=OPENSSL_TIMEOUT)
    if done.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def make_ca(directory: Path, name: str) -> Ca:
    """A fresh CA in `directory` whose subject is `CN=name`."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *_EC_KEY, "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return Ca(name, cert, key)


def issue(
    ca: Ca, directory: Path, name: str, *, dns: Sequence[str] = ("localhost",), ips: Sequence[str] = ("127.0.0.1",)
) -> NodeCert:
    """A node certificate `CN=name` signed by `ca`, valid for client and server use.

    `dns` and `ips` become its subjectAltName entries (what a hostname check compares against).
    """
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
    ext = directory / f"{name}.ext"
    alt_names = [f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips]
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth,clientAuth",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if alt_names:
        lines.append("subjectAltName=" + ",".join(alt_names))
    ext.write_text("\n".join(lines) + "\n")
    _openssl("req", "-new", *_EC_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.certfile), "-CAkey", str(ca.keyfile),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-sha256", "-extfile", str(ext),
    )  # fmt: skip
    return NodeCert(cert, key, ca)


def erl_string(text: str | Path) -> str:
    """`text` as an Erlang string literal."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def write_optfile(path: Path, cert: NodeCert, *, trust: Ca | None = None, verify: bool = True) -> Path:
    """The `-ssl_dist_optfile` of an OTP node that presents `cert` and trusts `trust` (its own CA).

    With `verify` both roles verify the peer, and the server refuses a client without a certificate.
    """
    cacert = erl_string((trust or cert.ca).certfile)
    common = [
        f"{{certfile, {erl_string(cert.certfile)}}}",
        f"{{keyfile, {erl_string(cert.keyfile)}}}",
        f"{{cacertfile, {cacert}}}",
        "{secure_renegotiate, true}",
        "{verify, verify_peer}" if verify else "{verify, verify_none}",
    ]
    server = [*common, f"{{fail_if_no_peer_cert, {'true' if verify else 'false'}}}"]
    path.write_text(f"[{{server, [{', '.join(server)}]}},\n {{client, [{', '.join(common)}]}}].\n")
    return path


def tls_dist_args(optfile: Path) -> list[str]:
    """The `erl` arguments that make a node run its distribution over TLS with `optfile`."""
    return ["-proto_dist", "inet_tls", "-ssl_dist_optfile", str(optfile)]
