"""Real BEAM nodes for tests: erl and elixir nodes, children of the test run, driven over stdin/stdout.

A node runs the control loop of ``pynode_ctl.erl`` (shipped beside this module, compiled once per
source version with the ``erlc`` on PATH; OTP loads code compiled by older releases, so OTP 25's
``erlc`` serves the OTP 28 nodes as well). Each request is one line on the node's stdin, each
answer one marked line on its stdout with a base64 payload, so whatever else the node prints
cannot be mistaken for an answer.

A test drives a node two ways:

- ``eval``: Erlang (erl) or Elixir (elixir) source, evaluated in a fresh process; the result as
  the node prints it (``eval``) or as ``term_to_binary`` encodes it (``eval_term``);
- ``call``, ``send`` and ``receive`` with Python terms (:mod:`pynode.etf`), done by the node's
  *test process* (registered as ``pynode_test``, its pid in :attr:`BeamNode.test_pid`), one at a
  time and in order, as the process of an ExUnit test would: what others send it (replies to
  ``self()``, run events) waits in its mailbox for ``receive``.

Every OS process started here is ended by its pid.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Literal, TypeAlias

import pytest

from pynode.etf import Atom, Pid, Reference, Term, decode, encode
from pynode.testing import otp as otp_runtimes

__all__ = [
    "START_TIMEOUT",
    "BeamEvalError",
    "BeamKind",
    "BeamNode",
    "BeamNodeError",
    "Destination",
    "control_module_dir",
    "node_command",
]

BeamKind: TypeAlias = Literal["erl", "elixir"]

Destination: TypeAlias = "Pid | Reference | str | tuple[str, str]"
"""Where a call or a message goes: a pid, an alias, a registered name, or ``(name, node)``.

Names are atoms on the BEAM; a ``str`` here is made an atom (a destination is never a binary).
"""

START_TIMEOUT = 20.0
"""Seconds a node gets to boot and start its control loop."""

MARGIN: Final = 10.0
"""Seconds granted beyond a call's or a receive's own timeout before the test gives up on the node."""

_MARK = b"<<pynode-ctl>> "
_CTL_SOURCE = Path(__file__).with_name("pynode_ctl.erl")
_TAIL_BYTES = 16 * 1024
_compile_lock = threading.Lock()


class BeamEvalError(Exception):
    """An expression evaluated on a BEAM node (or a call by its test process) raised, exited or threw."""

    def __init__(self, error_class: str, reason: str, stacktrace: str, expr: str, reason_term: Term = None) -> None:
        self.error_class = error_class
        """`error`, `exit` or `throw`."""
        self.reason = reason
        """The reason as the node printed it (Elixir eval: the exception banner)."""
        self.stacktrace = stacktrace
        self.expr = expr
        self.reason_term = reason_term
        """The reason as a term (:mod:`pynode.etf`), e.g. ``(Atom("noproc"), ...)`` for a call."""
        super().__init__(f"{error_class}:{reason} (evaluating {_short(expr)})")


class BeamNodeError(Exception):
    """A BEAM node did not start, or went away while a test talked to it."""


def control_module_dir() -> str:
    """Compile pynode_ctl.erl once per source version; the directory to put on the code path."""
    source = _CTL_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"pynode-tests-{os.getuid()}-{digest}"
    with _compile_lock:
        if (target / "pynode_ctl.beam").is_file():
            return str(target)
        scratch = tempfile.mkdtemp(prefix="pynode-ctl-")
        done = subprocess.run(["erlc", "-o", scratch, str(_CTL_SOURCE)], capture_output=True, text=True, timeout=120)
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
    erl: str = "erl",
) -> list[str]:
    """The argv that starts a node running the control loop (``erl``: the executable for kind erl)."""
    erl_flags = ["-start_epmd", "false"]
    if hidden:
        erl_flags.append("-hidden")
    if net_ticktime is not None:
        erl_flags += ["-kernel", "net_ticktime", str(net_ticktime)]
    if kind == "erl":
        return [
            erl, "-noshell", "-name", full_name, "-setcookie", cookie, "-pa", code_dir,
            *erl_flags, *extra_args, "-eval", "pynode_ctl:start(erl)",
        ]  # fmt: skip
    return [
        "elixir", "--name", full_name, "--cookie", cookie, "--erl", " ".join(erl_flags), "-pa", code_dir,
        *extra_args, "--no-halt", "-e", ":pynode_ctl.start(:elixir)",
    ]  # fmt: skip


class BeamNode:
    """One erl or elixir node, a child process of the test, evaluating code and driving its test process."""

    def __init__(self, name: str, kind: BeamKind, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.kind: BeamKind = kind
        self._proc = proc
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[tuple[int, str, Pid]] = self._loop.create_future()
        self._pending: dict[str, tuple[asyncio.Future[bytes], str]] = {}
        """Request id => (its answer, its source)."""
        self._next_id = 0
        self._saved: deque[Term] = deque()
        """Messages a selective ``receive`` took from the test process and did not want, oldest first."""
        self._stdout_tail: deque[str] = deque(maxlen=40)
        self._stderr_tail = bytearray()
        self._readers = [
            asyncio.create_task(self._read_stdout(), name=f"{name} stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{name} stderr"),
        ]
        self.os_pid = proc.pid
        """The BEAM's own OS pid (reported by the node itself once it is up)."""
        self.otp_release = ""
        """``erlang:system_info(otp_release)`` as the node reported it: ``"25"``, ``"28"``."""
        self.test_pid: Pid | None = None
        """The node's test process (``pynode_test``): the one ``call``, ``send`` and ``receive`` act as."""

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
        otp: str | None = None,
    ) -> BeamNode:
        """Start `name@127.0.0.1` (or `name` if it has a host) against the epmd on epmd_port.

        extra_args go to the `erl` or `elixir` command as they are, before the control loop starts.
        otp: the Erlang/OTP release to run it on (`"28"`; see :mod:`pynode.testing.otp`), ``None``
        for the `erl` on PATH; a node that comes up on another release is stopped and refused.
        """
        full_name = name if "@" in name else f"{name}@127.0.0.1"
        code_dir = await asyncio.to_thread(control_module_dir)
        erl = otp_runtimes.erl_executable(otp)
        argv = node_command(
            full_name,
            cookie=cookie,
            kind=kind,
            net_ticktime=net_ticktime,
            hidden=hidden,
            extra_args=extra_args,
            code_dir=code_dir,
            erl=erl,
        )
        env = {**os.environ, "ERL_EPMD_PORT": str(epmd_port)}
        if kind == "elixir" and otp is not None:  # elixir runs the first erl on PATH
            env["PATH"] = os.pathsep.join([str(Path(erl).parent), env.get("PATH", "")])
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                limit=64 * 1024 * 1024,
            )
        except OSError as exc:
            raise BeamNodeError(f"{kind} node {full_name} did not start: {argv[0]}: {exc}") from None
        node = cls(full_name, kind, proc)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                node.os_pid, node.otp_release, node.test_pid = await node._ready
        except (TimeoutError, BeamNodeError) as failure:
            node.kill()
            await node._finish()
            why = "it exited" if isinstance(failure, BeamNodeError) else f"no answer within {START_TIMEOUT} s"
            raise BeamNodeError(
                f"{kind} node {full_name} did not start: {why} (exit code {proc.returncode})\n{node.diagnostics()}"
            ) from None
        if otp is not None and node.otp_release != otp:
            await node.stop()
            raise BeamNodeError(
                f"{kind} node {full_name} runs OTP {node.otp_release} ({erl}), not OTP {otp}: no OTP {otp}"
                f" runtime in {otp_runtimes.where_looked(otp)} (scripts/_setup.sh fetches OTP 28)"
            )
        return node

    # `timeout=` is how the other test files call these two: it stays, whatever ASYNC109 prefers.
    async def eval(self, expr: str, timeout: float = 15) -> str:
        """Evaluate Erlang (erl) or Elixir (elixir) source; the result as `~0tp` or `inspect` prints it."""
        return (await self._request("p", expr.encode(), timeout, expr)).decode()

    async def eval_term(self, expr: str, timeout: float = 15) -> bytes:
        """Evaluate like eval(); the result as term_to_binary encodes it."""
        return await self._request("t", expr.encode(), timeout, expr)

    async def call(self, dest: Destination, request: Term, timeout: float = 15) -> Term:
        """``gen_server:call(Dest, Request, Timeout)`` from the test process; the reply as a term.

        A call that exits (``noproc``, ``timeout``, ``{nodedown, N}``) raises :class:`BeamEvalError`
        with error_class ``"exit"`` and the reason in ``reason_term``.
        """
        what = f"gen_server:call({_short(repr(dest), 80)}, ...)"
        args = (_destination(dest), request, _millis(timeout))
        return decode(await self._request("c", encode(args), timeout + MARGIN, what))

    async def send(self, dest: Destination, message: Term) -> None:
        """``Dest ! Message`` from the test process (replies to its pid come back to its mailbox)."""
        await self._request("m", encode((_destination(dest), message)), MARGIN, f"send to {_short(repr(dest), 80)}")

    async def receive(self, timeout: float = 5, match: Callable[[Term], bool] | None = None) -> Term:
        """The oldest message in the test process's mailbox (the oldest that ``match`` accepts).

        Raises ``TimeoutError`` if none comes within ``timeout`` seconds. Messages ``match``
        refuses stay where they were, for the next ``receive``.
        """
        for index, message in enumerate(self._saved):
            if match is None or match(message):
                del self._saved[index]
                return message
        deadline = self._loop.time() + timeout
        while True:
            left = max(0.0, deadline - self._loop.time())
            answer = decode(await self._request("r", encode(_millis(left)), left + MARGIN, "receive"))
            if answer == Atom("timeout"):
                raise TimeoutError(f"{self.name}: no message {'that matches ' if match else ''}within {timeout} s")
            if type(answer) is not tuple or len(answer) != 2:
                raise BeamNodeError(f"{self.name}: the control loop answered a receive with {answer!r}")
            message = answer[1]
            if match is None or match(message):
                return message
            self._saved.append(message)

    async def stop(self, grace: float = 10, *, orderly: bool = True) -> None:
        """Stop the node; kill it by pid if it has not ended after `grace` s.

        ``orderly``: through init:stop / System.stop, which stops its applications (and spends a
        second waiting for the ``user`` process); else ``erlang:halt(0)``, which only flushes its
        output, as a test's teardown wants.
        """
        if self._proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self._send("0 s -" if orderly else "0 h -")
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

    async def _request(self, op: str, payload: bytes, limit: float, what: str) -> bytes:
        if self._proc.returncode is not None:
            raise BeamNodeError(f"{self.name} is not running (exit code {self._proc.returncode})")
        self._next_id += 1
        rid = str(self._next_id)
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[rid] = (future, what)
        try:
            await self._send(f"{rid} {op} {base64.b64encode(payload).decode()}")
            async with asyncio.timeout(limit):
                return await future
        except TimeoutError:
            self._abandon(rid)
            raise TimeoutError(f"{self.name}: no answer within {limit} s to {_short(what)}") from None
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
            except ValueError:  # bad base64, pid or term: keep reading, show it if the test fails
                self._stdout_tail.append(f"(unreadable control line) {fields!r}\n")
        gone = BeamNodeError(f"{self.name} exited\n{self.diagnostics()}")
        if not self._ready.done():
            self._ready.set_exception(gone)
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(gone)

    def _answer(self, fields: list[bytes]) -> None:
        match fields:
            case [b"0", b"ready", os_pid, release, test_pid] if not self._ready.done():
                self._ready.set_result((int(os_pid), release.decode(), _pid(test_pid)))
            case [b"0", b"test", test_pid]:
                self.test_pid = _pid(test_pid)
            case [rid, b"ok", payload]:
                if (waiting := self._waiting(rid)) is not None:
                    waiting[0].set_result(base64.b64decode(payload))
            case [rid, b"err", error_class, reason, stack, term]:
                if (waiting := self._waiting(rid)) is not None:
                    future, what = waiting
                    text = [base64.b64decode(b).decode(errors="replace") for b in (reason, stack)]
                    reason_term = _decoded_or_none(base64.b64decode(term))
                    future.set_exception(BeamEvalError(error_class.decode(), text[0], text[1], what, reason_term))
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
        release = f" OTP {self.otp_release}" if self.otp_release else ""
        return f"<BeamNode {self.kind} {self.name}{release} pid={self.os_pid} {state}>"


def _destination(dest: Destination) -> Term:
    if isinstance(dest, str) and not isinstance(dest, Atom):
        return Atom(dest)
    if isinstance(dest, tuple) and len(dest) == 2:
        return (Atom(dest[0]), Atom(dest[1]))
    return dest


def _millis(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _pid(text: bytes) -> Pid:
    pid = decode(base64.b64decode(text))
    if not isinstance(pid, Pid):
        raise ValueError(f"not a pid: {pid!r}")
    return pid


def _decoded_or_none(data: bytes) -> Term:
    try:
        return decode(data)
    except Exception:  # an unreadable reason term still leaves the printed reason
        return None


def _short(expr: str, limit: int = 200) -> str:
    return repr(expr if len(expr) <= limit else expr[:limit] + "...")
