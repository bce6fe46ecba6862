"""docs/protocol.md, the contract in the repository, names every key and kind the node takes or sends.

The tables are read from the document itself, so a key added to the code and not to the contract
(or the reverse) fails here. What the contract names and the node does not take yet is listed by
name below, with the work it waits for.
"""

from __future__ import annotations

import re
from pathlib import Path

from pynode.bridge.errors import ERROR_KINDS
from pynode.bridge.spec import AGENT_SPEC_KEYS, RUN_OPTION_KEYS

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

NOT_YET_SPEC: set[str] = set()
NOT_YET_RUN: set[str] = set()
NOT_YET_KINDS: set[str] = set()


def table_after(text: str, marker: str) -> set[str]:
    """The backticked keys of the first column of the first table after ``marker``."""
    start = text.index(marker)
    lines = text[start:].splitlines()
    rows = []
    seen_table = False
    for line in lines[1:]:
        if line.startswith("|"):
            seen_table = True
            rows.append(line)
        elif seen_table:
            break
    keys: set[str] = set()
    for row in rows[2:]:  # the header and its rule
        first = row.split("|")[1]
        keys.update(re.findall(r"`([a-z_]+)`", first))
    return keys


def section(text: str, number: int) -> str:
    return text.split(f"\n## {number}.", 1)[1].split("\n## ", 1)[0]


def test_the_agent_spec_table_is_the_spec_the_node_takes() -> None:
    documented = table_after(PROTOCOL.read_text(), "### Agent spec")
    assert documented >= AGENT_SPEC_KEYS, AGENT_SPEC_KEYS - documented
    assert documented - AGENT_SPEC_KEYS == NOT_YET_SPEC


def test_the_run_options_table_is_the_options_the_node_takes() -> None:
    documented = table_after(PROTOCOL.read_text(), "Run options (all optional)")
    assert documented >= RUN_OPTION_KEYS, RUN_OPTION_KEYS - documented
    assert documented - RUN_OPTION_KEYS == NOT_YET_RUN


def test_section_6_names_every_error_kind_the_node_sends() -> None:
    documented = set(re.findall(r"`([a-z_]+)`", section(PROTOCOL.read_text(), 6)))
    assert documented >= ERROR_KINDS, ERROR_KINDS - documented
    assert documented - ERROR_KINDS == NOT_YET_KINDS
