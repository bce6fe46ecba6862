"""The agents shipped in agents/, loaded at start and driven from Elixir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from beam import BeamFactory

from pynode.node import Node
from pynode.testing import running_pynode

pytestmark = pytest.mark.beam

AGENTS = Path(__file__).resolve().parent.parent / "agents"

INVENTORY_SERVER = """
defmodule InventoryServer do
  use GenServer
  def start, do: GenServer.start(__MODULE__, %{}, name: :inventory_server)
  def init(state), do: {:ok, state}
  def handle_call({:stock, item}, _from, state), do: {:reply, {:ok, String.length(item) * 10}, state}
end
"""


@pytest.fixture
async def shipped(epmd_port: int, cookie: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    monkeypatch.delenv("PYNODE_MODEL", raising=False)
    monkeypatch.delenv("PYNODE_SEARCH_URL", raising=False)
    async with running_pynode("py@127.0.0.1", cookie=cookie, epmd_port=epmd_port, agents_dir=AGENTS) as running:
        yield running.node


async def test_shipped_agents_are_registered(shipped: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    listed = await ex.eval(
        '{:ok, agents} = GenServer.call({:pynode, :"py@127.0.0.1"}, :list_agents);'
        " agents |> Enum.map(& &1.name) |> Enum.sort()"
    )
    assert listed == "[:inventory, :research]"


async def test_inventory_agent_asks_the_callers_genserver(shipped: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(INVENTORY_SERVER)
    await ex.eval("{:ok, _} = InventoryServer.start()")
    out = await ex.eval(
        '{:ok, r} = GenServer.call({:inventory, :"py@127.0.0.1"}, {:run, "Do we have bolts?", %{}}, 15_000); r.output'
    )
    # TestModel asks for item "a": the Elixir server answers 10 for a one-letter item.
    assert out == '"{\\"stock_level\\":{\\"item\\":\\"a\\",\\"in_stock\\":10}}"'


async def test_inventory_agent_without_server_retries_then_fails_cleanly(shipped: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    out = await ex.eval('GenServer.call({:inventory, :"py@127.0.0.1"}, {:run, "Bolts?", %{}}, 15_000)')
    # The tool asks the model to retry; TestModel keeps calling it, so the retries run out.
    assert out.startswith("{:error, {:unexpected_model_behavior,") and "stock_level" in out


async def test_research_agent_returns_a_structured_result(shipped: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    out = await ex.eval(
        '{:ok, r} = GenServer.call({:research, :"py@127.0.0.1"},'
        ' {:run, "How do supervisors restart children?", %{deps: %{max_results: 2}}}, 15_000);'
        " r.output |> Map.keys() |> Enum.sort()"
    )
    assert out == '["key_points", "sources", "summary", "topic"]'
