"""The io server's rendering of what remote code prints (io:format / IO.puts) into our log."""

from __future__ import annotations

import pytest

from pynode.etf import Atom, ImproperList
from pynode.runtime.services import _render_format, render_chars, show_term


@pytest.mark.parametrize(
    ("fmt", "args", "text"),
    [
        (b"hello ~p from ~s~n", [42, b"erl"], "hello 42 from erl\n"),
        (b"~s~s~n", [b"a", "b"], "ab\n"),
        (b"~w and ~p", [Atom("ok"), Atom("Not plain")], "ok and 'Not plain'"),
        (b"~10.3.xs|~-8s|", [b"ab", b"cd"], "ab|cd|"),
        (b"~*c~5.2f ~~", [3, 120, 1.5], "x1.5 ~"),
        (b"~tp ~ts", [{b"k": [104, 105]}, "\u00e9t\u00e9"], '#{<<"k">> => "hi"} \u00e9t\u00e9'),
        (b"~P|~W", [[1, 2], 5, (Atom("a"),), 3], "[1,2]|{a}"),
        (b"missing ~p ~p", [1], "missing 1 ~p"),
    ],
)
def test_format_directives(fmt: bytes, args: list[object], text: str) -> None:
    assert _render_format(fmt, args) == text


def test_chars_in_every_io_shape() -> None:
    assert render_chars([b"ab", [99, "d"], ImproperList((101,), b"f")]) == "abcdef"
    assert render_chars(b"\xff") == "\ufffd"


def test_terms_shown_roughly_as_erlang_prints_them() -> None:
    assert show_term((True, Atom("ok"), b"text", b"\x00\xff", [], [1, 2], "s")) == (
        '{true,ok,<<"text">>,<<0,255>>,[],[1,2],<<"s"/utf8>>}'
    )
