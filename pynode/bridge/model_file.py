"""The node's ``--models`` file: named provider models, so endpoints and key variables stay out of apps.

A TOML file (``tomllib``) of tables ``[models.NAME]`` with the keys of a model map (docs/protocol.md
section 3) but the key itself: the file names the environment variable that holds it
(``api_key_env``), so the file can be checked in. An agent or run then says ``model => <<"NAME">>``.
A bad file stops the node before it starts, with the file and line at fault.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pynode.bridge.errors import BridgeError
from pynode.bridge.models import ModelConfig
from pynode.bridge.spec import parse_model
from pynode.etf.types import Atom, Term

__all__ = ["ModelsFileError", "load_models_file", "parse_models"]

_KEYS = frozenset({"provider", "name", "base_url", "api", "api_key_env", "settings", "max_concurrency"})


class ModelsFileError(ValueError):
    """The ``--models`` file cannot be used; the text names the file and line."""


def load_models_file(path: Path) -> dict[str, ModelConfig]:
    """The named models of ``path``, or :class:`ModelsFileError` saying where it is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelsFileError(f"{path}: cannot read: {exc}") from None
    return parse_models(text, str(path))


def parse_models(text: str, source: str = "models file") -> dict[str, ModelConfig]:
    """The named models of a ``--models`` file's ``text``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"{source}: {exc}") from None
    lines = text.splitlines()
    unknown = sorted(set(document) - {"models"})
    if unknown:
        raise ModelsFileError(
            f"{source}:{_line(lines, unknown[0])}: unknown table {unknown[0]!r}: the file holds [models.NAME] tables"
        )
    tables = document.get("models", {})
    if not isinstance(tables, dict) or not tables:
        raise ModelsFileError(f"{source}: no models: add a table such as [models.fast] with provider and name")
    return {name: _model(source, lines, name, table) for name, table in tables.items()}


def _model(source: str, lines: list[str], name: str, table: object) -> ModelConfig:
    where = f"models.{name}"
    header = _header_line(lines, name)
    if not isinstance(table, dict):
        raise ModelsFileError(f"{source}:{header}: {where} must be a table ([{where}])")
    for key in table:
        if key == "api_key":
            raise ModelsFileError(
                f"{source}:{_key_line(lines, header, key)}: {where}.api_key: keep the key out of the file;"
                " name its environment variable with api_key_env"
            )
        if key not in _KEYS:
            raise ModelsFileError(
                f"{source}:{_key_line(lines, header, key)}: {where} has an unknown key {key!r}"
                f" (known: {', '.join(sorted(_KEYS))})"
            )
    fields: dict[Term, Term] = {Atom(k): _term(v) for k, v in table.items() if k != "api_key_env"}
    if "api_key_env" in table:
        fields[Atom("api_key")] = (Atom("env"), _term(table["api_key_env"]))
    try:
        config = parse_model(where, fields, "bad_spec")
    except BridgeError as exc:
        said = exc.message.replace("model_settings", f"{where}.settings")
        at = next((k for k in table if f"{where}.{k}" in said), None)
        line = header if at is None else _key_line(lines, header, at)
        raise ModelsFileError(f"{source}:{line}: {exc.message}") from None
    assert isinstance(config, ModelConfig)  # a map always parses to a config
    return config


def _term(value: object) -> Term:
    """A TOML value as the BEAM would send it: strings as binaries, tables with binary keys."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, Mapping):
        return {str(k).encode(): _term(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_term(v) for v in value]
    if isinstance(value, (bool, int, float)):
        return value
    return str(value).encode()  # dates and times: as text


def _header_line(lines: list[str], name: str) -> int:
    return _first_line(lines, rf"^\s*\[\s*models\s*\.\s*[\"']?{re.escape(name)}[\"']?\s*\]")


def _key_line(lines: list[str], header: int, key: str) -> int:
    """The line of ``key`` in the table that starts at line ``header`` (or of its own sub-table)."""
    assignment = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=.]")
    subtable = re.compile(rf"^\s*\[[^\]]*\.\s*[\"']?{re.escape(key)}[\"']?\s*\]")
    for i in range(header, len(lines)):
        if assignment.match(lines[i]) or subtable.match(lines[i]):
            return i + 1
        if lines[i].lstrip().startswith("[") and i + 1 != header:
            break
    return header


def _line(lines: list[str], table: str) -> int:
    return _first_line(lines, rf"^\s*\[+\s*{re.escape(table)}\b")


def _first_line(lines: list[str], pattern: str) -> int:
    """The number of the first line that ``pattern`` matches (else 1: the file as a whole)."""
    compiled = re.compile(pattern)
    return next((i + 1 for i, line in enumerate(lines) if compiled.match(line)), 1)
