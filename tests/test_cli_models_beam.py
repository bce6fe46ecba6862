"""``--models FILE``: named provider models for every agent, keys only by environment variable, never shown."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from textwrap import dedent

import pytest
from test_cli_agents_beam import PYNODE, Command, pynode_cli

from pynode import Atom
from pynode.etf.types import Term
from pynode.testing import Beam, FakeProvider, Turn

pytestmark = [pytest.mark.beam, pytest.mark.model_requests]
__all__ = ["pynode_cli"]

KEY = "sk-house-9e1d77c0a4b5"
NODE = "models@127.0.0.1"
PYNODE_PROC = ("pynode", NODE)


async def start(started: list[Command], cwd: Path, cookie: str, models: Path, key: str | None = None) -> Command:
    env = {**os.environ, "PYNODE_LOG_LEVEL": "debug"}
    if key is not None:
        env["HOUSE_KEY"] = key
    proc = await asyncio.create_subprocess_exec(
        str(PYNODE), "--name", NODE, "--cookie", cookie, "--models", str(models),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=cwd, env=env,
    )  # fmt: skip
    command = Command(proc)
    started.append(command)
    return command


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ('[models.house]\nprovider = "openai"\nname = "gpt-4o"\ncolour = "red"\n', 4, "unknown key 'colour'"),
        ('[models.house]\nprovider = "openia"\nname = "gpt-4o"\n', 2, "provider must be openai or anthropic"),
        ('[models.house]\nprovider = "openai"\nname = "gpt-4o"\napi_key = "sk-1234567"\n', 4, "api_key_env"),
        ('[models.house]\nprovider = "openai"\nname = \n', 3, "Invalid value"),
    ],
    ids=["unknown-key", "provider", "key-in-file", "toml"],
)
async def test_a_bad_models_file_stops_the_command_with_the_line_at_fault(
    pynode_cli: list[Command], tmp_path: Path, cookie: str, text: str, line: int, says: str
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(text)
    command = await start(pynode_cli, tmp_path, cookie, models)
    assert await command.finish() != 0
    assert " ready " not in command.stdout
    (reason,) = [row for row in command.stderr.splitlines() if row.startswith("pynode: --models")]
    assert reason.startswith(f"pynode: --models {models}:")
    assert f"line {line}" in reason if says == "Invalid value" else f"{models}:{line}:" in reason
    assert says in reason
    assert "sk-1234567" not in command.stderr


async def test_agents_name_the_files_models_and_the_key_never_shows(
    pynode_cli: list[Command], tmp_path: Path, cookie: str, beam: Beam, fake_openai: FakeProvider
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        dedent(f"""\
        # the operator's endpoints: no keys, only the variables that hold them
        [models.house]
        provider = "openai"
        name = "house-llm"
        base_url = "{fake_openai.openai_url}"
        api_key_env = "HOUSE_KEY"
        max_concurrency = 2

        [models.house.settings]
        temperature = 0.25
        """)
    )
    command = await start(pynode_cli, tmp_path, cookie, models, key=KEY)
    await command.ready()
    fake_openai.script(Turn(text="Hello from the house model."), Turn(status=401, error=f"Incorrect API key: {KEY}"))
    replies: list[Term] = [
        await beam.call(PYNODE_PROC, (Atom("create_agent"), Atom("greeter"), {Atom("model"): b"house"})),
        await beam.call(("greeter", NODE), (Atom("run"), b"Hi"), timeout=30),
        await beam.call(("greeter", NODE), (Atom("run"), b"Again"), timeout=30),
        await beam.call(PYNODE_PROC, Atom("list_agents")),
        await beam.call(PYNODE_PROC, Atom("info")),
        await beam.call(("greeter", NODE), Atom("info")),
    ]
    assert replies[0] == (Atom("ok"), Atom("greeter"))
    status, result = replies[1]
    assert status == Atom("ok"), result
    assert result[Atom("output")] == b"Hello from the house model."
    assert replies[2][0] == Atom("error") and replies[2][1][0] == Atom("auth_failed")
    assert b"[redacted]" in replies[2][1][1]  # the provider echoed the key back: taken out

    first = fake_openai.requests[0]
    assert first.api == "chat"  # an openai model with a base_url: Chat Completions
    assert first.body["model"] == "house-llm"
    assert first.body["temperature"] == 0.25
    assert first.headers["authorization"] == f"Bearer {KEY}"  # the key the variable held was used

    assert await command.stop() == 0
    everything = "\n".join([command.stdout, command.stderr, *(repr(r) for r in replies)])
    assert "house (openai:house-llm at" in command.stderr  # the log says which models the file gave
    assert "DEBUG" in command.stderr  # the node did log at debug level, so there was much to leak
    assert KEY not in everything
