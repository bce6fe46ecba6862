"""Erlang terms <-> JSON values, where the protocol means JSON (docs/protocol.md section 8).

The codec's own mapping is exact (``bytes`` for binaries, :class:`Atom` for atoms); requests carry
data meant as JSON (deps, tool arguments and results, schemas, settings), so this module turns it
into plain ``str``/``int``/``float``/``bool``/``None``/``list``/``dict`` and back. It never creates
an atom from data: only :func:`key` makes atoms, and only for the fixed envelope keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

import pydantic
import pydantic_core

from pynode.bridge.errors import BridgeError, quoted
from pynode.bridge.structs import struct_string
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, BitBinary, Export, ImproperList, MapKey, OpaqueFun, Pid, Port, Reference, Term

__all__ = ["ENVELOPE_KEYS", "JSONValue", "from_json", "key", "text_from_prompt", "to_json"]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

ENVELOPE_KEYS: Final[frozenset[str]] = frozenset(
    {
        # Result (section 4)
        "output", "messages", "new_messages", "usage", "run_id",
        "requests", "input_tokens", "output_tokens", "tool_calls",
        # tool-call message (section 5)
        "call_id", "name", "args", "reply_to",
        # info and list_agents (sections 3 and 4)
        "node", "version", "pydantic_ai", "agents", "runs", "model", "origin", "tools",
        # a function model's Info (section 3)
        "description", "parameters", "output_schema", "text_output", "instructions",
    }
)  # fmt: skip

_NULL_ATOMS: Final = frozenset({"nil", "undefined"})
_STRUCT: Final = Atom("__struct__")
_MAPSET: Final = "Elixir.MapSet"
_SHOWN_LIMIT: Final = 80
_MAX_CODE_POINT: Final = 0x10FFFF
_SURROGATES: Final = range(0xD800, 0xE000)
_ATOMS: Final[dict[str, Atom]] = {name: Atom(name) for name in ENVELOPE_KEYS}


def key(name: str) -> Atom:
    """The atom for one of the protocol's fixed envelope keys (``output``, ``usage``, ...)."""
    try:
        return _ATOMS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not an envelope key of the protocol") from None


def to_json(term: Term) -> JSONValue:
    """A decoded term meant as JSON -> a JSON value; ``BridgeError(bad_request)`` if it has no JSON form.

    Elixir values become what Elixir's JSON libraries write for them (section 8): calendar structs
    -> ISO 8601 strings, ``Decimal`` -> its decimal string, ``MapSet`` -> a list, any other struct
    -> its fields without ``__struct__``, a keyword list -> an object.
    """
    try:
        return _to_json(term, "$")
    except RecursionError:
        raise BridgeError("bad_request", "term is nested too deeply") from None


def _to_json(term: Term, path: str) -> JSONValue:
    if term is None or isinstance(term, (bool, int, float)):
        return term
    if isinstance(term, Atom):
        return _atom_to_json(term)
    if isinstance(term, str):
        return term
    if isinstance(term, (bytes, bytearray, memoryview)):
        return _utf8(bytes(term), path)
    if isinstance(term, list):
        if _is_keyword_list(term):
            return _keyword_to_json(term, path)
        return [_to_json(item, f"{path}[{i}]") for i, item in enumerate(term)]
    if isinstance(term, tuple):
        return [_to_json(item, f"{path}[{i}]") for i, item in enumerate(term)]
    if isinstance(term, dict):
        module = term.get(_STRUCT)
        if isinstance(module, Atom):
            return _struct_to_json(module, term, path)
        return _map_to_json(term.items(), path)
    raise BridgeError("bad_request", f"{_describe(term)} at {path} has no JSON form")


def _map_to_json(items: Iterable[tuple[Term, Term]], path: str) -> dict[str, JSONValue]:
    result: dict[str, JSONValue] = {}
    for k, v in items:
        name = _json_key(k, path)
        if name in result:
            raise BridgeError("bad_request", f"map at {path} has the key {quoted(name)} twice (atom and binary)")
        result[name] = _to_json(v, f"{path}.{name}")
    return result


def _struct_to_json(module: Atom, fields: dict[Term, Term], path: str) -> JSONValue:
    text = struct_string(module, fields, path)
    if text is not None:
        return text
    if module == _MAPSET:
        members = fields.get(Atom("map"))
        if not isinstance(members, dict):
            raise BridgeError("bad_request", f"the MapSet struct at {path} has no map of members")
        return [_to_json(m.term if isinstance(m, MapKey) else m, f"{path}[{i}]") for i, m in enumerate(members)]
    return _map_to_json(((k, v) for k, v in fields.items() if k != _STRUCT), path)


def _is_keyword_list(term: list[Term]) -> bool:
    """``[{atom, Value}, ...]``, not empty: what ``Keyword.keyword?/1`` accepts."""
    return bool(term) and all(
        type(item) is tuple and len(item) == 2 and isinstance(item[0], (Atom, bool)) for item in term
    )


def _keyword_to_json(pairs: list[tuple[Term, Term]], path: str) -> dict[str, JSONValue]:
    """A keyword list as an object; a key given twice is refused (an object holds each key once)."""
    result: dict[str, JSONValue] = {}
    for k, v in pairs:
        name = _json_key(k, path)
        if name in result:
            raise BridgeError(
                "bad_request",
                f"the keyword list at {path} has the key {quoted(name)} twice, which a JSON object cannot hold",
            )
        result[name] = _to_json(v, f"{path}.{name}")
    return result


def _atom_to_json(atom: Atom) -> JSONValue:
    name = str(atom)
    if name in _NULL_ATOMS:
        return None
    if name in ("true", "false"):
        return name == "true"
    return name


def _json_key(k: Term, path: str) -> str:
    if isinstance(k, MapKey) and isinstance(k.term, bool):
        return "true" if k.term else "false"
    if isinstance(k, bool):  # a keyword list's true/false key
        return "true" if k else "false"
    if isinstance(k, str):  # Atom or str
        return str(k)
    if isinstance(k, (bytes, bytearray)):
        return _utf8(bytes(k), path)
    shown = k.term if isinstance(k, MapKey) else k
    raise BridgeError(
        "bad_request", f"map key {format_term(shown, limit=_SHOWN_LIMIT)} at {path} is not an atom or a binary"
    )


def _utf8(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BridgeError("bad_request", f"binary at {path} is not valid UTF-8") from None


def _describe(term: Term) -> str:
    """What a term is, in words and Erlang syntax: ``the pid <0.90.0>``, ``an improper list``."""
    shown = format_term(term, limit=_SHOWN_LIMIT)
    if isinstance(term, Pid):
        return f"the pid {shown}"
    if isinstance(term, Reference):
        return f"the reference {shown}"
    if isinstance(term, Port):
        return f"the port {shown}"
    if isinstance(term, (Export, OpaqueFun)):
        return f"the fun {shown}"
    if isinstance(term, ImproperList):
        return f"the improper list {shown}"
    if isinstance(term, BitBinary):
        return f"the bitstring {shown}"
    if isinstance(term, MapKey):
        return _describe(term.term)
    return f"the term {shown}"


def from_json(value: Any) -> Term:
    """A Python value (JSON-like, or a pydantic model) -> a term with binary strings and binary keys.

    ``str`` stays ``str`` (the codec encodes it as a binary), an :class:`Atom` is demoted to ``str``
    (data never becomes an atom), ``None`` becomes ``nil``, NaN and infinities (no BEAM float holds
    them) become ``nil`` as in JSON. Other objects go through pydantic's JSON mode first.
    """
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [from_json(item) for item in value]
    if isinstance(value, Mapping):
        return {_str_key(k): from_json(v) for k, v in value.items()}
    if isinstance(value, pydantic.BaseModel):
        return from_json(value.model_dump(mode="json"))
    try:
        plain = pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError as exc:
        raise BridgeError("internal_error", f"cannot send a {type(value).__name__} to the BEAM: {exc}") from None
    return from_json(plain)


def _str_key(k: Any) -> str:
    """A dict key as JSON writes it (``True`` -> ``"true"``, ``None`` -> ``"null"``, ``1`` -> ``"1"``)."""
    if isinstance(k, str):
        return str(k)
    if isinstance(k, bool):
        return "true" if k else "false"
    if k is None:
        return "null"
    if isinstance(k, (int, float)):
        return str(k)
    raise BridgeError("internal_error", f"cannot send a map key of type {type(k).__name__} to the BEAM")


def text_from_prompt(term: Term) -> str:
    """A prompt (binary, charlist or iolist/chardata) -> ``str``.

    Lists follow ``unicode:characters_to_binary/1``: integers are code points and binaries are UTF-8,
    so ``"héllo"`` typed in the erl shell (``[104, 233, ...]``) reads as it was typed.
    """
    if isinstance(term, Atom):
        raise BridgeError("bad_request", f"the prompt must be a binary, a charlist or an iolist, not atom {term}")
    if isinstance(term, str):
        return term
    if isinstance(term, (bytes, bytearray)):
        return _utf8(bytes(term), "prompt")
    if isinstance(term, (list, ImproperList)):
        pieces: list[str] = []
        try:
            _chardata(term, pieces)
        except RecursionError:
            raise BridgeError("bad_request", "the prompt is nested too deeply") from None
        return "".join(pieces)
    raise BridgeError("bad_request", f"the prompt must be a binary, a charlist or an iolist, not {_describe(term)}")


def _chardata(term: list[Term] | ImproperList, out: list[str]) -> None:
    if isinstance(term, ImproperList):
        for item in term.elements:
            _chardata_item(item, out)
        if not isinstance(term.tail, (bytes, bytearray)):
            raise BridgeError("bad_request", "an iolist's tail must be a binary")
        out.append(_utf8(bytes(term.tail), "prompt"))
        return
    for item in term:
        _chardata_item(item, out)


def _chardata_item(item: Term, out: list[str]) -> None:
    if isinstance(item, bool) or not isinstance(item, (int, bytes, bytearray, list, ImproperList)):
        raise BridgeError("bad_request", f"the prompt holds {_describe(item)}, not text")
    if isinstance(item, int):
        if item < 0 or item > _MAX_CODE_POINT or item in _SURROGATES:
            raise BridgeError("bad_request", f"{item} in the prompt is not a Unicode code point")
        out.append(chr(item))
    elif isinstance(item, (bytes, bytearray)):
        out.append(_utf8(bytes(item), "prompt"))
    else:
        _chardata(item, out)
