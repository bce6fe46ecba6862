"""What the benchmarks share: the ``pynode`` command started as production starts it, and /proc's view of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
TICKS = os.sysconf("SC_CLK_TCK")
NODE_CWD = tempfile.gettempdir()
"""Where the node runs: not the checkout, whose ``pynode/`` would shadow an installed (compiled) one
named on PYTHONPATH, as ``python -m`` puts its working directory first on the path."""


def codec_form() -> str:
    """``compiled`` or ``pure``: the form of the codec a node started as :func:`start_node` does runs."""
    probe = "import sys, pynode.etf; print(int(not sys.modules['pynode.etf.encode'].__file__.endswith('.py')))"
    done = subprocess.run(
        [PYTHON, "-c", probe], cwd=NODE_CWD,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return "compiled" if done.stdout.strip() == "1" else "pure"


async def start_node(
    epmd_port: int,
    *,
    cookie: str,
    agents: Path,
    max_runs: int,
    profile: Path | None = None,
    name: str = "py@127.0.0.1",
    env: dict[str, str] | None = None,
    ready_within: float = 30,
    args: Sequence[str] = (),
) -> asyncio.subprocess.Process:
    """``python -m pynode`` as ``name``, once it says it is ready; ``profile``: cProfile stats there.

    ``env``: variables added to the node's environment; ``ready_within``: seconds it has to say so;
    ``args``: more of the node's command-line flags (``--loop uvloop``, ``--busy-wait 0``).
    """
    env = dict(os.environ, PYNODE_LOG_LEVEL="warning", **(env or {}))
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    proc = await asyncio.create_subprocess_exec(
        PYTHON, *profiler, "-m", "pynode", "--name", name, "--cookie", cookie,
        "--epmd-port", str(epmd_port), "--agents", str(agents), "--max-runs", str(max_runs),
        *args, stdout=asyncio.subprocess.PIPE, env=env, cwd=NODE_CWD,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), ready_within)
    if b"ready" not in line:
        raise RuntimeError(f"the node did not start: {line!r}")
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM by pid, SIGKILL after 30 s."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pct(values: list[int] | list[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else float("nan")
