"""Round-trip benchmark: ``gen_server:call`` into pynode against the same call into a BEAM node.

One run starts a private epmd, the pynode node ``py@127.0.0.1`` in its own
process (``python -m pynode``), an erl node ``echo@127.0.0.1`` with a
registered gen_server ``echo`` (``ping`` -> ``pong``), and an erl node
``bench@127.0.0.1`` that runs the measuring loops. The loops run on the BEAM
so that both targets are timed by the same clock and the same caller. The erl
side lives in ``scripts/bench/pynode_bench.erl``; its nodes, their epmd and
their control channel are pynode.testing's (:class:`BeamNode`, ``running_epmd``),
so the samples come back as terms, decoded with pynode's own codec.

The two targets are measured in alternation (py, beam, py, beam, ...) so a
noisy machine hurts both alike. Then the codec is timed in this process, and
the node's RSS and CPU time are read from /proc.

Everything is bounded: one overall time limit, a timeout on every wait, and
every process started here is ended by its pid in a ``finally``. The last
line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench_node import NODE_CWD, codec_form

from pynode.etf import Atom, Term, decode, encode
from pynode.net.busywait import DEFAULT_BUSY_WAIT_US
from pynode.testing import BeamEvalError, BeamNode, BeamNodeError, running_epmd

ROOT = Path(__file__).resolve().parent.parent
ERL_SOURCE = Path(__file__).resolve().parent / "bench" / "pynode_bench.erl"

PY_NODE = "py@127.0.0.1"
ECHO_NODE = "echo@127.0.0.1"
BENCH_NODE = "bench@127.0.0.1"

START_TIMEOUT = 30.0
"""Seconds the Python node gets to come up (and print its ready line)."""
CALL_TIMEOUT_MS = 10_000
"""The timeout of each gen_server:call on the bench node."""
STOP_GRACE = 5.0
"""Seconds a process gets to end after it was asked to, before SIGKILL."""


class BenchError(Exception):
    """Something the benchmark needs did not work; the message says what."""


# ---------------------------------------------------------------------------------------------
# the processes: the Python node and py-spy here; the erl nodes and epmd are pynode.testing's


@dataclass
class Child:
    """A process started here (the Python node, py-spy): its stderr goes to a file, stdout is kept read."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    stdout_tail: deque[str] = field(default_factory=lambda: deque(maxlen=30))
    drainer: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Child:
        log_path = workdir / f"{name}.log"
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                env=env,
                cwd=NODE_CWD,
                limit=64 * 1024 * 1024,
            )
        return cls(name, proc, log_path)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        return "\n".join([*self.stdout_tail, *text.splitlines()[-lines:]])

    async def wait_for_line(self, marker: bytes, timeout: float) -> None:
        """Read stdout until a line holds ``marker``; then keep reading it, so the child never blocks."""
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await stdout.readline()
                    if not raw:
                        raise BenchError(f"{self.name} exited (code {self.proc.returncode}):\n{self.log_tail()}")
                    if marker in raw:
                        break
                    self.stdout_tail.append(raw.decode(errors="replace").rstrip())
        except TimeoutError:
            raise BenchError(f"{self.name} printed no {marker!r} line within {timeout} s:\n{self.log_tail()}") from None
        self.drainer = asyncio.create_task(self._drain(), name=f"{self.name} stdout")

    async def _drain(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while raw := await stdout.readline():
            self.stdout_tail.append(raw.decode(errors="replace").rstrip())

    async def stop(self, first: signal.Signals = signal.SIGTERM) -> None:
        """``first``, then SIGKILL after STOP_GRACE s, by its pid."""
        for sig in (first, signal.SIGKILL):
            if self.proc.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), STOP_GRACE if sig is first else 30)
        if self.drainer is not None:
            self.drainer.cancel()
            await asyncio.gather(self.drainer, return_exceptions=True)


@contextlib.asynccontextmanager
async def started(child: Child) -> AsyncIterator[Child]:
    try:
        yield child
    finally:
        await child.stop()


async def start_py_node(workdir: Path, *, cookie: str, epmd_port: int, uvloop: bool, busy_wait: int | None) -> Child:
    python = ROOT / ".venv" / "bin" / "python"
    interpreter = str(python) if python.exists() else sys.executable
    agents_dir = workdir / "agents"
    agents_dir.mkdir()
    args = ["--name", PY_NODE, "--cookie", cookie, "--epmd-port", str(epmd_port), "--agents", str(agents_dir)]
    env = dict(os.environ)
    env.pop("PYNODE_LOOP", None)
    if busy_wait is not None:
        args += ["--busy-wait", str(busy_wait)]
    argv = [interpreter, "-m", "pynode", *args, "--loop", "uvloop" if uvloop else "asyncio"]
    return await Child.start("pynode", argv, workdir, env)


def compile_erl(workdir: Path) -> Path:
    code = workdir / "ebin"
    code.mkdir()
    done = subprocess.run(
        ["erlc", f"-DCALL_TIMEOUT={CALL_TIMEOUT_MS}", "-o", str(code), str(ERL_SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise BenchError(f"erlc {ERL_SOURCE} failed:\n{done.stdout}{done.stderr}")
    return code


@contextlib.asynccontextmanager
async def erl_node(name: str, *, cookie: str, epmd_port: int, extra_args: list[str]) -> AsyncIterator[BeamNode]:
    try:
        node = await BeamNode.start(name, cookie=cookie, epmd_port=epmd_port, extra_args=extra_args)
    except BeamNodeError as exc:
        raise BenchError(str(exc)) from None
    try:
        yield node
    finally:
        await node.stop(orderly=False)


async def command(bench: BeamNode, expr: str, timeout: float) -> Term:
    """Evaluate ``expr`` on the bench node; its result, decoded."""
    try:
        return decode(await bench.eval_term(expr, timeout=timeout))
    except TimeoutError:
        raise BenchError(f"bench node: no answer to {expr!r} within {timeout:.0f} s") from None
    except BeamEvalError as exc:
        raise BenchError(f"bench node: {expr!r} failed: {exc}") from None


# ---------------------------------------------------------------------------------------------
# /proc


def proc_status_kb(pid: int, field_name: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {field_name}")


def proc_cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def event_loop_of(pid: int) -> str:
    """``uvloop`` when the process has uvloop's extension mapped, else ``asyncio``."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "uvloop" if "/uvloop/" in maps else "asyncio"


# ---------------------------------------------------------------------------------------------
# figures


def percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Samples:
    """Latencies (ns) and wall time of one target in one mode, over all its rounds."""

    latencies: list[int] = field(default_factory=list)
    wall_ns: int = 0
    round_medians_ns: list[int] = field(default_factory=list)
    node_user_s: float = 0.0
    node_system_s: float = 0.0

    def add(self, result: Term) -> None:
        if not (isinstance(result, tuple) and len(result) == 2):
            raise BenchError(f"bench node: unexpected result {result!r:.200}")
        wall, latencies = result
        if not (isinstance(wall, int) and isinstance(latencies, list) and latencies):
            raise BenchError(f"bench node: unexpected result {result!r:.200}")
        ints = [x for x in latencies if isinstance(x, int)]
        self.latencies += ints
        self.wall_ns += wall
        self.round_medians_ns.append(int(statistics.median(ints)))

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "calls": len(ordered),
            "median_us": round(percentile(ordered, 0.5) / 1000, 1),
            "p90_us": round(percentile(ordered, 0.9) / 1000, 1),
            "p99_us": round(percentile(ordered, 0.99) / 1000, 1),
            "max_us": round(ordered[-1] / 1000, 1),
            "calls_per_s": round(len(ordered) / (self.wall_ns / 1e9)),
            "round_medians_us": [round(m / 1000, 1) for m in self.round_medians_ns],
        }


def codec_maps(count: int = 1000) -> list[Term]:
    """``count`` five-key maps with atom keys and int, binary and float values (88 bytes each)."""
    return [
        {
            Atom("id"): 100_000 + i,
            Atom("name"): f"user-{i:05d}".encode(),
            Atom("score"): i * 0.5 + 0.25,
            Atom("count"): 1000 + i,
            Atom("email"): f"u{i:05d}@ex.org".encode(),
        }
        for i in range(count)
    ]


def time_ms(action: Callable[[], object], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        action()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return {"best_ms": round(min(samples), 3), "median_ms": round(statistics.median(samples), 3)}


def codec_timings(runs: int) -> dict[str, Any]:
    """Encode and decode timings of pynode.etf, in this process."""
    figures: dict[str, Any] = {}
    for label, term in (("maps_1000x5", codec_maps()), ("binary_1mb", os.urandom(1 << 20))):
        data = encode(term)
        if decode(data) != term:
            raise BenchError(f"codec: {label} did not survive encode/decode")
        figures[label] = {
            "bytes": len(data),
            "encode": time_ms(functools.partial(encode, term), runs),
            "decode": time_ms(functools.partial(decode, data), runs),
        }
    return figures


# ---------------------------------------------------------------------------------------------
# the run


@dataclass(frozen=True, slots=True)
class Options:
    calls: int
    concurrency: int
    rounds: int
    warmup: int
    codec_runs: int
    uvloop: bool
    busy_wait: bool
    node_busy_wait: int | None
    profile: Path | None
    time_limit: float
    quick: bool


async def measure(opts: Options, workdir: Path, profiler: list[Child]) -> dict[str, Any]:
    cookie = "bench_" + secrets.token_hex(12)
    code = await asyncio.to_thread(compile_erl, workdir)
    erl_flags = [] if opts.busy_wait else ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]
    extra_args = ["-pa", str(code), *erl_flags]
    with running_epmd() as epmd:
        py_node = await start_py_node(
            workdir, cookie=cookie, epmd_port=epmd.port, uvloop=opts.uvloop, busy_wait=opts.node_busy_wait
        )
        async with (
            started(py_node) as py,
            erl_node("echo", cookie=cookie, epmd_port=epmd.port, extra_args=extra_args) as echo,
            erl_node("bench", cookie=cookie, epmd_port=epmd.port, extra_args=extra_args) as bench,
        ):
            await py.wait_for_line(b" ready ", START_TIMEOUT)
            await echo.eval("pynode_bench:start_echo()")
            try:
                return await run_loops(bench, py, opts, workdir, profiler)
            except BenchError as exc:
                raise BenchError(f"{exc}\npynode's log:\n{py.log_tail()}") from None


TARGETS = {"py": f"{{pynode, '{PY_NODE}'}}", "beam": f"{{echo, '{ECHO_NODE}'}}"}
"""The two destinations, as the bench node's calls name them."""


async def run_loops(bench: BeamNode, py: Child, opts: Options, workdir: Path, profiler: list[Child]) -> dict[str, Any]:
    """Warm-up, then each mode's rounds alternating the targets; the figures of both."""
    py_pid = py.proc.pid
    info = await command(bench, "pynode_bench:info()", 30)
    rss_start = proc_status_kb(py_pid, "VmRSS")

    # How long one command's answer may take; the overall time limit bounds the whole run anyway.
    budget = max(60.0, opts.time_limit / 2)
    for target in TARGETS.values():
        await command(bench, f"pynode_bench:seq({target}, {opts.warmup})", budget)
    rss_before = proc_status_kb(py_pid, "VmRSS")

    if opts.profile:
        profiler.append(await start_profiler(py_pid, opts.profile, workdir))
    per_round = max(1, opts.calls // opts.rounds)
    results: dict[str, dict[str, Samples]] = {"seq": {}, "conc": {}}
    for mode in ("seq", "conc"):
        for _ in range(opts.rounds):
            for target, dest in TARGETS.items():
                expr = (
                    f"pynode_bench:seq({dest}, {per_round})"
                    if mode == "seq"
                    else f"pynode_bench:conc({dest}, {per_round}, {opts.concurrency})"
                )
                user0, system0 = proc_cpu_seconds(py_pid)
                result = await command(bench, expr, budget)
                user1, system1 = proc_cpu_seconds(py_pid)
                samples = results[mode].setdefault(target, Samples())
                samples.add(result)
                samples.node_user_s += user1 - user0
                samples.node_system_s += system1 - system0
    rss_after = proc_status_kb(py_pid, "VmRSS")
    rss_peak = proc_status_kb(py_pid, "VmHWM")
    for running in profiler:
        await stop_profiler(running)

    summary: dict[str, Any] = {mode: {t: s.summary() for t, s in by.items()} for mode, by in results.items()}
    otp, schedulers = info if isinstance(info, tuple) else ("?", 0)
    return {
        **summary,
        "ratio_median_py_beam": round(summary["seq"]["py"]["median_us"] / summary["seq"]["beam"]["median_us"], 2),
        "ratio_median_py_beam_conc": round(
            summary["conc"]["py"]["median_us"] / summary["conc"]["beam"]["median_us"], 2
        ),
        "node_cpu_us_per_call": {
            mode: {
                "user": round(by["py"].node_user_s * 1e6 / len(by["py"].latencies), 1),
                "system": round(by["py"].node_system_s * 1e6 / len(by["py"].latencies), 1),
            }
            for mode, by in results.items()
        },
        "rss_kb": {"start": rss_start, "before": rss_before, "after": rss_after, "peak": rss_peak},
        "node_loop": event_loop_of(py_pid),
        "otp": otp.decode() if isinstance(otp, bytes) else str(otp),
        "bench_schedulers": schedulers,
    }


async def start_profiler(pid: int, path: Path, workdir: Path) -> Child:
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(ROOT / ".venv" / "bin"))
    if py_spy is None:
        raise BenchError("--profile needs py-spy (.venv/bin/python -m pip install py-spy)")
    argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(path), "--rate", "1000"]
    # Blocking sampling (py-spy pauses the node for each sample) gives whole stacks; it also slows
    # the node a little, so figures from a --profile run are not the ones to quote.
    child = await Child.start("py-spy", argv, workdir)
    await asyncio.sleep(1.0)  # py-spy attaches; samples before the loops start are idle ones
    if child.proc.returncode is not None:
        raise BenchError(f"py-spy exited (code {child.proc.returncode}):\n{child.log_tail()}")
    return child


async def stop_profiler(child: Child) -> None:
    """SIGINT makes py-spy write its file (then SIGKILL by pid if it hangs)."""
    await child.stop(signal.SIGINT)


def _function(frame: str) -> str:
    """``name (file.py:123)`` -> ``name (file.py)``: one entry per function, whatever line was running."""
    return re.sub(r":\d+\)$", ")", frame)


def hot_spots(path: Path, top: int) -> dict[str, Any]:
    """Share of busy samples per function from py-spy's raw output: own time, and with callees.

    "With callees" lists pynode's own functions only: the event loop's frames sit under everything.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        functions = [_function(frame) for frame in stack.split(";")]
        total += count
        own[functions[-1]] += count
        for function in set(functions):
            if "(pynode/" in function and "pynode/__main__.py" not in function and "pynode/cli.py" not in function:
                inclusive[function] += count
    return {
        "samples": total,
        "own": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)] if total else [],
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top)] if total else [],
    }


async def run(opts: Options) -> dict[str, Any]:
    started_at = time.monotonic()
    profiler: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="pynode-bench-") as scratch:
        try:
            async with asyncio.timeout(opts.time_limit):
                figures = await measure(opts, Path(scratch), profiler)
        except TimeoutError:
            raise BenchError(f"the benchmark took over its time limit of {opts.time_limit:.0f} s") from None
        finally:
            for running in profiler:
                await running.stop(signal.SIGINT)
    figures["codec"] = await asyncio.to_thread(codec_timings, opts.codec_runs)
    if opts.profile is not None:
        figures["profile"] = {"path": str(opts.profile), **hot_spots(opts.profile, 15)}
    return {
        "bench": "rtt",
        "calls": opts.calls,
        "concurrency": opts.concurrency,
        "rounds": opts.rounds,
        "quick": opts.quick,
        "uvloop_requested": opts.uvloop,
        "busy_wait": opts.busy_wait,
        "node_busy_wait_us": DEFAULT_BUSY_WAIT_US if opts.node_busy_wait is None else opts.node_busy_wait,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "node_codec": codec_form(),
        **figures,
        "elapsed_s": round(time.monotonic() - started_at, 1),
    }


# ---------------------------------------------------------------------------------------------
# output


def print_table(r: dict[str, Any], out: TextIO) -> None:
    def row(*cells: object) -> None:
        print(f"  {cells[0]:<24}" + "".join(f"{c!s:>12}" for c in cells[1:]), file=out)

    print(
        f"pynode round trips: {r['calls']} calls per target, {r['rounds']} alternating rounds, "
        f"node loop {r['node_loop']} (busy-wait {r['node_busy_wait_us']} µs), node codec {r['node_codec']}, "
        f"OTP {r['otp']}, Python {r['python']}, {r['cpus']} CPUs",
        file=out,
    )
    for mode, title in (("seq", "sequential"), ("conc", f"{r['concurrency']} concurrent callers")):
        print(f"\ngen_server:call, {title}", file=out)
        row("target", "median µs", "p90 µs", "p99 µs", "max µs", "calls/s")
        for target, label in (("py", "pynode (py@)"), ("beam", "gen_server (echo@)")):
            s = r[mode][target]
            row(label, s["median_us"], s["p90_us"], s["p99_us"], s["max_us"], s["calls_per_s"])
        rounds = " / ".join(f"{t} {', '.join(str(m) for m in r[mode][t]['round_medians_us'])}" for t in ("py", "beam"))
        print(f"  medians per round (µs): {rounds}", file=out)
    print(
        f"\nratio py/beam of the medians: sequential {r['ratio_median_py_beam']} (target <= 1.2), "
        f"concurrent {r['ratio_median_py_beam_conc']}; 50-caller calls/s py/beam "
        f"{r['conc']['py']['calls_per_s'] / max(r['conc']['beam']['calls_per_s'], 1):.2f} (target >= 0.9)",
        file=out,
    )
    cpu = r["node_cpu_us_per_call"]
    print(
        "node CPU per call (user + system): "
        + ", ".join(
            f"{title} {cpu[mode]['user']} + {cpu[mode]['system']} µs"
            for mode, title in (("seq", "sequential"), ("conc", "concurrent"))
        ),
        file=out,
    )
    rss = r["rss_kb"]
    print(
        f"node RSS (kB): at start {rss['start']}, before the loops {rss['before']}, "
        f"after {rss['after']}, peak {rss['peak']}",
        file=out,
    )
    print("\ncodec (pynode.etf, in-process)", file=out)
    row("term", "bytes", "enc best", "enc median", "dec best", "dec median")
    for label, c in r["codec"].items():
        row(
            label, c["bytes"], f"{c['encode']['best_ms']} ms", f"{c['encode']['median_ms']} ms",
            f"{c['decode']['best_ms']} ms", f"{c['decode']['median_ms']} ms",
        )  # fmt: skip
    if "profile" in r:
        profile = r["profile"]
        print(
            f"\nnode profile ({profile['path']}), share of {profile['samples']} busy samples "
            "(a --profile run is slowed by the sampling: do not quote its timings):",
            file=out,
        )
        for kind in ("own", "inclusive"):
            print(f"  {kind}:", file=out)
            for frame, share in profile[kind]:
                print(f"    {share:5.1f}%  {frame}", file=out)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=None, help="calls per target and mode (default 20000)")
    parser.add_argument("--concurrency", type=int, default=None, help="concurrent callers (default 50)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per mode (default 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for the smoke test")
    parser.add_argument("--uvloop", action="store_true", help="run the node under uvloop (pynode --loop uvloop)")
    parser.add_argument(
        "--no-busy-wait",
        dest="busy_wait",
        action="store_false",
        help="turn busy-waiting off on both sides: the erl nodes' schedulers (+sbwt none ...) and the"
        " node's loop (--busy-wait 0, unless --node-busy-wait says otherwise); the default keeps OTP's own"
        " settings and the node's, which make calls faster",
    )
    parser.add_argument(
        "--node-busy-wait",
        type=int,
        metavar="MICROSECONDS",
        help=f"the node's --busy-wait (default the node's own, {DEFAULT_BUSY_WAIT_US})",
    )
    parser.add_argument("--profile", type=Path, help="record the node with py-spy (raw format) into this file")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds for the whole run (default 600)")
    args = parser.parse_args(argv)
    calls = args.calls if args.calls is not None else (1000 if args.quick else 20_000)
    concurrency = args.concurrency if args.concurrency is not None else (10 if args.quick else 50)
    if calls < 1 or concurrency < 1 or args.rounds < 1:
        parser.error("--calls, --concurrency and --rounds must be positive")
    return Options(
        calls=calls,
        concurrency=concurrency,
        rounds=args.rounds,
        warmup=max(100, calls // 10),
        codec_runs=5 if args.quick else 20,
        uvloop=args.uvloop,
        busy_wait=args.busy_wait,
        node_busy_wait=args.node_busy_wait if args.node_busy_wait is not None or args.busy_wait else 0,
        profile=args.profile.resolve() if args.profile else None,
        time_limit=args.time_limit,
        quick=args.quick,
    )


@contextlib.contextmanager
def _reported_errors() -> Iterator[None]:
    try:
        yield
    except BenchError as exc:
        print(f"bench_rtt: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        with _reported_errors():
            result = asyncio.run(run(opts))
    except KeyboardInterrupt:  # asyncio.run has cancelled the run: its finally ended every process
        print("bench_rtt: interrupted", file=sys.stderr)
        return 130
    print_table(result, sys.stdout)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
