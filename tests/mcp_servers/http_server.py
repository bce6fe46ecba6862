"""An MCP server over streamable HTTP on 127.0.0.1 for the toolset tests: ``echo`` and ``wait``.

It binds a free port itself and prints its URL as its first line, so a test can start it and read
where it is. ``wait`` sleeps (at most 30 s), which leaves a test the time to kill the server while
a call is in flight.
"""

from __future__ import annotations

import asyncio
import socket

from fastmcp import FastMCP

server = FastMCP("words")


@server.tool
def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


@server.tool
async def wait(seconds: float) -> str:
    """Wait a while, then say so."""
    await asyncio.sleep(min(seconds, 30.0))
    return f"waited {seconds} s"


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until the server accepts them
    port = sock.getsockname()[1]
    print(f"http://127.0.0.1:{port}/mcp", flush=True)
    asyncio.run(
        server.run_http_async(show_banner=False, host="127.0.0.1", port=port, log_level="warning", sockets=[sock])
    )


if __name__ == "__main__":
    main()
