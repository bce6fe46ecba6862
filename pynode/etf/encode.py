"""Encoding of Python values into the External Term Format, as the BEAM encodes them.

The encoder collects the pieces of a term in a list and joins them once at the
end: appending to a list is the cheapest step there is, and a large binary is
then copied once, into the result. The frequent types are handled inline in
:func:`_put` (one Python frame per nesting level, so any term the decoder
accepts encodes back), the rare ones by small writers picked by exact type;
the pieces that recur (small integers, headers, atoms, string map keys) are
built once. Pids and references keep their encoded bytes in a small table
shared with the decoder. ``str`` always becomes a binary, never a charlist.
Values the BEAM could not read back (NaN, out-of-range pid fields, two map
keys that are one term on the BEAM) raise :class:`~pynode.errors.CodecError`
here rather than make the peer drop the connection.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable
from typing import Any, Final

from pynode.errors import CodecError
from pynode.etf.decode import MAX_REFERENCE_WORDS
from pynode.etf.encodings import ENCODED, remember_encoding
from pynode.etf.pretty import format_term
from pynode.etf.types import (
    MAX_ATOM_CHARS,
    MAX_NESTING,
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
)

__all__ = ["encode", "encode_into"]

_Parts = list[bytes | bytearray]
"""The pieces of the encoding so far, in order; ``b"".join`` makes them one."""
_Writer = Callable[[_Parts, Any], None]
"""Appends a term of the one type it is registered for."""

# The tags, as plain ints (erl_ext_dist; ``Tag`` in pynode.etf.decode names them all).
_NEW_FLOAT_TAG: Final = 70
_BIT_BINARY_TAG: Final = 77
_NEW_PID_TAG: Final = 88
_NEW_PORT_TAG: Final = 89
_NEWER_REFERENCE_TAG: Final = 90
_SMALL_INTEGER_TAG: Final = 97
_SMALL_TUPLE_TAG: Final = 104
_LARGE_TUPLE_TAG: Final = 105
_STRING_TAG: Final = 107
_LIST_TAG: Final = 108
_BINARY_TAG: Final = 109
_SMALL_BIG_TAG: Final = 110
_LARGE_BIG_TAG: Final = 111
_NEW_FUN_TAG: Final = 112
_EXPORT_TAG: Final = 113
_MAP_TAG: Final = 116
_ATOM_UTF8_TAG: Final = 118
_SMALL_ATOM_UTF8_TAG: Final = 119
_V4_PORT_TAG: Final = 120

_VERSION: Final = b"\x83"
_NIL: Final = b"j"
_TAG_U32: Final = struct.Struct(">BI").pack  # BINARY, LIST, MAP, LARGE_TUPLE
_NEW_FLOAT: Final = struct.Struct(">Bd").pack
_STRING: Final = struct.Struct(">BH").pack
_U32X3: Final = struct.Struct(">III").pack
_U32X2: Final = struct.Struct(">II").pack
_U64_U32: Final = struct.Struct(">QI").pack
_REF_WORDS: Final = [struct.Struct(f">{n + 1}I").pack for n in range(MAX_REFERENCE_WORDS + 1)]  # Creation, IDs

# Headers of the sizes under 256, built once: most binaries, lists and maps are that small.
_SMALL_INTS: Final = tuple(bytes((_SMALL_INTEGER_TAG, i)) for i in range(256))
_SMALL_TUPLES: Final = tuple(bytes((_SMALL_TUPLE_TAG, i)) for i in range(256))
_BINARY_HEADERS: Final = tuple(_TAG_U32(_BINARY_TAG, i) for i in range(256))
_LIST_HEADERS: Final = tuple(_TAG_U32(_LIST_TAG, i) for i in range(256))
_MAP_HEADERS: Final = tuple(_TAG_U32(_MAP_TAG, i) for i in range(256))
_STRING_HEADERS: Final = tuple(_STRING(_STRING_TAG, i) for i in range(256))

_ATOM_CACHE_LIMIT: Final = 4096
_KEY_CACHE_LIMIT: Final = 4096
_KEY_CACHED_CHARS: Final = 64
_U32_LIMIT: Final = 1 << 32
_I32_MIN: Final = -0x80000000
_I32_END: Final = 0x80000000
# INTEGER_EXT as one 40-bit number: the tag above the 32 bits of the two's complement.
_INTEGER_BASE: Final = 98 << 32
# A run of at least this many 32-bit integers in a list is packed by struct, a block at a time.
_INT_RUN: Final = 16
_INT_BLOCK: Final = 1024
# Packers of blocks of 16, 32, ... 1024 INTEGER_EXT, each tag left as a pad byte: made when needed.
_BLOCKS: Final[dict[int, Callable[..., None]]] = {}

# Encoded atoms by name; true, false and nil are also what bool and None encode to.
_ATOMS: Final[dict[str, bytes]] = {}
# Encoded str map keys (header included): the keys of a map come back in map after map.
_KEYS: Final[dict[str, bytes]] = {}
# Key types of which two distinct Python keys are always two distinct terms.
_DISTINCT_KEYS: Final = frozenset({Atom, bytes, str, int, float, bool, Pid, Port, Reference, MapKey})
# The classes that _put tests by identity, held where that test is one comparison.
_ATOM: Final = Atom
_PID: Final = Pid
_REFERENCE: Final = Reference
_IMPROPER_LIST: Final = ImproperList
_MAP_KEY: Final = MapKey
_ENCODED: Final = ENCODED


def encode(term: Term) -> bytes:
    """``term`` in the External Term Format, with the leading version byte 131."""
    parts: _Parts = [_VERSION]
    _put_guarded(parts, term)
    return b"".join(parts)


def encode_into(out: bytearray, term: Term) -> None:
    """Append ``term`` (no version byte) to ``out``; on error ``out`` is left as it was."""
    parts: _Parts = []
    _put_guarded(parts, term)
    if len(parts) <= 8:  # a small term, or one large binary: no copy in between
        for part in parts:
            out += part
    else:
        out += b"".join(parts)


def _put_guarded(parts: _Parts, term: Term) -> None:
    """:func:`_put` with the errors of values it cannot encode turned into ``CodecError``."""
    try:
        _put(parts, term, 0)
    except RecursionError:
        raise CodecError("term nested too deeply to encode (or it contains itself)") from None
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        raise CodecError(f"cannot encode a {type(term).__qualname__}: {exc}") from exc


def _atom_bytes(name: str) -> bytes:
    """SMALL_ATOM_UTF8_EXT, or ATOM_UTF8_EXT when the UTF-8 name is over 255 bytes."""
    encoded = _ATOMS.get(name)
    if encoded is not None:
        return encoded
    if len(name) > MAX_ATOM_CHARS:
        raise CodecError(f"atom longer than {MAX_ATOM_CHARS} characters")
    raw = _utf8(name, "atom")
    if len(raw) < 256:
        encoded = bytes((_SMALL_ATOM_UTF8_TAG, len(raw))) + raw
    else:
        encoded = bytes((_ATOM_UTF8_TAG,)) + len(raw).to_bytes(2, "big") + raw
    if len(_ATOMS) < _ATOM_CACHE_LIMIT:
        _ATOMS[str(name)] = encoded
    return encoded


def _key_bytes(key: str) -> bytes:
    """A ``str`` map key as a whole BINARY_EXT, kept for the next map while it is short."""
    raw = _utf8(key, "str")
    n = len(raw)
    encoded = (_BINARY_HEADERS[n] if n < 256 else _TAG_U32(_BINARY_TAG, n)) + raw
    if len(key) <= _KEY_CACHED_CHARS and len(_KEYS) < _KEY_CACHE_LIMIT:
        _KEYS[key] = encoded
    return encoded


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise CodecError(f"{what} {text!r} is not encodable as UTF-8 (lone surrogate)") from None


for _name in ("true", "false", "nil"):
    _atom_bytes(_name)


def _put(parts: _Parts, term: Any, depth: int) -> None:
    """Append one term; containers are handled here so nesting costs one frame per level.

    ``depth`` counts the containers around ``term``: past ``MAX_NESTING`` (or a term that contains
    itself) it raises ``RecursionError`` in both forms of the codec, as Python's own limit would.

    ``term`` is ``Any`` here only: the hot path dispatches on ``type(term)`` held in a local, which
    mypy cannot narrow by; the public functions take a :data:`Term`.
    """
    t = type(term)
    if t is int:
        value: int = term
        if 0 <= value < 256:
            parts.append(_SMALL_INTS[value])
        elif _I32_MIN <= value < _I32_END:
            parts.append((_INTEGER_BASE | (value & 0xFFFFFFFF)).to_bytes(5, "big"))
        else:
            _put_big(parts, value)
    elif t is str:
        raw = _utf8(term, "str")
        n = len(raw)
        parts.append(_BINARY_HEADERS[n] if n < 256 else _TAG_U32(_BINARY_TAG, n))
        parts.append(raw)
    elif t is _ATOM:
        parts.append(_ATOMS.get(term) or _atom_bytes(term))
    elif t is bytes:
        data: bytes = term
        n = len(data)
        parts.append(_BINARY_HEADERS[n] if n < 256 else _TAG_U32(_BINARY_TAG, n))
        parts.append(data)
    elif t is tuple:
        elements: tuple[Any, ...] = term
        n = len(elements)
        parts.append(_SMALL_TUPLES[n] if n < 256 else _TAG_U32(_LARGE_TUPLE_TAG, n))
        depth += 1
        if depth > MAX_NESTING:
            raise RecursionError
        for item in elements:
            _put(parts, item, depth)
    elif t is dict:
        mapping: dict[Any, Any] = term
        n = len(mapping)
        parts.append(_MAP_HEADERS[n] if n < 256 else _TAG_U32(_MAP_TAG, n))
        depth += 1
        if depth > MAX_NESTING:
            raise RecursionError
        first: type | None = None
        mixed = False
        for key, entry in mapping.items():
            kt = type(key)
            if kt is not first:
                if first is not None:
                    mixed = True
                first = kt
            if kt is str:  # atom and str keys come back map after map: their bytes are kept
                encoded = _KEYS.get(key)
                parts.append(encoded if encoded is not None else _key_bytes(key))
            elif kt is _ATOM:
                encoded = _ATOMS.get(key)
                parts.append(encoded if encoded is not None else _atom_bytes(key))
            else:
                _put(parts, key, depth)
            _put(parts, entry, depth)
        if mixed or (first is not None and first not in _DISTINCT_KEYS):
            _check_keys(mapping)
    elif t is list:
        items: list[Any] = term
        n = len(items)
        if not n:
            parts.append(_NIL)
            return
        leading_int = type(items[0]) is int
        if leading_int and n < 0x10000 and _is_byte_list(items):
            parts.append(_STRING_HEADERS[n] if n < 256 else _STRING(_STRING_TAG, n))
            parts.append(bytes(items))
            return
        parts.append(_LIST_HEADERS[n] if n < 256 else _TAG_U32(_LIST_TAG, n))
        depth += 1
        if depth > MAX_NESTING:
            raise RecursionError
        if leading_int:
            for k in range(_put_leading_ints(parts, items), len(items)):
                _put(parts, items[k], depth)
        else:
            for item in items:
                _put(parts, item, depth)
        parts.append(_NIL)
    elif t is float:
        real: float = term
        if not math.isfinite(real):
            raise CodecError(f"float {format_term(term, limit=100)} has no Erlang form")
        parts.append(_NEW_FLOAT(_NEW_FLOAT_TAG, term))
    elif t is _PID or t is _REFERENCE:
        # The same few pids and references go out again and again (our own pid,
        # the caller's, the call's reference): their bytes are kept in ENCODED.
        known = _ENCODED.get(id(term))
        parts.append(known[1] if known is not None and known[0] is term else _encode_identifier(term))
    elif t is bool:
        parts.append(_ATOMS["true" if term else "false"])
    elif t is _IMPROPER_LIST:
        improper: ImproperList = term
        elements = improper.elements
        depth += 1
        if depth > MAX_NESTING:
            raise RecursionError
        if elements:
            parts.append(_TAG_U32(_LIST_TAG, len(elements)))
            for item in elements:
                _put(parts, item, depth)
        _put(parts, improper.tail, depth)
    elif t is _MAP_KEY:
        _put(parts, term.term, depth)
    else:
        writer = _WRITERS.get(t)
        if writer is not None:
            writer(parts, term)
        else:
            _put(parts, _converted(term), depth + 1)


def _is_byte_list(items: list[Any]) -> bool:
    """True when the BEAM would send this list as STRING_EXT: every item an int 0..255."""
    for item in items:
        if type(item) is not int:
            return False
        value: int = item
        if not 0 <= value < 256:
            return False
    return True


def _put_leading_ints(parts: _Parts, items: list[Any]) -> int:
    """Append the ints that ``items`` starts with; return the index of its first other item.

    A run of integers that all take INTEGER_EXT is packed by struct in blocks, not one by one.
    """
    i = 0
    while i < len(items):
        item = items[i]
        if type(item) is not int:
            break
        value: int = item
        if 0 <= value < 256:
            parts.append(_SMALL_INTS[value])
            i += 1
        elif _I32_MIN <= value < _I32_END:
            j = i + 1
            while j < len(items):
                following = items[j]
                if type(following) is not int:
                    break
                other: int = following
                if not _I32_MIN <= other < _I32_END or 0 <= other < 256:
                    break
                j += 1
            if j - i >= _INT_RUN:
                i = _put_integer_run(parts, items, i, j)
            for k in range(i, j):
                word: int = items[k]
                parts.append((_INTEGER_BASE | (word & 0xFFFFFFFF)).to_bytes(5, "big"))
            i = j
        else:
            _put_big(parts, value)
            i += 1
    return i


def _put_integer_run(parts: _Parts, items: list[Any], start: int, end: int) -> int:
    """INTEGER_EXT of ``items[start:end]`` (all 32-bit) as one piece, in blocks of a power of
    two items; return where it stopped (fewer than ``_INT_RUN`` items before ``end``)."""
    n = (end - start) & -_INT_RUN
    out = bytearray(5 * n)
    done = 0
    size = _INT_BLOCK
    while done < n:
        while size > n - done:
            size >>= 1
        pack_into = _BLOCKS.get(size)
        if pack_into is None:
            pack_into = _BLOCKS[size] = struct.Struct(">" + "xi" * size).pack_into
        pack_into(out, 5 * done, *items[start + done : start + done + size])
        done += size
    out[0::5] = b"b" * n  # pack_into zeroes the pad bytes it skips: the tags go in last
    parts.append(out)
    return start + n


def _put_big(parts: _Parts, value: int) -> None:
    magnitude = -value if value < 0 else value
    n = (magnitude.bit_length() + 7) // 8
    if n < 256:
        parts.append(bytes((_SMALL_BIG_TAG, n, value < 0)))
    else:
        parts.append(_TAG_U32(_LARGE_BIG_TAG, n))
        parts.append(bytes((value < 0,)))
    parts.append(magnitude.to_bytes(n, "little"))


def _check_keys(term: dict[Term, Term]) -> None:
    """Refuse a map whose Python keys differ but encode alike (``"a"`` and ``b"a"``).

    The BEAM rejects such a map, and a rejected term drops the connection.
    """
    seen: set[bytes] = set()
    for key in term:
        scratch: _Parts = []
        _put(scratch, key, 0)
        encoded = b"".join(scratch)
        if encoded in seen:
            raise CodecError(f"two keys of a dict encode to the same Erlang term: {format_term(key, limit=200)}")
        seen.add(encoded)


def _put_none(parts: _Parts, term: None) -> None:
    parts.append(_ATOMS["nil"])


def _put_buffer(parts: _Parts, term: bytearray | memoryview) -> None:
    """A copy, taken now: the buffer's bytes as they are when it is encoded."""
    raw = memoryview(term).tobytes()
    parts.append(_TAG_U32(_BINARY_TAG, len(raw)))
    parts.append(raw)


def _check_u32(value: Any, what: str) -> None:
    # ``Any``, not ``int``: the compiled form would take a bool (or refuse a float) at the call,
    # before this check could say what is wrong.
    if type(value) is not int or not 0 <= value < _U32_LIMIT:
        raise CodecError(f"{what} {format_term(value, limit=100)} is not an unsigned 32-bit integer")


def _encode_identifier(term: Pid | Reference) -> bytes:
    """Encode a Pid or a Reference (checking its fields) and keep its bytes for the next time.

    The table is keyed by identity, not equality: ``Pid(n, 1.0, 0, 0)`` equals a
    valid pid yet must still be refused.
    """
    scratch: _Parts = []
    if isinstance(term, Pid):
        _put_pid(scratch, term)
    else:
        _put_reference(scratch, term)
    raw = b"".join(scratch)
    remember_encoding(term, raw)
    return raw


# The fields as they are: read as declared (``int``), the compiled form would turn True into 1.
_PID_FIELDS: Final = operator.attrgetter("id", "serial", "creation")
_PORT_FIELDS: Final = operator.attrgetter("id", "creation")
_REFERENCE_FIELDS: Final = operator.attrgetter("ids", "creation")


def _put_pid(parts: _Parts, pid: Pid) -> None:
    for field in _PID_FIELDS(pid):
        _check_u32(field, "Pid field")
    parts.append(bytes((_NEW_PID_TAG,)))
    parts.append(_atom_bytes(pid.node))
    parts.append(_U32X3(pid.id, pid.serial, pid.creation))


def _put_port(parts: _Parts, port: Port) -> None:
    port_id, creation = _PORT_FIELDS(port)
    _check_u32(creation, "Port creation")
    if type(port_id) is not int or not 0 <= port_id < 1 << 64:
        raise CodecError(f"Port id {format_term(port_id, limit=100)} is not an unsigned 64-bit integer")
    if port.id < _U32_LIMIT:
        parts.append(bytes((_NEW_PORT_TAG,)))
        parts.append(_atom_bytes(port.node))
        parts.append(_U32X2(port.id, port.creation))
    else:
        parts.append(bytes((_V4_PORT_TAG,)))
        parts.append(_atom_bytes(port.node))
        parts.append(_U64_U32(port.id, port.creation))


def _put_reference(parts: _Parts, ref: Reference) -> None:
    words = len(ref.ids)
    if not 1 <= words <= MAX_REFERENCE_WORDS:
        raise CodecError(f"Reference with {words} words (1 to {MAX_REFERENCE_WORDS} allowed)")
    ids, creation = _REFERENCE_FIELDS(ref)
    _check_u32(creation, "Reference creation")
    for word in ids:
        _check_u32(word, "Reference word")
    parts.append(bytes((_NEWER_REFERENCE_TAG, 0, words)))
    parts.append(_atom_bytes(ref.node))
    parts.append(_REF_WORDS[words](ref.creation, *ref.ids))


def _put_bit_binary(parts: _Parts, term: BitBinary) -> None:
    data, bits = bytes(term.data), term.bits
    if not data or type(bits) is not int or not 1 <= bits <= 8:
        raise CodecError(f"BitBinary with {format_term(bits, limit=100)} bits in {len(data)} bytes")
    parts.append(_TAG_U32(_BIT_BINARY_TAG, len(data)))
    parts.append(bytes((bits,)))
    parts.append(data)


def _put_export(parts: _Parts, term: Export) -> None:
    if type(term.arity) is not int or not 0 <= term.arity < 256:
        raise CodecError(f"Export arity {format_term(term.arity, limit=100)} is not in 0..255")
    parts.append(bytes((_EXPORT_TAG,)))
    parts.append(_atom_bytes(term.module))
    parts.append(_atom_bytes(term.function))
    parts.append(_SMALL_INTS[term.arity])


def _put_fun(parts: _Parts, term: OpaqueFun) -> None:
    if term.raw[:1] != bytes((_NEW_FUN_TAG,)):
        raise CodecError("OpaqueFun bytes do not start with the NEW_FUN_EXT tag")
    parts.append(term.raw)


_WRITERS: Final[dict[type, _Writer]] = {
    type(None): _put_none,
    bytearray: _put_buffer,
    memoryview: _put_buffer,
    Port: _put_port,
    BitBinary: _put_bit_binary,
    Export: _put_export,
    OpaqueFun: _put_fun,
}


def _converted(term: Any) -> Term:
    """A subclass of a type the codec knows (IntEnum, StrEnum, OrderedDict, NamedTuple...) as that
    type, tried in a safe order (bool before int, Atom before str); anything else is refused."""
    for base, convert in _SUBCLASSES:
        if isinstance(term, base):
            return convert(term)
    raise CodecError(f"cannot encode a value of Python type {type(term).__qualname__}")


_SUBCLASSES: Final[tuple[tuple[type, Callable[[Any], Term]], ...]] = (
    (bool, bool),
    (Atom, lambda v: Atom(str(v))),
    (int, int),
    (float, float),
    (str, lambda v: _utf8(v, "str")),
    (bytes, bytes),
    (tuple, tuple),
    (list, list),
    (dict, dict),
)
