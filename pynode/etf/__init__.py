"""The External Term Format: Erlang terms to bytes and back.

``decode``/``decode_at`` read terms (hostile input raises
:class:`~pynode.errors.CodecError`), ``encode``/``encode_into`` write them;
the Python side of each term type is described in :mod:`pynode.etf.types`.
"""

from pynode.etf.decode import Tag, decode, decode_at, forget_identifiers
from pynode.etf.encode import encode, encode_into
from pynode.etf.types import (
    Atom,
    BitBinary,
    Export,
    ImproperList,
    MapKey,
    OpaqueFun,
    Pid,
    Port,
    Reference,
    Term,
    map_key,
)

__all__ = [
    "Atom",
    "BitBinary",
    "Export",
    "ImproperList",
    "MapKey",
    "OpaqueFun",
    "Pid",
    "Port",
    "Reference",
    "Tag",
    "Term",
    "decode",
    "decode_at",
    "encode",
    "encode_into",
    "forget_identifiers",
    "map_key",
]
