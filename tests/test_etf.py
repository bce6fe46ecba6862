"""The term codec on bytes alone: a corpus of encodings as the BEAM writes them, and hostile input."""

from __future__ import annotations

import struct
import zlib

import pytest

from pynode.errors import CodecError
from pynode.etf import (
    Atom,
    BitBinary,
    Export,
    ImproperList,
    MapKey,
    OpaqueFun,
    Pid,
    Port,
    Reference,
    Tag,
    Term,
    decode,
    decode_at,
    encode,
    encode_into,
)

NONODE = Atom("nonode@nohost")

# The call tag of gen:call, [alias|Mref], as OTP 25 sends it (UTF-8 atoms, 3-word reference) ...
ALIAS_TAG_OTP25 = bytes.fromhex(
    "836c000000017705616c6961735a0003770d6e6f6e6f6465406e6f686f7374000000000001f351e219000177191c23"
)
# ... and as OTP 28 sends it: a 5-word pid reference from a named node with a 32-bit creation.
ALIAS_TAG_OTP28 = (
    b"\x83l\x00\x00\x00\x01w\x05alias"  # LIST_EXT of 1 element: alias
    + b"Z\x00\x05w\x0bb@127.0.0.1"  # NEWER_REFERENCE_EXT, 5 words, node b@127.0.0.1
    + struct.pack(">IIIIII", 0x6734A1F2, 0x0002D8B1, 0x9C4E0001, 0x1F3A6B77, 0x00000072, 0x00000000)
)

# (name, hex of term_to_binary(T, [{minor_version, 2}]) from OTP 25, the Python value): our
# encoder is canonical for every one of these, so each must also re-encode to the same bytes.
CORPUS: list[tuple[str, str, Term]] = [
    ("small int", "836100", 0),
    ("byte", "8361ff", 255),
    ("int 256", "836200000100", 256),
    ("negative", "8362ffffffff", -1),
    ("int32 max", "83627fffffff", 2**31 - 1),
    ("int32 min", "836280000000", -(2**31)),
    ("small big", "836e040000000080", 2**31),
    ("negative small big", "836e040101000080", -(2**31) - 1),
    ("big 2^64", "836e0900000000000000000001", 2**64),
    ("float", "8346400921f9f01b866e", 3.14159),
    ("negative float", "8346bfe0000000000000", -0.5),
    ("atom", "8377026f6b", Atom("ok")),
    ("empty atom", "837700", Atom("")),
    ("unicode atom", "837706e697a5e69cac", Atom("日本")),
    ("true", "83770474727565", True),
    ("false", "83770566616c7365", False),
    ("nil", "8377036e696c", Atom("nil")),
    ("empty binary", "836d00000000", b""),
    ("binary", "836d00000003010203", b"\x01\x02\x03"),
    ("bitstring", "834d000000010320", BitBinary(b"\x20", 3)),
    ("nil list", "836a", []),
    ("charlist", "836b0003616263", [97, 98, 99]),
    ("unicode charlist", "836c0000000262000065e5620000672c6a", [26085, 26412]),
    ("improper", "836c0000000161016102", ImproperList((1,), 2)),
    ("list", "836c000000037701617701627701636a", [Atom("a"), Atom("b"), Atom("c")]),
    ("empty tuple", "836800", ()),
    ("tuple", "836802610168026102770161", (1, (2, Atom("a")))),
    ("empty map", "837400000000", {}),
    ("map", "8374000000017701616101", {Atom("a"): 1}),
    ("pid", "8358770d6e6f6e6f6465406e6f686f7374000000090000000000000000", Pid(NONODE, 9, 0, 0)),
    ("port", "8359770d6e6f6e6f6465406e6f686f73740000000000000000", Port(NONODE, 0, 0)),
    ("v4 port", "8378770d6e6f6e6f6465406e6f686f7374000000010000000000000005", Port(NONODE, 2**32, 5)),
    (
        "reference",
        "835a0003770d6e6f6e6f6465406e6f686f7374000000000001f34fe218000177191c23",
        Reference(NONODE, 0, (0x1F34F, 0xE2180001, 0x77191C23)),
    ),
    ("export", "837177056c6973747377036d61706102", Export(Atom("lists"), Atom("map"), 2)),
]


@pytest.mark.parametrize(("name", "hexdata", "value"), CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_decodes_and_reencodes_byte_identically(name: str, hexdata: str, value: Term) -> None:
    data = bytes.fromhex(hexdata)
    decoded = decode(data)
    assert decoded == value
    assert type(decoded) is type(value)
    assert encode(decoded) == data
    assert encode(value) == data


@pytest.mark.parametrize("data", [ALIAS_TAG_OTP25, ALIAS_TAG_OTP28], ids=["otp25", "otp28"])
def test_alias_call_tag_round_trips_byte_identically(data: bytes) -> None:
    tag = decode(data)
    assert isinstance(tag, ImproperList)
    assert tag.elements == (Atom("alias"),)
    assert isinstance(tag.tail, Reference)
    assert encode(tag) == data
    reply = encode((tag, Atom("ok")))
    assert reply == b"\x83h\x02" + data[1:] + b"w\x02ok"


def test_otp28_alias_reference_has_five_words() -> None:
    tag = decode(ALIAS_TAG_OTP28)
    assert len(tag.tail.ids) == 5
    assert tag.tail.node == Atom("b@127.0.0.1")
    assert tag.tail.creation == 0x6734A1F2


# --- legacy and alternative encodings: decoded to the same values, encoded canonically -------------


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x83d\x00\x02ok", Atom("ok")),  # ATOM_EXT (OTP 25 term_to_binary default)
        (b"\x83s\x02ok", Atom("ok")),  # SMALL_ATOM_EXT
        (b"\x83v\x00\x02ok", Atom("ok")),  # ATOM_UTF8_EXT
        (b"\x83d\x00\x04true", True),
        (b"\x83s\x05false", False),
        (b"\x83s\x02\xe9t", Atom("ét")),  # Latin-1
        (b"\x83c" + b"1.50000000000000000000e+00".ljust(31, b"\0"), 1.5),  # FLOAT_EXT
        (b"\x83o\x00\x00\x00\x01\x00\x05", 5),  # LARGE_BIG with a small value
        (b"\x83n\x00\x00", 0),
        (b"\x83i\x00\x00\x00\x02a\x01a\x02", (1, 2)),  # LARGE_TUPLE
        (b"\x83k\x00\x00", []),  # empty STRING_EXT
        (b"\x83l\x00\x00\x00\x01a\x01k\x00\x01\x02", [1, 2]),  # [1 | "\2"] is a proper list
        (b"\x83l\x00\x00\x00\x00a\x07", 7),  # no elements: the tail alone
        (b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02a\x03", ImproperList((1, 2), 3)),
        (b"\x83M\x00\x00\x00\x02\x08\xff\xff", b"\xff\xff"),  # 8 bits in the last byte: a binary
        (b"\x83M\x00\x00\x00\x01\x03\xff", BitBinary(b"\xe0", 3)),  # unused low bits dropped
        (
            b"\x83gs\x01n\x00\x00\x00\x01\x00\x00\x00\x02\x03",
            Pid(Atom("n"), 1, 2, 3),
        ),  # PID_EXT
        (b"\x83fs\x01n\x00\x00\x00\x07\x02", Port(Atom("n"), 7, 2)),  # PORT_EXT
        (
            b"\x83r\x00\x02s\x01n\x01\x00\x00\x00\x01\x00\x00\x00\x02",
            Reference(Atom("n"), 1, (1, 2)),
        ),  # NEW_REFERENCE_EXT
        (b"\x83es\x01n\x00\x00\x00\x09\x02", Reference(Atom("n"), 2, (9,))),  # REFERENCE_EXT
        (b"\x83Xw\x04true\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00", Pid(Atom("true"), 1, 0, 0)),
    ],
)
def test_legacy_forms(data: bytes, value: Term) -> None:
    decoded = decode(data)
    assert decoded == value
    assert type(decoded) is type(value)
    assert decode(encode(decoded)) == value


def test_compressed_term() -> None:
    inner = encode([Atom("a")] * 50)[1:]
    data = b"\x83P" + struct.pack(">I", len(inner)) + zlib.compress(inner)
    assert decode(data) == [Atom("a")] * 50


def test_decode_at_reads_terms_in_place_one_after_another() -> None:
    frame = bytearray(b"\x70")
    encode_into(frame, (6, Atom(""), Atom("net_kernel")))
    encode_into(frame, b"payload")
    view = memoryview(frame)
    control, offset = decode_at(view, 1)
    payload, end = decode_at(view, offset)
    assert control == (6, Atom(""), Atom("net_kernel"))
    assert payload == b"payload"
    assert end == len(frame)


def test_decode_at_compressed_term_ends_where_the_zlib_stream_does() -> None:
    inner = encode(b"x" * 100)[1:]
    blob = b"P" + struct.pack(">I", len(inner)) + zlib.compress(inner) + b"a\x05"
    term, offset = decode_at(memoryview(blob), 0)
    assert term == b"x" * 100
    assert decode_at(memoryview(blob), offset) == (5, len(blob))


def test_fun_is_kept_as_its_bytes() -> None:
    # Built field by field from erl_ext_dist; test_etf_beam.py checks real closures.
    fun = _fun_bytes(free=[b"a\x05"])
    term = decode(b"\x83" + fun)
    assert term == OpaqueFun(fun)
    assert encode(term) == b"\x83" + fun
    assert encode([term, term]) == b"\x83l\x00\x00\x00\x02" + fun + fun + b"j"


def _fun_bytes(free: list[bytes], size_delta: int = 0) -> bytes:
    """A NEW_FUN_EXT built by the spec: Size, Arity, Uniq, Index, NumFree, Module, OldIndex, ..."""
    pid = b"Xw\x01n" + struct.pack(">III", 1, 0, 0)
    body = bytes([0]) + bytes(range(16)) + struct.pack(">II", 3, len(free))
    body += b"w\x01m" + b"a\x03" + b"b\x01\x02\x03\x04" + pid + b"".join(free)
    return b"p" + struct.pack(">I", len(body) + 4 + size_delta) + body


# --- hostile input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "version byte"),
        (b"\x84a\x01", "version byte"),
        (b"\x83", "truncated"),
        (b"\x83y", "LOCAL_EXT"),
        (b"\x83R\x00", "ATOM_CACHE_REF"),
        (b"\x83\x00", "unknown tag 0 at offset 1"),
        (b"\x83\xff", "unknown tag 255"),
        (b"\x83a\x01a\x02", "trailing"),
        (b"\x83m\xff\xff\xff\xff", "BINARY_EXT"),
        (b"\x83l\xff\xff\xff\xffj", "LIST_EXT"),
        (b"\x83t\xff\xff\xff\xff", "MAP_EXT"),
        (b"\x83i\xff\xff\xff\xff", "tuple"),
        (b"\x83o\xff\xff\xff\xff\x00", "big integer"),
        (b"\x83n\x01\x02\x01", "sign byte"),
        (b"\x83k\x00\x05ab", "STRING_EXT"),
        (b"\x83w\x05ab", "truncated"),
        (b"\x83w\x02\xff\xfe", "UTF-8"),
        (b"\x83v\x01\x00" + b"a" * 256, "longer than 255"),
        (b"\x83d\x01\x00" + b"a" * 256, "longer than 255"),
        (b"\x83t\x00\x00\x00\x02a\x01a\x02a\x01a\x03", "repeats a key"),
        (
            b"\x83t\x00\x00\x00\x02F?\xf0\x00\x00\x00\x00\x00\x00a\x02F?\xf0\x00\x00\x00\x00\x00\x00a\x03",
            "key",
        ),
        (b"\x83F\x7f\xf8\x00\x00\x00\x00\x00\x00", "finite"),
        (b"\x83F\x7f\xf0\x00\x00\x00\x00\x00\x00", "finite"),
        (b"\x83c" + b"nan".ljust(31, b"\0"), "finite"),
        (b"\x83c" + b"one".ljust(31, b"\0"), "not a number"),
        (b"\x83M\x00\x00\x00\x01\x00\xff", "bits"),
        (b"\x83M\x00\x00\x00\x01\x09\xff", "bits"),
        (b"\x83M\x00\x00\x00\x00\x03", "bits"),
        (b"\x83Z\x00\x00w\x01n\x00\x00\x00\x00", "0 words"),
        (b"\x83Z\x00\x06w\x01n" + b"\x00" * 28, "6 words"),
        (b"\x83Xa\x01" + b"\x00" * 12, "should be an atom"),
        (b"\x83qw\x01mw\x01fb\x00\x00\x00\x02", "arity"),
        (b"\x83P\x00\x00\x00\x00x\x9c\x03\x00\x00\x00\x00\x01", "declares 0 bytes"),
        (b"\x83P\xff\xff\xff\xff" + zlib.compress(b"a\x01"), "max_size"),
        (b"\x83P\x00\x00\x00\x03" + zlib.compress(b"a\x01"), "does not inflate"),
        (b"\x83P\x00\x00\x00\x01" + zlib.compress(b"a\x01"), "does not inflate"),
        (b"\x83P\x00\x00\x00\x02" + zlib.compress(b"a\x01")[:-3], "does not inflate"),
        (b"\x83P\x00\x00\x00\x02garbage", "zlib"),
        (b"\x83P\x00\x00\x00\x03" + zlib.compress(b"a\x01j"), "after its term"),
        (b"\x83h\x01P\x00\x00\x00\x02" + zlib.compress(b"a\x01"), "top level"),
        (b"\x83D\x00", "distribution header"),
        (b"\x83u\x00\x00\x00\x00", "FUN_EXT"),
    ],
)
def test_bad_input_raises_codec_error(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(data)


def test_bad_funs() -> None:
    good = _fun_bytes(free=[])
    assert decode(b"\x83" + good) == OpaqueFun(good)
    with pytest.raises(CodecError, match="NEW_FUN_EXT"):
        decode(b"\x83" + _fun_bytes(free=[], size_delta=1) + b"\x00")
    with pytest.raises(CodecError, match="NEW_FUN_EXT"):
        decode(b"\x83" + _fun_bytes(free=[], size_delta=-1))
    with pytest.raises(CodecError, match="NEW_FUN_EXT"):
        decode(b"\x83p\x00\x00\x00\x05\x00")
    with pytest.raises(CodecError, match="free variables"):
        decode(
            b"\x83"
            + _fun_bytes(free=[]).replace(b"\x00\x00\x00\x03\x00\x00\x00\x00", b"\x00" * 3 + b"\x03" + b"\xff" * 4)
        )


def test_max_size_is_checked_before_inflating() -> None:
    bomb = (
        b"\x83P" + struct.pack(">I", 10_000_000) + zlib.compress(b"m" + struct.pack(">I", 9_999_995) + bytes(9_999_995))
    )
    with pytest.raises(CodecError, match="max_size"):
        decode(bomb, max_size=1_000_000)
    assert decode(bomb) == bytes(9_999_995)


@pytest.mark.parametrize("container", [b"l\x00\x00\x00\x01", b"h\x01", b"t\x00\x00\x00\x01a\x00"])
def test_nesting_deeper_than_max_depth(container: bytes) -> None:
    closing = {b"l": b"j", b"h": b"", b"t": b""}[container[:1]]

    def nested(depth: int) -> bytes:
        return b"\x83" + container * depth + b"w\x01x" + closing * depth

    assert encode(decode(nested(512))) == nested(512)
    assert decode(nested(5), max_depth=5) is not None
    with pytest.raises(CodecError, match="max_depth"):
        decode(nested(513))
    with pytest.raises(CodecError, match="max_depth"):
        decode(nested(6), max_depth=5)
    with pytest.raises(CodecError, match=r"max_depth|too deeply"):
        decode(nested(100_000), max_depth=10**9)


def test_every_truncation_of_the_corpus_raises_codec_error() -> None:
    samples = [bytes.fromhex(h) for _, h, _ in CORPUS] + [ALIAS_TAG_OTP25, ALIAS_TAG_OTP28]
    samples.append(b"\x83" + _fun_bytes(free=[b"a\x05", b"w\x01x"]))
    for data in samples:
        for cut in range(len(data)):
            with pytest.raises(CodecError):
                decode(data[:cut])


def test_decode_accepts_any_buffer_type() -> None:
    data = encode({Atom("k"): [1, 2.5, b"x"]})
    assert decode(bytearray(data)) == decode(memoryview(data)) == {Atom("k"): [1, 2.5, b"x"]}
    assert decode_at(memoryview(bytearray(data)), 1)[0] == {Atom("k"): [1, 2.5, b"x"]}
    with pytest.raises(CodecError, match="offset 99"):
        decode_at(memoryview(data), 99)


def test_map_keys_that_python_conflates_stay_apart() -> None:
    data = encode({1: Atom("int"), MapKey(1.0): Atom("float"), MapKey(True): Atom("bool")})
    decoded = decode(data)
    assert decoded == {1: Atom("int"), MapKey(1.0): Atom("float"), MapKey(True): Atom("bool")}
    assert MapKey([1]) in decode(encode({MapKey([1]): 1, MapKey({Atom("k"): 2}): 3}))


# --- encoding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "data"),
    [
        ("héllo", b"\x83m\x00\x00\x00\x06h\xc3\xa9llo"),  # str is a binary, never a charlist
        (None, b"\x83w\x03nil"),
        (bytearray(b"ab"), b"\x83m\x00\x00\x00\x02ab"),
        (memoryview(b"ab"), b"\x83m\x00\x00\x00\x02ab"),
        ([True, False], b"\x83l\x00\x00\x00\x02w\x04truew\x05falsej"),  # bools are not bytes
        ([1, 256], b"\x83l\x00\x00\x00\x02a\x01b\x00\x00\x01\x00j"),
        (ImproperList((), Atom("x")), b"\x83w\x01x"),
        (Atom("é" * 200), b"\x83v\x01\x90" + "é".encode() * 200),
        (2**2100, b"\x83o\x00\x00\x01\x07\x00" + (2**2100).to_bytes(263, "little")),
        (-(2**64), b"\x83n\x09\x01" + (2**64).to_bytes(9, "little")),
        ((0,) * 256, b"\x83i\x00\x00\x01\x00" + b"a\x00" * 256),
    ],
)
def test_encoding_choices(value: Term, data: bytes) -> None:
    assert encode(value) == data


def test_long_lists_of_bytes_use_list_ext() -> None:
    assert encode([1] * 65535)[:4] == b"\x83k\xff\xff"
    assert encode([1] * 65536)[:6] == b"\x83l\x00\x01\x00\x00"


def test_subclasses_encode_as_their_base() -> None:
    from enum import IntEnum, StrEnum

    class Color(IntEnum):
        RED = 300

    class Word(StrEnum):
        HI = "hi"

    assert encode(Color.RED) == encode(300)
    assert encode(Word.HI) == encode("hi")
    assert encode((Color.RED, [Word.HI])) == encode((300, ["hi"]))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "set"),
        (object(), "object"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        ("\ud800", "surrogate"),
        (Pid(NONODE, -1, 0, 0), "Pid"),
        (Port(NONODE, 2**64, 0), "Port"),
        (Reference(NONODE, 0, ()), "Reference"),
        (Reference(NONODE, 0, (1,) * 6), "Reference"),
        (BitBinary(b"", 3), "BitBinary"),
        (BitBinary(b"\x00", 0), "BitBinary"),
        (Export(Atom("m"), Atom("f"), 256), "arity"),
        (OpaqueFun(b"junk"), "NEW_FUN_EXT"),
        ({"a": 1, b"a": 2}, "same Erlang term"),
        ({None: 1, Atom("nil"): 2}, "same Erlang term"),
        ({(1, "a"): 1, (1, b"a"): 2}, "same Erlang term"),
        ({MapKey(1.0): 1, 1.0: 2}, "same Erlang term"),
    ],
)
def test_unencodable_values(value: Term, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        encode(value)


def test_failed_encode_into_leaves_the_buffer_as_it_was() -> None:
    out = bytearray(b"keep")
    with pytest.raises(CodecError):
        encode_into(out, [1, 2, {3}])
    assert out == b"keep"


def test_self_containing_list_is_a_codec_error() -> None:
    loop: list[Term] = [1]
    loop.append(loop)
    with pytest.raises(CodecError, match="too deeply"):
        encode(loop)


def test_tag_values_match_the_spec() -> None:
    assert (Tag.VERSION, Tag.NEWER_REFERENCE, Tag.V4_PORT, Tag.LOCAL) == (131, 90, 120, 121)


def test_encode_refuses_a_term_that_contains_itself_or_nests_past_the_limit() -> None:
    # Both forms of the codec: the compiled one recurses on the C stack, where only the codec's own
    # count stops it.
    from pynode.etf.types import MAX_NESTING

    looped: list[Term] = []
    looped.append(looped)
    with pytest.raises(CodecError, match="too deeply"):
        encode(looped)
    for make in (lambda inner: [inner], lambda inner: (inner,), lambda inner: {b"k": inner}):
        term: Term = b"leaf"
        for _ in range(MAX_NESTING):
            term = make(term)
        assert decode(encode(term), max_depth=MAX_NESTING) == term
        with pytest.raises(CodecError, match="too deeply"):
            encode(make(term))
