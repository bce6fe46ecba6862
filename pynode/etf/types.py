"""Python values for the Erlang terms that have no native Python equivalent.

The mapping at this layer is exact: every term decoded from the wire encodes
back to the same term (``=:=`` on the BEAM), which is what ``{echo, Term}``
and the ``[alias|Ref]`` call tag rely on.

=====================  ==========================================
Erlang                 Python
=====================  ==========================================
integer                ``int``
float                  ``float``
atom ``true/false``    ``bool``
other atom             :class:`Atom`
binary                 ``bytes`` (``str`` *encodes* to a binary)
bitstring              :class:`BitBinary`
tuple                  ``tuple``
proper list            ``list`` (a charlist is a list of ints)
improper list          :class:`ImproperList`
map                    ``dict`` (awkward keys wrapped in :class:`MapKey`)
pid / port / ref       :class:`Pid` / :class:`Port` / :class:`Reference`
fun M:F/A              :class:`Export`
closure                :class:`OpaqueFun` (kept as its bytes)
=====================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

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
    "Term",
    "map_key",
]

MAX_ATOM_CHARS: Final = 255
MAX_NESTING: Final = 900
"""The deepest term the codec encodes or decodes, whatever ``max_depth`` asks: each level is one
frame, and the compiled form of the codec recurses on the C stack, where nothing else stops it.
Under Python's own recursion limit, so that both forms agree on every term."""


class Atom(str):
    """An Erlang atom.

    A ``str`` subclass so that it prints, formats and compares with literals
    naturally (``atom == "ok"``), but it never *equals* a ``str`` for hashing
    purposes in maps, because binaries decode to ``bytes``, not ``str``.
    Construct atoms only from names the program knows, never from data:
    the BEAM never frees an atom.
    """

    __slots__ = ()

    def __new__(cls, name: str) -> Atom:
        if len(name) > MAX_ATOM_CHARS:
            raise ValueError(f"atom longer than {MAX_ATOM_CHARS} characters")
        return super().__new__(cls, name)

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class Pid:
    """A process identifier: the node it lives on and its numbers there."""

    node: Atom
    id: int
    serial: int
    creation: int

    def __repr__(self) -> str:
        return f"<{self.node}.{self.id}.{self.serial}>"


@dataclass(frozen=True, slots=True)
class Port:
    """A port identifier (64-bit id since OTP 24's V4_PORT_EXT)."""

    node: Atom
    id: int
    creation: int


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference; ``ids`` holds 1 to 5 32-bit words (OTP 28 aliases use 5)."""

    node: Atom
    creation: int
    ids: tuple[int, ...]

    def __repr__(self) -> str:
        return f"#Ref<{self.node}.{'.'.join(map(str, reversed(self.ids)))}>"


@dataclass(frozen=True, slots=True)
class ImproperList:
    """A list whose tail is not ``[]``, such as the ``[alias|Ref]`` call tag."""

    elements: tuple[Term, ...]
    tail: Term


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A bitstring whose last byte holds only ``bits`` (1..8) significant bits."""

    data: bytes
    bits: int


@dataclass(frozen=True, slots=True)
class Export:
    """An external fun, ``fun M:F/A``."""

    module: Atom
    function: Atom
    arity: int


@dataclass(frozen=True, slots=True)
class OpaqueFun:
    """A local fun (closure), kept as its encoded bytes (tag included).

    No code from the cluster runs here, so a closure is only ever passed on.
    """

    raw: bytes


@dataclass(frozen=True, slots=True)
class MapKey:
    """A map key that a plain Python dict key would conflate or cannot hold.

    Python treats ``1``, ``1.0`` and ``True`` as one dict key and cannot hash
    lists or dicts; the BEAM keeps them apart. The decoder wraps such keys
    (floats, booleans, lists, maps, and tuples holding them) so that every
    map survives the trip; the encoder unwraps them. Equality is exact.
    """

    term: Term
    _exact: Any

    def __init__(self, term: Term) -> None:
        object.__setattr__(self, "term", term)
        object.__setattr__(self, "_exact", _exact_key(term))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MapKey) and self._exact == other._exact

    def __hash__(self) -> int:
        return hash(self._exact)

    def __repr__(self) -> str:
        return f"MapKey({self.term!r})"


def _exact_key(term: Term) -> Any:
    """A hashable value that tells apart every pair of distinct terms."""
    if isinstance(term, bool):
        return ("bool", term)
    if isinstance(term, float):
        # hex() keeps -0.0 apart from 0.0: distinct map keys since OTP 27.
        return ("float", term.hex())
    if isinstance(term, int):
        return ("int", term)
    if isinstance(term, MapKey):
        return term._exact
    if isinstance(term, list):
        return ("list", tuple(_exact_key(t) for t in term))
    if isinstance(term, tuple):
        return ("tuple", tuple(_exact_key(t) for t in term))
    if isinstance(term, dict):
        return ("map", frozenset((_exact_key(k), _exact_key(v)) for k, v in term.items()))
    if isinstance(term, ImproperList):
        return ("improper", tuple(_exact_key(t) for t in term.elements), _exact_key(term.tail))
    if isinstance(term, Atom):
        return ("atom", str(term))
    if isinstance(term, str):
        return ("binary", term.encode())
    if isinstance(term, (bytes, bytearray)):
        return ("binary", bytes(term))
    return (type(term).__name__, term)


def _needs_wrapping(term: Term) -> bool:
    if isinstance(term, (bool, float, list, dict)):
        return True
    if isinstance(term, tuple):
        return any(_needs_wrapping(t) for t in term)
    return isinstance(term, ImproperList)


def map_key(term: Term) -> Term:
    """The dict key under which the decoder stores a map key ``term``."""
    return MapKey(term) if _needs_wrapping(term) else term


Term: TypeAlias = (
    int
    | float
    | str
    | bytes
    | bytearray
    | memoryview
    | Pid
    | Port
    | Reference
    | ImproperList
    | BitBinary
    | Export
    | OpaqueFun
    | MapKey
    | tuple["Term", ...]
    | list[Any]
    | dict[Any, Any]
    | None
)
"""A value the codec encodes, and (without ``str``, ``bytearray``, ``memoryview`` and ``None``)
what it decodes to; ``Atom`` and ``bool`` are among ``str`` and ``int``.

A real union, so code that takes a term apart must first say which kind it holds (``type(t) is
tuple``, ``isinstance``) and mypy checks that it did. Tuples nest as terms; list elements and map
keys and values are ``Any`` because those containers are invariant (a ``dict[Atom, bytes]`` is
not a ``dict[Term, Term]``), and the codec checks every element it encodes at run time.
"""
