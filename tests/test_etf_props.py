"""Properties of the codec: every value comes back exactly, and any bytes decode or raise CodecError."""

from __future__ import annotations

import contextlib
import struct
import zlib
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pynode.errors import CodecError
from pynode.etf import (
    Atom,
    BitBinary,
    Export,
    ImproperList,
    MapKey,
    Pid,
    Port,
    Reference,
    Term,
    decode,
    decode_at,
    encode,
    encode_into,
    map_key,
)

# --- strategies for every value the decoder can produce ----------------------------------------------

names = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
atoms = names.filter(lambda s: s not in ("true", "false")).map(Atom) | st.sampled_from(
    [Atom("ok"), Atom("nil"), Atom("é" * 255), Atom("日" * 255), Atom("")]
)
u32 = st.integers(0, 2**32 - 1)
nodes = st.sampled_from([Atom("nonode@nohost"), Atom("a@127.0.0.1"), Atom("ünï@höst")])
# Bignums up to 2200 bits (LARGE_BIG_EXT past 255 bytes), built so the strategy's repr stays small.
bignums = st.builds(lambda bits, low, neg: (-1) ** neg * ((1 << bits) + low), st.integers(0, 2200), u32, st.booleans())
integers = st.integers(-(2**40), 2**40) | bignums | st.integers(-300, 300)
floats = st.floats(allow_nan=False, allow_infinity=False)
pids = st.builds(Pid, nodes, u32, u32, u32)
ports = st.builds(Port, nodes, st.integers(0, 2**64 - 1), u32)
refs = st.builds(Reference, nodes, u32, st.lists(u32, min_size=1, max_size=5).map(tuple))
exports = st.builds(Export, atoms, atoms, st.integers(0, 255))


@st.composite
def bit_binaries(draw: st.DrawFn) -> BitBinary:
    data = draw(st.binary(min_size=1, max_size=20))
    bits = draw(st.integers(1, 7))
    last = data[-1] & (0xFF << (8 - bits)) & 0xFF
    return BitBinary(data[:-1] + bytes((last,)), bits)


leaves: st.SearchStrategy[Term] = (
    integers
    | floats
    | atoms
    | st.booleans()
    | st.binary(max_size=40)
    | bit_binaries()
    | pids
    | ports
    | refs
    | exports
    | st.just([])
)


def _improper(children: st.SearchStrategy[Term]) -> st.SearchStrategy[ImproperList]:
    # A tail that is itself a list would make a proper (or longer improper) list.
    tails = children.filter(lambda t: not isinstance(t, (list, ImproperList)))
    return st.builds(ImproperList, st.lists(children, min_size=1, max_size=4).map(tuple), tails)


def _maps(children: st.SearchStrategy[Term]) -> st.SearchStrategy[dict[Term, Term]]:
    awkward = st.sampled_from([1, 1.0, True, False, 0, 0.0, -0.0, (1,), (1.0,), [], [1], Atom("nil")])
    keys = (awkward | children).map(map_key)
    return st.dictionaries(keys, children, max_size=6)


# Deferred rather than st.recursive: the same trees, with a strategy repr that stays small.
terms: st.SearchStrategy[Term] = st.deferred(
    lambda: st.one_of(
        leaves,
        leaves,
        leaves,
        st.lists(terms, max_size=5),
        st.lists(st.integers(0, 255), max_size=10),
        st.lists(terms, max_size=5).map(tuple),
        _improper(terms),
        _maps(terms),
    )
)


def same(a: Any, b: Any) -> bool:
    """Equality as ``=:=`` sees it: types must match too (1 is not 1.0 is not true)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return bool(a.hex() == b.hex())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, ImproperList):
        return same(a.elements, b.elements) and same(a.tail, b.tail)
    if isinstance(a, MapKey):
        return same(a.term, b.term)
    equal: bool = a == b
    return equal


# --- round trips --------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms)
def test_decode_encode_round_trip(term: Term) -> None:
    data = encode(term)
    back = decode(data)
    assert same(back, term)
    assert encode(back) == data


@settings(max_examples=100, deadline=None)
@given(st.lists(terms, min_size=1, max_size=4))
def test_decode_at_walks_concatenated_terms(items: list[Term]) -> None:
    out = bytearray()
    for item in items:
        encode_into(out, item)
    view, offset = memoryview(out), 0
    for item in items:
        back, offset = decode_at(view, offset)
        assert same(back, item)
    assert offset == len(out)


@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_str_encodes_as_utf8_binary(text: str) -> None:
    assert decode(encode(text)) == text.encode()


@given(st.lists(st.integers(0, 0x10FFFF), max_size=20))
def test_charlists_round_trip(codepoints: list[int]) -> None:
    assert decode(encode(codepoints)) == codepoints


@settings(max_examples=100, deadline=None)
@given(terms)
def test_compressed_form_decodes_the_same(term: Term) -> None:
    inner = encode(term)[1:]
    data = b"\x83P" + struct.pack(">I", len(inner)) + zlib.compress(inner)
    assert same(decode(data), term)


# --- hostile bytes ------------------------------------------------------------------------------------


def _decodes_or_codec_error(data: bytes, **limits: int) -> None:
    with contextlib.suppress(CodecError):
        decode(data, **limits)


@settings(max_examples=1000)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_codec_error(tail: bytes) -> None:
    _decodes_or_codec_error(b"\x83" + tail)


@settings(max_examples=500)
@given(st.sampled_from(b"PMXYZabcdfghijklmnopqrstvwx"), st.binary(max_size=48))
def test_random_bytes_after_each_tag(tag: int, rest: bytes) -> None:
    _decodes_or_codec_error(bytes((131, tag)) + rest)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms, st.data())
def test_corrupted_encodings_decode_or_raise_codec_error(term: Term, data: st.DataObject) -> None:
    encoded = bytearray(encode(term))
    assume(len(encoded) > 1)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(1, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    _decodes_or_codec_error(bytes(encoded), max_depth=64, max_size=1 << 16)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms)
def test_every_truncation_raises_codec_error(term: Term) -> None:
    encoded = encode(term)
    for cut in range(len(encoded)):
        try:
            decode(encoded[:cut])
        except CodecError:
            continue
        raise AssertionError(f"a {cut}-byte prefix of {encoded.hex()} decoded")
