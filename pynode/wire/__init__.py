"""The distribution protocol, sans-IO: flags, handshake, framing, ticks, control messages.

Nothing here opens a socket or reads a clock; ``pynode.net`` drives these
cores over an asyncio transport.
"""

from pynode.wire.control import ControlMessage, has_payload, parse_control
from pynode.wire.flags import (
    DEFAULT_FLAGS,
    MANDATORY_OTP25,
    MANDATORY_OTP26,
    REQUIRED_FLAGS,
    DFlag,
    describe,
    missing_mandatory,
)
from pynode.wire.framing import (
    NO_PAYLOAD,
    TICK,
    TICK_FRAME,
    BadPayload,
    DistMessage,
    DistReader,
    DistWriter,
    NoPayload,
    Tick,
)
from pynode.wire.handshake import (
    NEED_DATA,
    AliveQuery,
    HandshakeAcceptor,
    HandshakeComplete,
    HandshakeEvent,
    HandshakeInitiator,
    NeedData,
    PeerNamed,
    gen_digest,
)
from pynode.wire.ticks import TickAction, TickTimer

__all__ = [
    "DEFAULT_FLAGS",
    "MANDATORY_OTP25",
    "MANDATORY_OTP26",
    "NEED_DATA",
    "NO_PAYLOAD",
    "REQUIRED_FLAGS",
    "TICK",
    "TICK_FRAME",
    "AliveQuery",
    "BadPayload",
    "ControlMessage",
    "DFlag",
    "DistMessage",
    "DistReader",
    "DistWriter",
    "HandshakeAcceptor",
    "HandshakeComplete",
    "HandshakeEvent",
    "HandshakeInitiator",
    "NeedData",
    "NoPayload",
    "PeerNamed",
    "Tick",
    "TickAction",
    "TickTimer",
    "describe",
    "gen_digest",
    "has_payload",
    "missing_mandatory",
    "parse_control",
]
