"""Distribution frames after the handshake: ``Len:32`` frames, ticks, headers, fragments.

The header mode comes from the negotiated flags. Without FRAGMENTS (and we
never negotiate the atom cache) every message is ``112, 131 Control, [131
Message]``; with FRAGMENTS it is ``131, 68, 0, Control, Message`` (no 131 before
each term), and a big message is cut into ``131, 69`` and ``131, 70`` fragments
that may interleave with other messages. The reader accepts either header
form whatever the flags say: only the writer must match what the peer expects.

A bad payload term costs one message (:class:`BadPayload`); a bad control
term, header or fragment sequence is a :class:`RemoteProtocolError` and costs
the connection, as on the BEAM.

Limits (see :mod:`pynode.limits`): a frame, a joined fragment sequence and the
inflated form of a compressed term are each at most ``max_message_size``
bytes (a compressed term is refused on its declared size and inflated never
past it, so a lie costs at most the limit); the unfinished sequences of one
connection hold at most ``max_fragment_bytes`` bytes and number at most
``max_fragment_sequences``. Breaking a frame or fragment limit costs the
connection; a payload that inflates past the limit costs its message.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pynode.errors import CodecError, LocalProtocolError, RemoteProtocolError
from pynode.etf.decode import decode_at
from pynode.etf.encode import encode_into
from pynode.etf.types import Term
from pynode.limits import DEFAULT_LIMITS
from pynode.wire.control import ControlMessage, parse_control
from pynode.wire.flags import DFlag
from pynode.wire.handshake import NEED_DATA, NeedData

__all__ = [
    "NEED_DATA",
    "NO_PAYLOAD",
    "TICK",
    "TICK_FRAME",
    "BadPayload",
    "DistMessage",
    "DistReader",
    "DistWriter",
    "NeedData",
    "NoPayload",
    "Tick",
]

TICK_FRAME: Final = b"\x00\x00\x00\x00"

_VERSION: Final = 131
_PASS_THROUGH: Final = 112  # 'p'
_HEADER: Final = 68  # DIST_HEADER
_FRAG_HEADER: Final = 69  # DIST_FRAG_HEADER
_FRAG_CONT: Final = 70  # DIST_FRAG_CONT

_U32: Final = struct.Struct(">I")
_FRAG: Final = struct.Struct(">QQ")  # SeqId:64 FragId:64
_FRAG_HEAD_SIZE: Final = 2 + _FRAG.size  # 131, 69|70, SeqId, FragId
_COMPACT_AT: Final = 1 << 16
# Frames up to this size are copied out as bytes, which the decoder reads faster
# than a memoryview (small slices cost a third); larger ones are read in place.
_COPY_UNDER: Final = 1 << 16

_Frame = bytes | memoryview


class NoPayload(enum.Enum):
    """Sentinel type: the control message carries no second term (LINK, MONITOR_P, ...).

    An enum of one member, so that ``payload is NO_PAYLOAD`` narrows ``Term | NoPayload``.
    """

    NO_PAYLOAD = "NO_PAYLOAD"

    def __repr__(self) -> str:
        return "NO_PAYLOAD"


NO_PAYLOAD: Final = NoPayload.NO_PAYLOAD


@dataclass(frozen=True, slots=True)
class Tick:
    """An empty frame: the peer is alive."""


TICK: Final = Tick()


@dataclass(frozen=True, slots=True)
class DistMessage:
    """One complete message; ``payload`` is ``NO_PAYLOAD`` for control-only operations."""

    control: ControlMessage
    payload: Term | NoPayload


_new = object.__new__
_SET_CONTROL, _SET_PAYLOAD = (vars(DistMessage)[f].__set__ for f in ("control", "payload"))


def _message_by_slots(control: ControlMessage, payload: Term | NoPayload) -> DistMessage:
    """``DistMessage(control, payload)`` made by filling its two slots: the same object, at 60% of the cost."""
    message = _new(DistMessage)
    _SET_CONTROL(message, control)
    _SET_PAYLOAD(message, payload)
    return message


def _slots_can_be_filled() -> bool:
    """False in the compiled form of this module, whose classes refuse ``object.__new__``; there the
    class's own constructor is the fast one."""
    try:
        _new(DistMessage)
    except TypeError:
        return False
    return True


_message: Callable[[ControlMessage, Term | NoPayload], DistMessage] = (
    _message_by_slots if _slots_can_be_filled() else DistMessage
)


@dataclass(frozen=True, slots=True)
class BadPayload:
    """A message whose payload term could not be decoded; the owner drops it and logs."""

    control: ControlMessage
    error: CodecError


class _Reassembly:
    """The fragments received so far of one message, collected and joined once."""

    __slots__ = ("chunks", "next_frag", "size")

    def __init__(self, frag_id: int, chunk: bytes) -> None:
        self.chunks = [chunk]
        self.next_frag = frag_id - 1
        self.size = len(chunk)


class DistReader:
    """Turns the byte stream of an established connection into events."""

    def __init__(
        self,
        flags: DFlag,
        *,
        max_message_size: int = DEFAULT_LIMITS.max_message_size,
        max_fragment_bytes: int = DEFAULT_LIMITS.max_fragment_bytes,
        max_fragment_sequences: int = DEFAULT_LIMITS.max_fragment_sequences,
    ) -> None:
        if min(max_message_size, max_fragment_bytes, max_fragment_sequences) < 1:
            raise ValueError("reader limits must be positive")
        self.flags = flags
        self.max_message_size = max_message_size
        self.max_fragment_bytes = max_fragment_bytes
        self.max_fragment_sequences = max_fragment_sequences
        self._buf = bytearray()
        self._pos = 0
        self._partial: dict[int, _Reassembly] = {}
        self._fragment_bytes = 0

    def close(self) -> None:
        """The connection is gone: let go of buffered bytes and unfinished fragments."""
        self._buf = bytearray()
        self._pos = 0
        self._partial.clear()
        self._fragment_bytes = 0

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes read from the socket, in any chunking."""
        buf, pos = self._buf, self._pos
        if pos == len(buf):
            self._buf = bytearray(data)
            self._pos = 0
        elif pos >= _COMPACT_AT and pos * 2 >= len(buf):
            self._buf = buf[pos:] + data
            self._pos = 0
        else:
            try:
                buf += data
            except BufferError:  # a view of the old buffer is still alive somewhere
                self._buf = buf[pos:] + data
                self._pos = 0

    def next_event(self) -> Tick | DistMessage | BadPayload | NeedData:
        """The next complete event, or ``NEED_DATA``."""
        while True:
            buf, pos = self._buf, self._pos
            if len(buf) - pos < 4:
                return NEED_DATA
            (size,) = _U32.unpack_from(buf, pos)
            if size == 0:
                self._pos = pos + 4
                return TICK
            if size > self.max_message_size:
                raise RemoteProtocolError(f"frame of {size} bytes exceeds max_message_size ({self.max_message_size})")
            end = pos + 4 + size
            if len(buf) < end:
                return NEED_DATA
            self._pos = end
            frame = bytes(buf[pos + 4 : end]) if size <= _COPY_UNDER else memoryview(buf)[pos + 4 : end]
            event = self._frame(frame)
            if event is not None:
                return event

    @property
    def pending_fragments(self) -> int:
        """How many fragmented messages are partly received."""
        return len(self._partial)

    @property
    def fragment_bytes(self) -> int:
        """Bytes held by partly received fragmented messages."""
        return self._fragment_bytes

    # -- one frame -----------------------------------------------------------------------

    def _frame(self, frame: _Frame) -> DistMessage | BadPayload | None:
        first = frame[0]
        if first == _PASS_THROUGH:
            return _pass_through(frame, self.max_message_size)
        if first != _VERSION or len(frame) < 3:
            raise RemoteProtocolError(f"bad distribution header {bytes(frame[:3])!r}")
        kind = frame[1]
        if kind == _HEADER:
            if frame[2] != 0:
                raise RemoteProtocolError("atom cache references in a header; the atom cache is not in use")
            return _body(frame, 3, self.max_message_size)
        if kind == _FRAG_HEADER:
            return self._first_fragment(frame)
        if kind == _FRAG_CONT:
            return self._next_fragment(frame)
        raise RemoteProtocolError(f"unknown distribution header kind {kind}")

    def _first_fragment(self, frame: _Frame) -> DistMessage | BadPayload | None:
        if len(frame) < _FRAG_HEAD_SIZE + 1:
            raise RemoteProtocolError("truncated first fragment header")
        seq, frag = _FRAG.unpack_from(frame, 2)
        if frag == 0:
            raise RemoteProtocolError("fragment id 0")
        if frame[_FRAG_HEAD_SIZE] != 0:
            raise RemoteProtocolError("atom cache references in a fragment header; the cache is not in use")
        if seq in self._partial:
            raise RemoteProtocolError(f"fragment sequence {seq} started twice")
        if frag == 1:
            return _body(frame, _FRAG_HEAD_SIZE + 1, self.max_message_size)
        if len(self._partial) >= self.max_fragment_sequences:
            raise RemoteProtocolError(
                f"more than {self.max_fragment_sequences} unfinished fragment sequences (max_fragment_sequences)"
            )
        self._hold(len(frame) - _FRAG_HEAD_SIZE - 1)
        self._partial[seq] = _Reassembly(frag, bytes(frame[_FRAG_HEAD_SIZE + 1 :]))
        return None

    def _hold(self, size: int) -> None:
        """Count ``size`` more bytes of unfinished fragments against max_fragment_bytes."""
        self._fragment_bytes += size
        if self._fragment_bytes > self.max_fragment_bytes:
            raise RemoteProtocolError(
                f"unfinished fragments hold over {self.max_fragment_bytes} bytes (max_fragment_bytes)"
            )

    def _next_fragment(self, frame: _Frame) -> DistMessage | BadPayload | None:
        if len(frame) < _FRAG_HEAD_SIZE:
            raise RemoteProtocolError("truncated fragment header")
        seq, frag = _FRAG.unpack_from(frame, 2)
        partial = self._partial.get(seq)
        if partial is None:
            raise RemoteProtocolError(f"fragment of unknown sequence {seq}")
        if frag != partial.next_frag:
            raise RemoteProtocolError(f"sequence {seq}: fragment {frag} arrived, expected {partial.next_frag}")
        size = len(frame) - _FRAG_HEAD_SIZE
        partial.size += size
        if partial.size > self.max_message_size:
            raise RemoteProtocolError(f"fragmented message exceeds {self.max_message_size} bytes (max_message_size)")
        self._hold(size)
        partial.chunks.append(bytes(frame[_FRAG_HEAD_SIZE:]))
        if frag > 1:
            partial.next_frag = frag - 1
            return None
        del self._partial[seq]
        self._fragment_bytes -= partial.size
        return _body(b"".join(partial.chunks), 0, self.max_message_size)


def _pass_through(frame: _Frame, max_size: int) -> DistMessage | BadPayload:
    """``112, 131 Control, [131 Message]``."""
    if len(frame) < 2 or frame[1] != _VERSION:
        raise RemoteProtocolError("pass-through frame without a version byte before the control term")
    return _body(frame, 2, max_size, versioned=True)


def _body(frame: _Frame, offset: int, max_size: int, *, versioned: bool = False) -> DistMessage | BadPayload:
    """``Control, Message``: without version bytes (header and fragment modes), or with one before the payload."""
    control, offset = _control(frame, offset, max_size)
    end = len(frame)
    if not control.HAS_PAYLOAD:
        if offset != end:
            raise RemoteProtocolError(f"{control.OP.name}: {end - offset} bytes after the control term")
        return _message(control, NO_PAYLOAD)
    if offset >= end or (versioned and frame[offset] != _VERSION):
        missing = "payload missing or without a version byte" if versioned else "payload missing"
        raise RemoteProtocolError(f"{control.OP.name}: {missing}")
    return _payload(frame, offset + versioned, control, max_size)


def _control(frame: _Frame, offset: int, max_size: int) -> tuple[ControlMessage, int]:
    try:
        term, offset = decode_at(frame, offset, max_size=max_size)
    except CodecError as exc:
        raise RemoteProtocolError(f"undecodable control term: {exc}") from None
    return parse_control(term), offset


def _payload(frame: _Frame, offset: int, control: ControlMessage, max_size: int) -> DistMessage | BadPayload:
    try:
        payload, offset = decode_at(frame, offset, max_size=max_size)
    except CodecError as exc:
        # Drop the traceback: its frames hold views of the reader's buffer.
        return BadPayload(control, exc.with_traceback(None))
    if offset != len(frame):
        return BadPayload(control, CodecError(f"{len(frame) - offset} bytes after the payload term"))
    return _message(control, payload)


class DistWriter:
    """Encodes control messages (and payloads) into complete frames."""

    def __init__(self, flags: DFlag, *, fragment_size: int = 65536) -> None:
        if fragment_size < 1:
            raise ValueError("fragment_size must be positive")
        self.flags = flags
        self.fragments = bool(flags & DFlag.FRAGMENTS)
        self.fragment_size = fragment_size
        self._seq = 0

    def encode(self, control: ControlMessage, payload: Term | NoPayload = NO_PAYLOAD) -> list[bytes]:
        """Frames with their length prefix: one, or a fragment sequence for a big message."""
        if (payload is NO_PAYLOAD) == control.HAS_PAYLOAD:
            raise LocalProtocolError(f"{control.OP.name} {'needs' if control.HAS_PAYLOAD else 'takes no'} payload")
        if not self.fragments:
            out = bytearray(b"\x00\x00\x00\x00\x70\x83")
            encode_into(out, control.to_term())
            if payload is not NO_PAYLOAD:
                out.append(_VERSION)
                encode_into(out, payload)
            return [_with_length(out)]
        out = bytearray(b"\x00\x00\x00\x00\x83\x44\x00")
        encode_into(out, control.to_term())
        if payload is not NO_PAYLOAD:
            encode_into(out, payload)
        if len(out) - 7 <= self.fragment_size:
            return [_with_length(out)]
        return self._fragment(memoryview(out)[7:])

    def _fragment(self, body: memoryview) -> list[bytes]:
        size = self.fragment_size
        count = -(-len(body) // size)
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFFFFFFFFFF
        frames = []
        for index in range(count):
            chunk = body[index * size : (index + 1) * size]
            frag_id = count - index
            ids = _FRAG.pack(seq, frag_id)
            # The first fragment (69) carries the empty atom cache header byte.
            head = b"\x83\x45" + ids + b"\x00" if index == 0 else b"\x83\x46" + ids
            frames.append(b"".join((_U32.pack(len(head) + len(chunk)), head, chunk)))
        return frames


def _with_length(out: bytearray) -> bytes:
    _U32.pack_into(out, 0, len(out) - 4)
    return bytes(out)
