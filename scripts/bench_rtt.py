"""Round-trip benchmark: ``gen_server:call`` into pynode against the same call into a BEAM node.

One run starts a private epmd, the pynode node ``py@127.0.0.1`` in its own
process (``python -m pynode``), an erl node ``echo@127.0.0.1`` with a
registered gen_server ``echo`` (``ping`` -> ``pong``), and an erl node
``bench@127.0.0.1`` that runs the measuring loops. The loops run on the BEAM
so that both targets are timed by the same clock and the same caller; this
script only tells the bench node what to run (one line on its stdin) and
reads the samples back (``term_to_binary``, base64, one marked line on its
stdout), decoded with pynode's own codec.

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
import base64
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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pynode.epmd.launcher import find_epmd_executable
from pynode.etf import Atom, Term, decode, encode

ROOT = Path(__file__).resolve().parent.parent

MARK = "<<bench>> "
"""Prefix of every line the erl side means for this script; anything else it prints is ignored."""

PY_NODE = "py@127.0.0.1"
ECHO_NODE = "echo@127.0.0.1"
BENCH_NODE = "bench@127.0.0.1"

START_TIMEOUT = 30.0
"""Seconds a node gets to come up (and print its ready line)."""
CALL_TIMEOUT_MS = 10_000
"""The timeout of each gen_server:call on the bench node."""
STOP_GRACE = 5.0
"""Seconds a process gets to end after it was asked to, before SIGKILL."""

ECHO_ERL = """\
%% The BEAM-to-BEAM reference of scripts/bench_rtt: a registered gen_server that answers ping.
-module(pynode_bench_echo).
-behaviour(gen_server).
-export([serve/0, init/1, handle_call/3, handle_cast/2]).

serve() ->
    {ok, _} = gen_server:start({local, echo}, ?MODULE, [], []),
    io:put_chars(["<<bench>> ready ", os:getpid(), "\\n"]),
    wait_eof().

%% The node lives until the driver closes our stdin (or ends us by pid).
wait_eof() ->
    case io:get_line("") of
        eof -> halt(0);
        {error, _} -> halt(0);
        _ -> wait_eof()
    end.

init([]) -> {ok, nostate}.

handle_call(ping, _From, State) -> {reply, pong, State}.

handle_cast(_Request, State) -> {noreply, State}.
"""

BENCH_ERL = """\
%% The measuring side of scripts/bench_rtt: runs call loops on request, one command per stdin line.
%%   seq Target N        N sequential calls           -> {WallNs, [LatencyNs]}
%%   conc Target N C     C callers, N div C calls each -> {WallNs, [LatencyNs]}
%%   info                                              -> {OtpRelease, SchedulersOnline}
%% Target is py or beam. Each answer is one line: "<<bench>> ok Base64(term_to_binary(Result))"
%% or "<<bench>> err Reason". When stdin closes, the node halts.
-module(pynode_bench).
-export([main/1]).

main([PyNode, EchoNode]) ->
    ok = io:setopts([binary]),
    Targets = #{<<"py">> => {pynode, PyNode}, <<"beam">> => {echo, EchoNode}},
    io:put_chars(["<<bench>> ready ", os:getpid(), "\\n"]),
    loop(Targets).

loop(Targets) ->
    case io:get_line("") of
        Line when is_binary(Line) ->
            Words = binary:split(string:trim(Line), <<" ">>, [global, trim_all]),
            Answer =
                try command(Words, Targets) of
                    Result -> ["ok ", base64:encode(term_to_binary(Result))]
                catch
                    Class:Reason -> ["err ", io_lib:format("~w:~w", [Class, Reason])]
                end,
            io:put_chars(["<<bench>> ", Answer, "\\n"]),
            loop(Targets);
        _ ->
            halt(0)
    end.

command([<<"seq">>, Target, N], Targets) ->
    Dest = maps:get(Target, Targets),
    T0 = erlang:monotonic_time(),
    Latencies = calls(Dest, binary_to_integer(N), []),
    {ns(erlang:monotonic_time() - T0), [ns(L) || L <- Latencies]};
command([<<"conc">>, Target, N, C], Targets) ->
    conc(maps:get(Target, Targets), binary_to_integer(N), binary_to_integer(C));
command([<<"info">>], _Targets) ->
    {list_to_binary(erlang:system_info(otp_release)), erlang:system_info(schedulers_online)}.

calls(_Dest, 0, Acc) ->
    Acc;
calls(Dest, K, Acc) ->
    T0 = erlang:monotonic_time(),
    pong = gen_server:call(Dest, ping, ?CALL_TIMEOUT),
    calls(Dest, K - 1, [erlang:monotonic_time() - T0 | Acc]).

%% Each caller waits for `go`, so spawning them is not timed; its samples come back as its exit reason.
conc(Dest, N, C) ->
    Each = max(1, N div C),
    Callers = [spawn_monitor(fun() -> receive go -> exit({done, calls(Dest, Each, [])}) end end)
               || _ <- lists:seq(1, C)],
    T0 = erlang:monotonic_time(),
    [Pid ! go || {Pid, _} <- Callers],
    Samples = [await(Pid, Ref) || {Pid, Ref} <- Callers],
    Wall = erlang:monotonic_time() - T0,
    {ns(Wall), [ns(L) || L <- lists:append(Samples)]}.

await(Pid, Ref) ->
    receive
        {'DOWN', Ref, process, Pid, {done, Latencies}} -> Latencies;
        {'DOWN', Ref, process, Pid, Other} -> error({caller_failed, Other})
    after 600000 ->
        error(caller_timeout)
    end.

ns(Native) -> erlang:convert_time_unit(Native, native, nanosecond).
"""

UVLOOP_BOOT = """\
import asyncio, sys
import uvloop
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
from pynode.cli import main
sys.exit(main(sys.argv[1:]))
"""
"""How --uvloop starts the node until the CLI reads $PYNODE_UVLOOP itself: the same main, under uvloop."""


class BenchError(Exception):
    """Something the benchmark needs did not work; the message says what."""


# ---------------------------------------------------------------------------------------------
# child processes


@dataclass
class Child:
    """A process started here, with how to ask it to end and where its stderr went."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    os_pids: set[int] = field(default_factory=set)
    """Pids to end: the child's own, plus the pid a BEAM reports if it differs."""
    stop_by_stdin: bool = False
    """True for the erl nodes: closing stdin makes them halt."""
    stdout_tail: deque[str] = field(default_factory=lambda: deque(maxlen=30))
    drainer: asyncio.Task[None] | None = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        return "\n".join([*self.stdout_tail, *text.splitlines()[-lines:]])

    def drain_stdout(self) -> None:
        """Once nothing more is wanted from stdout: keep reading it, so the child never blocks on a full pipe."""
        self.drainer = asyncio.create_task(self._drain(), name=f"{self.name} stdout")

    async def _drain(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while raw := await stdout.readline():
            self.stdout_tail.append(raw.decode(errors="replace").rstrip())


class Children:
    """Every process the benchmark starts; :meth:`stop_all` ends them by pid, newest first."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Child] = []

    async def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: bool = False,
        stop_by_stdin: bool = False,
    ) -> Child:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                env=env,
                cwd=ROOT,
                limit=64 * 1024 * 1024,
            )
        child = Child(name, proc, log_path, {proc.pid}, stop_by_stdin)
        self.started.append(child)
        return child

    async def stop_all(self) -> None:
        for child in reversed(self.started):
            await _stop(child)


async def _stop(child: Child) -> None:
    proc = child.proc
    if proc.returncode is None and child.stop_by_stdin and proc.stdin is not None:
        proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            break
        for pid in child.os_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
    # A BEAM whose pid differs from the one we started may outlive it: make sure it is gone.
    for pid in child.os_pids - {proc.pid}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if child.drainer is not None:
        child.drainer.cancel()
        await asyncio.gather(child.drainer, return_exceptions=True)


async def read_marked_line(child: Child, timeout: float) -> str:
    """The next stdout line that starts with MARK (without it); other lines are skipped."""
    stdout = child.proc.stdout
    assert stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            raw = await stdout.readline()
            if not raw:
                raise BenchError(f"{child.name} exited (code {child.proc.returncode}):\n{child.log_tail()}")
            line = raw.decode(errors="replace").rstrip("\r\n")
            if line.startswith(MARK):
                return line[len(MARK) :]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def epmd_executable() -> str:
    found = find_epmd_executable()
    if found is None:
        raise BenchError("epmd not found (scripts/_setup.sh installs Erlang)")
    return found


def epmd_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"\x00\x01\x6e")  # NAMES_REQ
            return len(sock.recv(4)) > 0
    except OSError:
        return False


async def start_epmd(children: Children) -> int:
    port = free_port()
    child = await children.start("epmd", [epmd_executable(), "-port", str(port), "-address", "127.0.0.1"])
    child.drain_stdout()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.proc.returncode is not None:
            raise BenchError(f"epmd exited (code {child.proc.returncode}):\n{child.log_tail()}")
        if await asyncio.to_thread(epmd_answers, port):
            return port
        await asyncio.sleep(0.05)
    raise BenchError(f"epmd did not answer on port {port} within {START_TIMEOUT} s")


async def start_py_node(children: Children, *, cookie: str, epmd_port: int, agents_dir: Path, uvloop: bool) -> Child:
    python = ROOT / ".venv" / "bin" / "python"
    interpreter = str(python) if python.exists() else sys.executable
    args = ["--name", PY_NODE, "--cookie", cookie, "--epmd-port", str(epmd_port), "--agents", str(agents_dir)]
    env = dict(os.environ)
    if uvloop:
        env["PYNODE_UVLOOP"] = "1"
        # -O: link.py asserts isinstance(transport, asyncio.Transport), which uvloop's TCPTransport is
        # not (it only quacks like one); without asserts the node runs. Drop -O once link.py is fixed.
        argv = [interpreter, "-O", "-c", UVLOOP_BOOT, *args]
    else:
        env.pop("PYNODE_UVLOOP", None)
        argv = [interpreter, "-m", "pynode", *args]
    child = await children.start("pynode", argv, env=env)
    stdout = child.proc.stdout
    assert stdout is not None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                raw = await stdout.readline()
                if not raw:
                    raise BenchError(f"pynode exited (code {child.proc.returncode}):\n{child.log_tail()}")
                if b" ready " in raw:
                    break
                child.stdout_tail.append(raw.decode(errors="replace").rstrip())
    except TimeoutError:
        raise BenchError(f"pynode printed no ready line within {START_TIMEOUT} s:\n{child.log_tail()}") from None
    child.drain_stdout()
    return child


def compile_erl(workdir: Path) -> Path:
    code = workdir / "ebin"
    code.mkdir()
    sources = []
    for module, text in (("pynode_bench_echo", ECHO_ERL), ("pynode_bench", BENCH_ERL)):
        path = workdir / f"{module}.erl"
        path.write_text(text)
        sources.append(str(path))
    done = subprocess.run(
        ["erlc", f"-DCALL_TIMEOUT={CALL_TIMEOUT_MS}", "-o", str(code), *sources],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise BenchError(f"erlc failed:\n{done.stdout}{done.stderr}")
    return code


@dataclass(frozen=True, slots=True)
class ErlSetup:
    """What both erl nodes share."""

    cookie: str
    epmd_port: int
    code: Path
    flags: list[str]


async def start_erl(children: Children, name: str, full_name: str, expr: str, setup: ErlSetup) -> Child:
    argv = [
        "erl", "-noshell", "-name", full_name, "-setcookie", setup.cookie, "-start_epmd", "false",
        "-pa", str(setup.code), *setup.flags, "-eval", expr,
    ]  # fmt: skip
    env = {**os.environ, "ERL_EPMD_PORT": str(setup.epmd_port)}
    child = await children.start(name, argv, env=env, stdin=True, stop_by_stdin=True)
    try:
        ready = await read_marked_line(child, START_TIMEOUT)
    except TimeoutError:
        raise BenchError(f"{full_name} did not start within {START_TIMEOUT} s:\n{child.log_tail()}") from None
    match ready.split():
        case ["ready", os_pid] if os_pid.isdigit():
            child.os_pids.add(int(os_pid))
        case _:
            raise BenchError(f"{full_name}: unexpected first line {ready!r}")
    return child


async def command(bench: Child, line: str, timeout: float) -> Term:
    """Send one command to the bench node; its decoded result."""
    stdin = bench.proc.stdin
    assert stdin is not None
    stdin.write(line.encode() + b"\n")
    await stdin.drain()
    try:
        answer = await read_marked_line(bench, timeout)
    except TimeoutError:
        raise BenchError(f"bench node: no answer to {line!r} within {timeout:.0f} s") from None
    status, _, payload = answer.partition(" ")
    if status != "ok":
        raise BenchError(f"bench node: {line!r} failed: {payload}")
    return decode(base64.b64decode(payload))


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
    profile: Path | None
    time_limit: float
    quick: bool


async def measure(children: Children, opts: Options, workdir: Path) -> dict[str, Any]:
    cookie = "bench_" + secrets.token_hex(12)
    code = await asyncio.to_thread(compile_erl, workdir)
    epmd_port = await start_epmd(children)
    agents_dir = workdir / "agents"
    agents_dir.mkdir()
    py = await start_py_node(children, cookie=cookie, epmd_port=epmd_port, agents_dir=agents_dir, uvloop=opts.uvloop)
    erl_flags = [] if opts.busy_wait else ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]
    setup = ErlSetup(cookie, epmd_port, code, erl_flags)
    echo = await start_erl(children, "echo", ECHO_NODE, "pynode_bench_echo:serve()", setup)
    echo.drain_stdout()
    bench = await start_erl(children, "bench", BENCH_NODE, f"pynode_bench:main(['{PY_NODE}', '{ECHO_NODE}'])", setup)
    try:
        return await run_loops(children, bench, py, opts)
    except BenchError as exc:
        raise BenchError(f"{exc}\npynode's log:\n{py.log_tail()}") from None


async def run_loops(children: Children, bench: Child, py: Child, opts: Options) -> dict[str, Any]:
    """Warm-up, then each mode's rounds alternating the targets; the figures of both."""
    py_pid = py.proc.pid
    info = await command(bench, "info", 30)
    rss_start = proc_status_kb(py_pid, "VmRSS")

    # How long one command's answer may take; the overall time limit bounds the whole run anyway.
    budget = max(60.0, opts.time_limit / 2)
    for target in ("py", "beam"):
        await command(bench, f"seq {target} {opts.warmup}", budget)
    rss_before = proc_status_kb(py_pid, "VmRSS")

    profiler = await start_profiler(children, py_pid, opts.profile) if opts.profile else None
    per_round = max(1, opts.calls // opts.rounds)
    results: dict[str, dict[str, Samples]] = {"seq": {}, "conc": {}}
    for mode in ("seq", "conc"):
        for _ in range(opts.rounds):
            for target in ("py", "beam"):
                line = f"seq {target} {per_round}" if mode == "seq" else f"conc {target} {per_round} {opts.concurrency}"
                user0, system0 = proc_cpu_seconds(py_pid)
                result = await command(bench, line, budget)
                user1, system1 = proc_cpu_seconds(py_pid)
                samples = results[mode].setdefault(target, Samples())
                samples.add(result)
                samples.node_user_s += user1 - user0
                samples.node_system_s += system1 - system0
    rss_after = proc_status_kb(py_pid, "VmRSS")
    rss_peak = proc_status_kb(py_pid, "VmHWM")
    if profiler is not None:
        await stop_profiler(profiler)

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


async def start_profiler(children: Children, pid: int, path: Path) -> Child:
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(ROOT / ".venv" / "bin"))
    if py_spy is None:
        raise BenchError("--profile needs py-spy (.venv/bin/python -m pip install py-spy)")
    argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(path), "--rate", "1000"]
    # Blocking sampling (py-spy pauses the node for each sample) gives whole stacks; it also slows
    # the node a little, so figures from a --profile run are not the ones to quote.
    child = await children.start("py-spy", argv)
    child.drain_stdout()
    await asyncio.sleep(1.0)  # py-spy attaches; samples before the loops start are idle ones
    if child.proc.returncode is not None:
        raise BenchError(f"py-spy exited (code {child.proc.returncode}):\n{child.log_tail()}")
    return child


async def stop_profiler(child: Child) -> None:
    """SIGINT makes py-spy write its file; then it is waited for (and ended by pid if it hangs)."""
    if child.proc.returncode is None:
        child.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.proc.wait(), 30)
    await _stop(child)


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
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pynode-bench-") as scratch:
        children = Children(Path(scratch))
        try:
            async with asyncio.timeout(opts.time_limit):
                figures = await measure(children, opts, Path(scratch))
        except TimeoutError:
            raise BenchError(f"the benchmark took over its time limit of {opts.time_limit:.0f} s") from None
        finally:
            await children.stop_all()
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
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        **figures,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


# ---------------------------------------------------------------------------------------------
# output


def print_table(r: dict[str, Any], out: TextIO) -> None:
    def row(*cells: object) -> None:
        print(f"  {cells[0]:<24}" + "".join(f"{c!s:>12}" for c in cells[1:]), file=out)

    print(
        f"pynode round trips: {r['calls']} calls per target, {r['rounds']} alternating rounds, "
        f"node loop {r['node_loop']}, OTP {r['otp']}, Python {r['python']}, {r['cpus']} CPUs",
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
        f"\nratio py/beam of the medians: sequential {r['ratio_median_py_beam']} (target <= 1.5), "
        f"concurrent {r['ratio_median_py_beam_conc']}",
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
    parser.add_argument("--uvloop", action="store_true", help="run the node under uvloop (sets PYNODE_UVLOOP=1 for it)")
    parser.add_argument(
        "--no-busy-wait",
        dest="busy_wait",
        action="store_false",
        help="turn the erl nodes' scheduler busy-waiting off (+sbwt none ...); the default keeps OTP's "
        "own settings, which make BEAM-to-BEAM calls faster",
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
