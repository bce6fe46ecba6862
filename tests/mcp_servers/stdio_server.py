"""An MCP server over stdio for the toolset tests: two tools, ``add`` and ``whoami``.

``whoami`` tells the test which OS process serves the session (to check it ends with its agent)
and what ``MCP_TEST_GREETING`` the node gave it. With ``MCP_TEST_IGNORE_EOF=1`` the server stays
up for a minute after its stdin closes, as a careless server would: then only the node's own
guard (a parent-death signal) ends it when the node is killed.
"""

from __future__ import annotations

import os
import time

from fastmcp import FastMCP

server = FastMCP("arith")


@server.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool
def whoami() -> dict[str, object]:
    """The server's process id and the greeting of its environment."""
    return {"pid": os.getpid(), "greeting": os.environ.get("MCP_TEST_GREETING")}


if __name__ == "__main__":
    server.run(transport="stdio", show_banner=False, log_level="WARNING")
    if os.environ.get("MCP_TEST_IGNORE_EOF") == "1":
        time.sleep(60)  # bounded: a stubborn server, not an immortal one
