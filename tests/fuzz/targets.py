"""Fuzz targets: one function of bytes per part a peer can reach, and the invariants each must keep.

Each target takes one input and returns normally, or raises ``AssertionError``
(an invariant broke) or any exception that is not one of the part's
documented errors (a crash). The documented errors are caught here: they are
the part saying "bad input" the way it promises to. The same functions serve
the atheris scripts beside this file (raw bytes, coverage-guided) and the
pytest replay of the corpus (``tests/test_fuzz.py``).

Invariants beyond "no other exception":
- decode: inflated bytes never exceed ``max_size`` (zlib is watched), a
  decoded term encodes back to itself, and ``format_term`` keeps its budget;
- handshakes: only HandshakeError, whatever the peer sends and however it
  is chunked, and a finished handshake hands over exactly its leftover bytes;
- framing: only RemoteProtocolError; unfinished fragments never hold more
  than ``max_fragment_bytes`` nor number more than ``max_fragment_sequences``;
- connection: the bytes go through a real Connection of a started Node
  (reader, control parsing, dispatch to the node's processes); a protocol
  error is the only exception and the node keeps running.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import zlib
from collections.abc import Callable
from typing import Any
from unittest import mock

from pynode import epmd
from pynode.errors import CodecError, EpmdError, HandshakeError, RemoteProtocolError
from pynode.etf.decode import decode, decode_at
from pynode.etf.encode import encode
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Pid, Term
from pynode.net.channel import Connection
from pynode.node import Node
from pynode.wire.control import parse_control
from pynode.wire.flags import DEFAULT_FLAGS, MANDATORY_OTP25, DFlag
from pynode.wire.framing import NEED_DATA, NO_PAYLOAD, BadPayload, DistMessage, DistReader, Tick
from pynode.wire.handshake import (
    AliveQuery,
    HandshakeAcceptor,
    HandshakeComplete,
    HandshakeInitiator,
    PeerNamed,
    gen_digest,
)

__all__ = ["TARGETS"]

MAX_SIZE = 1 << 16  # small limits, so the fuzzer can reach them
MAX_FRAGMENT_BYTES = 1 << 14
MAX_FRAGMENT_SEQUENCES = 8
COOKIE = "fuzzcookie"
US = "fuzz@127.0.0.1"
PEER = "peer@127.0.0.1"
OUR_CHALLENGE = 0x5EED5EED


# -- zlib, watched ----------------------------------------------------------------------------

_watch_limit: int | None = None
"""While a target runs: the most any inflater may be asked for, or produce (None: not watching)."""


class _WatchedInflater:
    """zlib's decompressobj, checking every output against the limit the targets gave the decoder."""

    def __init__(self) -> None:
        self._inner = zlib.decompressobj()

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        limit = _watch_limit
        if limit is not None:
            assert 0 < max_length <= limit, f"inflating with max_length {max_length} (limit {limit})"
        out = self._inner.decompress(data, max_length)
        assert not max_length or len(out) <= max_length, f"zlib inflated {len(out)} bytes past {max_length}"
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _WatchedZlib:
    error = zlib.error

    @staticmethod
    def decompressobj() -> _WatchedInflater:
        return _WatchedInflater()


# The decoder module itself (``pynode.etf.decode`` the attribute is the function of that name).
sys.modules["pynode.etf.decode"].zlib = _WatchedZlib  # type: ignore[attr-defined]


def _watched(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        global _watch_limit
        _watch_limit = MAX_SIZE
        try:
            target(data)
        finally:
            _watch_limit = None

    run.__name__ = run.__qualname__ = target.__name__
    run.__doc__ = target.__doc__
    return run


# -- targets ----------------------------------------------------------------------------------


def _check_term(term: Term) -> None:
    again = decode(encode(term), max_size=1 << 30)
    assert again == term, f"{format_term(term, limit=200)} does not encode back to itself"
    text = format_term(term, limit=120)
    assert len(text) <= 120


def fuzz_decode(data: bytes) -> None:
    """A whole term (``131`` first), and a term at an offset as framing reads it."""
    try:
        term = decode(data, max_size=MAX_SIZE)
    except CodecError:
        pass
    else:
        _check_term(term)
    if len(data) > 1:
        try:
            term, end = decode_at(memoryview(data), 1, max_size=MAX_SIZE)
        except CodecError:
            return
        assert 1 < end <= len(data)
        _check_term(term)


def _chunks(data: bytes, selector: int) -> list[bytes]:
    """``data`` whole, byte by byte, or in pieces of 3 or 7 bytes (the selector picks)."""
    size = (len(data) or 1, 1, 3, 7)[selector & 3]
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _packet(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


def _run_handshake(side: HandshakeInitiator | HandshakeAcceptor, chunks: list[bytes], status: str) -> bytes | None:
    """Feed the chunks; answer the owner's questions; the leftover bytes when it completes."""
    for chunk in chunks:
        side.receive_data(chunk)
        for _ in range(64):
            event = side.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, PeerNamed):
                assert isinstance(side, HandshakeAcceptor)
                side.send_status(status)  # type: ignore[arg-type]
            elif isinstance(event, AliveQuery):
                assert isinstance(side, HandshakeInitiator)
                side.answer_alive(status != "nok")
            else:
                assert isinstance(event, HandshakeComplete), event
                assert side.done
                return side.leftover()
        else:
            raise AssertionError("the handshake produced events without end")
        side.data_to_send()
    side.receive_eof()
    return None


_STATUSES = ("ok", "ok_simultaneous", "nok", "alive", "not_allowed")


def fuzz_handshake_acceptor(data: bytes) -> None:
    """A peer dials us. The first byte chooses a valid prefix (name, name and reply), the status, the chunking."""
    if not data:
        return
    selector, rest = data[0], data[1:]
    prefix = b""
    if selector & 0x30:
        name = PEER.encode()
        flags = int(DEFAULT_FLAGS) if selector & 0x40 else int(MANDATORY_OTP25)
        prefix = _packet(b"N" + struct.pack(">QIH", flags, 7, len(name)) + name)
        if selector & 0x20 and selector & 0x10:
            prefix += _packet(b"r" + struct.pack(">I", 99) + gen_digest(OUR_CHALLENGE, COOKIE))
    status = _STATUSES[(selector >> 2) & 3] if not selector & 0x80 else "alive"
    side = HandshakeAcceptor(our_name=US, cookie=COOKIE, flags=DEFAULT_FLAGS, creation=1, challenge=OUR_CHALLENGE)
    try:
        leftover = _run_handshake(side, _chunks(prefix + rest, selector), status)
    except HandshakeError:
        return
    if leftover is not None:
        fuzz_framing(leftover)


def fuzz_handshake_initiator(data: bytes) -> None:
    """We dial a peer. The first byte chooses a valid prefix (status, challenge, ack) and the chunking."""
    if not data:
        return
    selector, rest = data[0], data[1:]
    prefix = b""
    if selector & 0x30:
        prefix = _packet(b"sok" if not selector & 0x40 else b"salive")
        if selector & 0x20:
            name = PEER.encode()
            prefix += _packet(b"N" + struct.pack(">QIIH", int(DEFAULT_FLAGS), 4242, 5, len(name)) + name)
            if selector & 0x10:
                prefix += _packet(b"a" + gen_digest(OUR_CHALLENGE, COOKIE))
    side = HandshakeInitiator(
        our_name=US, cookie=COOKIE, flags=DEFAULT_FLAGS, creation=1, peer_name=PEER, challenge=OUR_CHALLENGE
    )
    try:
        leftover = _run_handshake(side, _chunks(prefix + rest, selector), "ok" if selector & 0x80 else "nok")
    except HandshakeError:
        return
    if leftover is not None:
        fuzz_framing(leftover)


def fuzz_framing(data: bytes) -> None:
    """Frames after the handshake, in both header modes, any chunking (the first byte picks)."""
    if not data:
        return
    selector, rest = data[0], data[1:]
    flags = DEFAULT_FLAGS if selector & 0x80 else DFlag(MANDATORY_OTP25)
    reader = DistReader(
        flags,
        max_message_size=MAX_SIZE,
        max_fragment_bytes=MAX_FRAGMENT_BYTES,
        max_fragment_sequences=MAX_FRAGMENT_SEQUENCES,
    )
    try:
        for chunk in _chunks(rest, selector):
            reader.receive_data(chunk)
            for _ in range(len(rest) + 1):
                event = reader.next_event()
                _check_reader(reader)
                if event is NEED_DATA:
                    break
                assert type(event) in (DistMessage, BadPayload, Tick), event
                if type(event) is DistMessage:
                    format_term(event.control.to_term(), limit=100)
            else:
                raise AssertionError("the reader produced events without end")
    except RemoteProtocolError:
        _check_reader(reader)
    reader.close()
    assert reader.fragment_bytes == 0 and reader.pending_fragments == 0


def _check_reader(reader: DistReader) -> None:
    assert reader.fragment_bytes <= MAX_FRAGMENT_BYTES, reader.fragment_bytes
    assert reader.pending_fragments <= MAX_FRAGMENT_SEQUENCES, reader.pending_fragments


def fuzz_control(data: bytes) -> None:
    """A control term (and a payload term) parsed, then dispatched to a running node."""
    try:
        term, offset = decode_at(data, 0, max_size=MAX_SIZE) if data else (None, 0)
    except CodecError:
        return
    try:
        control = parse_control(_localise(term))
    except RemoteProtocolError:
        return
    payload: Term = None
    if control.HAS_PAYLOAD:
        try:
            payload = _localise(decode_at(data, offset, max_size=MAX_SIZE)[0]) if offset < len(data) else Atom("x")
        except CodecError:
            return
    _node_harness().dispatch(control, payload)


def fuzz_connection(data: bytes) -> None:
    """Raw bytes into an established Connection of a started node: the reader, then dispatch."""
    _node_harness().feed(data)


# -- a running node for dispatch ----------------------------------------------------------------


class _Transport:
    """What a Connection writes to: kept (and cleared) by the harness, never a socket."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class _Protocol:
    def __init__(self) -> None:
        self.transport = _Transport()


class _NodeHarness:
    """A started Node (no EPMD) on its own event loop, and a connection from PEER made by hand."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.node = Node(US, COOKIE, listen_host="127.0.0.1")
        self.loop.run_until_complete(self.node.start(register_epmd=False))
        self.creation = self.node.creation
        self.conn: Any = None

    def _connection(self) -> Any:
        if self.conn is None or self.conn.closed:

            async def make() -> Any:
                return Connection(
                    self.node.net,
                    _Protocol(),  # type: ignore[arg-type]
                    peer_name=PEER,
                    peer_creation=5,
                    flags=DEFAULT_FLAGS,
                    net_ticktime=60.0,
                    limits=self.node.net.limits,
                    log_budget=self.node.net.log_budget,
                )

            self.conn = self.loop.run_until_complete(make())
            self.node.net.connection_up(self.conn)
        return self.conn

    def _run(self, step: Callable[[], None]) -> None:
        """``step()`` inside the loop (as a socket callback would run), then let the processes run.

        A term may name a pid on any node, and the node dials the nodes it sends to, as the
        BEAM does; here every EPMD lookup fails at once, so the harness never leaves the process.
        """

        async def go() -> None:
            step()
            for _ in range(3):
                await asyncio.sleep(0)

        with mock.patch.object(epmd, "port_please", _no_epmd):
            self.loop.run_until_complete(go())
        # A peer holding the cookie may kill the node's processes (exit/2 with kill); restarting
        # them is supervision's job. Later inputs get a node with its processes again.
        if self.node.whereis(Atom("net_kernel")) is None:
            self.conn = None
            self.loop.run_until_complete(self.node.stop())
            self.__init__()  # type: ignore[misc]

    def dispatch(self, control: Any, payload: Term) -> None:
        conn = self._connection()
        self._run(lambda: self.node.net.dispatch_control(conn, control, payload if control.HAS_PAYLOAD else NO_PAYLOAD))

    def feed(self, data: bytes) -> None:
        conn = self._connection()

        def step() -> None:
            try:
                conn.feed(data)
            except RemoteProtocolError:
                conn.close()

        self._run(step)


async def _no_epmd(*args: object, **kwargs: object) -> None:
    raise EpmdError("the fuzz harness looks no node up")


_HARNESS: _NodeHarness | None = None


def _node_harness() -> _NodeHarness:
    global _HARNESS
    if _HARNESS is None:
        _HARNESS = _NodeHarness()
    return _HARNESS


def _localise(term: Term) -> Term:
    """Pids on US get the running node's creation, so inputs can name its processes."""
    if type(term) is Pid and term.node == US:
        return Pid(term.node, term.id, term.serial, _node_harness().creation)
    if type(term) is tuple:
        return tuple(_localise(t) for t in term)
    return term


TARGETS: dict[str, Callable[[bytes], None]] = {
    name: _watched(target)
    for name, target in {
        "decode": fuzz_decode,
        "handshake_acceptor": fuzz_handshake_acceptor,
        "handshake_initiator": fuzz_handshake_initiator,
        "framing": fuzz_framing,
        "control": fuzz_control,
        "connection": fuzz_connection,
    }.items()
}
