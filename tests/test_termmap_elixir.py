"""Elixir values as JSON (docs/protocol.md section 8), checked against a real Elixir node.

The node builds the values and prints what Elixir itself makes of them (``to_iso8601``,
``MapSet.to_list``, ``Map.from_struct``); the terms cross the wire as ``term_to_binary`` encodes
them and go through the bridge's ``to_json``; both must agree.
"""

from __future__ import annotations

import pytest
from agent_support import term
from beam import BeamFactory, BeamNode

from pynode.bridge.errors import BridgeError
from pynode.bridge.termmap import to_json
from pynode.etf.pretty import format_term
from pynode.etf.types import Term

pytestmark = pytest.mark.beam

CALENDAR_VALUES = """[
  ~U[2024-01-02 03:04:05Z],
  ~U[2024-01-02 03:04:05.120Z],
  ~U[1999-12-31 23:59:59.999999Z],
  %DateTime{year: 2024, month: 7, day: 14, hour: 9, minute: 0, second: 0, microsecond: {7, 3},
            time_zone: "Europe/Paris", zone_abbr: "CEST", utc_offset: 3600, std_offset: 3600},
  %DateTime{year: -5, month: 1, day: 2, hour: 3, minute: 4, second: 5, microsecond: {0, 0},
            time_zone: "America/St_Johns", zone_abbr: "NST", utc_offset: -12630, std_offset: 0},
  %DateTime{year: 12345, month: 1, day: 2, hour: 3, minute: 4, second: 5, microsecond: {0, 0},
            time_zone: "Europe/London", zone_abbr: "GMT", utc_offset: 0, std_offset: 0},
  %DateTime{year: 2024, month: 1, day: 2, hour: 3, minute: 4, second: 5, microsecond: {0, 0},
            time_zone: "Etc/UTC", zone_abbr: "UTC", utc_offset: -30, std_offset: 0},
  ~N[2024-01-02 03:04:05],
  ~N[2024-01-02 03:04:05.000001],
  ~D[2024-02-29],
  ~D[-0044-03-15],
  ~T[00:00:00],
  ~T[23:59:59.5],
  ~T[12:30:00.004]
]"""


async def elixir(beam: BeamFactory) -> BeamNode:
    return await beam("ex1", kind="elixir")


def texts(printed: Term) -> list[str]:
    assert isinstance(printed, list)
    return [p.decode() for p in printed]


async def test_calendar_structs_are_what_to_iso8601_prints(beam: BeamFactory) -> None:
    ex = await elixir(beam)
    values = await term(ex, CALENDAR_VALUES)
    printed = await term(ex, f"Enum.map({CALENDAR_VALUES}, fn v -> v.__struct__.to_iso8601(v) end)")
    assert isinstance(values, list)
    assert [to_json(v) for v in values] == texts(printed)
    # And inside the data a tool returns: a map with atom keys, a list.
    nested = await term(ex, "%{at: ~U[2024-01-02 03:04:05Z], days: [~D[2024-01-01], ~D[2024-01-02]]}")
    assert to_json(nested) == {"at": "2024-01-02T03:04:05Z", "days": ["2024-01-01", "2024-01-02"]}


async def test_decimal_structs_as_the_wire_brings_them(beam: BeamFactory) -> None:
    # Decimal is a Hex package: the struct is built by hand, as %Decimal{} builds it.
    ex = await elixir(beam)
    values = await term(
        ex,
        "for {s, c, e} <- [{1, 123, -2}, {-1, 5, 3}, {1, 0, -8}, {1, 123, -9}, {1, :inf, 0}, {-1, :NaN, 0}],"
        " do: %{__struct__: Decimal, sign: s, coef: c, exp: e}",
    )
    assert to_json(values) == ["1.23", "-5E+3", "0E-8", "1.23E-7", "Infinity", "-NaN"]


async def test_mapsets_other_structs_and_keyword_lists(beam: BeamFactory) -> None:
    ex = await elixir(beam)
    mapset = 'MapSet.new([3, 1, "two", :four])'
    assert to_json(await term(ex, mapset)) == to_json(await term(ex, f"MapSet.to_list({mapset})"))
    uri = 'URI.parse("https://example.com:8443/a?b=1")'
    as_fields = to_json(await term(ex, f"Map.from_struct({uri})"))
    assert to_json(await term(ex, uri)) == as_fields
    assert isinstance(as_fields, dict) and as_fields["host"] == "example.com" and "__struct__" not in as_fields
    assert to_json(await term(ex, "1..10//3")) == {"first": 1, "last": 10, "step": 3}
    keyword = await term(ex, '[city: "Oslo", days: 3, units: [temp: :celsius, wind: nil]]')
    assert to_json(keyword) == {"city": "Oslo", "days": 3, "units": {"temp": "celsius", "wind": None}}
    assert to_json(await term(ex, '%{"opts" => [], "pairs" => [{"a", 1}]}')) == {"opts": [], "pairs": [["a", 1]]}


@pytest.mark.parametrize(
    ("expr", "what"),
    [
        ("%{owner: self()}", "pid"),
        ("%{ref: make_ref()}", "reference"),
        ("%{fun: &Enum.map/2}", "fun"),
        ("%{fun: fn x -> x end}", "fun"),
        ("%{port: hd(Port.list())}", "port"),
    ],
)
async def test_terms_with_no_json_form_are_refused_by_name(beam: BeamFactory, expr: str, what: str) -> None:
    ex = await elixir(beam)
    value = await term(ex, expr)
    assert isinstance(value, dict)
    (shown,) = value.values()
    with pytest.raises(BridgeError) as exc:
        to_json(value)
    assert exc.value.kind == "bad_request"
    message = exc.value.message
    assert message.startswith(f"the {what} {format_term(shown)} at $.")
    assert message.endswith("has no JSON form")
    assert not any(python in message for python in ("Pid(", "Reference(", "OpaqueFun(", "Atom(", "b'"))
