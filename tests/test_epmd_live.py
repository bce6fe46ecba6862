"""The EPMD client against a real epmd (and a real erl node), each on a private port, killed by pid."""

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from pynode import epmd
from pynode.epmd.messages import NodeType
from pynode.errors import EpmdError

pytestmark = pytest.mark.beam


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, 9)
    proc.wait(timeout=10)


def _start_private_epmd() -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        ["epmd", "-port", str(port), "-address", "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"private epmd on port {port} did not come up")
        time.sleep(0.05)
    return proc, port


@pytest.fixture(scope="module")
def epmd_port() -> Iterator[int]:
    proc, port = _start_private_epmd()
    try:
        yield port
    finally:
        _stop(proc)


async def _names_until(port: int, done: Callable[[dict[str, int]], bool], seconds: float = 10) -> dict[str, int]:
    """Poll NAMES until ``done`` holds or ``seconds`` pass; return the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        current = await epmd.names(epmd_port=port)
        if done(current) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.05)


def _unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}_{time.monotonic_ns() % 1_000_000}"


# -- register, look up, list, leave ------------------------------------------------------


async def test_register_lookup_names_close(epmd_port: int) -> None:
    name = _unique("reg")
    registration = await epmd.register(f"{name}@127.0.0.1", 40123, epmd_port=epmd_port)
    try:
        assert not registration.closed
        assert 0 < registration.creation < 2**32
        address = await epmd.port_please(name, epmd_port=epmd_port)
        assert address == epmd.NodeAddress(
            name=name,
            port=40123,
            node_type=NodeType.NORMAL,
            protocol=0,
            highest_version=6,
            lowest_version=5,
            extra=b"",
        )
        assert await epmd.port_please(f"{name}@elsewhere", epmd_port=epmd_port) == address
        assert (await epmd.names(epmd_port=epmd_port))[name] == 40123
    finally:
        await registration.close()
    assert registration.closed
    await asyncio.wait_for(registration.wait_closed(), 1)
    left = await _names_until(epmd_port, lambda names: name not in names)
    assert name not in left
    assert await epmd.port_please(name, epmd_port=epmd_port) is None


async def test_unknown_name_is_none(epmd_port: int) -> None:
    assert await epmd.port_please(_unique("nobody"), epmd_port=epmd_port) is None


async def test_duplicate_name_is_refused(epmd_port: int) -> None:
    name = _unique("dup")
    first = await epmd.register(name, 40124, epmd_port=epmd_port)
    try:
        with pytest.raises(EpmdError, match="in use"):
            await epmd.register(name, 40125, epmd_port=epmd_port)
        address = await epmd.port_please(name, epmd_port=epmd_port)
        assert address is not None
        assert address.port == 40124
    finally:
        await first.close()


async def test_wait_closed_returns_when_epmd_goes_away() -> None:
    proc, port = _start_private_epmd()
    try:
        registration = await epmd.register(_unique("lost"), 40126, epmd_port=port)
        _stop(proc)
        await asyncio.wait_for(registration.wait_closed(), 10)
        assert registration.closed
        await registration.close()
    finally:
        _stop(proc)


async def test_no_epmd_says_how_to_fix_it() -> None:
    port = _free_port()
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: epmd.register("nobody", 40127, epmd_port=port),
        lambda: epmd.port_please("nobody", epmd_port=port),
        lambda: epmd.names(epmd_port=port),
    ]
    for attempt in attempts:
        with pytest.raises(EpmdError) as info:
            await attempt()
        message = str(info.value)
        assert f"no EPMD answers on 127.0.0.1:{port}" in message
        assert "start one with `epmd -daemon`" in message
        assert f"`epmd -port {port} -daemon`" in message
        assert "--start-epmd" in message


# -- the port from the environment -------------------------------------------------------


def test_epmd_port_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERL_EPMD_PORT", raising=False)
    assert epmd.epmd_port_from_env() == epmd.DEFAULT_EPMD_PORT == 4369
    monkeypatch.setenv("ERL_EPMD_PORT", "4370")
    assert epmd.epmd_port_from_env() == 4370
    assert epmd.epmd_port_from_env(4371) == 4371
    monkeypatch.setenv("ERL_EPMD_PORT", "not-a-port")
    with pytest.raises(EpmdError, match="ERL_EPMD_PORT"):
        epmd.epmd_port_from_env()
    with pytest.raises(EpmdError):
        epmd.epmd_port_from_env(70000)


async def test_env_port_reaches_the_private_epmd(monkeypatch: pytest.MonkeyPatch, epmd_port: int) -> None:
    monkeypatch.setenv("ERL_EPMD_PORT", str(epmd_port))
    name = _unique("env")
    registration = await epmd.register(name, 40128, epmd_port=epmd.epmd_port_from_env())
    try:
        assert (await epmd.names(epmd_port=epmd_port))[name] == 40128
    finally:
        await registration.close()


# -- OTP's own registration --------------------------------------------------------------


async def test_a_real_erl_node_shows_up(epmd_port: int) -> None:
    name = _unique("erl")
    dist_port = _free_port()
    ports = ["-kernel", "inet_dist_listen_min", str(dist_port), "inet_dist_listen_max", str(dist_port)]
    erl = await asyncio.create_subprocess_exec(
        "erl",
        "-noshell",
        "-start_epmd",
        "false",
        "-name",
        f"{name}@127.0.0.1",
        *ports,
        env={**os.environ, "ERL_EPMD_PORT": str(epmd_port)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        listed = await _names_until(epmd_port, lambda names: name in names, seconds=20)
        assert listed[name] == dist_port
        address = await epmd.port_please(f"{name}@127.0.0.1", epmd_port=epmd_port)
        assert address is not None
        assert (address.name, address.port) == (name, dist_port)
        assert address.node_type == NodeType.NORMAL
        assert address.lowest_version <= 6 <= address.highest_version
    finally:
        if erl.returncode is None:
            os.kill(erl.pid, 9)
        await asyncio.wait_for(erl.wait(), 10)
    gone = await _names_until(epmd_port, lambda names: name not in names)
    assert name not in gone


# -- ensure_epmd -------------------------------------------------------------------------


def test_find_epmd_executable() -> None:
    found = epmd.find_epmd_executable()
    assert found is not None
    assert os.access(found, os.X_OK)
    assert os.path.basename(found) == "epmd"


async def test_ensure_epmd_leaves_a_running_one_alone(epmd_port: int) -> None:
    assert await epmd.ensure_epmd(epmd_port) is False


def _daemon_pids(port: int) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"epmd -daemon -port {port}$"], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


async def test_ensure_epmd_starts_one() -> None:
    port = _free_port()
    assert not _accepts(port)
    try:
        assert await epmd.ensure_epmd(port, timeout=10) is True
        assert await epmd.names(epmd_port=port) == {}
        assert len(_daemon_pids(port)) == 1
        assert await epmd.ensure_epmd(port) is False
    finally:
        for pid in _daemon_pids(port):
            os.kill(pid, 9)
    for _ in range(200):
        if not _accepts(port):
            break
        await asyncio.sleep(0.05)
    assert not _accepts(port)
