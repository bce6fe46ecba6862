"""EPMD requests and replies as bytes: no sockets here.

Every request is framed with a 2-byte length. Replies are not framed: an
ALIVE2 reply has a fixed size, while EPMD closes the connection after a
PORT2 reply or a NAMES reply. The parsers therefore take everything received
so far and answer :data:`NEED_DATA` while a reply is incomplete; the caller
decides what an end of stream at that point means.

Names travel as UTF-8 (ASCII in practice). OTP sends an atom's characters
as single bytes, so a name that is not valid UTF-8 is read as Latin-1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from pynode.errors import LocalProtocolError, RemoteProtocolError
from pynode.sansio import NEED_DATA, NeedData

__all__ = [
    "DEFAULT_EPMD_PORT",
    "NEED_DATA",
    "Alive2Reply",
    "EpmdTag",
    "NamesReply",
    "NeedData",
    "NodeAddress",
    "NodeType",
    "Port2Reply",
    "alive_name",
    "encode_alive2_req",
    "encode_names_req",
    "encode_port_please2_req",
    "parse_alive2_reply",
    "parse_names_reply",
    "parse_port2_reply",
]

DEFAULT_EPMD_PORT: Final = 4369
DIST_HIGHEST: Final = 6
"""Distribution protocol version 6 is the only one OTP 25+ speaks."""
DIST_LOWEST: Final = 5
"""What OTP nodes still announce as their lowest version."""
MAX_NAME_CHARS: Final = 255
"""A node name is an atom, and atoms hold at most 255 characters."""

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_ALIVE2_REQ_HEAD: Final = struct.Struct(">BHBBHHH")
_ALIVE2_X_RESP: Final = struct.Struct(">BBI")
_ALIVE2_RESP: Final = struct.Struct(">BBH")
_PORT2_HEAD: Final = struct.Struct(">BBHBBHHH")


class EpmdTag(IntEnum):
    """First byte of each EPMD request and reply."""

    ALIVE2_X_RESP = 118
    PORT2_RESP = 119
    ALIVE2_REQ = 120
    ALIVE2_RESP = 121
    PORT_PLEASE2_REQ = 122
    NAMES_REQ = 110


class NodeType(IntEnum):
    """Node type announced in ALIVE2_REQ; OTP sends NORMAL even for hidden nodes."""

    HIDDEN = 72
    NORMAL = 77


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """Where a registered node listens, as EPMD reported it in PORT2_RESP."""

    name: str
    port: int
    node_type: int
    protocol: int
    highest_version: int
    lowest_version: int
    extra: bytes


@dataclass(frozen=True, slots=True)
class Alive2Reply:
    """EPMD's answer to a registration; ``result`` 0 means registered."""

    result: int
    creation: int


@dataclass(frozen=True, slots=True)
class Port2Reply:
    """EPMD's answer to a lookup; ``address`` is None when ``result`` is non-zero (name unknown)."""

    result: int
    address: NodeAddress | None


@dataclass(frozen=True, slots=True)
class NamesReply:
    """EPMD's own port and the registered names with their ports."""

    epmd_port: int
    nodes: dict[str, int]


# -- requests --------------------------------------------------------------------------


def alive_name(name: str) -> str:
    """The short part of a node name (before '@'): the only part EPMD knows."""
    return name.partition("@")[0]


def _name_bytes(name: str) -> bytes:
    short = alive_name(name)
    if not short or len(short) > MAX_NAME_CHARS:
        raise LocalProtocolError(f"a node name needs 1 to {MAX_NAME_CHARS} characters before '@': {name!r}")
    return short.encode("utf-8")


def _frame(body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise LocalProtocolError(f"an EPMD request holds at most 65535 bytes, not {len(body)}")
    return _U16.pack(len(body)) + body


def encode_alive2_req(
    name: str,
    port: int,
    *,
    node_type: int = NodeType.NORMAL,
    protocol: int = 0,
    highest_version: int = DIST_HIGHEST,
    lowest_version: int = DIST_LOWEST,
    extra: bytes = b"",
) -> bytes:
    """ALIVE2_REQ registering ``name`` at ``port``, with the defaults an OTP node uses."""
    if not 0 < port <= 0xFFFF:
        raise LocalProtocolError(f"not a TCP port: {port}")
    encoded = _name_bytes(name)
    head = _ALIVE2_REQ_HEAD.pack(
        EpmdTag.ALIVE2_REQ, port, node_type, protocol, highest_version, lowest_version, len(encoded)
    )
    return _frame(head + encoded + _U16.pack(len(extra)) + extra)


def encode_port_please2_req(name: str) -> bytes:
    """PORT_PLEASE2_REQ asking where ``name`` listens."""
    return _frame(bytes((EpmdTag.PORT_PLEASE2_REQ,)) + _name_bytes(name))


def encode_names_req() -> bytes:
    """NAMES_REQ asking for every registered name."""
    return _frame(bytes((EpmdTag.NAMES_REQ,)))


# -- replies ---------------------------------------------------------------------------

Buffer = bytes | bytearray | memoryview


def _decode_name(raw: Buffer) -> str:
    data = bytes(raw)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _no_trailing(view: memoryview, end: int, what: str) -> None:
    if len(view) > end:
        raise RemoteProtocolError(f"{len(view) - end} unexpected bytes after {what} from EPMD")


def parse_alive2_reply(data: Buffer) -> Alive2Reply | NeedData:
    """ALIVE2_X_RESP (32-bit creation) or the older ALIVE2_RESP (16-bit creation)."""
    view = memoryview(data)
    if not view:
        return NEED_DATA
    tag = view[0]
    if tag == EpmdTag.ALIVE2_X_RESP:
        layout = _ALIVE2_X_RESP
    elif tag == EpmdTag.ALIVE2_RESP:
        layout = _ALIVE2_RESP
    else:
        raise RemoteProtocolError(f"EPMD answered ALIVE2_REQ with tag {tag}, not 118 or 121")
    if len(view) < layout.size:
        return NEED_DATA
    _no_trailing(view, layout.size, "the ALIVE2 reply")
    _, result, creation = layout.unpack_from(view)
    return Alive2Reply(result=result, creation=creation)


def parse_port2_reply(data: Buffer) -> Port2Reply | NeedData:
    """PORT2_RESP: ``119, Result`` and, when Result is 0, the node's address."""
    view = memoryview(data)
    if len(view) < 2:
        if view and view[0] != EpmdTag.PORT2_RESP:
            raise RemoteProtocolError(f"EPMD answered PORT_PLEASE2_REQ with tag {view[0]}, not 119")
        return NEED_DATA
    if view[0] != EpmdTag.PORT2_RESP:
        raise RemoteProtocolError(f"EPMD answered PORT_PLEASE2_REQ with tag {view[0]}, not 119")
    if view[1] != 0:
        _no_trailing(view, 2, "a failed PORT2_RESP")
        return Port2Reply(result=view[1], address=None)
    if len(view) < _PORT2_HEAD.size:
        return NEED_DATA
    _, _, port, node_type, protocol, high, low, name_len = _PORT2_HEAD.unpack_from(view)
    name_end = _PORT2_HEAD.size + name_len
    if len(view) < name_end + 2:
        return NEED_DATA
    (extra_len,) = _U16.unpack_from(view, name_end)
    end = name_end + 2 + extra_len
    if len(view) < end:
        return NEED_DATA
    _no_trailing(view, end, "PORT2_RESP")
    address = NodeAddress(
        name=_decode_name(view[_PORT2_HEAD.size : name_end]),
        port=port,
        node_type=node_type,
        protocol=protocol,
        highest_version=high,
        lowest_version=low,
        extra=bytes(view[name_end + 2 : end]),
    )
    return Port2Reply(result=0, address=address)


def parse_names_reply(data: Buffer) -> NamesReply:
    """NAMES reply: ``EPMDPort:32`` then ``name X at port N`` lines. Call it once EPMD has closed."""
    view = memoryview(data)
    if len(view) < _U32.size:
        raise RemoteProtocolError(f"EPMD's NAMES reply ended after {len(view)} bytes, before its port")
    (epmd_port,) = _U32.unpack_from(view)
    nodes: dict[str, int] = {}
    for line in bytes(view[_U32.size :]).split(b"\n"):
        if line:
            name, port = _parse_names_line(line)
            nodes[name] = port
    return NamesReply(epmd_port=epmd_port, nodes=nodes)


def _parse_names_line(line: bytes) -> tuple[str, int]:
    prefix = b"name "
    name, sep, port = line.rpartition(b" at port ")
    if not sep or not name.startswith(prefix) or len(name) == len(prefix) or not port.isdigit():
        raise RemoteProtocolError(f"malformed line in EPMD's NAMES reply: {line!r}")
    return _decode_name(name[len(prefix) :]), int(port)
