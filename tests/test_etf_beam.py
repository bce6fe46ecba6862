"""The codec against the BEAM's own term_to_binary/binary_to_term (OTP 25 and OTP 28, no distribution).

One ``erl -noshell`` per release runs for the whole module. It prints, for each term of the corpus, the hex of
``term_to_binary(T, Opts)`` and of ``term_to_binary(T, [{minor_version, 2}])`` (UTF-8 atoms, the
form the distribution uses); then it reads back one hex line per term, written by this codec, and
prints whether ``binary_to_term`` of it is ``=:=`` to the original term.
"""

from __future__ import annotations

import functools
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

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
    Term,
    decode,
    encode,
)
from pynode.testing import otp

pytestmark = pytest.mark.beam

SESSION_TIMEOUT = 60.0
NONODE = Atom("nonode@nohost")
Check = Callable[[Term], bool]


@dataclass(frozen=True)
class Item:
    name: str
    erlang: str
    """An Erlang expression for the term."""
    expected: Term = None
    """The Python value it must decode to, unless ``check`` is given (terms made at run time)."""
    check: Check | None = None
    opts: str = "[]"
    """Options of the first term_to_binary call."""


def _is_local_ref(words: int) -> Check:
    return lambda t: type(t) is Reference and t.node == NONODE and len(t.ids) == words


def _is_alias_tag(t: Term) -> bool:
    return type(t) is ImproperList and t.elements == (Atom("alias"),) and type(t.tail) is Reference


CORPUS: list[Item] = [
    Item("zero", "0", 0),
    Item("byte", "255", 255),
    Item("int 256", "256", 256),
    Item("negative", "-1", -1),
    Item("int32 max", "2147483647", 2**31 - 1),
    Item("int32 min", "-2147483648", -(2**31)),
    Item("small big", "2147483648", 2**31),
    Item("negative big", "-(1 bsl 64)", -(2**64)),
    Item("large big", "1 bsl 2100", 2**2100),
    Item("float", "3.14159", 3.14159),
    Item("negative float", "-0.5", -0.5),
    Item("huge float", "1.0e300", 1.0e300),
    Item("old float", "0.1", 0.1, opts="[{minor_version, 0}]"),
    Item("atom", "ok", Atom("ok")),
    Item("empty atom", "''", Atom("")),
    Item("quoted atom", "'hello world'", Atom("hello world")),
    Item("latin-1 atom", "list_to_atom([104, 233, 108, 108, 111])", Atom("héllo")),
    Item("unicode atom", "list_to_atom([26085, 26412])", Atom("日本")),
    Item("longest atom", "list_to_atom(lists:duplicate(255, 26085))", Atom("日" * 255)),
    Item("true", "true", True),
    Item("false", "false", False),
    Item("nil", "nil", Atom("nil")),
    Item("empty binary", "<<>>", b""),
    Item("binary", "<<1, 2, 3>>", b"\x01\x02\x03"),
    Item("utf-8 binary", "unicode:characters_to_binary([104, 233, 26085])", "hé日".encode()),
    Item("large binary", 'binary:copy(<<"ab">>, 40000)', b"ab" * 40000),
    Item("bitstring", "<<1:3>>", BitBinary(b"\x20", 3)),
    Item("long bitstring", "<<255, 7:5>>", BitBinary(b"\xff\x38", 5)),
    Item("nil", "[]", []),
    Item("charlist", '"abc"', [97, 98, 99]),
    Item("latin-1 charlist", "[104, 233, 108]", [104, 233, 108]),
    Item("unicode charlist", "[26085, 26412]", [26085, 26412]),
    Item("mixed ints", "[1, 256, -3]", [1, 256, -3]),
    Item("long byte list", "lists:duplicate(70000, 7)", [7] * 70000),
    Item("improper", "[1 | 2]", ImproperList((1,), 2)),
    Item("improper atoms", "[a, b | c]", ImproperList((Atom("a"), Atom("b")), Atom("c"))),
    Item("empty tuple", "{}", ()),
    Item("nested tuple", "{1, {2, a}, [x]}", (1, (2, Atom("a")), [Atom("x")])),
    Item("large tuple", "list_to_tuple(lists:seq(1, 300))", tuple(range(1, 301))),
    Item("deep list", "lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 300))", None),
    Item("empty map", "#{}", {}),
    Item("map", '#{a => 1, <<"b">> => [1]}', {Atom("a"): 1, b"b": [1]}),
    Item("int and float keys", "#{1 => a, 1.0 => b}", {1: Atom("a"), MapKey(1.0): Atom("b")}),
    Item(
        "awkward keys",
        "#{[1] => x, #{k => v} => y, {1.0} => z, true => t, [] => n}",
        {
            MapKey([1]): Atom("x"),
            MapKey({Atom("k"): Atom("v")}): Atom("y"),
            MapKey((1.0,)): Atom("z"),
            MapKey(True): Atom("t"),
            MapKey([]): Atom("n"),
        },
    ),
    Item("nested maps", "#{a => #{b => #{c => [#{}]}}}", {Atom("a"): {Atom("b"): {Atom("c"): [{}]}}}),
    Item("hash map", "maps:from_list([{N, N * N} || N <- lists:seq(1, 40)])", {n: n * n for n in range(1, 41)}),
    Item("pid", "self()", check=lambda t: type(t) is Pid and t.node == NONODE),
    Item("port", "hd(erlang:ports())", check=lambda t: type(t) is Port and t.node == NONODE),
    Item("ref", "make_ref()", check=_is_local_ref(3)),
    Item("alias", "alias()", check=lambda t: type(t) is Reference),
    Item("call tag", "[alias | erlang:monitor(process, self(), [{alias, demonitor}])]", check=_is_alias_tag),
    Item("export", "fun lists:map/2", Export(Atom("lists"), Atom("map"), 2)),
    Item(
        "closure",
        "(fun() -> Y = 5, fun(X) -> X + Y end end)()",
        check=lambda t: type(t) is OpaqueFun and t.raw[:1] == b"p",
    ),
    Item(
        "closure in a term",
        "{ok, [fun erlang:now/0, fun() -> self() end]}",
        check=lambda t: t[0] == Atom("ok") and type(t[1][0]) is Export and type(t[1][1]) is OpaqueFun,
    ),
    Item("compressed", "lists:duplicate(100, hello)", [Atom("hello")] * 100, opts="[compressed]"),
    Item(
        "list of maps",
        '[#{id => N, name => <<"n">>, score => N / 4} || N <- lists:seq(1, 3)]',
        [{Atom("id"): n, Atom("name"): b"n", Atom("score"): n / 4} for n in range(1, 4)],
    ),
]


def _deep_list(depth: int) -> Term:
    term: Term = []
    for _ in range(depth):
        term = [term]
    return term


CORPUS[[i.name for i in CORPUS].index("deep list")] = Item(
    "deep list", "lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 300))", _deep_list(300)
)

_SCRIPT = """
Items = [{0}],
lists:foreach(fun({{T, Opts}}) ->
    io:format("~s ~s~n", [binary:encode_hex(term_to_binary(T, Opts)),
                          binary:encode_hex(term_to_binary(T, [{{minor_version, 2}}]))])
  end, Items),
lists:foreach(fun({{T, _}}) ->
    Bin = binary:decode_hex(list_to_binary(string:trim(io:get_line("")))),
    io:format("~w~n", [try binary_to_term(Bin) =:= T catch C:E -> {{C, E}} end])
  end, Items),
halt().
"""


@dataclass
class Session:
    beam_default: dict[str, bytes]
    beam_canonical: dict[str, bytes]
    decoded: dict[str, Term]
    beam_reads_ours: dict[str, str]


def _python_encoding(item: Item, beam_bytes: bytes) -> bytes:
    """The hand-written value for fixed terms; for terms made at run time, what we decoded."""
    if item.check is None:
        return encode(item.expected)
    try:
        return encode(decode(beam_bytes))
    except Exception:  # reported by the decoding test; send something the BEAM can read
        return encode(Atom("undecodable"))


@functools.cache
def run_session(release: str) -> Session:
    """The erl of ``release`` encodes the corpus, then judges our encodings (once per release)."""
    erl = otp.erl_executable(release)
    if otp.release_of(erl) != release:
        pytest.fail(f"no OTP {release} runtime in {otp.where_looked(release)} (scripts/_setup.sh fetches OTP 28)")
    script = _SCRIPT.format(",\n".join(f"{{{i.erlang}, {i.opts}}}" for i in CORPUS))
    proc = subprocess.Popen(
        [erl, "-noshell", "-eval", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watchdog = threading.Timer(SESSION_TIMEOUT, proc.kill)
    watchdog.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        lines = [proc.stdout.readline().decode().split() for _ in CORPUS]
        assert all(len(line) == 2 for line in lines), f"erl printed {lines!r}"
        default = {i.name: bytes.fromhex(line[0]) for i, line in zip(CORPUS, lines, strict=True)}
        canonical = {i.name: bytes.fromhex(line[1]) for i, line in zip(CORPUS, lines, strict=True)}
        answers = "".join(_python_encoding(i, default[i.name]).hex() + "\n" for i in CORPUS)
        out, err = proc.communicate(answers.encode(), timeout=SESSION_TIMEOUT)
        results = out.decode().split()
        assert len(results) == len(CORPUS), f"erl answered {out!r}, stderr {err!r}"
        decoded: dict[str, Term] = {}
        for i in CORPUS:
            try:
                decoded[i.name] = decode(default[i.name])
            except Exception as exc:  # each test reports its own item
                decoded[i.name] = exc
        return Session(default, canonical, decoded, dict(zip([i.name for i in CORPUS], results, strict=True)))
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module", params=["25", "28"], ids=["otp25", "otp28"])
def session(request: pytest.FixtureRequest) -> Session:
    return run_session(request.param)


@pytest.fixture(scope="module")
def session25() -> Session:
    return run_session("25")


@pytest.fixture(scope="module")
def session28() -> Session:
    return run_session("28")


def same(a: Any, b: Any) -> bool:
    """Equality as ``=:=`` sees it: 1, 1.0 and true are three different terms."""
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
    equal: bool = a == b
    return equal


def _matches(item: Item, value: Term) -> bool:
    return item.check(value) if item.check is not None else same(value, item.expected)


NAMES = [i.name for i in CORPUS]
BY_NAME = {i.name: i for i in CORPUS}


@pytest.mark.parametrize("name", NAMES)
def test_beam_encoding_decodes_to_the_expected_value(session: Session, name: str) -> None:
    item = BY_NAME[name]
    value = session.decoded[name]
    assert not isinstance(value, Exception), value
    assert _matches(item, value)
    assert _matches(item, decode(session.beam_canonical[name]))


@pytest.mark.parametrize("name", NAMES)
def test_our_encoding_is_equal_on_the_beam(session: Session, name: str) -> None:
    assert session.beam_reads_ours[name] == "true"


# Byte for byte against each release's encoder, except a port on OTP 28 (the next test).
@pytest.mark.parametrize(
    ("session", "name"),
    [(release, name) for release in ("25", "28") for name in NAMES if (release, name) != ("28", "port")],
    indirect=["session"],
)
def test_reencoding_matches_the_beam_byte_for_byte(session: Session, name: str) -> None:
    canonical = session.beam_canonical[name]
    assert encode(decode(canonical)) == canonical


def test_otp28_writes_every_port_as_v4_port_ext(session25: Session, session28: Session) -> None:
    # OTP 25 writes NEW_PORT_EXT (89) when the id fits in 32 bits, as this codec does; OTP 28
    # writes V4_PORT_EXT (120) always. Each release reads both forms (test_our_encoding_is_equal_on_the_beam).
    assert session25.beam_canonical["port"][1] == 89
    ours, theirs = encode(decode(session28.beam_canonical["port"])), session28.beam_canonical["port"]
    assert (ours[1], theirs[1]) == (89, 120)
    assert decode(ours) == decode(theirs)
    assert session28.beam_reads_ours["port"] == "true"


def test_otp25_default_encoding_uses_latin1_atoms(session25: Session) -> None:
    # Why the byte comparison above uses minor_version 2: OTP 25's default is ATOM_EXT (100).
    assert session25.beam_default["atom"] == b"\x83d\x00\x02ok"
    assert session25.beam_canonical["atom"] == b"\x83w\x02ok"


def test_otp28_default_encoding_uses_utf8_atoms(session28: Session) -> None:
    # OTP 26 made minor_version 2 the default: both encodings are SMALL_ATOM_UTF8_EXT (119).
    assert session28.beam_default["atom"] == session28.beam_canonical["atom"] == b"\x83w\x02ok"
