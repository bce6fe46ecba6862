"""A distribution peer written by hand for tests: it handshakes, then sends whatever bytes it is told.

It uses pynode's own sans-IO cores to get through the handshake and to read
frames, but nothing of the node: what it writes after the handshake is up to
the test (a second name packet, garbage, half-finished fragments, compressed
bombs). ``python -m pynode`` runs as a child (:class:`PynodeChild`) so that its
RSS can be read from ``/proc`` and its log counted; the fault tests kill that child by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from pynode.etf.types import Atom, ImproperList, Pid, Reference, Term
from pynode.wire import control as c
from pynode.wire.flags import DEFAULT_FLAGS, DFlag
from pynode.wire.framing import NEED_DATA, DistMessage, DistReader, DistWriter
from pynode.wire.handshake import HandshakeComplete, HandshakeInitiator

ROOT = Path(__file__).resolve().parent.parent


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (or ``VmHWM``, the peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


class PynodeChild:
    """``python -m pynode`` as a child of the test; its output kept; ended by its pid."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []
        self.port = 0
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, name: str, cookie: str, epmd_port: int, agents: Path, *extra: str, env: Mapping[str, str] | None = None
    ) -> AsyncIterator[PynodeChild]:
        """The node, once it says it is ready; ``env``: its whole environment (default: the test's)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pynode", "--name", name, "--cookie", cookie, "--epmd-port", str(epmd_port),
            "--agents", str(agents), *extra,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT, env=None if env is None else dict(env),
        )  # fmt: skip
        child = cls(proc)
        try:
            await child._wait_ready()
            child._reader = asyncio.create_task(child._read())
            yield child
        finally:
            if proc.returncode is None:
                proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
            if child._reader is not None:
                await asyncio.wait_for(child._reader, 5)

    async def _wait_ready(self) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError("pynode exited before it was ready:\n" + "".join(self.log))
                self.log.append(line)
                ready = re.search(r" ready \(port (\d+),", line)
                if ready:
                    self.port = int(ready.group(1))
                    return

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.log.append(line.decode(errors="replace"))

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.log if needle in line]

    async def logged(self, needle: str, within: float = 30.0, count: int = 1) -> list[str]:
        """Wait (bounded) until ``count`` lines with ``needle`` are in the log; the lines with it."""
        async with asyncio.timeout(within):
            while True:
                found = self.lines(needle)
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.05)

    def rss(self, field: str = "VmRSS") -> int:
        return rss_kib(self.proc.pid, field)


class HostilePeer:
    """One connection to a node, made by hand."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flags: DFlag, name: str, leftover: bytes
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.flags = flags
        self.name = Atom(name)
        self.me = Pid(self.name, 1, 0, 7)
        self.frames = DistReader(flags)
        self.frames.receive_data(leftover)
        self.encoder = DistWriter(flags)
        self._refs = 0

    @classmethod
    async def dial(
        cls, port: int, cookie: str, peer: str, *, name: str = "hostile@127.0.0.1", flags: DFlag = DEFAULT_FLAGS
    ) -> HostilePeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        shake = HandshakeInitiator(our_name=name, cookie=cookie, flags=flags, creation=7, peer_name=peer)
        writer.write(shake.data_to_send())
        async with asyncio.timeout(20):
            while True:
                event = shake.next_event()
                writer.write(shake.data_to_send())
                if isinstance(event, HandshakeComplete):
                    return cls(reader, writer, event.flags, name, shake.leftover())
                if event is NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        shake.receive_eof()
                    shake.receive_data(data)
                else:
                    raise AssertionError(f"unexpected handshake event {event}")

    def ref(self) -> Reference:
        self._refs += 1
        return Reference(self.name, 7, (self._refs, 0, 0))

    def send(self, control: c.ControlMessage, payload: Term = None) -> None:
        frames = self.encoder.encode(control, payload) if control.HAS_PAYLOAD else self.encoder.encode(control)
        self.writer.writelines(frames)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send_frame(self, body: bytes) -> None:
        self.writer.write(struct.pack(">I", len(body)) + body)

    def call_bytes(self, name: str, request: Term) -> tuple[Reference, bytes]:
        """A gen_call to a registered name, as frames (not yet sent), and its reference."""
        ref = self.ref()
        call = (Atom("$gen_call"), (self.me, ImproperList((Atom("alias"),), ref)), request)
        return ref, b"".join(self.encoder.encode(c.RegSend(self.me, Atom(name)), call))

    async def call(self, name: str, request: Term, timeout: float = 30.0) -> Term:
        ref, frames = self.call_bytes(name, request)
        self.writer.write(frames)
        return await self.reply(ref, timeout)

    async def reply(self, ref: Reference, timeout: float = 30.0) -> Term:
        async with asyncio.timeout(timeout):
            while True:
                event = self.frames.next_event()
                if event is NEED_DATA:
                    data = await self.reader.read(1 << 20)
                    if not data:
                        raise ConnectionResetError("the node closed the connection")
                    self.frames.receive_data(data)
                elif isinstance(event, DistMessage):
                    payload = event.payload
                    if (
                        type(payload) is tuple
                        and len(payload) == 2
                        and payload[0] == ImproperList((Atom("alias"),), ref)
                    ):
                        return payload[1]

    async def closed_by_node(self, within: float) -> bool:
        """Read (and drop) until the node closes the connection; False if it is still open after ``within``."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:  # reset, or a broken pipe from our last write: closed all the same
            return True
        return True

    def close(self) -> None:
        self.writer.close()
