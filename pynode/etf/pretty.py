"""Terms written in Erlang syntax, for messages a person reads (logs, error texts)."""

from __future__ import annotations

import re

from pynode.etf.types import Atom, BitBinary, Export, ImproperList, MapKey, OpaqueFun, Pid, Port, Reference, Term

__all__ = ["format_term"]

_PLAIN_ATOM = re.compile(r"[a-z][A-Za-z0-9_@]*\Z")


def format_term(term: Term, *, limit: int = 2000) -> str:
    """``term`` as the erl shell would print it (roughly), cut to ``limit`` characters."""
    text = _fmt(term)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(term: Term) -> str:
    if isinstance(term, bool):
        return "true" if term else "false"
    if term is None:
        return "nil"
    if isinstance(term, Atom):
        return str(term) if _PLAIN_ATOM.match(term) else "'" + term.replace("'", "\\'") + "'"
    if isinstance(term, int | float):
        return repr(term)
    if isinstance(term, str):
        return '<<"' + term.replace('"', '\\"') + '"/utf8>>'
    if isinstance(term, bytes | bytearray):
        try:
            return '<<"' + bytes(term).decode("utf-8").replace('"', '\\"') + '">>'
        except UnicodeDecodeError:
            return "<<" + ",".join(str(b) for b in term) + ">>"
    if isinstance(term, tuple):
        return "{" + ",".join(_fmt(t) for t in term) + "}"
    if isinstance(term, list):
        return "[" + ",".join(_fmt(t) for t in term) + "]"
    if isinstance(term, ImproperList):
        return "[" + ",".join(_fmt(t) for t in term.elements) + "|" + _fmt(term.tail) + "]"
    if isinstance(term, dict):
        return "#{" + ",".join(f"{_fmt(k)} => {_fmt(v)}" for k, v in term.items()) + "}"
    if isinstance(term, MapKey):
        return _fmt(term.term)
    if isinstance(term, Pid | Reference):
        return repr(term)
    if isinstance(term, Port):
        return f"#Port<{term.node}.{term.id}>"
    if isinstance(term, Export):
        return f"fun {_fmt(term.module)}:{_fmt(term.function)}/{term.arity}"
    if isinstance(term, OpaqueFun):
        return "#Fun<...>"
    if isinstance(term, BitBinary):
        return f"<<...:{(len(term.data) - 1) * 8 + term.bits}>>"
    return repr(term)
