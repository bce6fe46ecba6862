"""The encoder's shortcuts write the very bytes of the plain per-term encoding.

Runs of 32-bit integers are packed a block at a time, ``str`` map keys are kept encoded, headers
are built once and the pieces are joined at the end: each is checked here against a literal,
term-by-term encoding, at its edges (block sizes, range limits, cache limits, nesting limit).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from pynode.errors import CodecError
from pynode.etf import Atom, ImproperList, decode, decode_at, encode, encode_into
from pynode.etf.types import MAX_NESTING


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return bytes((97, value))
    if -(2**31) <= value < 2**31:
        return b"b" + struct.pack(">i", value)
    magnitude = abs(value)
    n = (magnitude.bit_length() + 7) // 8
    head = bytes((110, n)) if n < 256 else b"o" + struct.pack(">I", n)
    return head + bytes((value < 0,)) + magnitude.to_bytes(n, "little")


def _list_of_ints(values: list[int]) -> bytes:
    if not values:
        return b"j"
    if len(values) < 0x10000 and all(0 <= v < 256 for v in values):
        return b"k" + struct.pack(">H", len(values)) + bytes(values)
    return b"l" + struct.pack(">I", len(values)) + b"".join(_int(v) for v in values) + b"j"


WIDE = [-(2**31), 2**31 - 1, 256, -1, 70000, -70000]


@pytest.mark.parametrize("length", [*range(0, 40), 63, 64, 65, 1023, 1024, 1025, 1040, 2047, 5000])
def test_a_run_of_wide_integers_of_any_length(length: int) -> None:
    values = [WIDE[i % len(WIDE)] + (i if WIDE[i % len(WIDE)] < 0 else -i) for i in range(length)]
    data = encode(values)
    assert data == b"\x83" + _list_of_ints(values)
    assert decode(data) == values


def test_runs_broken_by_small_big_and_other_terms() -> None:
    values: list[Any] = list(range(-5000, 5000))
    assert encode(values) == b"\x83" + _list_of_ints(values)
    mixed: list[int] = []
    for run in (1, 15, 16, 17, 31, 33, 100):
        mixed += [-(2**31) + k for k in range(run)] + [7] + [2**31 + run] + [-(2**31) - 1]
    assert encode(mixed) == b"\x83" + _list_of_ints(mixed)
    tail: list[Any] = [300] * 20 + [b"x", 300, (1,), *([400] * 20)]
    expected = b"l" + struct.pack(">I", len(tail)) + b"".join(_int(300) for _ in range(20))
    expected += b"m\x00\x00\x00\x01x" + _int(300) + b"h\x01a\x01" + b"".join(_int(400) for _ in range(20)) + b"j"
    assert encode(tail) == b"\x83" + expected
    assert decode(encode(tail)) == tail


def test_an_int_run_is_not_a_bool_run() -> None:
    values: list[Any] = [1000] * 20 + [True] + [1000] * 20
    expected = b"l" + struct.pack(">I", 41) + _int(1000) * 20 + b"w\x04true" + _int(1000) * 20 + b"j"
    assert encode(values) == b"\x83" + expected


def test_str_keys_encode_alike_whether_kept_or_not() -> None:
    keys = ["a", "é" * 10, "k" * 64, "k" * 65, "x" * 300, ""]
    term = {key: i for i, key in enumerate(keys)}
    expected = b"t" + struct.pack(">I", len(keys))
    for i, key in enumerate(keys):
        raw = key.encode()
        expected += b"m" + struct.pack(">I", len(raw)) + raw + _int(i)
    for _ in range(3):
        assert encode(term) == b"\x83" + expected
    many = {f"key{i}": i for i in range(10000)}
    assert decode(encode(many)) == {f"key{i}".encode(): i for i in range(10000)}
    assert encode(many) == encode(dict(many))


def test_a_str_key_that_is_not_utf8_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(CodecError, match="lone surrogate"):
            encode({"\udc80": 1})


def test_keys_that_are_one_term_on_the_beam_are_still_refused() -> None:
    with pytest.raises(CodecError, match="same Erlang term"):
        encode({"a": 1, b"a": 2})
    assert encode({Atom("a"): 1, "b": 2}) == b"\x83t\x00\x00\x00\x02w\x01aa\x01m\x00\x00\x00\x01ba\x02"


def test_large_binary_and_encode_into() -> None:
    payload = bytes(range(256)) * 4096
    assert encode(payload) == b"\x83m" + struct.pack(">I", len(payload)) + payload
    out = bytearray(b"prefix")
    encode_into(out, (Atom("data"), payload))
    assert bytes(out) == b"prefix" + b"h\x02w\x04datam" + struct.pack(">I", len(payload)) + payload
    out = bytearray(b"p")
    encode_into(out, list(range(300, 400)))
    assert bytes(out) == b"p" + _list_of_ints(list(range(300, 400)))


def test_buffers_encode_as_their_bytes() -> None:
    data = bytearray(b"abcdef")
    assert encode(data) == encode(b"abcdef")
    assert encode(memoryview(b"abcdef")[::2]) == encode(b"ace")
    words = memoryview(struct.pack("=2I", 1, 2)).cast("I")
    assert encode(words) == encode(struct.pack("=2I", 1, 2))
    out = bytearray(b"x")
    encode_into(out, data)
    assert out == b"xm\x00\x00\x00\x06abcdef"


@pytest.mark.parametrize("inner", [[1000], [1000, b"x"], [b"x"], {"k": 1}, (1,)])
def test_nesting_limit_is_the_same_for_every_container(inner: Any) -> None:
    def nested(depth: int) -> Any:
        term = inner
        for _ in range(depth - 1):
            term = [term]
        return term

    assert encode(nested(MAX_NESTING)).startswith(b"\x83l\x00\x00\x00\x01l")
    with pytest.raises(CodecError, match="too deeply"):
        encode(nested(MAX_NESTING + 1))
    with pytest.raises(CodecError, match="too deeply"):
        encode(ImproperList((nested(MAX_NESTING),), 1))


def test_binary_decodes_from_bytes_and_from_a_view() -> None:
    data = encode([b"", b"abc", bytes(300)])
    assert decode(data) == [b"", b"abc", bytes(300)]
    assert decode_at(memoryview(data), 1) == ([b"", b"abc", bytes(300)], len(data))
    for cut in range(2, 12):
        with pytest.raises(CodecError, match="truncated"):
            decode(encode(b"abcdef")[:cut])
        with pytest.raises(CodecError, match="truncated"):
            decode_at(memoryview(encode(b"abcdef")[:cut]), 1)
