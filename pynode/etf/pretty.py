"""Terms written in Erlang syntax, for messages a person reads (logs, error texts).

The term may come from a peer and be as big as a message may be (hundreds of
MiB), so the text is built within its budget: the walk stops as soon as
``limit`` characters are written, a binary or a list is looked at only as far
as the budget reaches, and an integer too long for Python's int-to-decimal
limit is written in base 16 (``16#...``, still Erlang syntax) from its leading
digits. The output follows ``io:format("~tp")`` on one line: binaries
``<<"soon">>``, atoms quoted when the shell would quote them, floats in the
shortest form ``erl`` prints, maps ``#{k => v}``, improper lists ``[a|b]``.
"""

from __future__ import annotations

import math
import re
from typing import Final

from pynode.etf.types import Atom, BitBinary, Export, ImproperList, MapKey, OpaqueFun, Pid, Port, Reference, Term

__all__ = ["TermText", "format_term"]

_ELLIPSIS: Final = "..."
_MAX_DEPTH: Final = 64
# Integers up to this many bits have fewer than 4,300 decimal digits (Python's default limit).
_DECIMAL_BITS: Final = 14_000
_EXACT_INTEGERS: Final = float(1 << 53)

_RESERVED: Final = frozenset(
    ("after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case", "catch", "cond",
     "div", "end", "fun", "if", "let", "not", "of", "or", "orelse", "receive", "rem", "try", "when", "xor")
)  # fmt: skip
# Latin-1 letters count as in erl_scan: lowercase start, then letters, digits, '_' and '@'.
_PLAIN_ATOM: Final = re.compile(r"[a-zß-öø-ÿ][A-Za-z0-9_@À-ÖØ-öø-ÿ]*\Z")
_ESCAPES: Final = {
    "\b": "\\b", "\t": "\\t", "\n": "\\n", "\x0b": "\\v", "\f": "\\f", "\r": "\\r", "\x1b": "\\e", "\x7f": "\\d",
}  # fmt: skip
_CONTROL_ESCAPES: Final = frozenset(b"\b\t\n\x0b\f\r\x1b")
_ASCII_TEXT: Final = re.compile(rb"[\x20-\x7e\x08-\x0d\x1b]*\Z")
# erl's default printable range is Latin-1 (``+pc latin1``): other characters make a binary print as bytes.
_UNPRINTABLE: Final = re.compile("[^\x20-\x7e\x08-\x0d\x1b\xa0-\xff]")


class _Full(Exception):
    """The budget is spent: the walk stops where it is."""


class _Out:
    __slots__ = ("parts", "room")

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.room = limit

    def put(self, text: str) -> None:
        self.parts.append(text)
        self.room -= len(text)
        if self.room < 0:
            raise _Full


def format_term(term: Term, *, limit: int = 2000) -> str:
    """``term`` as ``io:format("~tp")`` writes it on one line, at most ``limit`` characters.

    A longer text ends in ``...``; the work done is proportional to ``limit``,
    not to the size of the term.
    """
    limit = max(limit, len(_ELLIPSIS))
    out = _Out(limit)
    try:
        _write(term, out, _MAX_DEPTH)
    except _Full:
        text = "".join(out.parts)
        return text[: limit - len(_ELLIPSIS)] + _ELLIPSIS
    return "".join(out.parts)


class TermText:
    """``format_term(term, limit=limit)`` written only when a log line that holds it is emitted."""

    __slots__ = ("limit", "term")

    def __init__(self, term: Term, limit: int = 500) -> None:
        self.term = term
        self.limit = limit

    def __str__(self) -> str:
        return format_term(self.term, limit=self.limit)

    __repr__ = __str__


def _write(term: Term, out: _Out, depth: int) -> None:
    put = out.put
    if depth <= 0:
        put(_ELLIPSIS)
        return
    if isinstance(term, bool):
        put("true" if term else "false")
    elif term is None:
        put("nil")
    elif isinstance(term, Atom):
        put(_atom(term))
    elif isinstance(term, int):
        put(_integer(term, out.room))
    elif isinstance(term, float):
        put(_float(term))
    elif isinstance(term, str):  # encodes to a UTF-8 binary: written as one
        _text(term, out)
    elif isinstance(term, bytes | bytearray | memoryview):
        _binary(bytes(term[: out.room + 1]), len(term) > out.room + 1, out)
    elif isinstance(term, tuple):
        put("{")
        _elements(term, out, depth)
        put("}")
    elif isinstance(term, list):
        if term and _is_text(term, out.room):
            shown = out.room + 1  # enough to spend the budget: the rest is never looked at
            put(_quoted(_chars(term, shown), '"'))
            if len(term) > shown:
                raise _Full
        else:
            put("[")
            _elements(term, out, depth)
            put("]")
    elif isinstance(term, ImproperList):
        put("[")
        _elements(term.elements, out, depth)
        put("|")
        _write(term.tail, out, depth - 1)
        put("]")
    elif isinstance(term, dict):
        put("#{")
        first = True
        for key, value in term.items():
            if not first:
                put(",")
            first = False
            _write(key, out, depth - 1)
            put(" => ")
            _write(value, out, depth - 1)
        put("}")
    elif isinstance(term, MapKey):
        _write(term.term, out, depth)
    elif isinstance(term, Pid):
        put(f"<{term.node}.{term.id}.{term.serial}>")
    elif isinstance(term, Reference):
        put(f"#Ref<{term.node}.{'.'.join(map(str, reversed(term.ids)))}>")
    elif isinstance(term, Port):
        put(f"#Port<{term.node}.{term.id}>")
    elif isinstance(term, Export):
        put(f"fun {_atom(term.module)}:{_atom(term.function)}/{term.arity}")
    elif isinstance(term, OpaqueFun):
        put("#Fun<...>")
    elif isinstance(term, BitBinary):
        _bit_binary(term, out)
    else:  # not a term the codec knows: say what it is, never repr() it
        put(f"#{type(term).__name__}<>")


def _elements(items: tuple[Term, ...] | list[Term], out: _Out, depth: int) -> None:
    for index, item in enumerate(items):
        if index:
            out.put(",")
        _write(item, out, depth - 1)


def _atom(name: str) -> str:
    if _PLAIN_ATOM.match(name) and name not in _RESERVED:
        return name
    return _quoted(name, "'")


def _quoted(text: str, quote: str) -> str:
    escaped = text.replace("\\", "\\\\").replace(quote, "\\" + quote)
    if not escaped.isprintable():
        escaped = "".join(map(_char, escaped))
    return quote + escaped + quote


def _char(ch: str) -> str:
    code = ord(ch)
    if 32 <= code < 127 or 160 <= code < 256 or (code >= 256 and ch.isprintable()):
        return ch
    return _ESCAPES.get(ch) or (f"\\{code:03o}" if code < 32 else f"\\x{{{code:X}}}")


def _integer(value: int, room: int) -> str:
    if value.bit_length() <= _DECIMAL_BITS:
        return str(value)
    # Too long for decimal (and for any budget): its leading hex digits, which cost nothing to find.
    sign = "-" if value < 0 else ""
    value = abs(value)
    keep = max(1, room + 1) * 4
    shift = max(0, (value.bit_length() - keep) // 4 * 4)
    return f"{sign}16#{value >> shift:X}"


def _float(value: float) -> str:
    """The shortest text that reads back as ``value``, laid out as ``io_lib_format:fwrite_g``."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    if not math.isfinite(value):  # no Erlang float is; say what it is
        return str(value)
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    place = len(whole) + int(exponent or 0)
    stripped = digits.lstrip("0")
    place -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    return sign + _insert_decimal(place, digits, abs(value) < _EXACT_INTEGERS)


def _insert_decimal(place: int, digits: str, exact: bool) -> str:
    """Plain or exponent notation, whichever is shorter (plain on a tie, and whole numbers only below 2**53)."""
    size = len(digits)
    if place == 0:
        return "0." + digits
    if 0 < place < size:
        return digits[:place] + "." + digits[place:]
    exp = str(place - 1)
    exp_cost = len(exp) + 1 + (2 if size == 1 else 1)
    if place < 0 and 2 - place <= exp_cost:
        return "0." + "0" * -place + digits
    if place >= size and exact and place - size + 2 <= exp_cost:
        return digits + "0" * (place - size) + ".0"
    return digits[0] + "." + (digits[1:] or "0") + "e" + exp


def _binary(head: bytes, cut: bool, out: _Out) -> None:
    """A binary whose first bytes are ``head`` (``cut``: there are more)."""
    if not head:
        out.put("<<>>")
        return
    if _ASCII_TEXT.match(head):
        out.put("<<" + _quoted(head.decode("ascii"), '"') + (_ELLIPSIS if cut else ">>"))
    else:
        text = _utf8_prefix(head, cut)
        if text is not None and not _UNPRINTABLE.search(text):
            out.put("<<" + _quoted(text, '"') + (_ELLIPSIS if cut else "/utf8>>"))
        else:
            out.put("<<" + ",".join(map(str, head[: out.room // 2 + 1])) + (_ELLIPSIS if cut else ">>"))
    if cut:
        raise _Full


def _text(term: str, out: _Out) -> None:
    head = term[: out.room + 1]
    cut = len(term) > len(head)
    if _UNPRINTABLE.search(head):
        _binary(head.encode("utf-8", "surrogatepass"), cut, out)
        return
    out.put("<<" + _quoted(head, '"') + (_ELLIPSIS if cut else "/utf8>>"))
    if cut:
        raise _Full


def _utf8_prefix(head: bytes, cut: bool) -> str | None:
    """``head`` as UTF-8 text, allowing a character cut in two at its end when ``cut``."""
    for trim in range(4 if cut else 1):
        try:
            return head[: len(head) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _is_text(items: list[Term], room: int) -> bool:
    """A list ``~tp`` prints as a string: all printable characters (as far as the budget reaches)."""
    return all(type(item) is int and _printable(item) for item in items[: room + 1])


def _printable(char: int) -> bool:
    return 32 <= char < 127 or 160 <= char < 256 or char in _CONTROL_ESCAPES


def _chars(items: list[int], count: int) -> str:
    return "".join(map(chr, items[:count]))


def _bit_binary(term: BitBinary, out: _Out) -> None:
    data = term.data
    last = data[-1] >> (8 - term.bits)
    shown = data[:-1][: out.room // 2 + 1]
    body = [*map(str, shown)]
    if len(shown) < len(data) - 1:
        out.put("<<" + ",".join(body) + _ELLIPSIS)
        raise _Full
    body.append(f"{last}:{term.bits}")
    out.put("<<" + ",".join(body) + ">>")
