"""Real BEAM nodes for the tests: a private epmd, and erl/elixir nodes driven over stdin/stdout.

Every process started here is a child of the test run and is ended by its pid. A node runs the
control loop of tests/beam/pynode_ctl.erl: each request is one line on its stdin, each answer one
marked line on its stdout with a base64 payload, so whatever else the node prints cannot be
mistaken for an answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeAlias

import pytest

BeamKind: TypeAlias = Literal["erl", "elixir"]

START_TIMEOUT = 20.0
"""Seconds a node gets to boot and start its control loop."""

_MARK = b"<<pynode-ctl>> "
_CTL_SOURCE = Path(__file__).with_name("beam") / "pynode_ctl.erl"
_TAIL_BYTES = 16 * 1024
_compile_lock = threading.Lock()


class BeamEvalError(Exception):
    """An expression evaluated on a BEAM node raised, exited or threw."""

    def __init__(self, error_class: str, reason: str, stacktrace: str, expr: str) -> None:
        self.error_class = error_class
        """`error`, `exit` or `throw`."""
        self.reason = reason
        """The reason as the node printed it (Elixir: the exception banner)."""
        self.stacktrace = stacktrace
        self.expr = expr
        super().__init__(f"{error_class}:{reason} (evaluating {_short(expr)})")


class BeamNodeError(Exception):
    """A BEAM node did not start, or went away while a test talked to it."""


# ---------------------------------------------------------------------------------------------
# ports and epmd


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def epmd_executable() -> str:
    """The epmd binary: on PATH, else inside the Erlang installation."""
    found = shutil.which("epmd")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))
    if candidates:
        return candidates[-1]
    pytest.fail(
        "epmd not found on PATH nor in /usr/lib/erlang/erts-*/bin: install erlang (scripts/_setup.sh)"
    )


@dataclass(frozen=True, slots=True)
class Epmd:
    """A private epmd started by the tests."""

    port: int
    pid: int


def epmd_answers(port: int) -> bool:
    """True when an epmd on 127.0.0.1:port answers NAMES_REQ."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"\x00\x01\x6e")
            return len(sock.recv(4)) > 0
    except OSError:
        return False


def epmd_names(port: int) -> dict[str, int]:
    """The names registered with the epmd on 127.0.0.1:port (NAMES_REQ), with their ports."""
    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(b"\x00\x01\x6e")
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    names: dict[str, int] = {}
    for line in b"".join(chunks)[4:].decode().splitlines():
        match line.split():
            case ["name", name, "at", "port", number]:
                names[name] = int(number)
    return names


@contextlib.contextmanager
def running_epmd(*, attempts: int = 3, timeout: float = 10.0) -> Iterator[Epmd]:
    """Run `epmd -port N` as a child (never -daemon) until the block ends, then end it by pid."""
    failures: list[str] = []
    for _ in range(attempts):
        port = free_port()
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(
                [epmd_executable(), "-port", str(port), "-address", "127.0.0.1"],
                stdin=subprocess.DEVNULL,
                stdout=errors,
                stderr=errors,
            )
            try:
                if _wait_epmd(proc, port, timeout):
                    yield Epmd(port, proc.pid)
                    return
                errors.seek(0)
                failures.append(f"port {port}: exit {proc.poll()}: {errors.read().decode(errors='replace')}")
            finally:
                _end(proc)
    pytest.fail("epmd did not start:\n" + "\n".join(failures))


def _wait_epmd(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if epmd_answers(port):
            return True
        time.sleep(0.02)
    return False


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# BEAM nodes


def control_module_dir() -> str:
    """Compile pynode_ctl.erl once per source version; the directory to put on the code path."""
    source = _CTL_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"pynode-tests-{os.getuid()}-{digest}"
    with _compile_lock:
        if (target / "pynode_ctl.beam").is_file():
            return str(target)
        scratch = tempfile.mkdtemp(prefix="pynode-ctl-")
        done = subprocess.run(
            ["erlc", "-o", scratch, str(_CTL_SOURCE)], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            pytest.fail(f"erlc {_CTL_SOURCE} failed:\n{done.stdout}{done.stderr}")
        try:
            os.rename(scratch, target)
        except OSError:  # another test process got there first
            shutil.rmtree(scratch, ignore_errors=True)
    return str(target)


def node_command(
    full_name: str,
    *,
    cookie: str,
    kind: BeamKind,
    net_ticktime: int | None,
    hidden: bool,
    extra_args: Sequence[str],
    code_dir: str,
) -> list[str]:
    """The argv that starts a node running the control loop."""
    erl_flags = ["-start_epmd", "false"]
    if hidden:
        erl_flags.append("-hidden")
    if net_ticktime is not None:
        erl_flags += ["-kernel", "net_ticktime", str(net_ticktime)]
    if kind == "erl":
        return [
            "erl", "-noshell", "-name", full_name, "-setcookie", cookie, "-pa", code_dir,
            *erl_flags, *extra_args, "-eval", "pynode_ctl:start(erl)",
        ]  # fmt: skip
    return [
        "elixir", "--name", full_name, "--cookie", cookie, "--erl", " ".join(erl_flags), "-pa", code_dir,
        *extra_args, "--no-halt", "-e", ":pynode_ctl.start(:elixir)",
    ]  # fmt: skip


class BeamNode:
    """One erl or elixir node, a child process of the test, evaluating code on request."""

    def __init__(self, name: str, kind: BeamKind, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.kind: BeamKind = kind
        self._proc = proc
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[int] = self._loop.create_future()
        self._pending: dict[str, tuple[asyncio.Future[bytes], str]] = {}
        """Request id => (its answer, its source)."""
        self._next_id = 0
        self._stdout_tail: deque[str] = deque(maxlen=40)
        self._stderr_tail = bytearray()
        self._readers = [
            asyncio.create_task(self._read_stdout(), name=f"{name} stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{name} stderr"),
        ]
        self.os_pid = proc.pid
        """The BEAM's own OS pid (reported by the node itself once it is up)."""

    @classmethod
    async def start(
        cls,
        name: str,
        *,
        cookie: str,
        epmd_port: int,
        kind: BeamKind = "erl",
        net_ticktime: int | None = None,
        hidden: bool = False,
        extra_args: Sequence[str] = (),
    ) -> BeamNode:
        """Start `name@127.0.0.1` (or `name` if it has a host) against the epmd on epmd_port.

        extra_args go to the `erl` or `elixir` command as they are, before the control loop starts.
        """
        full_name = name if "@" in name else f"{name}@127.0.0.1"
        code_dir = await asyncio.to_thread(control_module_dir)
        argv = node_command(
            full_name,
            cookie=cookie,
            kind=kind,
            net_ticktime=net_ticktime,
            hidden=hidden,
            extra_args=extra_args,
            code_dir=code_dir,
        )
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "ERL_EPMD_PORT": str(epmd_port)},
            limit=64 * 1024 * 1024,
        )
        node = cls(full_name, kind, proc)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                node.os_pid = await node._ready
        except (TimeoutError, BeamNodeError) as failure:
            node.kill()
            await node._finish()
            why = "it exited" if isinstance(failure, BeamNodeError) else f"no answer within {START_TIMEOUT} s"
            raise BeamNodeError(
                f"{kind} node {full_name} did not start: {why} (exit code {proc.returncode})\n"
                f"{node.diagnostics()}"
            ) from None
        return node

    # `timeout=` is how the other test files call these two: it stays, whatever ASYNC109 prefers.
    async def eval(self, expr: str, timeout: float = 15) -> str:
        """Evaluate Erlang (erl) or Elixir (elixir) source; the result as `~0tp` or `inspect` prints it."""
        return (await self._request("p", expr, timeout)).decode()

    async def eval_term(self, expr: str, timeout: float = 15) -> bytes:
        """Evaluate like eval(); the result as term_to_binary encodes it."""
        return await self._request("t", expr, timeout)

    async def stop(self, grace: float = 10) -> None:
        """Stop the node (init:stop / System.stop); kill it by pid if it has not ended after `grace` s."""
        if self._proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self._send("0 s -")
            try:
                await asyncio.wait_for(self._proc.wait(), grace)
            except TimeoutError:
                self.kill()
        await self._finish()

    def kill(self) -> None:
        """SIGKILL the node by pid, for fault tests (then `await node.wait()`)."""
        for pid in {self.os_pid, self._proc.pid}:
            if self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    async def wait(self, within: float = 10) -> int:
        """Wait (at most `within` s) until the node's process has ended and been reaped; its exit code."""
        return await asyncio.wait_for(self._proc.wait(), within)

    @property
    def running(self) -> bool:
        return self._proc.returncode is None

    def diagnostics(self) -> str:
        """The end of what the node printed outside the control channel, for failure messages."""
        stdout = "".join(self._stdout_tail)
        stderr = self._stderr_tail.decode(errors="replace")
        return f"--- stdout (tail) ---\n{stdout}--- stderr (tail) ---\n{stderr}"

    # -- internals ------------------------------------------------------------------------------

    async def _request(self, op: str, expr: str, limit: float) -> bytes:
        if self._proc.returncode is not None:
            raise BeamNodeError(f"{self.name} is not running (exit code {self._proc.returncode})")
        self._next_id += 1
        rid = str(self._next_id)
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[rid] = (future, expr)
        try:
            await self._send(f"{rid} {op} {base64.b64encode(expr.encode()).decode()}")
            async with asyncio.timeout(limit):
                return await future
        except TimeoutError:
            self._abandon(rid)
            raise TimeoutError(f"{self.name}: no answer within {limit} s to {_short(expr)}") from None
        except asyncio.CancelledError:
            self._abandon(rid)
            raise
        except ConnectionError:
            raise BeamNodeError(f"{self.name} closed its stdin\n{self.diagnostics()}") from None
        finally:
            self._pending.pop(rid, None)

    def _abandon(self, rid: str) -> None:
        """Kill the evaluation nobody waits for any more, so it leaves nothing running."""
        stdin = self._proc.stdin
        if stdin is not None and self._proc.returncode is None and not stdin.is_closing():
            stdin.write(f"{rid} k -\n".encode())

    async def _send(self, line: str) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        stdin.write(line.encode() + b"\n")
        await stdin.drain()

    async def _read_stdout(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        while line := await stdout.readline():
            at = line.find(_MARK)
            if at < 0:
                self._stdout_tail.append(line.decode(errors="replace"))
                continue
            if at > 0:
                self._stdout_tail.append(line[:at].decode(errors="replace") + "\n")
            fields = line[at + len(_MARK) :].rstrip(b"\r\n").split(b" ")
            try:
                self._answer(fields)
            except ValueError:  # bad base64 or pid: keep reading, show it if the test fails
                self._stdout_tail.append(f"(unreadable control line) {fields!r}\n")
        gone = BeamNodeError(f"{self.name} exited\n{self.diagnostics()}")
        if not self._ready.done():
            self._ready.set_exception(gone)
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(gone)

    def _answer(self, fields: list[bytes]) -> None:
        match fields:
            case [b"0", b"ready", os_pid] if not self._ready.done():
                self._ready.set_result(int(os_pid))
            case [rid, b"ok", payload]:
                if (waiting := self._waiting(rid)) is not None:
                    waiting[0].set_result(base64.b64decode(payload))
            case [rid, b"err", error_class, reason, stack]:
                if (waiting := self._waiting(rid)) is not None:
                    future, expr = waiting
                    text = [base64.b64decode(b).decode(errors="replace") for b in (reason, stack)]
                    future.set_exception(BeamEvalError(error_class.decode(), text[0], text[1], expr))
            case _:
                self._stdout_tail.append(f"(unreadable control line) {fields!r}\n")

    def _waiting(self, rid: bytes) -> tuple[asyncio.Future[bytes], str] | None:
        """The request an answer is for, unless its caller has given up (timeout, cancel)."""
        waiting = self._pending.get(rid.decode())
        return None if waiting is None or waiting[0].done() else waiting

    async def _read_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        while chunk := await stderr.read(65536):
            self._stderr_tail += chunk
            del self._stderr_tail[:-_TAIL_BYTES]

    async def _finish(self) -> None:
        """Reap the process and let the pipe readers run to their end."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._proc.wait(), 10)
        if self._proc.returncode is None:
            self.kill()
            await self._proc.wait()
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        _, pending = await asyncio.wait(self._readers, timeout=5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self._ready.done() and not self._ready.cancelled():
            self._ready.exception()  # seen here: a node that never came up was reported by start()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self._proc.returncode}"
        return f"<BeamNode {self.kind} {self.name} pid={self.os_pid} {state}>"


class BeamFactory(Protocol):
    """What the `beam` fixture gives a test: `await beam("e1")` starts e1@127.0.0.1."""

    async def __call__(
        self,
        name: str,
        *,
        kind: BeamKind = "erl",
        cookie: str | None = None,
        net_ticktime: int | None = None,
        hidden: bool = False,
        extra_args: Sequence[str] = (),
    ) -> BeamNode: ...


def _short(expr: str, limit: int = 200) -> str:
    return repr(expr if len(expr) <= limit else expr[:limit] + "...")
