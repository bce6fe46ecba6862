"""Term <-> JSON mapping (docs/protocol.md section 8), one test per rule."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from pynode.bridge.errors import BridgeError
from pynode.bridge.termmap import ENVELOPE_KEYS, from_json, key, text_from_prompt, to_json
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, ImproperList, MapKey, Pid, Reference

PID = Pid(Atom("a@host"), 1, 0, 1)


def bad_request(exc: pytest.ExceptionInfo[BridgeError]) -> str:
    assert exc.value.kind == "bad_request"
    return exc.value.message


# --- to_json ----------------------------------------------------------------------------------


def test_utf8_binary_becomes_str() -> None:
    assert to_json("héllo".encode()) == "héllo"


def test_invalid_utf8_binary_is_bad_request() -> None:
    with pytest.raises(BridgeError) as exc:
        to_json({b"name": b"\xff\xfe"})
    assert "not valid UTF-8" in bad_request(exc)
    assert "$.name" in exc.value.message


def test_booleans_stay_booleans() -> None:
    assert to_json([True, False]) == [True, False]
    assert to_json(Atom("true")) is True
    assert to_json(Atom("false")) is False


@pytest.mark.parametrize("name", ["nil", "undefined"])
def test_nil_and_undefined_become_none(name: str) -> None:
    assert to_json(Atom(name)) is None


def test_other_atoms_become_plain_strings() -> None:
    value = to_json(Atom("celsius"))
    assert value == "celsius"
    assert type(value) is str


def test_map_keys_atoms_and_binaries_become_str() -> None:
    value = to_json({Atom("city"): b"Paris", b"units": Atom("metric")})
    assert value == {"city": "Paris", "units": "metric"}
    assert isinstance(value, dict)
    assert all(type(k) is str for k in value)


def test_boolean_map_keys_become_their_names() -> None:
    assert to_json({MapKey(True): 1, MapKey(False): 2}) == {"true": 1, "false": 2}


@pytest.mark.parametrize("bad_key", [1, MapKey(1.5), (Atom("a"), Atom("b")), MapKey([1])])
def test_other_map_keys_are_bad_request_naming_the_key(bad_key: Any) -> None:
    with pytest.raises(BridgeError) as exc:
        to_json({Atom("outer"): {bad_key: 1}})
    message = bad_request(exc)
    shown = bad_key.term if isinstance(bad_key, MapKey) else bad_key
    assert format_term(shown) in message  # Erlang syntax (section 8), never a Python repr
    assert "$.outer" in message


def test_same_key_as_atom_and_binary_is_bad_request() -> None:
    with pytest.raises(BridgeError) as exc:
        to_json({Atom("a"): 1, b"a": 2})
    assert "twice" in bad_request(exc)


def test_lists_and_tuples_become_lists() -> None:
    assert to_json([1, (2, Atom("x")), []]) == [1, [2, "x"], []]


def test_integers_of_any_size_and_floats() -> None:
    big = 2**200
    assert to_json([big, -big, 1.5, 0.0]) == [big, -big, 1.5, 0.0]


@pytest.mark.parametrize(
    "term",
    [PID, Reference(Atom("a@host"), 1, (1, 2, 3)), ImproperList((1,), 2)],
)
def test_terms_without_json_form_are_bad_request(term: Any) -> None:
    with pytest.raises(BridgeError) as exc:
        to_json({Atom("x"): [term]})
    assert "$.x[0]" in bad_request(exc)


def test_deep_nesting_is_bad_request_not_a_crash() -> None:
    term: Any = []
    for _ in range(5000):
        term = [term]
    with pytest.raises(BridgeError) as exc:
        to_json(term)
    assert "deeply" in bad_request(exc)


# --- from_json --------------------------------------------------------------------------------


def test_str_stays_str_never_atom() -> None:
    value = from_json(Atom("looks_like_an_atom"))
    assert value == "looks_like_an_atom"
    assert type(value) is str
    assert type(from_json("text")) is str


def test_scalars() -> None:
    assert from_json(None) is None
    assert from_json(True) is True
    assert from_json(7) == 7
    assert from_json(2.5) == 2.5


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_become_nil(value: float) -> None:
    assert from_json(value) is None


def test_containers_get_str_keys() -> None:
    assert from_json({"a": [1, (2, 3)], 1: True, None: 0}) == {"a": [1, [2, 3]], "1": True, "null": 0}
    assert from_json({True: 1, 2.5: 2}) == {"true": 1, "2.5": 2}


def test_bytes_stay_binaries() -> None:
    assert from_json(b"\x00\xff") == b"\x00\xff"


class Inner(BaseModel):
    when: datetime.date


class Outer(BaseModel):
    name: str
    inner: Inner
    tags: tuple[str, ...]


def test_pydantic_models_are_dumped_in_json_mode() -> None:
    value = Outer(name="n", inner=Inner(when=datetime.date(2024, 5, 17)), tags=("a",))
    assert from_json(value) == {"name": "n", "inner": {"when": "2024-05-17"}, "tags": ["a"]}


def test_other_objects_go_through_pydantic_json_mode() -> None:
    assert from_json(datetime.date(2024, 1, 2)) == "2024-01-02"


def test_unserialisable_objects_are_internal_errors() -> None:
    with pytest.raises(BridgeError) as exc:
        from_json(object())
    assert exc.value.kind == "internal_error"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


def as_beam(value: Any, atom_keys: bool) -> Any:
    """``value`` as the codec would decode it after an Elixir caller sent it."""
    if value is None:
        return Atom("nil")
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [as_beam(v, atom_keys) for v in value]
    if isinstance(value, dict):
        return {
            (Atom(k) if atom_keys and len(k) < 100 else k.encode()): as_beam(v, atom_keys) for k, v in value.items()
        }
    return value


@given(json_values, st.booleans())
def test_json_values_survive_the_trip(value: Any, atom_keys: bool) -> None:
    assert to_json(as_beam(value, atom_keys)) == value
    assert from_json(value) == value


# --- text_from_prompt -------------------------------------------------------------------------


def test_prompt_binary() -> None:
    assert text_from_prompt("Größe".encode()) == "Größe"


def test_prompt_charlist_as_typed_in_erl() -> None:
    assert text_from_prompt([104, 101, 108, 108, 111]) == "hello"


def test_prompt_charlist_latin1_range_is_code_points() -> None:
    assert text_from_prompt([104, 233]) == "hé"


def test_prompt_charlist_beyond_latin1() -> None:
    assert text_from_prompt([26085, 26412, 128512]) == "日本😀"


def test_prompt_iolist() -> None:
    assert text_from_prompt([b"he", [108, [108]], b"", "ö".encode(), [[]]]) == "hellö"


def test_prompt_iolist_with_binary_tail() -> None:
    assert text_from_prompt(ImproperList((b"ab", 99), b"de")) == "abcde"


def test_prompt_empty() -> None:
    assert text_from_prompt([]) == ""
    assert text_from_prompt(b"") == ""


@pytest.mark.parametrize(
    "prompt",
    [
        Atom("hello"),
        42,
        (b"a",),
        [Atom("a")],
        [-1],
        [0xD800],
        [0x110000],
        [True],
        b"\xc3",
        [b"ok", b"\xff"],
        ImproperList((b"a",), 5),
        {b"a": 1},
    ],
)
def test_prompt_that_is_not_text_is_bad_request(prompt: Any) -> None:
    with pytest.raises(BridgeError) as exc:
        text_from_prompt(prompt)
    assert bad_request(exc)


# --- key --------------------------------------------------------------------------------------


def test_envelope_keys_are_atoms() -> None:
    for name in ("output", "messages", "new_messages", "usage", "run_id", "tool_calls", "reply_to"):
        assert name in ENVELOPE_KEYS
        assert key(name) == Atom(name)
        assert isinstance(key(name), Atom)


def test_key_refuses_anything_else() -> None:
    with pytest.raises(ValueError):
        key("made_up_by_the_model")
