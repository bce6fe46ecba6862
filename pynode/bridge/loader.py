"""Agents defined in Python: every ``NAME.py`` of a directory that defines ``agent`` (docs/protocol.md section 7).

Each file is imported as a module of its own; one that fails to import, or defines no agent, is
reported and skipped, and the others still load. Files whose name starts with ``_`` are helpers.
A file may also set ``max_concurrency`` (an int), as a BEAM spec may.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from pydantic_ai import Agent

from pynode.bridge.runner import AgentDefinition, model_label

__all__ = ["AgentScan", "LoadError", "load_agents", "scan_agents"]

logger = logging.getLogger(__name__)

MODULE_PREFIX: Final = "pynode_agents"
"""Loaded files become modules ``pynode_agents.NAME`` (pydantic resolves their types through sys.modules)."""


@dataclass(frozen=True, slots=True)
class LoadError:
    """A file that did not give an agent, and why."""

    path: Path
    message: str


@dataclass(frozen=True, slots=True)
class AgentScan:
    """What a directory gave: the agents, and the files that failed."""

    agents: list[AgentDefinition] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)


def load_agents(directory: Path) -> list[AgentDefinition]:
    """The agents of ``directory``; files that fail are logged and skipped."""
    return scan_agents(directory).agents


def scan_agents(directory: Path) -> AgentScan:
    """Import every ``NAME.py`` of ``directory`` (sorted, ``_*`` skipped); report each failure."""
    scan = AgentScan()
    if not directory.is_dir():
        logger.warning("no Python agents from %s: not a directory", directory.resolve())
        scan.errors.append(LoadError(directory, "not a directory"))
        return scan
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            scan.agents.append(_load(path))
        except (Exception, SystemExit) as exc:
            message = f"{type(exc).__name__}: {exc}"
            logger.error("no agent from %s: %s", path.resolve(), message, exc_info=not isinstance(exc, _NotAnAgent))
            scan.errors.append(LoadError(path, message))
    names = ", ".join(definition.name for definition in scan.agents) or "none"
    failed = f" ({len(scan.errors)} file(s) failed)" if scan.errors else ""
    logger.info("Python agents from %s: %s%s", directory.resolve(), names, failed)
    return scan


class _NotAnAgent(Exception):
    """The file imported but gives no ``agent``."""


def _load(path: Path) -> AgentDefinition:
    name = path.stem
    if not name.isidentifier():
        raise _NotAnAgent(f"{name!r} is not a usable agent name (letters, digits and '_')")
    module = _import(path, f"{MODULE_PREFIX}.{name}")
    agent: Any = getattr(module, "agent", None)
    if agent is None:
        raise _NotAnAgent("the file defines no `agent`")
    if not isinstance(agent, Agent):
        raise _NotAnAgent(f"`agent` is a {type(agent).__name__}, not a pydantic_ai.Agent")
    max_concurrency = getattr(module, "max_concurrency", None)
    return AgentDefinition(
        name=name,
        agent=agent,
        spec=None,
        origin="python",
        model_name=model_label(agent.model),
        max_concurrency=max_concurrency if isinstance(max_concurrency, int) and max_concurrency > 0 else None,
    )


def _import(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise _NotAnAgent(f"cannot import {path}")
    if MODULE_PREFIX not in sys.modules:
        package = ModuleType(MODULE_PREFIX)
        package.__path__ = []
        sys.modules[MODULE_PREFIX] = package
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
