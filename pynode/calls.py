"""Calls out of the node: ``gen_server:call`` and ``erpc:call``, built on send, monitor and spawn.

Neither needs anything the router does not already offer: a short-lived
process receives the reply (and the DOWN of the callee) and ends, so a call
is a process like any other towards the rest of the cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final, Protocol

from pynode.errors import CallExit, CallTimeout, ErpcError
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.runtime.genserver import GEN_CALL
from pynode.runtime.mailbox import ReceiveTimeout
from pynode.runtime.process import DOWN, KILL, NOCONNECTION, NORMAL, Dest, Process
from pynode.runtime.signals import SPAWN_REPLY, PeerPort
from pynode.wire import control as c

__all__ = ["CallHost", "call", "erpc"]

_ERPC: Final = Atom("erpc")
_EXECUTE_CALL: Final = Atom("execute_call")
_MONITOR: Final = Atom("monitor")
_RETURN: Final = Atom("return")


class CallHost(Protocol):
    """What a call needs of the node it is made from."""

    def attach(self, process: Process, *, name: str | None = None) -> Process: ...

    def send(self, dest: Dest, message: Term, *, sender: Pid | None = None) -> None: ...

    def monitor(self, watcher: Pid, target: Pid | Atom | str | tuple[Any, Any]) -> Reference: ...

    def exit(self, pid: Pid, reason: Term, *, sender: Pid | None = None) -> None: ...

    def make_ref(self) -> Reference: ...

    def io_server_pid(self) -> Pid: ...


@contextlib.contextmanager
def reply_slot(host: CallHost) -> Iterator[tuple[Process, Pid]]:
    """A short-lived process that receives one call's reply (and its DOWN), then ends."""
    slot = host.attach(Process())
    assert slot.pid is not None
    try:
        yield slot, slot.pid
    finally:
        slot.exit(NORMAL)


async def call(host: CallHost, dest: Dest, request: Term, *, timeout: float | None = 5.0) -> Term:
    """``gen_server:call(Dest, Request, Timeout)`` from a short-lived process of ``host``.

    Raises :class:`CallTimeout` after ``timeout`` seconds and :class:`CallExit`
    (``noproc``, ``noconnection``, the callee's exit reason) when the callee goes.
    """
    if type(dest) is Reference:
        raise TypeError("call an alias through its owner's pid instead")
    with reply_slot(host) as (slot, pid):
        ref = host.monitor(pid, dest)  # type: ignore[arg-type]
        host.send(dest, (GEN_CALL, (pid, ref), request), sender=pid)
        try:
            reply = await slot.mailbox.receive(
                lambda m: type(m) is tuple and len(m) >= 2 and (m[0] == ref or (len(m) == 5 and m[1] == ref)),
                timeout,
            )
        except ReceiveTimeout:
            raise CallTimeout(f"no reply from {dest!r} within {timeout} s") from None
        if len(reply) == 5 and reply[0] == DOWN:
            raise CallExit(reply[4], format_term(reply[4], limit=500))
        answer: Term = reply[1]
        return answer


async def erpc(
    host: CallHost,
    conn: PeerPort,
    module: str,
    function: str,
    args: list[Term],
    *,
    timeout: float | None = 15.0,
    group_leader: Pid | None = None,
) -> Term:
    """``erpc:call(Node, M, F, Args)`` over ``conn``: spawn there, the result from its exit reason."""
    with reply_slot(host) as (slot, pid):
        node = conn.peer_name
        req_id = host.make_ref()
        result_ref = host.make_ref()
        gl = group_leader or host.io_server_pid()
        conn.signals.spawn_requests[req_id] = pid
        conn.send(
            c.SpawnRequest(req_id, pid, gl, (_ERPC, _EXECUTE_CALL, 4), [_MONITOR]),
            [result_ref, Atom(module), Atom(function), list(args)],
        )
        spawned: Pid | None = None
        replied = False
        try:
            reply = await slot.mailbox.receive(
                lambda m: type(m) is tuple and m[0] == SPAWN_REPLY and m[1] == req_id, timeout
            )
            replied = True
            if type(reply[3]) is not Pid:
                raise _erpc_error("error", (_ERPC, reply[3]))
            spawned = reply[3]
            down = await slot.mailbox.receive(
                lambda m: type(m) is tuple and len(m) == 5 and m[0] == DOWN and m[1] == req_id, timeout
            )
            spawned = None
            return _erpc_result(down[4], result_ref)
        except ReceiveTimeout:
            raise CallTimeout(f"erpc {module}:{function} on {node} took over {timeout} s") from None
        finally:
            if spawned is not None:
                # Timed out or cancelled while the function runs: end it, as erpc's timeout does.
                host.exit(spawned, KILL, sender=pid)
            if replied:
                conn.signals.spawn_requests.pop(req_id, None)
            # Else the request stays listed: a late SPAWN_REPLY finds us gone and ends what it started.


def _erpc_result(reason: Term, result_ref: Reference) -> Term:
    if type(reason) is tuple and len(reason) >= 3 and reason[0] == result_ref:
        kind = str(reason[1])
        if reason[1] == _RETURN:
            return reason[2]
        raise _erpc_error(kind, reason[2], reason[3] if len(reason) > 3 else None)
    if reason == NOCONNECTION:
        raise _erpc_error("error", (_ERPC, NOCONNECTION))
    raise _erpc_error("exit", (Atom("signal"), reason))


def _erpc_error(kind: str, reason: Term, stack: Term = None) -> ErpcError:
    return ErpcError(kind, reason, stack, shown=format_term(reason, limit=500))
