"""A private epmd for a test: `epmd -port N` as a child of the test run, ended by its pid.

Tests never touch the machine's epmd on 4369: each gets its own on a free port, and the nodes it
starts find it through ``$ERL_EPMD_PORT``.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pynode.epmd.launcher import find_epmd_executable

__all__ = ["Epmd", "epmd_answers", "epmd_executable", "epmd_names", "free_port", "running_epmd"]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def epmd_executable() -> str:
    """The epmd binary, found as ``--start-epmd`` finds it; a failed test when there is none."""
    found = find_epmd_executable()
    if found is None:
        pytest.fail("epmd not found on PATH nor in an Erlang installation: install Erlang/OTP")
    return found


@dataclass(frozen=True, slots=True)
class Epmd:
    """A private epmd started for a test."""

    port: int
    pid: int


def epmd_answers(port: int) -> bool:
    """True when an epmd on 127.0.0.1:port answers NAMES_REQ."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"\x00\x01\x6e")
            return len(sock.recv(4)) > 0
    except OSError:
        return False


def epmd_names(port: int) -> dict[str, int]:
    """The names registered with the epmd on 127.0.0.1:port (NAMES_REQ), with their ports."""
    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(b"\x00\x01\x6e")
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    names: dict[str, int] = {}
    for line in b"".join(chunks)[4:].decode().splitlines():
        match line.split():
            case ["name", name, "at", "port", number]:
                names[name] = int(number)
    return names


@contextlib.contextmanager
def running_epmd(*, attempts: int = 3, timeout: float = 10.0) -> Iterator[Epmd]:
    """Run `epmd -port N` as a child (never -daemon) until the block ends, then end it by pid."""
    failures: list[str] = []
    for _ in range(attempts):
        port = free_port()
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(
                [epmd_executable(), "-port", str(port), "-address", "127.0.0.1"],
                stdin=subprocess.DEVNULL,
                stdout=errors,
                stderr=errors,
            )
            try:
                if _wait_epmd(proc, port, timeout):
                    yield Epmd(port, proc.pid)
                    return
                errors.seek(0)
                failures.append(f"port {port}: exit {proc.poll()}: {errors.read().decode(errors='replace')}")
            finally:
                _end(proc)
    pytest.fail("epmd did not start:\n" + "\n".join(failures))


def _wait_epmd(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if epmd_answers(port):
            return True
        time.sleep(0.02)
    return False


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout=5)
