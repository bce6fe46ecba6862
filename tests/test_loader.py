"""Agents defined in Python files: each good file gives one agent; a bad file is reported, not fatal."""

from __future__ import annotations

import logging
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from pynode.bridge.loader import load_agents, scan_agents
from pynode.bridge.models import ModelCache
from pynode.bridge.runner import execute_run
from pynode.bridge.spec import RunOptions, ToolSpec
from pynode.bridge.tools import ToolReply
from pynode.etf.types import Atom

ROOT = Path(__file__).resolve().parent.parent


def write(directory: Path, name: str, source: str) -> None:
    (directory / name).write_text(dedent(source), encoding="utf-8")


GOOD = """
    from pydantic import BaseModel
    from pydantic_ai import Agent
    from pydantic_ai.models.test import TestModel

    class Answer(BaseModel):
        text: str
        count: int

    max_concurrency = 3
    agent = Agent(TestModel(custom_output_args={"text": "hi", "count": 2}), output_type=Answer)

    @agent.tool_plain
    def count_words(text: str) -> int:
        return len(text.split())
"""


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    write(tmp_path, "good.py", GOOD)
    write(tmp_path, "plain.py", "from pydantic_ai import Agent\nagent = Agent('test')\n")
    write(tmp_path, "_helpers.py", "raise RuntimeError('helpers are never imported as agents')\n")
    write(tmp_path, "broken.py", "import no_such_module_here\n")
    write(tmp_path, "syntax.py", "def (:\n")
    write(tmp_path, "noagent.py", "x = 1\n")
    write(tmp_path, "notagent.py", "agent = 'a string'\n")
    write(tmp_path, "badmodel.py", "from pydantic_ai import Agent\nagent = Agent('nope:model')\n")
    write(tmp_path, "exits.py", "raise SystemExit(3)\n")
    write(tmp_path, "notes.txt", "not python\n")
    return tmp_path


def test_good_files_give_agents_and_bad_files_are_reported(agents_dir: Path) -> None:
    scan = scan_agents(agents_dir)
    assert [a.name for a in scan.agents] == ["good", "plain"]
    errors = {e.path.name: e.message for e in scan.errors}
    assert set(errors) == {"badmodel.py", "broken.py", "exits.py", "noagent.py", "notagent.py", "syntax.py"}
    assert "no_such_module_here" in errors["broken.py"]
    assert "SyntaxError" in errors["syntax.py"]
    assert "defines no `agent`" in errors["noagent.py"]
    assert "not a pydantic_ai.Agent" in errors["notagent.py"]
    assert "Unknown model" in errors["badmodel.py"]


def test_definitions(agents_dir: Path) -> None:
    good, plain = load_agents(agents_dir)
    assert good.origin == "python"
    assert good.spec is None
    assert good.tools == []
    assert good.model_name == "test"
    assert good.max_concurrency == 3
    assert good.tool_names() == ["count_words"]
    assert plain.max_concurrency is None


def test_failures_are_logged(agents_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="pynode.bridge.loader"):
        load_agents(agents_dir)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "broken.py" in logged
    assert "noagent.py" in logged


async def test_a_loaded_agent_runs_with_its_own_types(agents_dir: Path) -> None:
    (good,) = [a for a in load_agents(agents_dir) if a.name == "good"]

    async def no_beam_tools(tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
        raise AssertionError("a Python agent has no BEAM tools")

    result = await execute_run(
        good, "count", RunOptions(), models=ModelCache(), dispatch=no_beam_tools, on_event=None, run_id="r"
    )
    assert result[Atom("output")] == {"text": "hi", "count": 2}


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    scan = scan_agents(tmp_path / "nowhere")
    assert scan.agents == []
    assert scan.errors[0].message == "not a directory"


def test_the_bundled_agents_load() -> None:
    scan = scan_agents(ROOT / "agents")
    assert scan.errors == []
    assert "research" in [a.name for a in scan.agents]
