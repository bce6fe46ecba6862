"""Distribution capability flags, exchanged in the handshake.

Values are the ones DISTRIBUTION.md records from running OTP 25 and 28
nodes (where they differ from the protocol guide, the running system wins).
"""

from __future__ import annotations

from enum import IntFlag
from typing import Final

__all__ = [
    "DEFAULT_FLAGS",
    "MANDATORY_OTP25",
    "MANDATORY_OTP26",
    "REQUIRED_FLAGS",
    "DFlag",
    "describe",
    "missing_mandatory",
]


class DFlag(IntFlag):
    """One bit per capability; a 64-bit field on the wire (unknown bits are kept)."""

    PUBLISHED = 0x1
    ATOM_CACHE = 0x2
    EXTENDED_REFERENCES = 0x4
    DIST_MONITOR = 0x8
    FUN_TAGS = 0x10
    DIST_MONITOR_NAME = 0x20
    HIDDEN_ATOM_CACHE = 0x40
    NEW_FUN_TAGS = 0x80
    EXTENDED_PIDS_PORTS = 0x100
    EXPORT_PTR_TAG = 0x200
    BIT_BINARIES = 0x400
    NEW_FLOATS = 0x800
    UNICODE_IO = 0x1000
    DIST_HDR_ATOM_CACHE = 0x2000
    SMALL_ATOM_TAGS = 0x4000
    UTF8_ATOMS = 0x10000
    MAP_TAG = 0x20000
    BIG_CREATION = 0x40000
    SEND_SENDER = 0x80000
    BIG_SEQTRACE_LABELS = 0x100000
    EXIT_PAYLOAD = 0x400000
    FRAGMENTS = 0x800000
    HANDSHAKE_23 = 0x1000000
    UNLINK_ID = 0x2000000
    MANDATORY_25_DIGEST = 1 << 26
    SPAWN = 1 << 32
    NAME_ME = 1 << 33
    V4_NC = 1 << 34
    ALIAS = 1 << 35
    ALTACT_SIG = 1 << 37


MANDATORY_OTP25: Final = (
    DFlag.EXTENDED_REFERENCES
    | DFlag.FUN_TAGS
    | DFlag.NEW_FUN_TAGS
    | DFlag.EXTENDED_PIDS_PORTS
    | DFlag.EXPORT_PTR_TAG
    | DFlag.BIT_BINARIES
    | DFlag.NEW_FLOATS
    | DFlag.UTF8_ATOMS
    | DFlag.MAP_TAG
    | DFlag.BIG_CREATION
    | DFlag.HANDSHAKE_23
)
"""What OTP 25 refuses to connect without (0x1070F94)."""

MANDATORY_OTP26: Final = MANDATORY_OTP25 | DFlag.UNLINK_ID | DFlag.V4_NC
"""OTP 26 to 28 also insist on UNLINK_ID and V4_NC (0x403070F94)."""

REQUIRED_FLAGS: Final = MANDATORY_OTP25
"""What this node requires of a peer: every OTP 25..28 node offers it."""

DEFAULT_FLAGS: Final = DFlag(0xC07DF5FBC)
"""What this node offers: a hidden node (no PUBLISHED) without atom cache or SPAWN."""


def missing_mandatory(peer: DFlag | int, required: DFlag = REQUIRED_FLAGS) -> DFlag:
    """The flags of ``required`` that ``peer`` lacks (empty when it may connect)."""
    return DFlag(int(required) & ~int(peer))


def describe(flags: DFlag | int) -> str:
    """Flag names in bit order, like OTP's log ``[V4_NC, UNLINK_ID]``; unknown bits in hex."""
    value = int(flags)
    names: list[str] = []
    for flag in DFlag:
        bit = int(flag)
        if value & bit:
            names.append(flag.name or hex(bit))
            value &= ~bit
    if value:
        names.append(hex(value))
    return "[" + ", ".join(names) + "]"
