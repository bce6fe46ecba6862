"""What the MCP toolset tests share: the two test servers, the toolset terms that name them, and
bounded checks that an OS process has ended."""

from __future__ import annotations

import asyncio
import contextlib
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from pynode.etf.types import Atom, Term

A = Atom
HERE = Path(__file__).resolve().parent
STDIO_SERVER = HERE / "stdio_server.py"
HTTP_SERVER = HERE / "http_server.py"
PYTHON = sys.executable
"""The program the stdio toolsets start (the node must allow it: ``--mcp-command``)."""


def stdio_toolset(
    prefix: str | None = None, *, approval: bool = False, env: dict[str, str] | None = None
) -> dict[Term, Term]:
    """``#{mcp => #{command => Python, args => [stdio_server.py], env => Env}, prefix => ...}``."""
    server: dict[Term, Term] = {A("command"): PYTHON, A("args"): [str(STDIO_SERVER)]}
    if env:
        server[A("env")] = {k.encode(): v.encode() for k, v in env.items()}
    return _toolset(server, prefix, approval)


def http_toolset(url: str, prefix: str | None = None, *, approval: bool = False) -> dict[Term, Term]:
    """``#{mcp => #{url => Url}, prefix => ..., requires_approval => ...}``."""
    return _toolset({A("url"): url}, prefix, approval)


def _toolset(server: dict[Term, Term], prefix: str | None, approval: bool) -> dict[Term, Term]:
    toolset: dict[Term, Term] = {A("mcp"): server}
    if prefix is not None:
        toolset[A("prefix")] = prefix
    if approval:
        toolset[A("requires_approval")] = True
    return toolset


class HttpServer:
    """``http_server.py`` as a child of the test, on 127.0.0.1; ended by its pid."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextlib.contextmanager
def http_server() -> Iterator[HttpServer]:
    """Start the streamable-HTTP test server and read its URL (it prints it once it listens)."""
    proc = subprocess.Popen([PYTHON, str(HTTP_SERVER)], stdout=subprocess.PIPE, text=True)
    server: HttpServer | None = None
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 60)
        assert readable, "the MCP test server printed no URL within 60 s"
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        server = HttpServer(proc, url)
        yield server
    finally:
        if server is not None:
            server.kill()
        elif proc.poll() is None:
            proc.kill()
            proc.wait(10)


def alive(pid: int, program: str = STDIO_SERVER.name) -> bool:
    """Whether ``pid`` is a live process running ``program`` (a zombie, or a reused pid, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and program.encode() in cmdline


async def ended(pid: int, within: float = 10.0) -> float:
    """Wait (bounded) until process ``pid`` has ended; how long it took, in seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while alive(pid):
        if loop.time() - start > within:
            raise AssertionError(f"process {pid} still runs {within} s later")
        await asyncio.sleep(0.05)
    return loop.time() - start
