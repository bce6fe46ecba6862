"""Decoding of the External Term Format into the Python values of :mod:`pynode.etf.types`.

Every byte here may come from a hostile peer, so the decoder walks one buffer
with offsets (never re-slicing what is left of it), checks every declared
length against the bytes that remain before it allocates or loops, bounds the
nesting depth, and turns every failure into :class:`~pynode.errors.CodecError`.
The frequent tags are handled inline in :func:`_term` (one Python frame per
nesting level); the rare ones go through a table of small readers. Pids and
references, which come back in message after message, are kept by their bytes
in small bounded tables (see ``_PIDS``), so a repeat costs one dict lookup.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from enum import IntEnum
from typing import Final, TypeVar

from pynode.errors import CodecError
from pynode.etf.encodings import ENCODED, remember_encoding
from pynode.etf.types import (
    MAX_ATOM_CHARS,
    MAX_NESTING,
    Atom,
    BitBinary,
    Export,
    ImproperList,
    OpaqueFun,
    Pid,
    Port,
    Reference,
    Term,
    map_key,
)

__all__ = ["Tag", "decode", "decode_at", "forget_identifiers"]


class Tag(IntEnum):
    """The tag byte in front of each encoded term (erl_ext_dist), and the version byte."""

    VERSION = 131
    NEW_FLOAT = 70
    BIT_BINARY = 77
    ATOM_CACHE_REF = 82
    COMPRESSED = 80
    DIST_HEADER = 68
    NEW_PID = 88
    NEW_PORT = 89
    NEWER_REFERENCE = 90
    SMALL_INTEGER = 97
    INTEGER = 98
    FLOAT = 99
    ATOM = 100
    REFERENCE = 101
    PORT = 102
    PID = 103
    SMALL_TUPLE = 104
    LARGE_TUPLE = 105
    NIL = 106
    STRING = 107
    LIST = 108
    BINARY = 109
    SMALL_BIG = 110
    LARGE_BIG = 111
    NEW_FUN = 112
    EXPORT = 113
    NEW_REFERENCE = 114
    SMALL_ATOM = 115
    MAP = 116
    FUN = 117
    ATOM_UTF8 = 118
    SMALL_ATOM_UTF8 = 119
    V4_PORT = 120
    LOCAL = 121


MAX_REFERENCE_WORDS: Final = 5
_ATOM_CACHE_LIMIT: Final = 4096
PID_CACHE_LIMIT: Final = 2048
REF_CACHE_LIMIT: Final = 1024

_Buffer = bytes | memoryview
_Reader = Callable[[_Buffer, int, int], tuple[Term, int]]
_AtomReader = Callable[[_Buffer, int, int], tuple["Atom | bool", int]]
_T = TypeVar("_T", Pid, Reference)

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_F64 = struct.Struct(">d").unpack_from
_U32X2 = struct.Struct(">II").unpack_from
_U32X3 = struct.Struct(">III").unpack_from
_U64_U32 = struct.Struct(">QI").unpack_from
_WORDS = [struct.Struct(f">{n}I").unpack_from for n in range(MAX_REFERENCE_WORDS + 1)]

# Atoms by encoded name, one table per encoding; "true"/"false" are bools.
_UTF8_ATOMS: dict[bytes, Atom | bool] = {b"true": True, b"false": False}
_LATIN1_ATOMS: dict[bytes, Atom | bool] = {b"true": True, b"false": False}
# Pids and references by their whole encoding (tag included), for the two usual
# forms: NEW_PID_EXT and NEWER_REFERENCE_EXT with a SMALL_ATOM_UTF8_EXT node.
# One gen_server:call brings the caller's pid four times and its reference three
# times. An entry is added only after its bytes parsed, and a hit needs the very
# same bytes, so a hit returns what parsing would; full tables are emptied.
_PIDS: dict[bytes, Pid] = {}
_REFS: dict[bytes, Reference] = {}
# Both tables above also put their new entries in pynode.etf.encodings, since
# those bytes are exactly what the encoder would write for the same value.
# Key types that a dict already tells apart exactly, as the BEAM does.
_PLAIN_KEYS: Final = frozenset({Atom, bytes, int, Pid, Reference, Port, Export, BitBinary, OpaqueFun})


def decode(data: bytes | bytearray | memoryview, *, max_depth: int = 512, max_size: int = 1 << 30) -> Term:
    """Decode one whole ``131``-prefixed term; trailing bytes are an error.

    ``max_size`` bounds the inflated size a compressed term may declare.
    """
    buf = data if type(data) is bytes else bytes(data)
    if not buf or buf[0] != Tag.VERSION:
        raise CodecError(f"expected version byte 131 at offset 0, got {buf[:1].hex() or 'nothing'}")
    term, end = _guarded(buf, 1, min(max_depth, MAX_NESTING), max_size)
    if end != len(buf):
        raise CodecError(f"{len(buf) - end} trailing bytes after the term at offset {end}")
    return term


def decode_at(
    buf: memoryview | bytes | bytearray, offset: int, *, max_depth: int = 512, max_size: int = 1 << 30
) -> tuple[Term, int]:
    """Decode one term without version byte at ``offset``; return it and the offset after it.

    The buffer is read in place (``bytes`` as they are, any other buffer through
    a memoryview, never copied), so a caller may decode several terms from one
    frame. A compressed term is accepted here too.
    """
    if type(buf) is not bytes and (type(buf) is not memoryview or buf.format != "B" or buf.ndim != 1):
        buf = _byte_view(buf)
    if not 0 <= offset < len(buf):
        raise CodecError(f"no term at offset {offset} of a {len(buf)}-byte buffer")
    # _guarded inlined: this is called twice per distribution message.
    if max_depth > MAX_NESTING:
        max_depth = MAX_NESTING
    try:
        if buf[offset] != 80:  # COMPRESSED
            return _term(buf, offset, max_depth)
        return _compressed(buf, offset + 1, max_depth, max_size)
    except (IndexError, struct.error):
        raise CodecError(f"truncated term: the input ends at offset {len(buf)}") from None
    except RecursionError:
        raise CodecError("term nested too deeply for the Python stack") from None


def _byte_view(buf: memoryview | bytes | bytearray) -> memoryview:
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _guarded(buf: _Buffer, offset: int, max_depth: int, max_size: int) -> tuple[Term, int]:
    """Decode at ``offset`` (a compressed term allowed there only) and translate stray errors."""
    try:
        if buf[offset] != 80:  # COMPRESSED
            return _term(buf, offset, max_depth)
        return _compressed(buf, offset + 1, max_depth, max_size)
    except (IndexError, struct.error):
        raise CodecError(f"truncated term: the input ends at offset {len(buf)}") from None
    except RecursionError:
        raise CodecError("term nested too deeply for the Python stack") from None


def _compressed(buf: _Buffer, o: int, max_depth: int, max_size: int) -> tuple[Term, int]:
    """``80, Size:32, zlib data``: inflate exactly ``Size`` bytes holding exactly one term.

    ``Size`` is a claim: it is checked against ``max_size`` before anything is
    inflated, and the inflater is told to stop at ``Size`` bytes (zlib grows its
    output as it goes, so a lie costs at most ``Size``); then the stream must
    end right there.
    """
    (size,) = _U32(buf, o)
    if not 0 < size <= max_size:  # zlib reads a max_length of 0 as "no limit"
        raise CodecError(f"compressed term at offset {o - 1} declares {size} bytes (max_size {max_size})")
    inflater = zlib.decompressobj()
    try:
        inner = inflater.decompress(memoryview(buf)[o + 4 :], size)
    except zlib.error as exc:
        raise CodecError(f"bad zlib data in the compressed term at offset {o - 1}: {exc}") from None
    if not inflater.eof or len(inner) != size:
        raise CodecError(f"compressed term at offset {o - 1} does not inflate to its declared {size} bytes")
    term, end = _term(inner, 0, max_depth)
    if end != size:
        raise CodecError(f"compressed term at offset {o - 1} holds {size - end} bytes after its term")
    return term, len(buf) - len(inflater.unused_data)


def _truncated(what: str, o: int) -> CodecError:
    return CodecError(f"truncated term: {what} at offset {o} runs past the end of the input")


def _too_deep(o: int) -> CodecError:
    return CodecError(f"term nested deeper than max_depth at offset {o}")


def _term(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    """Decode the term whose tag is at ``buf[o]``; ``budget`` is the nesting still allowed.

    Containers are decoded here rather than in helpers so that each level of
    nesting costs one Python frame: a term ``max_depth`` deep stays well
    inside the interpreter's recursion limit.
    """
    tag = buf[o]
    o += 1
    if tag == 119:  # SMALL_ATOM_UTF8_EXT
        n = buf[o]
        e = o + 1 + n
        raw = bytes(buf[o + 1 : e])
        atom = _UTF8_ATOMS.get(raw)
        if atom is None or len(raw) != n:
            atom = _new_atom(raw, n, e, "utf-8", _UTF8_ATOMS)
        return atom, e
    if tag == 97:  # SMALL_INTEGER_EXT
        return buf[o], o + 1
    if tag == 109:  # BINARY_EXT
        if type(buf) is bytes:  # what decode() reads: indexed and sliced without a call
            data: bytes = buf
            e = o + 4 + ((data[o] << 24) | (data[o + 1] << 16) | (data[o + 2] << 8) | data[o + 3])
            if e > len(data):
                raise _truncated("BINARY_EXT", o - 1)
            return data[o + 4 : e], e
        e = o + 4 + _U32(buf, o)[0]
        if e > len(buf):
            raise _truncated("BINARY_EXT", o - 1)
        return bytes(buf[o + 4 : e]), e
    if tag == 98:  # INTEGER_EXT
        return _I32(buf, o)[0], o + 4
    if tag == 70:  # NEW_FLOAT_EXT
        value = _F64(buf, o)[0]
        if not math.isfinite(value):
            raise CodecError(f"NEW_FLOAT_EXT at offset {o - 1} is not a finite float")
        return value, o + 8
    if tag == 116:  # MAP_EXT: Arity:32, then key, value, key, value...
        (arity,) = _U32(buf, o)
        o += 4
        if 2 * arity > len(buf) - o:
            raise _truncated(f"MAP_EXT of {arity} pairs", o - 5)
        result: dict[Term, Term] = {}
        if arity:
            budget -= 1
            if budget < 0:
                raise _too_deep(o - 5)
            plain = _PLAIN_KEYS
            atoms = _UTF8_ATOMS
            for _ in range(arity):
                key: Term = None
                if buf[o] == 119:  # the usual key, a known atom: skip a call
                    e = o + 2 + buf[o + 1]
                    key = atoms.get(bytes(buf[o + 2 : e]))
                if key is None or e > len(buf):
                    key, o = _term(buf, o, budget)
                else:
                    o = e
                value, o = _term(buf, o, budget)
                if type(key) not in plain:
                    key = map_key(key)
                result[key] = value
            if len(result) != arity:
                raise CodecError(f"MAP_EXT ending at offset {o} repeats a key")
        return result, o
    if tag == 108:  # LIST_EXT: Length:32, elements, tail
        (length,) = _U32(buf, o)
        o += 4
        if length >= len(buf) - o:  # each element and the tail take at least one byte
            raise _truncated(f"LIST_EXT of {length} elements", o - 5)
        budget -= 1
        if budget < 0:
            raise _too_deep(o - 5)
        items: list[Term] = []
        append = items.append
        for _ in range(length):
            item, o = _term(buf, o, budget)
            append(item)
        if buf[o] == 106:
            return items, o + 1
        tail, o = _term(buf, o, budget)
        return _join(items, tail), o
    if tag == 104 or tag == 105:  # SMALL_TUPLE_EXT (Arity:8), LARGE_TUPLE_EXT (Arity:32)
        if tag == 104:
            arity = buf[o]
            o += 1
        else:
            (arity,) = _U32(buf, o)
            o += 4
        if arity > len(buf) - o:
            raise _truncated(f"tuple of {arity} elements", o)
        if not arity:
            return (), o
        budget -= 1
        if budget < 0:
            raise _too_deep(o)
        elements: list[Term] = []
        append = elements.append
        for _ in range(arity):
            item, o = _term(buf, o, budget)
            append(item)
        return tuple(elements), o
    if tag == 88 and buf[o] == 119:  # NEW_PID_EXT, node a SMALL_ATOM_UTF8_EXT
        e = o + 14 + buf[o + 1]
        raw = bytes(buf[o - 1 : e])
        pid = _PIDS.get(raw)
        if pid is None:
            pid, e = _new_pid(buf, o, budget)
            _remember(_PIDS, PID_CACHE_LIMIT, raw, pid)
        return pid, e
    if tag == 90 and buf[o] == 0 and buf[o + 2] == 119:  # NEWER_REFERENCE_EXT, node a SMALL_ATOM_UTF8_EXT
        words = buf[o + 1]
        e = o + 8 + buf[o + 3] + 4 * words
        if 0 < words <= MAX_REFERENCE_WORDS:
            raw = bytes(buf[o - 1 : e])
            ref = _REFS.get(raw)
            if ref is None:
                ref, e = _reference(buf, o, wide_creation=True)
                _remember(_REFS, REF_CACHE_LIMIT, raw, ref)
            return ref, e
    if tag == 106:  # NIL_EXT
        return [], o
    reader = _READERS.get(tag)
    if reader is None:
        raise _bad_tag(tag, o - 1)
    return reader(buf, o, budget)


def forget_identifiers() -> None:
    """Empty the tables of pids and references seen lately, the decoder's and the encoder's.

    For a node that has gone quiet after a burst: the entries are the burst's last callers and
    calls, of no more use, and each is a few small blocks made while the burst's memory was being
    given back, where they keep otherwise empty allocator arenas from being returned to the system.
    Only a lookup is lost; the next message fills the tables again.
    """
    _PIDS.clear()
    _REFS.clear()
    ENCODED.clear()


def _remember(table: dict[bytes, _T], limit: int, raw: bytes, term: _T) -> None:
    """Keep a parsed pid or reference under its encoding ``raw``, for both directions.

    Called only once ``raw`` parsed whole: a truncated slice never gets here.
    """
    if len(table) >= limit:
        table.clear()
    table[raw] = term
    remember_encoding(term, raw)


def _join(items: list[Term], tail: Term) -> Term:
    """``[items | tail]``, which is a proper list again when the tail is one."""
    if type(tail) is list:
        return items + tail if items else tail
    if type(tail) is ImproperList:
        return ImproperList((*items, *tail.elements), tail.tail)
    return ImproperList(tuple(items), tail) if items else tail


def _string(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    """STRING_EXT: a list of small integers (a charlist), never a Python ``str``."""
    e = o + 2 + _U16(buf, o)[0]
    if e > len(buf):
        raise _truncated("STRING_EXT", o - 1)
    return list(buf[o + 2 : e]), e


def _bit_binary(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    (length,) = _U32(buf, o)
    bits = buf[o + 4]
    o += 5
    e = o + length
    if e > len(buf):
        raise _truncated("BIT_BINARY_EXT", o - 6)
    if not 1 <= bits <= 8 or not length:
        raise CodecError(f"BIT_BINARY_EXT at offset {o - 6} has {bits} bits in {length} bytes")
    if bits == 8:  # every bit of the last byte counts: a plain binary
        return bytes(buf[o:e]), e
    last = buf[e - 1] & (0xFF << (8 - bits)) & 0xFF  # unused low bits are not part of the value
    return BitBinary(bytes(buf[o : e - 1]) + bytes((last,)), bits), e


def _small_big(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    return _big(buf, o + 1, buf[o], o - 1)


def _large_big(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    return _big(buf, o + 4, _U32(buf, o)[0], o - 1)


def _big(buf: _Buffer, o: int, n: int, start: int) -> tuple[int, int]:
    """Sign byte then ``n`` little-endian digit bytes."""
    sign = buf[o]
    e = o + 1 + n
    if e > len(buf):
        raise _truncated("big integer", start)
    if sign > 1:
        raise CodecError(f"big integer at offset {start} has sign byte {sign}")
    value = int.from_bytes(buf[o + 1 : e], "little")
    return (-value if sign else value), e


def _old_float(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    """FLOAT_EXT: 31 bytes of ``%.20e`` text padded with NULs."""
    e = o + 31
    if e > len(buf):
        raise _truncated("FLOAT_EXT", o - 1)
    text = bytes(buf[o:e]).split(b"\0", 1)[0]
    try:
        value = float(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise CodecError(f"FLOAT_EXT at offset {o - 1} is not a number") from None
    if not math.isfinite(value):
        raise CodecError(f"FLOAT_EXT at offset {o - 1} is not a finite float")
    return value, e


def _new_atom(raw: bytes, n: int, e: int, encoding: str, cache: dict[bytes, Atom | bool]) -> Atom:
    """Check and build an atom missing from ``cache``; remember it while the cache has room."""
    if len(raw) != n:
        raise _truncated(f"atom of {n} bytes", e - n)
    try:
        name = raw.decode(encoding)
    except UnicodeDecodeError:
        raise CodecError(f"atom ending at offset {e} is not valid UTF-8") from None
    if len(name) > MAX_ATOM_CHARS:
        raise CodecError(f"atom ending at offset {e} is longer than {MAX_ATOM_CHARS} characters")
    atom = Atom(name)
    if len(cache) < _ATOM_CACHE_LIMIT:
        cache[raw] = atom
    return atom


def _atom_reader(length_size: int, encoding: str) -> _AtomReader:
    """A reader for one of the other three atom tags (``length_size`` is 1 or 2 bytes)."""
    cache = _UTF8_ATOMS if encoding == "utf-8" else _LATIN1_ATOMS

    def read(buf: _Buffer, o: int, budget: int) -> tuple[Atom | bool, int]:
        n = buf[o] if length_size == 1 else _U16(buf, o)[0]
        e = o + length_size + n
        raw = bytes(buf[o + length_size : e])
        atom = cache.get(raw)
        if atom is None or len(raw) != n:
            atom = _new_atom(raw, n, e, encoding, cache)
        return atom, e

    return read


def _name(buf: _Buffer, o: int, what: str) -> tuple[Atom, int]:
    """An atom inside a pid, port, reference or fun: always an :class:`Atom`, even ``true``."""
    tag = buf[o]
    reader = _ATOM_READERS.get(tag)
    if reader is None:
        raise CodecError(f"{what} at offset {o} should be an atom, found tag {tag}")
    atom, o = reader(buf, o + 1, 0)
    return (Atom("true" if atom else "false") if type(atom) is bool else atom), o


# Pid and Reference built by filling their slots: what their dataclass __init__
# does, in half the time, for the new ones of the NEW_PID and NEWER_REFERENCE path.
_new = object.__new__
_PID_NODE, _PID_ID, _PID_SERIAL, _PID_CREATION = (vars(Pid)[f].__set__ for f in ("node", "id", "serial", "creation"))
_REF_NODE, _REF_CREATION, _REF_IDS = (vars(Reference)[f].__set__ for f in ("node", "creation", "ids"))


def _new_pid(buf: _Buffer, o: int, budget: int) -> tuple[Pid, int]:
    node, o = _name(buf, o, "NEW_PID_EXT node")
    pid_id, serial, creation = _U32X3(buf, o)
    pid = _new(Pid)
    _PID_NODE(pid, node)
    _PID_ID(pid, pid_id)
    _PID_SERIAL(pid, serial)
    _PID_CREATION(pid, creation)
    return pid, o + 12


def _old_pid(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    node, o = _name(buf, o, "PID_EXT node")
    pid_id, serial = _U32X2(buf, o)
    return Pid(node, pid_id, serial, buf[o + 8]), o + 9


def _new_port(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    node, o = _name(buf, o, "NEW_PORT_EXT node")
    port_id, creation = _U32X2(buf, o)
    return Port(node, port_id, creation), o + 8


def _v4_port(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    node, o = _name(buf, o, "V4_PORT_EXT node")
    port_id, creation = _U64_U32(buf, o)
    return Port(node, port_id, creation), o + 12


def _old_port(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    node, o = _name(buf, o, "PORT_EXT node")
    return Port(node, _U32(buf, o)[0], buf[o + 4]), o + 5


def _newer_reference(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    return _reference(buf, o, wide_creation=True)


def _new_reference(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    return _reference(buf, o, wide_creation=False)


def _reference(buf: _Buffer, o: int, *, wide_creation: bool) -> tuple[Reference, int]:
    """``Len:16, Node, Creation:32 (or :8), ID:32 * Len``."""
    (words,) = _U16(buf, o)
    if not 1 <= words <= MAX_REFERENCE_WORDS:
        raise CodecError(f"reference at offset {o - 1} has {words} words")
    node, o = _name(buf, o + 2, "reference node")
    if wide_creation:
        creation = _U32(buf, o)[0]
        o += 4
    else:
        creation = buf[o]
        o += 1
    ref = _new(Reference)
    _REF_NODE(ref, node)
    _REF_CREATION(ref, creation)
    _REF_IDS(ref, _WORDS[words](buf, o))
    return ref, o + 4 * words


def _old_reference(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    node, o = _name(buf, o, "REFERENCE_EXT node")
    return Reference(node, buf[o + 4], (_U32(buf, o)[0],)), o + 5


def _export(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    module, o = _name(buf, o, "EXPORT_EXT module")
    function, o = _name(buf, o, "EXPORT_EXT function")
    if buf[o] != 97:
        raise CodecError(f"EXPORT_EXT arity at offset {o} is not a SMALL_INTEGER_EXT")
    return Export(module, function, buf[o + 1]), o + 2


# Arity:8, Uniq:16 bytes, Index:32, NumFree:32 after the Size:32 of NEW_FUN_EXT.
_FUN_FIXED: Final = 4 + 1 + 16 + 4 + 4


def _new_fun(buf: _Buffer, o: int, budget: int) -> tuple[Term, int]:
    """NEW_FUN_EXT, checked field by field and kept as its bytes (tag included)."""
    start = o - 1
    (size,) = _U32(buf, o)
    end = o + size
    if size < _FUN_FIXED or end > len(buf):
        raise _truncated(f"NEW_FUN_EXT of {size} bytes", start)
    (free,) = _U32(buf, o + _FUN_FIXED - 4)
    p = o + _FUN_FIXED
    _, p = _name(buf, p, "NEW_FUN_EXT module")
    budget -= 1
    if budget < 0:
        raise _too_deep(start)
    old_index, p = _term(buf, p, budget)
    old_uniq, p = _term(buf, p, budget)
    pid, p = _term(buf, p, budget)
    if type(old_index) is not int or type(old_uniq) is not int or type(pid) is not Pid:
        raise CodecError(f"NEW_FUN_EXT at offset {start} has malformed OldIndex, OldUniq or Pid")
    if free > end - p:
        raise _truncated(f"NEW_FUN_EXT with {free} free variables", start)
    for _ in range(free):
        _, p = _term(buf, p, budget)
    if p != end:
        raise CodecError(f"NEW_FUN_EXT at offset {start} declares {size} bytes but holds {p - o}")
    return OpaqueFun(bytes(buf[start:end])), end


_REJECTED: Final[dict[int, str]] = {
    Tag.LOCAL: "LOCAL_EXT is only meaningful to the node that encoded it",
    Tag.ATOM_CACHE_REF: "ATOM_CACHE_REF needs the atom cache, which this node never negotiates",
    Tag.COMPRESSED: "a compressed term may only stand at the top level",
    Tag.FUN: "FUN_EXT (pre-R13 funs) is no longer accepted by OTP",
    Tag.DIST_HEADER: "a distribution header is not a term",
}


def _bad_tag(tag: int, o: int) -> CodecError:
    reason = _REJECTED.get(tag)
    if reason is not None:
        return CodecError(f"tag {tag} at offset {o} rejected: {reason}")
    return CodecError(f"unknown tag {tag} at offset {o}")


_ATOM_READERS: Final[dict[int, _AtomReader]] = {
    Tag.SMALL_ATOM_UTF8: _atom_reader(1, "utf-8"),
    Tag.ATOM_UTF8: _atom_reader(2, "utf-8"),
    Tag.SMALL_ATOM: _atom_reader(1, "latin-1"),
    Tag.ATOM: _atom_reader(2, "latin-1"),
}

_READERS: Final[dict[int, _Reader]] = {
    **_ATOM_READERS,
    Tag.STRING: _string,
    Tag.BIT_BINARY: _bit_binary,
    Tag.SMALL_BIG: _small_big,
    Tag.LARGE_BIG: _large_big,
    Tag.FLOAT: _old_float,
    Tag.NEW_PID: _new_pid,
    Tag.PID: _old_pid,
    Tag.NEW_PORT: _new_port,
    Tag.V4_PORT: _v4_port,
    Tag.PORT: _old_port,
    Tag.NEWER_REFERENCE: _newer_reference,
    Tag.NEW_REFERENCE: _new_reference,
    Tag.REFERENCE: _old_reference,
    Tag.EXPORT: _export,
    Tag.NEW_FUN: _new_fun,
}
