"""The version 6 distribution handshake, both roles, as state machines on bytes.

Each side is fed with :meth:`receive_data`, asked for :meth:`next_event`
(``NEED_DATA`` when it waits for the peer or for the owner's answer) and
drained with :meth:`data_to_send`. No sockets and no clock: the owner owns the
transport and the timeout, so the same code serves TCP and, with
``length_bytes=4``, TLS. A failure raises :class:`~pynode.errors.HandshakeError`
naming the step as OTP's ``dist_util`` does; any status packet queued just
before (``snot_allowed``) is still in :meth:`data_to_send` for the owner to
write before closing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final, Literal, NoReturn, TypeAlias

from pynode.errors import HandshakeError, LocalProtocolError
from pynode.sansio import NEED_DATA, NeedData
from pynode.wire.flags import REQUIRED_FLAGS, DFlag, describe, missing_mandatory

__all__ = [
    "NEED_DATA",
    "AliveQuery",
    "HandshakeAcceptor",
    "HandshakeComplete",
    "HandshakeEvent",
    "HandshakeInitiator",
    "NeedData",
    "PeerNamed",
    "Status",
    "gen_digest",
]

Status: TypeAlias = Literal["ok", "ok_simultaneous", "nok", "alive", "not_allowed"]

_NAME: Final = struct.Struct(">QIH")  # 'N' Flags:64 Creation:32 NameLen:16 (after the tag)
_CHALLENGE: Final = struct.Struct(">QIIH")  # 'N' Flags:64 Challenge:32 Creation:32 NameLen:16
_U32: Final = struct.Struct(">I")
_MAX_PACKET: Final = 4096  # a name packet is under 300 bytes; anything near this is garbage
_MAX_NAME: Final = 1023


@dataclass(frozen=True, slots=True)
class PeerNamed:
    """Acceptor: the peer said who it is; the owner must now call ``send_status``."""

    name: str
    flags: DFlag
    creation: int


@dataclass(frozen=True, slots=True)
class AliveQuery:
    """Initiator: the peer already has a connection to us; answer with ``answer_alive``."""


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Both sides proved the cookie; ``flags`` (ours AND the peer's) govern the connection."""

    peer_name: str
    peer_flags: DFlag
    peer_creation: int
    flags: DFlag


HandshakeEvent: TypeAlias = PeerNamed | AliveQuery | HandshakeComplete


def gen_digest(challenge: int, cookie: str) -> bytes:
    """MD5 of the cookie followed by the challenge in decimal (unsigned 32-bit)."""
    return hashlib.md5(_cookie_bytes(cookie) + str(challenge & 0xFFFFFFFF).encode()).digest()


def _cookie_bytes(cookie: str) -> bytes:
    # The BEAM hashes the cookie atom's characters as bytes (latin-1); others as UTF-8.
    try:
        return cookie.encode("latin-1")
    except UnicodeEncodeError:
        return cookie.encode()


class _State(Enum):
    RECV_NAME = auto()
    AWAIT_STATUS = auto()  # acceptor: the owner must call send_status
    RECV_STATUS = auto()
    AWAIT_ALIVE_ANSWER = auto()  # initiator: the owner must call answer_alive
    RECV_ALIVE_ANSWER = auto()  # acceptor: waiting for 'strue' / 'sfalse'
    RECV_CHALLENGE = auto()
    RECV_CHALLENGE_REPLY = auto()
    RECV_CHALLENGE_ACK = auto()
    DONE = auto()
    FAILED = auto()


_OWNER_STATES: Final = frozenset({_State.AWAIT_STATUS, _State.AWAIT_ALIVE_ANSWER, _State.DONE})


class _Handshake:
    """Packet buffering and the failure rule shared by both roles."""

    def __init__(
        self,
        *,
        our_name: str,
        cookie: str,
        flags: DFlag,
        creation: int,
        challenge: int | None,
        length_bytes: int,
        state: _State,
    ) -> None:
        if length_bytes not in (2, 4):
            raise ValueError("length_bytes must be 2 (TCP) or 4 (TLS)")
        self.our_name = our_name
        self.cookie = cookie
        self.flags = DFlag(flags)
        self.creation = creation
        self.challenge = secrets.randbits(32) if challenge is None else challenge & 0xFFFFFFFF
        self._length = struct.Struct(">H" if length_bytes == 2 else ">I")
        self._state = state
        self._buf = bytearray()
        self._out = bytearray()
        self._error: HandshakeError | None = None

    # -- the public surface ------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes read from the peer (any chunking)."""
        self._buf += data

    def data_to_send(self) -> bytes:
        """Drain the bytes to write to the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> HandshakeEvent | NeedData:
        """The next event, or ``NEED_DATA``; raises :class:`HandshakeError` on failure."""
        while True:
            if self._error is not None:
                raise self._error
            if self._state in _OWNER_STATES:
                return NEED_DATA
            packet = self._next_packet()
            if packet is None:
                return NEED_DATA
            event = self._handle(packet)
            if event is not None:
                return event

    def receive_eof(self) -> None:
        """The peer closed the socket: raise the HandshakeError of the step we were at.

        After our challenge reply, a close is how OTP says the cookie was wrong.
        Nothing happens once the handshake is done.
        """
        if self._error is not None:
            raise self._error
        if self._state is _State.DONE:
            return
        reason = "connection closed by the peer"
        if self._state is _State.RECV_CHALLENGE_ACK:
            reason += " after our challenge reply: bad cookie"
        self._fail(self._step(), reason)

    def leftover(self) -> bytes:
        """Bytes received after the last handshake packet: the first distribution frames."""
        return bytes(self._buf) if self._state is _State.DONE else b""

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    # -- shared helpers ------------------------------------------------------------------

    def _handle(self, packet: bytes) -> HandshakeEvent | None:
        raise NotImplementedError

    def _step(self) -> str:
        return self._state.name.lower()

    def _next_packet(self) -> bytes | None:
        header = self._length.size
        buf = self._buf
        if len(buf) < header:
            return None
        (size,) = self._length.unpack_from(buf, 0)
        if size == 0 or size > _MAX_PACKET:
            self._fail(self._step(), f"handshake packet of {size} bytes")
        if len(buf) < header + size:
            return None
        packet = bytes(buf[header : header + size])
        del buf[: header + size]  # a handful of small packets: no offset bookkeeping needed
        return packet

    def _fail(self, step: str, reason: str) -> NoReturn:
        self._state = _State.FAILED
        self._error = HandshakeError(step, reason)
        raise self._error

    def _send_packet(self, payload: bytes) -> None:
        self._out += self._length.pack(len(payload))
        self._out += payload

    def _send_status(self, status: str) -> None:
        self._send_packet(b"s" + status.encode())

    def _complete(self, peer_name: str, peer_flags: DFlag, peer_creation: int) -> HandshakeComplete:
        self._state = _State.DONE
        return HandshakeComplete(peer_name, peer_flags, peer_creation, DFlag(self.flags & peer_flags))

    def _decode_name(self, raw: bytes, step: str) -> str:
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            self._fail(step, f"node name is not UTF-8: {raw!r}")
        alive, at, host = name.partition("@")
        if not (alive and at and host):
            self._fail(step, f"not a node name: {name!r}")
        return name


class HandshakeInitiator(_Handshake):
    """We dialled ``peer_name``: send our name, read the status, answer the challenge."""

    def __init__(
        self,
        *,
        our_name: str,
        cookie: str,
        flags: DFlag,
        creation: int,
        peer_name: str,
        challenge: int | None = None,
        length_bytes: int = 2,
    ) -> None:
        super().__init__(
            our_name=our_name,
            cookie=cookie,
            flags=flags,
            creation=creation,
            challenge=challenge,
            length_bytes=length_bytes,
            state=_State.RECV_STATUS,
        )
        self.peer_name = peer_name
        name = our_name.encode()
        self._send_packet(b"N" + _NAME.pack(int(self.flags), creation, len(name)) + name)
        self._peer: tuple[DFlag, int] | None = None

    def answer_alive(self, keep_going: bool) -> None:
        """Reply to :class:`AliveQuery`: ``True`` replaces the peer's old connection."""
        if self._state is not _State.AWAIT_ALIVE_ANSWER:
            raise LocalProtocolError("answer_alive() is only valid after an AliveQuery")
        if keep_going:
            self._send_status("true")
            self._state = _State.RECV_CHALLENGE
        else:
            self._send_status("false")
            self._state = _State.FAILED
            self._error = HandshakeError("recv_status", "alive: we kept the existing connection")

    def _handle(self, packet: bytes) -> HandshakeEvent | None:
        state = self._state
        if state is _State.RECV_STATUS:
            return self._on_status(packet)
        if state is _State.RECV_CHALLENGE:
            self._on_challenge(packet)
            return None
        assert state is _State.RECV_CHALLENGE_ACK
        return self._on_challenge_ack(packet)

    def _on_status(self, packet: bytes) -> HandshakeEvent | None:
        if packet[:1] != b"s":
            self._fail("recv_status", f"expected a status packet, got tag {packet[:1]!r}")
        status = packet[1:]
        if status in (b"ok", b"ok_simultaneous"):
            self._state = _State.RECV_CHALLENGE
            return None
        if status == b"alive":
            self._state = _State.AWAIT_ALIVE_ANSWER
            return AliveQuery()
        if status == b"nok":
            self._fail("recv_status", "nok: the peer keeps its own simultaneous connection attempt")
        if status == b"not_allowed":
            self._fail("recv_status", "not_allowed: the peer refused us (mandatory flags or policy)")
        if status.startswith(b"named:"):
            self._fail("recv_status", "named: answer, but we did not ask for a dynamic name")
        self._fail("recv_status", f"unknown status {status[:64]!r}")

    def _on_challenge(self, packet: bytes) -> None:
        step = "recv_challenge"
        tag = packet[:1]
        if tag == b"n":
            self._fail(step, "version 5 challenge ('n'); only version 6 ('N') is supported")
        if tag != b"N" or len(packet) < 1 + _CHALLENGE.size:
            self._fail(step, f"malformed challenge packet ({len(packet)} bytes, tag {tag!r})")
        flags, challenge, creation, name_len = _CHALLENGE.unpack_from(packet, 1)
        if len(packet) != 1 + _CHALLENGE.size + name_len:
            self._fail(step, f"name length {name_len} does not match the packet")
        name = self._decode_name(packet[1 + _CHALLENGE.size :], step)
        peer_flags = DFlag(flags)
        missing = missing_mandatory(peer_flags, REQUIRED_FLAGS)
        if missing:
            self._fail(step, f"mandatory flags missing: {describe(missing)}")
        if name != self.peer_name:
            self._fail(step, f"peer name mismatch: dialled {self.peer_name}, answered {name}")
        self._peer = (peer_flags, creation)
        digest = gen_digest(challenge, self.cookie)
        self._send_packet(b"r" + _U32.pack(self.challenge) + digest)
        self._state = _State.RECV_CHALLENGE_ACK

    def _on_challenge_ack(self, packet: bytes) -> HandshakeComplete:
        step = "recv_challenge_ack"
        if packet[:1] != b"a" or len(packet) != 17:
            self._fail(step, f"malformed challenge ack ({len(packet)} bytes)")
        if not hmac.compare_digest(packet[1:], gen_digest(self.challenge, self.cookie)):
            self._fail(step, "bad cookie")
        assert self._peer is not None
        return self._complete(self.peer_name, *self._peer)


class HandshakeAcceptor(_Handshake):
    """A peer dialled us: read its name, let the owner pick the status, check its reply."""

    def __init__(
        self,
        *,
        our_name: str,
        cookie: str,
        flags: DFlag,
        creation: int,
        challenge: int | None = None,
        length_bytes: int = 2,
    ) -> None:
        super().__init__(
            our_name=our_name,
            cookie=cookie,
            flags=flags,
            creation=creation,
            challenge=challenge,
            length_bytes=length_bytes,
            state=_State.RECV_NAME,
        )
        self._peer: PeerNamed | None = None

    @property
    def peer_name(self) -> str | None:
        """The peer's node name once its name packet has arrived."""
        return self._peer.name if self._peer is not None else None

    def send_status(self, status: Status) -> None:
        """Answer :class:`PeerNamed`: ``ok``/``ok_simultaneous`` go on, ``alive`` asks the peer,
        ``nok``/``not_allowed`` end the handshake (next_event raises once the status is drained)."""
        if self._state is not _State.AWAIT_STATUS:
            raise LocalProtocolError("send_status() is only valid after PeerNamed")
        self._send_status(status)
        if status in ("ok", "ok_simultaneous"):
            self._send_challenge()
        elif status == "alive":
            self._state = _State.RECV_ALIVE_ANSWER
        elif status in ("nok", "not_allowed"):
            self._state = _State.FAILED
            self._error = HandshakeError("send_status", f"we answered {status}")
        else:
            raise LocalProtocolError(f"unknown handshake status {status!r}")

    def _send_challenge(self) -> None:
        name = self.our_name.encode()
        head = _CHALLENGE.pack(int(self.flags), self.challenge, self.creation, len(name))
        self._send_packet(b"N" + head + name)
        self._state = _State.RECV_CHALLENGE_REPLY

    def _handle(self, packet: bytes) -> HandshakeEvent | None:
        state = self._state
        if state is _State.RECV_NAME:
            return self._on_name(packet)
        if state is _State.RECV_ALIVE_ANSWER:
            self._on_alive_answer(packet)
            return None
        assert state is _State.RECV_CHALLENGE_REPLY
        return self._on_challenge_reply(packet)

    def _on_name(self, packet: bytes) -> PeerNamed:
        step = "recv_name"
        tag = packet[:1]
        if tag == b"n":
            self._fail(step, "version 5 name packet ('n'); only version 6 ('N') is supported")
        if tag != b"N" or len(packet) < 1 + _NAME.size:
            self._fail(step, f"malformed name packet ({len(packet)} bytes, tag {tag!r})")
        flags, creation, name_len = _NAME.unpack_from(packet, 1)
        if name_len > _MAX_NAME or len(packet) != 1 + _NAME.size + name_len:
            self._fail(step, f"name length {name_len} does not match the packet")
        peer_flags = DFlag(flags)
        if peer_flags & DFlag.NAME_ME:
            self._send_status("not_allowed")
            self._fail(step, "the peer asks for a dynamic name (NAME_ME), which this node does not give")
        name = self._decode_name(packet[1 + _NAME.size :], step)
        missing = missing_mandatory(peer_flags, REQUIRED_FLAGS)
        if missing:
            self._send_status("not_allowed")
            self._fail(step, f"mandatory flags missing: {describe(missing)} (from {name})")
        self._peer = PeerNamed(name, peer_flags, creation)
        self._state = _State.AWAIT_STATUS
        return self._peer

    def _on_alive_answer(self, packet: bytes) -> None:
        if packet == b"strue":
            self._send_challenge()
        elif packet == b"sfalse":
            self._fail("recv_status", "alive: the peer keeps its existing connection")
        else:
            self._fail("recv_status", f"expected strue or sfalse, got {packet[:64]!r}")

    def _on_challenge_reply(self, packet: bytes) -> HandshakeComplete:
        step = "recv_challenge_reply"
        if packet[:1] != b"r" or len(packet) != 21:
            self._fail(step, f"malformed challenge reply ({len(packet)} bytes)")
        (peer_challenge,) = _U32.unpack_from(packet, 1)
        if not hmac.compare_digest(packet[5:], gen_digest(self.challenge, self.cookie)):
            self._fail(step, "bad cookie")
        self._send_packet(b"a" + gen_digest(peer_challenge, self.cookie))
        assert self._peer is not None
        return self._complete(self._peer.name, self._peer.flags, self._peer.creation)
