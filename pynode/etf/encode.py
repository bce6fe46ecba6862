"""Encoding of Python values into the External Term Format, as the BEAM encodes them.

One output ``bytearray`` grows by appends; the frequent types are handled
inline in :func:`_put` (one Python frame per nesting level, so any term the
decoder accepts encodes back), the rare ones by small writers picked by exact
type. Pids and references keep their encoded bytes in a small table shared
with the decoder. ``str`` always becomes a binary, never a charlist. Values the
BEAM could not read back (NaN, out-of-range pid fields, two map keys that are
one term on the BEAM) raise :class:`~pynode.errors.CodecError` here rather
than make the peer drop the connection.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable
from typing import Any, Final

from pynode.errors import CodecError
from pynode.etf.decode import MAX_REFERENCE_WORDS, Tag
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

_Writer = Callable[[bytearray, Any], None]
"""Appends a term of the one type it is registered for."""

_TAG_U32 = struct.Struct(">BI").pack  # BINARY, LIST, MAP, LARGE_TUPLE
_INTEGER = struct.Struct(">Bi").pack
_NEW_FLOAT = struct.Struct(">Bd").pack
_STRING = struct.Struct(">BH").pack
_U32X3 = struct.Struct(">III").pack
_U32X2 = struct.Struct(">II").pack
_U64_U32 = struct.Struct(">QI").pack
_REF_WORDS = [struct.Struct(f">{n + 1}I").pack for n in range(MAX_REFERENCE_WORDS + 1)]  # Creation, IDs

_SMALL_INTS: Final = tuple(bytes((Tag.SMALL_INTEGER, i)) for i in range(256))
_SMALL_TUPLES: Final = tuple(bytes((Tag.SMALL_TUPLE, i)) for i in range(256))
_ATOM_CACHE_LIMIT: Final = 4096
_U32_LIMIT: Final = 1 << 32
# Encoded atoms by name; true, false and nil are also what bool and None encode to.
_ATOMS: dict[str, bytes] = {}
# Key types of which two distinct Python keys are always two distinct terms.
_DISTINCT_KEYS: Final = frozenset({Atom, bytes, str, int, float, bool, Pid, Port, Reference, MapKey})


def encode(term: Term) -> bytes:
    """``term`` in the External Term Format, with the leading version byte 131."""
    out = bytearray(b"\x83")
    encode_into(out, term)
    return bytes(out)


def encode_into(out: bytearray, term: Term) -> None:
    """Append ``term`` (no version byte) to ``out``; on error ``out`` is left as it was."""
    start = len(out)
    try:
        _put(out, term, 0)
    except RecursionError:
        del out[start:]
        raise CodecError("term nested too deeply to encode (or it contains itself)") from None
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        del out[start:]
        raise CodecError(f"cannot encode a {type(term).__qualname__}: {exc}") from exc
    except BaseException:
        del out[start:]
        raise


def _atom_bytes(name: str) -> bytes:
    """SMALL_ATOM_UTF8_EXT, or ATOM_UTF8_EXT when the UTF-8 name is over 255 bytes."""
    encoded = _ATOMS.get(name)
    if encoded is not None:
        return encoded
    if len(name) > MAX_ATOM_CHARS:
        raise CodecError(f"atom longer than {MAX_ATOM_CHARS} characters")
    raw = _utf8(name, "atom")
    if len(raw) < 256:
        encoded = bytes((Tag.SMALL_ATOM_UTF8, len(raw))) + raw
    else:
        encoded = bytes((Tag.ATOM_UTF8,)) + len(raw).to_bytes(2, "big") + raw
    if len(_ATOMS) < _ATOM_CACHE_LIMIT:
        _ATOMS[str(name)] = encoded
    return encoded


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise CodecError(f"{what} {text!r} is not encodable as UTF-8 (lone surrogate)") from None


for _name in ("true", "false", "nil"):
    _atom_bytes(_name)


def _put(out: bytearray, term: Any, depth: int) -> None:
    """Append one term; containers are handled here so nesting costs one frame per level.

    ``depth`` counts the containers around ``term``: past ``MAX_NESTING`` (or a term that contains
    itself) it raises ``RecursionError`` in both forms of the codec, as Python's own limit would.

    ``term`` is ``Any`` here only: the hot path dispatches on ``type(term)`` held in a local, which
    mypy cannot narrow by; the public functions take a :data:`Term`.
    """
    t = type(term)
    if t is Atom:
        out += _ATOMS.get(term) or _atom_bytes(term)
    elif t is int:
        if 0 <= term < 256:
            out += _SMALL_INTS[term]
        elif -0x80000000 <= term < 0x80000000:
            out += _INTEGER(Tag.INTEGER, term)
        else:
            _put_big(out, term)
    elif t is bytes or t is str:
        raw = term if t is bytes else _utf8(term, "str")
        out += _TAG_U32(Tag.BINARY, len(raw))
        out += raw
    elif t is dict:
        out += _TAG_U32(Tag.MAP, len(term))
        depth += 1
        if depth > MAX_NESTING:
            raise RecursionError
        first: type | None = None
        mixed = False
        for key, value in term.items():
            kt = type(key)
            if kt is not first:
                mixed = first is not None
                first = kt
            _put(out, key, depth)
            _put(out, value, depth)
        if mixed or (first is not None and first not in _DISTINCT_KEYS):
            _check_keys(term)
    elif t is list:
        n = len(term)
        if not n:
            out.append(Tag.NIL)
        elif n < 0x10000 and type(term[0]) is int and _is_byte_list(term):
            out += _STRING(Tag.STRING, n)
            out += bytes(term)
        else:
            out += _TAG_U32(Tag.LIST, n)
            depth += 1
            if depth > MAX_NESTING:
                raise RecursionError
            for item in term:
                _put(out, item, depth)
            out.append(Tag.NIL)
    elif t is tuple:
        n = len(term)
        out += _SMALL_TUPLES[n] if n < 256 else _TAG_U32(Tag.LARGE_TUPLE, n)
        depth += 1
        if depth > MAX_NESTING:
            raise RecursionError
        for item in term:
            _put(out, item, depth)
    elif t is Pid or t is Reference:
        # The same few pids and references go out again and again (our own pid,
        # the caller's, the call's reference): their bytes are kept in ENCODED.
        known = ENCODED.get(id(term))
        out += known[1] if known is not None and known[0] is term else _encode_identifier(term)
    elif t is float:
        if not math.isfinite(term):
            raise CodecError(f"float {format_term(term, limit=100)} has no Erlang form")
        out += _NEW_FLOAT(Tag.NEW_FLOAT, term)
    elif t is bool:
        out += _ATOMS["true" if term else "false"]
    elif t is ImproperList:
        elements = term.elements
        depth += 1
        if depth > MAX_NESTING:
            raise RecursionError
        if elements:
            out += _TAG_U32(Tag.LIST, len(elements))
            for item in elements:
                _put(out, item, depth)
        _put(out, term.tail, depth)
    elif t is MapKey:
        _put(out, term.term, depth)
    else:
        writer = _WRITERS.get(t)
        if writer is not None:
            writer(out, term)
        else:
            _put(out, _converted(term), depth + 1)


def _is_byte_list(items: list[Term]) -> bool:
    """True when the BEAM would send this list as STRING_EXT: every item an int 0..255."""
    return all(type(item) is int and 0 <= item < 256 for item in items)


def _put_big(out: bytearray, value: int) -> None:
    magnitude = -value if value < 0 else value
    n = (magnitude.bit_length() + 7) // 8
    if n < 256:
        out += bytes((Tag.SMALL_BIG, n, value < 0))
    else:
        out += _TAG_U32(Tag.LARGE_BIG, n)
        out.append(value < 0)
    out += magnitude.to_bytes(n, "little")


def _check_keys(term: dict[Term, Term]) -> None:
    """Refuse a map whose Python keys differ but encode alike (``"a"`` and ``b"a"``).

    The BEAM rejects such a map, and a rejected term drops the connection.
    """
    seen: set[bytes] = set()
    scratch = bytearray()
    for key in term:
        del scratch[:]
        _put(scratch, key, 0)
        encoded = bytes(scratch)
        if encoded in seen:
            raise CodecError(f"two keys of a dict encode to the same Erlang term: {format_term(key, limit=200)}")
        seen.add(encoded)


def _put_none(out: bytearray, term: None) -> None:
    out += _ATOMS["nil"]


def _put_buffer(out: bytearray, term: bytearray | memoryview) -> None:
    view = memoryview(term)
    if not view.contiguous:
        view = memoryview(view.tobytes())
    out += _TAG_U32(Tag.BINARY, view.nbytes)
    out += view.cast("B") if view.format != "B" or view.ndim != 1 else view


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
    scratch = bytearray()
    if isinstance(term, Pid):
        _put_pid(scratch, term)
    else:
        _put_reference(scratch, term)
    raw = bytes(scratch)
    remember_encoding(term, raw)
    return raw


# The fields as they are: read as declared (``int``), the compiled form would turn True into 1.
_PID_FIELDS: Final = operator.attrgetter("id", "serial", "creation")
_PORT_FIELDS: Final = operator.attrgetter("id", "creation")
_REFERENCE_FIELDS: Final = operator.attrgetter("ids", "creation")


def _put_pid(out: bytearray, pid: Pid) -> None:
    for field in _PID_FIELDS(pid):
        _check_u32(field, "Pid field")
    out.append(Tag.NEW_PID)
    out += _atom_bytes(pid.node)
    out += _U32X3(pid.id, pid.serial, pid.creation)


def _put_port(out: bytearray, port: Port) -> None:
    port_id, creation = _PORT_FIELDS(port)
    _check_u32(creation, "Port creation")
    if type(port_id) is not int or not 0 <= port_id < 1 << 64:
        raise CodecError(f"Port id {format_term(port_id, limit=100)} is not an unsigned 64-bit integer")
    if port.id < _U32_LIMIT:
        out.append(Tag.NEW_PORT)
        out += _atom_bytes(port.node)
        out += _U32X2(port.id, port.creation)
    else:
        out.append(Tag.V4_PORT)
        out += _atom_bytes(port.node)
        out += _U64_U32(port.id, port.creation)


def _put_reference(out: bytearray, ref: Reference) -> None:
    words = len(ref.ids)
    if not 1 <= words <= MAX_REFERENCE_WORDS:
        raise CodecError(f"Reference with {words} words (1 to {MAX_REFERENCE_WORDS} allowed)")
    ids, creation = _REFERENCE_FIELDS(ref)
    _check_u32(creation, "Reference creation")
    for word in ids:
        _check_u32(word, "Reference word")
    out += bytes((Tag.NEWER_REFERENCE, 0, words))
    out += _atom_bytes(ref.node)
    out += _REF_WORDS[words](ref.creation, *ref.ids)


def _put_bit_binary(out: bytearray, term: BitBinary) -> None:
    data, bits = bytes(term.data), term.bits
    if not data or type(bits) is not int or not 1 <= bits <= 8:
        raise CodecError(f"BitBinary with {format_term(bits, limit=100)} bits in {len(data)} bytes")
    out += _TAG_U32(Tag.BIT_BINARY, len(data))
    out.append(bits)
    out += data


def _put_export(out: bytearray, term: Export) -> None:
    if type(term.arity) is not int or not 0 <= term.arity < 256:
        raise CodecError(f"Export arity {format_term(term.arity, limit=100)} is not in 0..255")
    out.append(Tag.EXPORT)
    out += _atom_bytes(term.module)
    out += _atom_bytes(term.function)
    out += _SMALL_INTS[term.arity]


def _put_fun(out: bytearray, term: OpaqueFun) -> None:
    if term.raw[:1] != bytes((Tag.NEW_FUN,)):
        raise CodecError("OpaqueFun bytes do not start with the NEW_FUN_EXT tag")
    out += term.raw


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
