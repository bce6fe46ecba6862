"""The handshake against real BEAMs (OTP 25 and OTP 28): a private epmd and one erl node each, killed by pid."""

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pynode.errors import HandshakeError
from pynode.testing import otp
from pynode.wire.flags import DEFAULT_FLAGS, MANDATORY_OTP25, DFlag
from pynode.wire.handshake import NEED_DATA, AliveQuery, HandshakeComplete, HandshakeInitiator

pytestmark = pytest.mark.beam

COOKIE = "pynode_handshake_cookie"


@dataclass(frozen=True)
class Beam:
    node: str
    dist_port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, 9)
    proc.wait(timeout=10)


@pytest.fixture(scope="module", params=["25", "28"], ids=["otp25", "otp28"])
def beam(request: pytest.FixtureRequest) -> Iterator[Beam]:
    release: str = request.param
    erl_command = otp.erl_executable(release)
    if otp.release_of(erl_command) != release:
        pytest.fail(f"no OTP {release} runtime in {otp.where_looked(release)} (scripts/_setup.sh fetches OTP 28)")
    epmd_port, dist_port = _free_port(), _free_port()
    env = {**os.environ, "ERL_EPMD_PORT": str(epmd_port)}
    epmd = subprocess.Popen(
        ["epmd", "-port", str(epmd_port), "-address", "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    erl: subprocess.Popen[bytes] | None = None
    try:
        _wait_listening(epmd_port, epmd)
        node = f"hs{os.getpid()}@127.0.0.1"
        ports = ["-kernel", "inet_dist_listen_min", str(dist_port), "inet_dist_listen_max", str(dist_port)]
        erl = subprocess.Popen(
            [erl_command, "-noshell", "-start_epmd", "false", "-name", node, "-setcookie", COOKIE, *ports],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_listening(dist_port, erl)
        yield Beam(node, dist_port)
    finally:
        if erl is not None:
            _stop(erl)
        _stop(epmd)


async def _handshake(beam: Beam, cookie: str) -> HandshakeComplete:
    reader, writer = await asyncio.open_connection("127.0.0.1", beam.dist_port)
    handshake = HandshakeInitiator(
        our_name=f"py{os.getpid()}@127.0.0.1",
        cookie=cookie,
        flags=DEFAULT_FLAGS,
        creation=0x5EED,
        peer_name=beam.node,
    )
    try:
        for _ in range(50):
            event = handshake.next_event()
            if isinstance(event, AliveQuery):
                handshake.answer_alive(True)
            writer.write(handshake.data_to_send())
            if isinstance(event, HandshakeComplete):
                return event
            if event is NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), 10)
                if not data:
                    handshake.receive_eof()
                handshake.receive_data(data)
        raise AssertionError("handshake did not finish within 50 steps")
    finally:
        writer.close()


async def test_handshake_with_the_right_cookie(beam: Beam) -> None:
    done = await _handshake(beam, COOKIE)
    assert done.peer_name == beam.node
    assert done.peer_flags & MANDATORY_OTP25 == MANDATORY_OTP25
    assert done.peer_flags & DFlag.PUBLISHED  # the BEAM offers it...
    assert not done.flags & DFlag.PUBLISHED  # ...but the AND lacks it: a hidden connection
    assert done.flags & DFlag.FRAGMENTS  # so the connection uses the 131,68 header mode
    assert done.flags == DEFAULT_FLAGS & done.peer_flags


async def test_handshake_with_a_wrong_cookie(beam: Beam) -> None:
    with pytest.raises(HandshakeError) as exc:
        await _handshake(beam, "not-the-cookie")
    assert exc.value.step == "recv_challenge_ack"
