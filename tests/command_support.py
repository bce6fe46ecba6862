"""The ``pynode`` command as the tests that need its own process start it: until its ready line, then
stopped with SIGTERM, so that a test sees what a Port or a supervisor would."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from typing import IO

READY_WITHIN = 60.0
"""Generous: the command is ready in about a second on any machine; one that never is fails the test."""


@contextlib.asynccontextmanager
async def ready_command(
    cookie: str,
    epmd_port: int,
    *args: str,
    name: str = "py@127.0.0.1",
    stderr: IO[bytes] | int = asyncio.subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, bytes]]:
    """Run ``python -m pynode --name NAME ... ARGS`` and yield it with its first line of standard output.

    The block sees the first line whatever it says (a command that stopped early yields ``b""``), so
    a test asserts on it; the process is stopped with SIGTERM and waited for when the block ends.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pynode", "--name", name, "--cookie", cookie, "--epmd-port", str(epmd_port), *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(READY_WITHIN):
            line = await proc.stdout.readline()
        yield proc, line
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
