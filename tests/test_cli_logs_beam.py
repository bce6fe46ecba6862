"""The command's log as a program reads it (``--log-format json``), and ``--no-agents``, which looks for no folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_agents_beam import Command, pynode_cli, run

from pynode import Atom
from pynode.testing import Beam

pytestmark = pytest.mark.beam
__all__ = ["pynode_cli"]


def json_lines(stderr: str) -> list[dict[str, str]]:
    """Every line the command wrote to stderr, each of which must be one JSON object."""
    return [json.loads(line) for line in stderr.splitlines()]


async def test_no_agents_serves_without_the_warning_and_json_lines_name_the_node(
    pynode_cli: list[Command], tmp_path: Path, cookie: str, beam: Beam
) -> None:
    command = await run(pynode_cli, tmp_path, cookie, "--no-agents", "--log-format", "json")
    await command.ready()
    assert await beam.call(("pynode", "cli@127.0.0.1"), Atom("list_agents")) == (Atom("ok"), [])
    assert await command.stop() == 0
    assert "no Python agents" not in command.stderr
    logged = json_lines(command.stderr)
    assert logged, command.stderr
    assert {line["node"] for line in logged} == {"cli@127.0.0.1"}
    assert {"level": "info", "logger": "pynode", "message": "stopping: cancelling runs in flight"} in [
        {key: line[key] for key in ("level", "logger", "message")} for line in logged
    ]


async def test_json_lines_of_an_agent_carry_its_name(
    pynode_cli: list[Command], tmp_path: Path, cookie: str, beam: Beam
) -> None:
    folder = tmp_path / "my_agents"
    folder.mkdir()
    (folder / "greeter.py").write_text("from pydantic_ai import Agent\nagent = Agent('test')\n")
    command = await run(pynode_cli, tmp_path, cookie, "--agents", "my_agents", "--log-format", "json")
    await command.ready()
    assert await command.stop() == 0
    registered = [line for line in json_lines(command.stderr) if line["message"].startswith("agent greeter registered")]
    assert [(line["logger"], line["agent"], line["node"]) for line in registered] == [
        ("pynode.registry", "greeter", "cli@127.0.0.1")
    ]
