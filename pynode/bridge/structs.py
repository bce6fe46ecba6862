"""Elixir's calendar and Decimal structs as the strings Elixir's JSON libraries write for them.

Jason (and Elixir's own ``JSON`` since 1.18) encode a ``DateTime``, ``NaiveDateTime``, ``Date`` or
``Time`` with its ``to_iso8601/1`` and a ``Decimal`` with ``Decimal.to_string/1`` (scientific form).
The functions here produce the same characters from the struct's fields as they cross the wire, so a
tool result built in Elixir reaches the model as an Elixir developer expects. A struct whose fields
Elixir itself would refuse to print is refused (``BridgeError(bad_request)``) rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from pynode.bridge.errors import BridgeError
from pynode.etf.types import Atom, Term

__all__ = ["struct_name", "struct_string"]

_ISO: Final = "Elixir.Calendar.ISO"


def struct_name(module: Atom) -> str:
    """``'Elixir.DateTime'`` -> ``DateTime``: the name an Elixir developer types."""
    return module.removeprefix("Elixir.")


class _Fields:
    """Reads a struct's fields, refusing what Elixir's own printer would refuse."""

    def __init__(self, name: str, fields: Mapping[Term, Term], path: str) -> None:
        self.name = name
        self.fields = fields
        self.path = path

    def bad(self, why: str) -> BridgeError:
        return BridgeError("bad_request", f"the {self.name} struct at {self.path} cannot be written: {why}")

    def get(self, key: str) -> Term:
        try:
            return self.fields[Atom(key)]
        except KeyError:
            raise self.bad(f"it has no {key} field") from None

    def int(self, key: str, low: int | None = None, high: int | None = None) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(f"{key} is not an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.bad(f"{key} {value} is out of range")
        return value

    def iso_calendar(self) -> None:
        calendar = self.get("calendar")
        if calendar != _ISO:
            raise self.bad("only Calendar.ISO dates and times have an ISO 8601 form here")


def _padded(value: int, width: int) -> str:
    """An integer zero-padded to ``width`` digits, the sign in front (``-0044``)."""
    digits = str(abs(value)).rjust(width, "0")
    return "-" + digits if value < 0 else digits


def _date(f: _Fields) -> str:
    return f"{_padded(f.int('year'), 4)}-{_padded(f.int('month'), 2)}-{_padded(f.int('day'), 2)}"


def _time(f: _Fields) -> str:
    text = f"{_padded(f.int('hour', 0, 23), 2)}:{_padded(f.int('minute', 0, 59), 2)}:"
    text += _padded(f.int("second", 0, 59), 2)
    microsecond = f.get("microsecond")
    if not (isinstance(microsecond, tuple) and len(microsecond) == 2):
        raise f.bad("microsecond is not a {Value, Precision} pair")
    value, precision = microsecond
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 999_999:
        raise f.bad("the microsecond value is out of range")
    if isinstance(precision, bool) or not isinstance(precision, int) or not 0 <= precision <= 6:
        raise f.bad("the microsecond precision is not 0 to 6")
    if precision:
        text += "." + str(value).rjust(6, "0")[:precision]
    return text


def _offset(f: _Fields) -> str:
    """``Z`` for UTC itself, else ``+HH:MM``/``-HH:MM`` of the total offset (seconds dropped)."""
    utc_offset, std_offset = f.int("utc_offset"), f.int("std_offset")
    if utc_offset == 0 and std_offset == 0 and f.get("time_zone") in (b"Etc/UTC", "Etc/UTC"):
        return "Z"
    total = utc_offset + std_offset
    hours, rest = divmod(abs(total), 3600)
    sign = "-" if total < 0 else "+"
    return f"{sign}{_padded(hours, 2)}:{_padded(rest // 60, 2)}"


def _date_string(f: _Fields) -> str:
    f.iso_calendar()
    return _date(f)


def _time_string(f: _Fields) -> str:
    f.iso_calendar()
    return _time(f)


def _naive_string(f: _Fields) -> str:
    f.iso_calendar()
    return f"{_date(f)}T{_time(f)}"


def _datetime_string(f: _Fields) -> str:
    f.iso_calendar()
    return f"{_date(f)}T{_time(f)}{_offset(f)}"


def _decimal_string(f: _Fields) -> str:
    """``Decimal.to_string(d)``: plain digits near the point, else one digit, ``E`` and the exponent."""
    sign = f.get("sign")
    if sign not in (1, -1) or isinstance(sign, bool):
        raise f.bad("sign is not 1 or -1")
    coef = f.get("coef")
    minus = "-" if sign == -1 else ""
    if coef == Atom("NaN"):
        return minus + "NaN"
    if coef == Atom("inf"):
        return minus + "Infinity"
    if isinstance(coef, bool) or not isinstance(coef, int) or coef < 0:
        raise f.bad("coef is not a non-negative integer, inf or NaN")
    exp = f.int("exp")
    digits = str(coef)
    adjusted = exp + len(digits) - 1
    if exp == 0:
        body = digits
    elif exp < 0 and adjusted >= -6:
        before_point = len(digits) + exp
        if before_point > 0:
            body = f"{digits[:before_point]}.{digits[before_point:]}"
        else:
            body = "0." + "0" * -before_point + digits
    else:
        mantissa = f"{digits[0]}.{digits[1:]}" if len(digits) > 1 else digits
        body = f"{mantissa}E{'+' if exp >= 0 else ''}{adjusted}"
    return minus + body


_STRING_STRUCTS: Final[dict[str, Callable[[_Fields], str]]] = {
    "Elixir.DateTime": _datetime_string,
    "Elixir.NaiveDateTime": _naive_string,
    "Elixir.Date": _date_string,
    "Elixir.Time": _time_string,
    "Elixir.Decimal": _decimal_string,
}
"""Structs whose JSON form is a string, by module."""


def struct_string(module: Atom, fields: Mapping[Term, Term], path: str) -> str | None:
    """The JSON string of a calendar or Decimal struct; ``None`` for any other struct."""
    write = _STRING_STRUCTS.get(str(module))
    if write is None:
        return None
    return write(_Fields(struct_name(module), fields, path))
