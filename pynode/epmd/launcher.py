"""Finding and starting an EPMD daemon, for ``--start-epmd``.

``erl`` starts ``epmd -daemon`` when none answers and leaves it running after
the node stops; we do the same, so other nodes on the host can keep using it.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import shutil
import subprocess
import time

from pynode.epmd.client import names
from pynode.errors import EpmdError

__all__ = ["ensure_epmd", "find_epmd_executable"]

log = logging.getLogger(__name__)

ERTS_EPMD_GLOBS = (
    "/usr/lib/erlang/erts-*/bin/epmd",
    "/usr/local/lib/erlang/erts-*/bin/epmd",
)
"""Where Erlang installs keep epmd when it is not on PATH."""

_POLL_INTERVAL = 0.05


def _erts_version(path: str) -> tuple[int, ...]:
    match = re.search(r"erts-([\d.]+)", path)
    if match is None:
        return ()
    return tuple(int(part) for part in match.group(1).split(".") if part)


def find_epmd_executable() -> str | None:
    """``epmd`` on PATH, else the newest one under an Erlang installation, else None."""
    on_path = shutil.which("epmd")
    if on_path is not None:
        return on_path
    for pattern in ERTS_EPMD_GLOBS:
        found = [p for p in glob.glob(pattern) if os.access(p, os.X_OK)]
        if found:
            return max(found, key=_erts_version)
    return None


async def _answers(epmd_port: int, host: str, wait_s: float) -> bool:
    try:
        await names(epmd_port=epmd_port, host=host, timeout=wait_s)
    except EpmdError:
        return False
    return True


async def ensure_epmd(
    epmd_port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = 5.0,
) -> bool:
    """Make sure an EPMD answers on ``host:epmd_port``; True if we had to start it."""
    if await _answers(epmd_port, host, timeout):
        return False
    executable = find_epmd_executable()
    if executable is None:
        raise EpmdError(
            f"no EPMD answers on {host}:{epmd_port} and no epmd executable was found "
            "on PATH or under /usr/lib/erlang or /usr/local/lib/erlang; install Erlang/OTP"
        )
    log.info("starting %s -daemon -port %d", executable, epmd_port)
    deadline = time.monotonic() + timeout
    # `-daemon` forks and the first process exits at once; the daemon detaches from us.
    process = await asyncio.create_subprocess_exec(
        executable,
        "-daemon",
        "-port",
        str(epmd_port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            returncode = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise EpmdError(f"{executable} -daemon -port {epmd_port} did not detach within {timeout} s") from None
    if returncode != 0:
        raise EpmdError(f"{executable} -daemon -port {epmd_port} exited with status {returncode}")
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EpmdError(f"started {executable} on port {epmd_port}; it did not answer within {timeout} s")
        if await _answers(epmd_port, host, min(remaining, 1.0)):
            return True
        await asyncio.sleep(_POLL_INTERVAL)
