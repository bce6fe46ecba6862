"""What the agent tests share: the node's name as erl writes it, a tool spec, the registry process,
and the small helpers the BEAM tests use (bounded polls, evaluating on a BEAM node, the run log).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from beam import BeamNode

from pynode.bridge.registry import Registry
from pynode.etf.decode import decode
from pynode.etf.types import Atom, Term
from pynode.node import Node

PY = "'py@127.0.0.1'"
REG = f"{{pynode, {PY}}}"

ASK_HUMAN_SPEC = (
    '#{model => <<"test">>, tools => [#{name => <<"ask_human">>,'
    ' description => <<"Ask a person">>,'
    ' parameters => #{<<"type">> => <<"object">>,'
    '   <<"properties">> => #{<<"question">> => #{<<"type">> => <<"string">>}},'
    '   <<"required">> => [<<"question">>]}}]}'
)
"""An agent whose one tool has no handler: its calls go to tool_handler or the start_run caller."""


COUNT_TOOL = {
    Atom("name"): "count",
    Atom("description"): "Count the keys",
    Atom("parameters"): {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    Atom("handler"): (Atom("maps"), Atom("size")),
}
"""A tool the node calls as ``maps:size(Args)`` on the agent's home node: it answers how many arguments it got."""


def registry_of(node: Node) -> Registry:
    process = node.processes.name("pynode")
    assert isinstance(process, Registry)
    return process


async def eventually(check: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"{what} did not hold within {within} s")
        await asyncio.sleep(0.02)


async def term(beam_node: BeamNode, expr: str, timeout: float = 20) -> Term:
    """Evaluate ``expr`` on a BEAM node; its value, decoded by pynode's own codec."""
    return decode(await beam_node.eval_term(expr, timeout=timeout))


async def create(erl: BeamNode, name: str, spec: str, node: str = PY) -> None:
    """Create agent ``name`` from an erl node through the registry of ``node``; it must succeed."""
    got = await erl.eval(f"gen_server:call({{pynode, {node}}}, {{create_agent, {name}, {spec}}})")
    assert got == f"{{ok,{name}}}"


async def load_erlang(node: BeamNode, tmp_path: Path, source: str, module: str) -> None:
    """Compile ``source`` (module ``module``) and load it into a BEAM node."""
    path = tmp_path / f"{module}.erl"
    path.write_text(source)
    loaded = await node.eval(
        f'{{ok, M, Bin}} = compile:file("{path}", [binary, return_errors]), code:load_binary(M, "{path}", Bin)'
    )
    assert loaded == f"{{module,{module}}}"


@pytest.fixture
def run_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """``caplog`` with the ``pynode.run`` log at DEBUG, where runs say why they ended."""
    caplog.set_level(logging.DEBUG, logger="pynode.run")
    return caplog


def ended(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Why each run ended, as the node logged it."""
    return [r.getMessage().split(" ended: ", 1)[1] for r in caplog.records if " ended: " in r.getMessage()]
