"""GenServer semantics for Python processes.

A request arrives in one of three envelopes (docs/protocol.md §2): a
``gen_server:call`` (``{'$gen_call', {Pid, Tag}, Request}``), a raw
``{Pid, Ref, Request}`` sent from the erl shell, or a cast. Every call gets
exactly one ``{Tag, Reply}``: a handler that raises still answers, with an
error tuple, and the process goes on serving.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, ImproperList, Pid, Reference, Term
from pynode.runtime.process import Process, ProcessExit

__all__ = [
    "DEFER",
    "NOREPLY",
    "CallNowReply",
    "CallReply",
    "Envelope",
    "From",
    "GenServer",
    "open_envelope",
    "send_reply",
]

log = logging.getLogger("pynode.genserver")

GEN_CALL: Final = Atom("$gen_call")
GEN_CAST: Final = Atom("$gen_cast")
ERROR: Final = Atom("error")
INTERNAL_ERROR: Final = Atom("internal_error")
ALIAS: Final = Atom("alias")


@dataclass(frozen=True, slots=True)
class From:
    """Who to answer: the caller's pid and the tag to send back exactly."""

    pid: Pid
    tag: Term
    alias: Reference | None = None
    """The alias of an ``[alias|Mref]`` tag (``gen:call`` on OTP 24 on), where the reply goes."""

    @property
    def monitor(self) -> Reference | None:
        """The reference the caller monitors this process with, if the tag names one.

        ``[alias|Mref]`` from ``gen:call``; for a bare reference (``{Pid, Ref, Request}``) it is a
        monitor only if its sender made it one, and removing it then means what it means for a call.
        """
        if self.alias is not None:
            return self.alias
        return self.tag if type(self.tag) is Reference else None


def caller_of(pid: Pid, tag: Term) -> From:
    """The ``From`` of a call from ``pid`` with ``tag``, with its alias when the tag carries one."""
    if type(tag) is ImproperList and type(tag.tail) is Reference and tag.elements == (ALIAS,):
        return From(pid, tag, tag.tail)
    return From(pid, tag)


def send_reply(process: Process, caller: From, reply: Term) -> None:
    """``gen_server:reply/2`` from ``process``: ``{Tag, Reply}``, to the caller's alias if it has one."""
    node = process.node
    if node is None:
        raise RuntimeError("the process is not running on a node")
    node.reply(caller.pid, caller.alias, (caller.tag, reply), sender=process.pid)


class Sentinel(enum.Enum):
    """The two answers of a call callback that are not a reply (enum members, so ``is`` narrows)."""

    NOREPLY = "NOREPLY"
    DEFER = "DEFER"

    def __repr__(self) -> str:
        return self.value


NOREPLY: Final = Sentinel.NOREPLY
"""Return from ``handle_call`` to answer later with :meth:`GenServer.reply`."""

DEFER: Final = Sentinel.DEFER
"""Return from ``handle_call_now`` to leave the request to ``handle_call``."""

CallReply: TypeAlias = Term | Literal[Sentinel.NOREPLY]
"""What ``handle_call`` returns: the reply, or ``NOREPLY``."""

CallNowReply: TypeAlias = Term | Sentinel
"""What ``handle_call_now`` returns: the reply, ``NOREPLY``, or ``DEFER``."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message sorted by envelope: ``kind`` is ``call``, ``cast`` or ``info``."""

    kind: str
    request: Term
    reply_to: From | None = None


def open_envelope(message: Term) -> Envelope:
    """Sort a message into call, cast or plain info."""
    if type(message) is tuple:
        size = len(message)
        if size == 3:
            head, second, request = message
            if head == GEN_CALL and type(second) is tuple and len(second) == 2:
                pid, tag = second
                if type(pid) is Pid:
                    return Envelope("call", request, caller_of(pid, tag))
            if type(head) is Pid and type(second) is Reference:
                return Envelope("call", request, From(head, second))
        elif size == 2 and message[0] == GEN_CAST:
            return Envelope("cast", message[1])
    return Envelope("info", message)


class GenServer(Process):
    """Override ``handle_call``, ``handle_cast`` and ``handle_info``."""

    async def handle_call(self, request: Term, caller: From) -> CallReply:
        """Return the reply, or ``NOREPLY`` and answer later with ``self.reply``."""
        return (ERROR, (Atom("bad_request"), f"unknown call: {format_term(request, limit=500)}"))

    def handle_call_now(self, request: Term, caller: From) -> CallNowReply:
        """Answer a call synchronously, as it arrives, or return ``DEFER``.

        When the server is idle, a call it can answer without waiting is answered in the
        callback that received it: no task switch, which is most of a small call's cost.
        Order is kept: the fast path is taken only with an empty mailbox and no handler running.
        """
        return DEFER

    def deliver(self, message: Term) -> None:
        if self._idle and not self.mailbox and self.alive:
            envelope = open_envelope(message)
            if envelope.kind == "call":
                assert envelope.reply_to is not None
                try:
                    result = self.handle_call_now(envelope.request, envelope.reply_to)
                except Exception as exc:
                    log.exception("%s: handle_call_now(%s) raised", self.pid, format_term(envelope.request, limit=500))
                    result = self.error_reply(envelope.request, exc)
                if result is not DEFER:
                    if result is not NOREPLY:
                        self.reply(envelope.reply_to, result)
                    return
        self.mailbox.put(message)

    async def handle_cast(self, request: Term) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s ignores cast %s", self.pid, format_term(request, limit=500))

    async def handle_info(self, message: Term) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s ignores message %s", self.pid, format_term(message, limit=500))

    def error_reply(self, request: Term, exc: Exception) -> Term:
        """The reply a call gets when its handler raised."""
        return (ERROR, (INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))

    def reply(self, caller: From, reply: Term) -> None:
        """``gen_server:reply/2``: send ``{Tag, Reply}`` to the caller (its alias, when it has one)."""
        send_reply(self, caller, reply)

    _idle = False
    _stop: tuple[Term] | None = None
    """``(Reason,)`` once :meth:`stop` was called."""

    def stop(self, reason: Term) -> None:
        """gen_server's ``{stop, Reason}``: end with ``reason`` once the message in hand is handled.

        Called from outside the server's own task (a callback, another process), it is an exit
        signal at once, since no message of its own is being handled.
        """
        if self._stop is not None:
            return
        self._stop = (reason,)
        if self.task is not asyncio.current_task():
            self.exit(reason)

    async def run(self) -> None:
        receive = self.mailbox.receive
        while self._stop is None:
            self._idle = True
            try:
                message = await receive()
            finally:
                self._idle = False
            await self.dispatch(message)
        raise ProcessExit(self._stop[0])

    async def dispatch(self, message: Term) -> None:
        """Handle one message; never lets a handler's exception end the process."""
        envelope = open_envelope(message)
        try:
            if envelope.kind == "call":
                assert envelope.reply_to is not None
                try:
                    result = await self.handle_call(envelope.request, envelope.reply_to)
                except Exception as exc:
                    log.exception("%s: handle_call(%s) raised", self.pid, format_term(envelope.request, limit=500))
                    result = self.error_reply(envelope.request, exc)
                if result is not NOREPLY:
                    self.reply(envelope.reply_to, result)
            elif envelope.kind == "cast":
                await self.handle_cast(envelope.request)
            else:
                await self.handle_info(message)
        except Exception:
            log.exception("%s: handling %s raised", self.pid, envelope.kind)
