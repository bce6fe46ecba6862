"""A stock-keeping assistant whose tool asks the BEAM: it reaches back into the cluster.

Registered by the node as the process ``inventory``. Its ``stock_level`` tool calls the
GenServer registered as ``inventory_server`` on the node of whoever started the run
(``GenServer.call({:inventory_server, caller_node}, {:stock, item})``), so the data
stays in the Elixir application and the agent only reasons about it. The model comes
from ``PYNODE_MODEL`` and is the offline ``test`` model by default.

From Elixir, with an ``InventoryServer`` registered as ``:inventory_server``::

    GenServer.call({:inventory, :"py@127.0.0.1"}, {:run, "Do we have bolts?", %{}}, 30_000)
"""

from __future__ import annotations

import os

from pydantic_ai import Agent, ModelRetry

from pynode import Atom, CallExit, CallTimeout, cluster

agent = Agent(
    os.environ.get("PYNODE_MODEL", "test"),
    instructions="You answer questions about stock. Use stock_level for every item you are asked about.",
)

SERVER = Atom("inventory_server")
STOCK = Atom("stock")


@agent.tool_plain
async def stock_level(item: str) -> dict[str, object]:
    """How many of ``item`` are in stock, according to the caller's inventory server."""
    here = cluster()
    try:
        reply = await here.call(SERVER, (STOCK, item), timeout=5.0)
    except CallExit as exc:
        raise ModelRetry(f"the inventory server on {here.caller_node} is not running ({exc.reason})") from None
    except CallTimeout:
        raise ModelRetry("the inventory server did not answer in time") from None
    if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == Atom("ok") and isinstance(reply[1], int):
        return {"item": item, "in_stock": reply[1]}
    return {"item": item, "error": f"unexpected reply from the inventory server: {reply!r}"}
