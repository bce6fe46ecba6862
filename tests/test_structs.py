"""Elixir structs and keyword lists where JSON is meant (docs/protocol.md section 8), on terms alone.

The same values built by a real Elixir node are checked in tests/test_termmap_elixir.py; here the
edge cases that need no node: Decimal's printing rules, malformed structs, refusals.
"""

from __future__ import annotations

import decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynode.bridge.errors import BridgeError
from pynode.bridge.termmap import to_json
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Export, OpaqueFun, Pid, Port, Reference, Term

A = Atom


def struct(module: str, **fields: Any) -> dict[Any, Any]:
    return {A("__struct__"): A(module), **{A(k): v for k, v in fields.items()}}


def dec(sign: int, coef: Any, exp: int) -> dict[Any, Any]:
    return struct("Elixir.Decimal", sign=sign, coef=coef, exp=exp)


def refused(term: Any) -> str:
    with pytest.raises(BridgeError) as exc:
        to_json(term)
    assert exc.value.kind == "bad_request"
    return exc.value.message


# --- Decimal ----------------------------------------------------------------------------------

# Decimal.to_string/1 (scientific) of each struct, as Decimal's documentation and the General
# Decimal Arithmetic "to-scientific-string" rules give it.
DECIMALS = [
    ((1, 0, 0), "0"),
    ((1, 0, -2), "0.00"),
    ((1, 0, -8), "0E-8"),
    ((1, 0, 2), "0E+2"),
    ((1, 123, 0), "123"),
    ((-1, 123, 0), "-123"),
    ((1, 123, -2), "1.23"),
    ((1, 123, -5), "0.00123"),
    ((1, 123, -8), "0.00000123"),
    ((1, 123, -9), "1.23E-7"),
    ((1, 123, 1), "1.23E+3"),
    ((1, 5, 3), "5E+3"),
    ((-1, 1, -1), "-0.1"),
    ((1, 100, -2), "1.00"),
    ((1, 10**30 + 7, -30), "1.000000000000000000000000000007"),
    ((1, A("inf"), 0), "Infinity"),
    ((-1, A("inf"), 0), "-Infinity"),
    ((1, A("NaN"), 0), "NaN"),
    ((-1, A("NaN"), 0), "-NaN"),
]


@pytest.mark.parametrize(("fields", "text"), DECIMALS)
def test_decimal_is_its_decimal_string(fields: tuple[int, Any, int], text: str) -> None:
    assert to_json({A("price"): dec(*fields)}) == {"price": text}


@given(
    st.sampled_from([1, -1]),
    st.integers(min_value=0, max_value=10**40),
    st.integers(min_value=-40, max_value=40),
)
def test_decimal_matches_the_general_decimal_arithmetic_rules(sign: int, coef: int, exp: int) -> None:
    # Python's decimal implements the same specification's to-scientific-string.
    expected = str(decimal.Decimal((0 if sign == 1 else 1, tuple(int(d) for d in str(coef)), exp)))
    assert to_json(dec(sign, coef, exp)) == expected


@pytest.mark.parametrize(
    ("term", "why"),
    [
        (dec(0, 1, 0), "sign"),
        (dec(1, -1, 0), "coef"),
        (dec(1, 1.5, 0), "coef"),
        (dec(1, 1, b"2"), "exp"),
        (struct("Elixir.Decimal", sign=1, coef=1), "exp"),
    ],
)
def test_malformed_decimal_is_refused_naming_the_field(term: Any, why: str) -> None:
    message = refused({A("price"): term})
    assert "Decimal" in message and "$.price" in message and why in message


# --- calendar structs -------------------------------------------------------------------------

ISO = A("Elixir.Calendar.ISO")


def time_fields(hour: int = 3, minute: int = 4, second: int = 5, us: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    return {"hour": hour, "minute": minute, "second": second, "microsecond": us}


def test_datetime_offsets() -> None:
    base = {"year": 2024, "month": 1, "day": 2, "calendar": ISO, **time_fields()}
    utc = struct("Elixir.DateTime", **base, time_zone=b"Etc/UTC", zone_abbr=b"UTC", utc_offset=0, std_offset=0)
    assert to_json(utc) == "2024-01-02T03:04:05Z"
    london = {**utc, A("time_zone"): b"Europe/London", A("zone_abbr"): b"GMT"}
    assert to_json(london) == "2024-01-02T03:04:05+00:00"
    summer = {**utc, A("time_zone"): b"Europe/Paris", A("utc_offset"): 3600, A("std_offset"): 3600}
    assert to_json(summer) == "2024-01-02T03:04:05+02:00"
    odd = {**utc, A("time_zone"): b"America/St_Johns", A("utc_offset"): -12630}  # -03:30:30
    assert to_json(odd) == "2024-01-02T03:04:05-03:30"


def test_time_precision_and_years_outside_four_digits() -> None:
    t = struct("Elixir.Time", calendar=ISO, **time_fields(us=(4000, 3)))
    assert to_json(t) == "03:04:05.004"
    t6 = struct("Elixir.Time", calendar=ISO, **time_fields(us=(7, 6)))
    assert to_json(t6) == "03:04:05.000007"
    assert to_json(struct("Elixir.Date", calendar=ISO, year=-44, month=3, day=15)) == "-0044-03-15"
    assert to_json(struct("Elixir.Date", calendar=ISO, year=12345, month=1, day=1)) == "12345-01-01"


@pytest.mark.parametrize(
    ("term", "why"),
    [
        (struct("Elixir.Time", calendar=ISO, **time_fields(hour=24)), "hour"),
        (struct("Elixir.Time", calendar=ISO, **time_fields(us=(0, 7))), "precision"),
        (struct("Elixir.Time", calendar=ISO, **time_fields(us=(1_000_000, 6))), "microsecond"),
        (struct("Elixir.Date", calendar=A("Elixir.Cldr.Calendar.Coptic"), year=1, month=1, day=1), "Calendar.ISO"),
        (struct("Elixir.Date", calendar=ISO, year=1, month=1), "day"),
    ],
)
def test_malformed_calendar_structs_are_refused(term: Any, why: str) -> None:
    message = refused([term])
    assert why in message and "$[0]" in message


# --- MapSet, other structs, keyword lists -----------------------------------------------------


def test_mapset_is_a_list_of_its_members() -> None:
    members: dict[Term, list[Term]] = {1: [], b"two": [], A("three"): []}
    assert to_json(struct("Elixir.MapSet", map=members, version=2)) == [1, "two", "three"]


def test_other_structs_are_their_fields() -> None:
    uri = struct("Elixir.URI", scheme=b"https", host=b"example.com", port=443, path=A("nil"))
    assert to_json(uri) == {"scheme": "https", "host": "example.com", "port": 443, "path": None}
    error = struct("Elixir.RuntimeError", message=b"boom", __exception__=True)
    assert to_json(error) == {"message": "boom", "__exception__": True}


def test_keyword_lists_are_objects() -> None:
    assert to_json([(A("city"), b"Oslo"), (A("days"), 3)]) == {"city": "Oslo", "days": 3}
    assert to_json({A("opts"): [(A("nested"), [(A("deep"), True)])]}) == {"opts": {"nested": {"deep": True}}}
    assert to_json([]) == []
    # Not keyword lists: a pair whose first element is not an atom, or a list mixing pairs and others.
    assert to_json([(b"city", b"Oslo")]) == [["city", "Oslo"]]
    assert to_json([(A("a"), 1), 2]) == [["a", 1], 2]
    assert to_json([(A("a"), 1, 2)]) == [["a", 1, 2]]


def test_a_keyword_list_with_a_key_twice_is_refused() -> None:
    message = refused({A("opts"): [(A("a"), 1), (A("a"), 2)]})
    assert "'a'" in message and "twice" in message and "$.opts" in message


# --- terms with no JSON form ------------------------------------------------------------------

NODE = A("e1@127.0.0.1")


@pytest.mark.parametrize(
    ("term", "what"),
    [
        (Pid(NODE, 90, 0, 1), "pid"),
        (Reference(NODE, 1, (1, 2, 3)), "reference"),
        (Port(NODE, 7, 1), "port"),
        (Export(A("lists"), A("sort"), 1), "fun"),
        (OpaqueFun(b"p\x00"), "fun"),
    ],
)
def test_terms_with_no_json_form_are_named_in_erlang_syntax(term: Any, what: str) -> None:
    message = refused({A("deps"): {A("owner"): term}})
    assert f"the {what} {format_term(term)} at $.deps.owner has no JSON form" == message
    assert "Pid(" not in message and "Atom(" not in message
