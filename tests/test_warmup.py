"""The node's warm-up run: pydantic-ai's first-run work is done before the node serves anyone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from command_support import ready_command

from pynode.bridge.warmup import warm_up
from pynode.etf import Atom

# In a fresh interpreter, after the warm-up run: the first run of a caller's agent, and what it leaves
# behind after gc (objects, and modules it imported), printed as JSON.
_FIRST_RUN_AFTER_THE_WARM_UP = textwrap.dedent(
    """
    import asyncio, gc, json, sys
    from pynode.bridge.models import ModelCache
    from pynode.bridge.runner import build_agent, execute_run
    from pynode.bridge.spec import parse_agent_spec, parse_run_options
    from pynode.bridge.tools import ToolOk
    from pynode.bridge.warmup import warm_up
    from pynode.etf import Atom

    SPEC = {Atom("model"): b"test", Atom("tools"): [{Atom("name"): b"slow", Atom("description"): b"A slow lookup",
            Atom("parameters"): {b"type": b"object", b"properties": {}}}]}

    async def answer(tool, call_id, args):
        return ToolOk("answer")

    async def main():
        await warm_up()
        models = ModelCache()
        definition = build_agent(parse_agent_spec(SPEC), models, name="slow")
        gc.collect()
        objects, modules = len(gc.get_objects()), set(sys.modules)
        await execute_run(definition, "Ask the slow tool", parse_run_options({}), models=models, dispatch=answer,
                          on_event=None, run_id="r1")
        gc.collect()
        print(json.dumps({"objects": len(gc.get_objects()) - objects, "modules": sorted(set(sys.modules) - modules)}))

    asyncio.run(main())
    """
)


async def test_the_warm_up_makes_a_run_with_a_tool_call_and_returns_its_result() -> None:
    result = await warm_up()
    output, usage, messages = result[Atom("output")], result[Atom("usage")], result[Atom("messages")]
    assert isinstance(output, str) and isinstance(usage, dict) and isinstance(messages, bytes)
    assert json.loads(output) == {"lookup": {"word": None, "found": True}}
    assert usage[Atom("tool_calls")] == 1
    kinds = [part["part_kind"] for message in json.loads(messages) for part in message["parts"]]
    assert "tool-call" in kinds and "tool-return" in kinds


def test_after_the_warm_up_a_first_run_imports_nothing_and_leaves_only_its_agents_graph() -> None:
    # Without the warm-up, that run imports anyio's asyncio backend and leaves some 3,700 objects: what
    # pins pymalloc's arenas when it comes in a burst (pynode/bridge/warmup.py).
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_RUN_AFTER_THE_WARM_UP], capture_output=True, text=True, timeout=120, check=True
    )
    left = json.loads(done.stdout)
    assert left["modules"] == []
    # What is left is the agent's own: the parts of its graph that pydantic-ai keeps (about 100).
    assert left["objects"] < 300, left


async def test_the_pynode_command_warms_up_before_it_says_it_is_ready(
    epmd_port: int, cookie: str, tmp_path: Path
) -> None:
    log = tmp_path / "node.log"
    with log.open("wb") as stderr:
        async with ready_command(cookie, epmd_port, "--no-agents", "--log-level", "debug", stderr=stderr) as (_, line):
            assert b"ready" in line, line
            text = await asyncio.to_thread(log.read_text)
            assert "warmed up in" in text and "could not warm up" not in text, text
