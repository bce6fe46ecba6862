"""Terms in Erlang syntax within a budget: the text erl writes, and work bounded by the limit."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pynode.etf.decode import decode
from pynode.etf.encode import encode
from pynode.etf.pretty import TermText, format_term
from pynode.etf.types import Atom, BitBinary, Export, ImproperList, MapKey, OpaqueFun, Pid, Port, Reference, Term

NODE = Atom("a@h")


@pytest.mark.parametrize(
    ("term", "text"),
    [
        (b"soon", '<<"soon">>'),
        (b"\x01\x02\xc8", "<<1,2,200>>"),
        ('say "hi"', '<<"say \\"hi\\""/utf8>>'),
        (Atom("ok"), "ok"),
        (Atom("Ok"), "'Ok'"),
        (Atom("and"), "'and'"),
        (Atom("it's"), "'it\\'s'"),
        (Atom(""), "''"),
        (Atom("a@b"), "a@b"),
        (ImproperList((Atom("a"),), Atom("b")), "[a|b]"),
        ({Atom("k"): [1, 2]}, "#{k => [1,2]}"),
        ({MapKey(1.0): True}, "#{1.0 => true}"),
        ([104, 105], '"hi"'),
        ([], "[]"),
        ((), "{}"),
        (1.0e20, "1.0e20"),
        (0.1, "0.1"),
        (-0.0, "-0.0"),
        (Pid(NODE, 85, 0, 1), "<a@h.85.0>"),
        (Reference(NODE, 1, (3, 2, 1)), "#Ref<a@h.1.2.3>"),
        (Port(NODE, 7, 1), "#Port<a@h.7>"),
        (Export(Atom("lists"), Atom("map"), 2), "fun lists:map/2"),
        (OpaqueFun(b"p"), "#Fun<...>"),
        (BitBinary(b"\xff\xe0", 3), "<<255,7:3>>"),
        (None, "nil"),
        (object(), "#object<>"),
    ],
)
def test_erlang_syntax(term: Term, text: str) -> None:
    assert format_term(term) == text


def test_the_budget_is_kept_exactly() -> None:
    term = [Atom("abc")] * 1000
    text = format_term(term, limit=50)
    assert len(text) == 50 and text.endswith("...") and text.startswith("[abc,abc,")
    assert format_term(term, limit=4001) == "[" + ",".join(["abc"] * 1000) + "]"
    assert format_term(b"x" * 10, limit=1) == "..."


def test_a_16_mib_term_is_shown_from_its_head() -> None:
    big = {Atom("blob"): bytes(range(256)) * 65536, Atom("text"): b"t" * (16 << 20)}
    text = format_term((Atom("unknown"), big, [1] * 1_000_000), limit=300)
    assert len(text) == 300 and text.startswith("{unknown,#{blob => <<0,1,2,3,")
    assert format_term(b"a" * (16 << 20), limit=20) == '<<"aaaaaaaaaaaaaa...'
    assert format_term(list(b"abc" * (1 << 20)), limit=10) == '"abcabc...'


def test_integers_beyond_the_decimal_limit_do_not_raise() -> None:
    huge = 7**20_000  # about 16,900 digits: str() raises past 4,300
    with pytest.raises(ValueError):
        str(huge)
    text = format_term(huge, limit=100)
    assert text.startswith("16#") and len(text) == 100
    assert int(text[3:-3], 16) == huge >> (huge.bit_length() - 4 * len(text[3:-3]))
    assert format_term(-huge, limit=20).startswith("-16#")
    assert format_term(10**4000) == str(10**4000)[:1997] + "..."


def test_deep_nesting_is_cut_not_a_recursion_error() -> None:
    term: Term = Atom("x")
    for _ in range(100_000):
        term = [term]
    text = format_term(term, limit=10_000)
    assert text.startswith("[[[[") and "..." in text


def test_non_latin1_text_prints_as_erl_does_by_default() -> None:
    assert format_term("\u00e9t\u00e9".encode()) == '<<"\u00e9t\u00e9"/utf8>>'
    assert format_term("日本".encode()) == "<<230,151,165,230,156,172>>"
    assert format_term(Atom("日本")) == "'日本'"  # atoms keep their characters under ~tp
    assert format_term(Atom("a\nb")) == "'a\\nb'"


def test_term_text_is_rendered_only_when_shown() -> None:
    shown = TermText(b"x" * 1000, 12)
    assert str(shown) == '<<"xxxxxx...' and f"{shown!r}" == str(shown)


def sample_terms() -> list[Term]:
    rng = random.Random(9)
    floats = [
        1.0,
        0.1,
        1e20,
        1e21,
        1e16,
        123456789012345.0,
        1e-5,
        0.001,
        1.5e-7,
        -0.0,
        5e-324,
        1.7976931348623157e308,
        100.0,
        1234.5,
        1e15,
        12e20,
        0.0001,
        123e-10,
        2.5,
        -3.75e-9,
        9368907232542478.0,
    ]
    for _ in range(400):
        x = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0]
        if x == x and abs(x) != float("inf"):
            floats.append(x)
        floats.append(rng.uniform(-1e6, 1e6))
        floats.append(float(rng.randint(0, 10 ** rng.randint(0, 25))))
    return [*floats, b"soon", b"\x01\x02\xc8", 'h"\u00e9\\'.encode(), BitBinary(b"\x20", 3), BitBinary(b"\xff\xe0", 3),
            (Atom("a"), Atom("b")), {Atom("a"): 1}, ImproperList((1,), 2), Atom("x'y"), Atom("and"), Atom("A"),
            Atom("a b"), list(b"hi\n"), [104, 300], Atom("a\nb"), Atom(""), Atom("\u00e9"), Atom("a@b"), Atom("aB_9"),
            [], (), {}, b"a\tb\x1b\x00", b"abc\x7f", b"a\tb", [1, 2, [3]], -5, 2**100, -(2**70), Atom("a\\b"),
            Atom("日本"), "日本".encode(), [0x65E5, 0x672C], b"", Export(Atom("lists"), Atom("map"), 2), [10], [127],
            [160], list(b"\x08\x0b"), {Atom("k"): {b"n": [1 | 0]}}, 10**300, -(10**40)]  # fmt: skip


PRINT_MODULE = """-module(pp).
-export([main/1]).
main([In]) ->
  io:setopts([{encoding, unicode}]), {ok, B} = file:read_file(In), loop(B), halt().
loop(<<>>) -> ok;
loop(<<N:32, T:N/binary, R/binary>>) ->
  Opts = [{column, 1}, {line_length, 100000000}, {depth, -1}, {encoding, unicode}],
  io:put_chars([io_lib_pretty:print(binary_to_term(T), Opts), $\\n]), loop(R).
"""


@pytest.mark.beam
def test_the_text_is_what_erl_writes(tmp_path: Path) -> None:
    """Every sample as erl's ``~tp`` writes it (one line, no depth limit), compared byte for byte."""
    terms = sample_terms()
    (tmp_path / "pp.erl").write_text(PRINT_MODULE)
    data = tmp_path / "terms.bin"
    data.write_bytes(b"".join(struct.pack(">I", len(b)) + b for b in map(encode, terms)))
    subprocess.run(["erlc", "-o", str(tmp_path), str(tmp_path / "pp.erl")], check=True, timeout=120)
    run = subprocess.run(
        ["erl", "-noshell", "-pa", str(tmp_path), "-run", "pp", "main", str(data)],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    lines = run.stdout.decode().splitlines()
    assert len(lines) == len(terms), run.stderr
    ours = [format_term(t) for t in terms]
    wrong = [(t, mine, erls) for t, mine, erls in zip(terms, ours, lines, strict=True) if mine != erls]
    assert not wrong, wrong[:5]
    # Decoded back, the same text: nothing depends on the Python types the encoder took.
    assert [format_term(decode(encode(t))) for t in terms] == lines


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
