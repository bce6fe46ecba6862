"""Talking to EPMD over asyncio: register, look up, list names.

A thin shell around :mod:`pynode.epmd.messages`: it writes the request,
feeds what it reads to the parser, and turns socket failures into
:class:`EpmdError` with a message that tells the user what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import TypeVar

from pynode.epmd.messages import (
    DEFAULT_EPMD_PORT,
    NeedData,
    NodeAddress,
    alive_name,
    encode_alive2_req,
    encode_names_req,
    encode_port_please2_req,
    parse_alive2_reply,
    parse_names_reply,
    parse_port2_reply,
)
from pynode.errors import EpmdError, RemoteProtocolError

__all__ = ["Registration", "epmd_port_from_env", "names", "port_please", "register"]

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 1 << 20
"""EPMD's replies are small; more than this means we are not talking to EPMD."""

_T = TypeVar("_T")


def epmd_port_from_env(explicit: int | None = None) -> int:
    """The EPMD port as ``erl`` picks it: an explicit one, else ``$ERL_EPMD_PORT``, else 4369."""
    if explicit is not None:
        port, source = explicit, "--epmd-port"
    else:
        raw = os.environ.get("ERL_EPMD_PORT", "").strip()
        if not raw:
            return DEFAULT_EPMD_PORT
        if not raw.isdigit():
            raise EpmdError(f"ERL_EPMD_PORT={raw!r} is not a port number")
        port, source = int(raw), "ERL_EPMD_PORT"
    if not 0 < port <= 0xFFFF:
        raise EpmdError(f"{source} {port} is not a TCP port (1-65535)")
    return port


def no_epmd_message(host: str, epmd_port: int) -> str:
    """What to tell the user when nothing listens on the EPMD port."""
    return (
        f"no EPMD answers on {host}:{epmd_port}; start one with `epmd -daemon` "
        f"(or `epmd -port {epmd_port} -daemon`), or pass --start-epmd"
    )


_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(host: str, epmd_port: int, wait_s: float) -> _Stream:
    try:
        async with asyncio.timeout(wait_s):
            return await asyncio.open_connection(host, epmd_port)
    except TimeoutError:
        raise EpmdError(f"EPMD on {host}:{epmd_port} accepted no connection within {wait_s} s") from None
    except OSError as exc:
        raise EpmdError(f"{no_epmd_message(host, epmd_port)} ({exc.strerror or exc})") from exc


async def _read_reply(
    reader: asyncio.StreamReader, parse: Callable[[bytes], _T | NeedData], what: str, *, until_eof: bool
) -> _T:
    """Read until ``parse`` has a whole reply (and, if ``until_eof``, until EPMD closes)."""
    buffer = bytearray()
    while True:
        chunk = await reader.read(65536)
        if chunk:
            buffer += chunk
            if len(buffer) > MAX_REPLY_BYTES:
                raise RemoteProtocolError(f"{what} from EPMD exceeds {MAX_REPLY_BYTES} bytes")
            if until_eof:
                continue
        result = parse(bytes(buffer))
        if not isinstance(result, NeedData):
            return result
        if not chunk:
            raise RemoteProtocolError(f"EPMD closed the connection after {len(buffer)} bytes of {what}")


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _exchange(
    request: bytes,
    parse: Callable[[bytes], _T | NeedData],
    what: str,
    *,
    host: str,
    epmd_port: int,
    wait_s: float,
) -> _T:
    """One request on a fresh connection, read until EPMD closes it, as EPMD does for lookups."""
    reader, writer = await _open(host, epmd_port, wait_s)
    try:
        async with asyncio.timeout(wait_s):
            writer.write(request)
            await writer.drain()
            return await _read_reply(reader, parse, what, until_eof=True)
    except TimeoutError:
        raise EpmdError(f"EPMD on {host}:{epmd_port} sent no complete {what} within {wait_s} s") from None
    except OSError as exc:
        raise EpmdError(f"EPMD on {host}:{epmd_port} dropped the connection: {exc}") from exc
    finally:
        await _close_writer(writer)


async def port_please(
    name: str,
    *,
    epmd_port: int,
    host: str = "127.0.0.1",
    timeout: float = 5.0,
) -> NodeAddress | None:
    """Where the node ``name`` (short or full name) listens; None when EPMD does not know it."""
    reply = await _exchange(
        encode_port_please2_req(name),
        parse_port2_reply,
        "PORT2_RESP",
        host=host,
        epmd_port=epmd_port,
        wait_s=timeout,
    )
    return reply.address


async def names(
    *,
    epmd_port: int,
    host: str = "127.0.0.1",
    timeout: float = 5.0,
) -> dict[str, int]:
    """Every name registered in EPMD, with its distribution port."""
    reply = await _exchange(
        encode_names_req(),
        parse_names_reply,
        "NAMES reply",
        host=host,
        epmd_port=epmd_port,
        wait_s=timeout,
    )
    return reply.nodes


class Registration:
    """One open TCP connection to EPMD: the name stays registered exactly as long as it is open.

    A watcher task owned by this object reads the socket to notice when EPMD
    drops it; :meth:`close` cancels and awaits that task.
    """

    def __init__(
        self,
        name: str,
        creation: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.name = name
        self.creation = creation
        self._reader = reader
        self._writer = writer
        self._closed = asyncio.Event()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name=f"epmd registration {name}")

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Registration {self.name!r} creation={self.creation} {state}>"

    @property
    def closed(self) -> bool:
        """True once we closed the registration or EPMD dropped it."""
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Return when the registration is gone, by :meth:`close` or because EPMD dropped the socket."""
        await self._closed.wait()

    async def close(self) -> None:
        """Leave EPMD: closing the socket is how a name is unregistered."""
        if not self._watcher.done():
            self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        await _close_writer(self._writer)
        self._closed.set()

    async def _watch(self) -> None:
        try:
            while chunk := await self._reader.read(4096):
                log.warning("EPMD sent %d unexpected bytes on the registration of %s", len(chunk), self.name)
        except OSError as exc:
            log.warning("EPMD connection of %s failed: %s", self.name, exc)
        log.warning("EPMD dropped the registration of %s", self.name)
        self._writer.close()
        self._closed.set()


async def register(
    name: str,
    port: int,
    *,
    epmd_port: int,
    host: str = "127.0.0.1",
    timeout: float = 5.0,
) -> Registration:
    """Register ``name`` (short or full name) at distribution ``port``; the open result keeps it there."""
    short = alive_name(name)
    request = encode_alive2_req(short, port)
    reader, writer = await _open(host, epmd_port, timeout)
    try:
        async with asyncio.timeout(timeout):
            writer.write(request)
            await writer.drain()
            reply = await _read_reply(reader, parse_alive2_reply, "ALIVE2 reply", until_eof=False)
    except TimeoutError:
        await _close_writer(writer)
        raise EpmdError(f"EPMD on {host}:{epmd_port} did not answer ALIVE2_REQ within {timeout} s") from None
    except OSError as exc:
        await _close_writer(writer)
        raise EpmdError(f"EPMD on {host}:{epmd_port} dropped the registration of {short!r}: {exc}") from exc
    except BaseException:
        await _close_writer(writer)
        raise
    if reply.result != 0:
        await _close_writer(writer)
        raise EpmdError(
            f"the name {short!r} is in use in EPMD on {host}:{epmd_port} (result {reply.result}); "
            "pick another name or stop the node that holds it"
        )
    log.debug("registered %s at port %d in EPMD, creation %d", short, port, reply.creation)
    return Registration(short, reply.creation, reader, writer)
