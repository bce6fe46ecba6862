"""One agent run as a process of its own.

A run has a pid (tool handlers answer it), a reference (``RunRef``), and a
task doing the pydantic-ai work. It watches its caller: when the caller
dies or its node goes, the run is cancelled. A ``gen_server:call``'s own
monitor on the agent does that for a synchronous run; any other caller is
monitored by the run. It monitors every tool handler
it waits on: when a handler dies, that tool call fails instead of hanging.
Whatever ends the run, its caller gets exactly one reply, unless the caller
is the one that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final, Protocol

from pydantic_ai import RunContext
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolDenied
from pydantic_ai.usage import RunUsage
from pydantic_core import to_jsonable_python

from pynode.bridge.approvals import Decision, decision_term, denied_unclear, parse_decision
from pynode.bridge.context import ClusterContext, current_cluster
from pynode.bridge.errors import BridgeError, classify, error_term
from pynode.bridge.functions import call_function, function_node, takes_context
from pynode.bridge.models import ModelCache
from pynode.bridge.runner import (
    AgentDefinition,
    ApprovalHandler,
    OutputDelta,
    RunEvent,
    TextDelta,
    ToolCallFailed,
    ToolCallFinished,
    ToolCallStarted,
    execute_run,
)
from pynode.bridge.spec import MFHandler, ProcessDest, ProcessHandler, RunOptions, ToolSpec
from pynode.bridge.termmap import JSONValue, from_json, text_from_prompt
from pynode.bridge.tools import ToolFailed, ToolReply, function_reply, parse_tool_reply
from pynode.bridge.tracing import tool_trace_context
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.runtime.genserver import From, open_envelope, send_reply
from pynode.runtime.process import DOWN, Process

__all__ = ["RunOwner", "RunProcess", "RunRequest"]

log = logging.getLogger("pynode.run")

OK: Final = Atom("ok")
TOOL_RESULT: Final = Atom("tool_result")
PYNODE_TOOL_CALL: Final = Atom("pynode_tool_call")
PYNODE_EVENT: Final = Atom("pynode_event")
PYNODE_RESULT: Final = Atom("pynode_result")
TEXT_DELTA: Final = Atom("text_delta")
TOOL_CALL: Final = Atom("tool_call")
TOOL_ERROR: Final = Atom("tool_error")
OUTPUT_DELTA: Final = Atom("output_delta")
APPROVAL: Final = Atom("approval")
APPROVAL_REQUIRED: Final = Atom("approval_required")
PYNODE_APPROVAL: Final = Atom("pynode_approval")


class RunOwner(Protocol):
    """What a run uses of the agent it belongs to; the agent process satisfies it.

    A protocol rather than the agent's class, so that this module sits below the agent's.
    """

    name: Atom | None
    """The agent's registered name, for the log."""
    calls: dict[str, RunProcess]
    """Tool calls waiting on a handler's ``tool_result``, by call key: a run adds and removes its own."""

    @property
    def agent_name(self) -> str: ...

    @property
    def definition(self) -> AgentDefinition: ...

    @property
    def models(self) -> ModelCache: ...

    def run_finished(self, run: RunProcess) -> None:
        """Called once, when the run's work is over and before its caller gets the answer."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRequest:
    """What a caller asked for: the prompt, the options, and where answers go."""

    prompt: str
    options: RunOptions
    caller: Pid
    reply_to: From | None
    """Set for a synchronous ``run``: the reply goes to this call. ``None`` for ``start_run``."""


class RunProcess(Process):
    """A run of one agent; ends with exactly one reply to its caller."""

    def __init__(self, agent: RunOwner, ref: Reference, request: RunRequest) -> None:
        super().__init__()
        self.agent = agent
        self.ref = ref
        self.request = request
        self.run_id = uuid.uuid4().hex
        self.cancel_reason: str | None = None
        self.end_reason = "running"
        self.started = time.monotonic()
        self.usage = RunUsage()
        """pydantic-ai's usage of this run, as it grows: what it spent, also when it fails part way."""
        self.outcome: Term = None
        """The run's outcome once its work is over: ``info`` counts it (ok, or by error kind)."""
        self._waits: dict[str, asyncio.Future[ToolReply]] = {}
        self._approval_waits: dict[str, asyncio.Future[Decision]] = {}
        self._takes_context: dict[tuple[str, MFHandler], bool] = {}
        """Whether each ``{M, F}`` tool (on its node) exports ``F/2``: asked once per run, not per call."""
        self._approver_monitors: dict[Reference, str] = {}
        self._handler_monitors: dict[Reference, str] = {}
        self._caller_monitor: Reference | None = None
        """The run's monitor of its caller; ``None`` for a caller whose call's own monitor watches it."""
        self._answered = False
        """True once the caller has its answer (sent early by :meth:`cancel_now`)."""
        self._phase = "new"
        """``new`` until its task first runs, ``running``, then ``done`` once the outcome is known."""
        self._nobody_waits = False
        """Set when a synchronous caller stopped waiting: the run ends without a reply."""
        self._stream_to: Pid | None = request.options.stream_to or (
            request.caller if request.reply_to is None and request.options.events else None
        )

    # -- the run ---------------------------------------------------------------------

    def watch_caller(self) -> None:
        """Monitor the caller now, as soon as the run has a pid.

        The agent calls this before it answers anything else, so the MONITOR leaves ahead of
        every later message on that connection: a caller killed after it saw its run counted
        ends the run with its real exit reason, never ``noproc``. Not called for a synchronous
        run whose ``gen_server:call`` monitors the agent: the agent abandons the run when that
        monitor goes.
        """
        self._caller_monitor = self.monitor(self.request.caller)

    async def run(self) -> None:
        self._phase = "running"
        outcome: Term = None
        executed = False
        try:
            outcome = self.outcome = await self._execute()
            executed = True
        finally:
            # The DEMONITORs and the result leave for the caller's node in one write.
            with self._to_caller_together():
                self._phase = "done"
                for wait in self._waits.values():
                    wait.cancel()
                self._waits.clear()
                for decision in self._approval_waits.values():
                    decision.cancel()
                self._approval_waits.clear()
                for ref in [*self._handler_monitors, *self._approver_monitors]:
                    self.demonitor(ref)
                self._handler_monitors.clear()
                self._approver_monitors.clear()
                self.agent.run_finished(self)
                if executed:
                    if self._caller_monitor is not None:
                        self.demonitor(self._caller_monitor)
                    if not self._answered and not self._nobody_waits:
                        self._deliver(outcome)
        log.debug(
            "run %s of %s ended: %s",
            self.run_id,
            self.agent.name,
            self.end_reason,
            extra={"agent": self.agent.agent_name, "run_id": self.run_id},
        )

    def _to_caller_together(self) -> contextlib.AbstractContextManager[None]:
        """What the run sends to its caller's node within the block leaves in one write."""
        conn = self.node.connections.get(self.request.caller.node) if self.node is not None else None
        return conn.together() if conn is not None else contextlib.nullcontext()

    async def _execute(self) -> Term:
        options = self.request.options
        assert self.node is not None
        if self.cancel_reason is not None:  # cancelled before its task first ran
            self.end_reason = f"cancelled ({self.cancel_reason})"
            return error_term("cancelled", self.cancel_reason)
        # Python tools of this run find their caller with cluster().
        current_cluster.set(ClusterContext(self.node, self.request.caller, self.ref, self.agent.agent_name))
        timeout = options.timeout_seconds
        try:
            # The work runs in the run's own task: cancel() and the timeout stop it where it waits.
            async with asyncio.timeout(timeout):
                result = await execute_run(
                    self.agent.definition,
                    self.request.prompt,
                    options,
                    models=self.agent.models,
                    dispatch=self._dispatch,
                    on_event=self._on_event if self._stream_to is not None else None,
                    run_id=self.run_id,
                    resolve=self._instructions,
                    usage=self.usage,
                    approve=self._approval_handler(),
                )
            self.end_reason = "ok"
            return (OK, result)
        except TimeoutError:
            self.end_reason = f"timeout after {options.timeout} ms"
            # One phrasing for every timeout, here and in the Elixir library: "... did not ... within N ms".
            message = f"the run of {self.agent.agent_name} did not end within {options.timeout} ms; it was cancelled"
            return error_term("timeout", message)
        except asyncio.CancelledError:
            # Our own cancel() or the process being stopped: either way the caller hears of it.
            task = asyncio.current_task()
            if task is not None:
                while task.uncancel():
                    pass
            reason = self.cancel_reason or "the run was stopped"
            self.end_reason = f"cancelled ({reason})"
            return error_term("cancelled", reason)
        except BridgeError as exc:
            self.end_reason = f"{exc.kind}: {exc.message}"
            return error_term(exc.kind, exc.message)
        except Exception as exc:
            kind, message = classify(exc)
            if kind == "internal_error":
                log.exception(
                    "run %s failed", self.run_id, extra={"agent": self.agent.agent_name, "run_id": self.run_id}
                )
            self.end_reason = f"{kind}: {message}"
            return error_term(kind, message)

    def cancel(self, reason: str) -> None:
        """End the run with ``{error, {cancelled, Reason}}``; its work stops at once.

        A run whose task has not run yet (cancelled in the same loop turn as it was
        started) is only marked: cancelling that task would end it before it could answer
        its caller or give back its place in the limits.
        """
        if self.cancel_reason is not None or self._phase == "done":
            return
        self.cancel_reason = reason
        if self._phase == "running" and self.task is not None and not self.task.done():
            self.task.cancel()

    def cancel_now(self, reason: str) -> None:
        """Cancel, and answer the caller ``{error, {cancelled, Reason}}`` before this returns.

        For the runs of an agent that is gone: their answers must leave before the agent's
        ``DOWN`` does, or a synchronous caller would exit with the agent's reason instead.
        """
        if self._answered or self._nobody_waits or self._phase == "done":
            return
        self.cancel(reason)
        self._answered = True
        self.end_reason = f"cancelled ({reason})"
        self._deliver(error_term("cancelled", reason))

    def abandon(self, reason: str) -> None:
        """The caller stopped waiting (a synchronous call that timed out) or is gone: end the run, answer nobody.

        A ``gen_server:call``'s caller would drop a late reply anyway (it goes to the alias the
        call deactivated); a raw ``{Pid, Ref, Request}`` caller has no alias, and a reply now would
        only land in its mailbox as a stray message.
        """
        if self._phase == "done":
            return
        self._nobody_waits = True
        self.cancel(reason)

    def _deliver(self, outcome: Term) -> None:
        request = self.request
        if request.reply_to is not None:
            send_reply(self, request.reply_to, outcome)
        else:
            self.send(request.caller, (PYNODE_RESULT, self.ref, outcome))

    # -- its mailbox: tool results and DOWNs -----------------------------------------

    def deliver(self, message: Term) -> None:
        """Tool results and DOWNs are acted on as they arrive: a run needs no mailbox task."""
        try:
            self.handle_message(message)
        except Exception:  # one bad message must not stop the routing of tool results
            log.exception(
                "run %s could not handle %s",
                self.run_id,
                format_term(message, limit=500),
                extra={"agent": self.agent.agent_name, "run_id": self.run_id},
            )

    def handle_message(self, message: Term) -> None:
        if type(message) is tuple and len(message) == 5 and message[0] == DOWN and type(message[1]) is Reference:
            self._on_down(message[1], message[4])
            return
        envelope = open_envelope(message)
        request = envelope.request
        if type(request) is tuple and len(request) == 3 and request[0] in (TOOL_RESULT, APPROVAL):
            if request[0] == TOOL_RESULT:
                reply = self.tool_result(request[1], request[2])
            else:
                reply = self.approval(request[1], request[2])
            if envelope.reply_to is not None:
                send_reply(self, envelope.reply_to, reply)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run %s ignores %s",
                self.run_id,
                format_term(message, limit=500),
                extra={"agent": self.agent.agent_name, "run_id": self.run_id},
            )

    def tool_result(self, call_id: Term, reply: Term) -> Term:
        key = call_key(call_id)
        wait = self._waits.get(key)
        if wait is None or wait.done():
            return error_term("bad_request", f"no tool call {key} is waiting in this run")
        try:
            wait.set_result(parse_tool_reply(reply))
        except BridgeError as exc:
            wait.set_result(ToolFailed(f"the tool handler sent an invalid reply: {exc.message}"))
            return error_term(exc.kind, exc.message)
        return OK

    def approval(self, call_id: Term, decision: Term) -> Term:
        """``{approval, CallId, Decision}``: settles a call waiting for approval.

        A decision that is none of the four denies the call (the model is told it was not
        understood), is logged, and gets ``{error, {bad_request, _}}`` when it came as a call.
        """
        key = call_key(call_id)
        wait = self._approval_waits.get(key)
        if wait is None or wait.done():
            return error_term("bad_request", f"no tool call {key} is waiting for approval in this run")
        try:
            wait.set_result(parse_decision(decision))
        except BridgeError as exc:
            log.warning(
                "run %s: the approver's decision on %s was not understood (%s); the call is denied",
                self.run_id,
                key,
                exc.message,
                extra={"agent": self.agent.agent_name, "run_id": self.run_id},
            )
            wait.set_result(denied_unclear(decision))
            return error_term(exc.kind, exc.message)
        return OK

    def _on_down(self, ref: Reference, reason: Term) -> None:
        if ref == self._caller_monitor:
            self._caller_monitor = None
            self.abandon(f"the caller exited ({format_term(reason)})")
            return
        waiting = self._approver_monitors.pop(ref, None)
        if waiting is not None:
            decision = self._approval_waits.get(waiting)
            if decision is not None and not decision.done():
                decision.set_result(
                    ToolDenied(
                        f"The tool call was denied: the approver exited before deciding ({format_term(reason)})."
                    )
                )
            return
        call_id = self._handler_monitors.pop(ref, None)
        if call_id is not None:
            wait = self._waits.get(call_id)
            if wait is not None and not wait.done():
                wait.set_result(ToolFailed(f"the tool handler exited before answering ({format_term(reason)})"))

    # -- tools -----------------------------------------------------------------------

    def wire_call_id(self, call_id: str) -> str:
        """The ``CallId`` the BEAM sees: the model's id, made unique on the node.

        Models name tool calls as they please (TestModel gives every call of a tool the
        same id; some providers count from ``call_0`` in every conversation), while a
        ``tool_result`` sent to the agent must find the one run waiting for it.
        """
        return f"{call_id}.{self.run_id[:16]}"

    async def _dispatch(self, tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
        call_id = self.wire_call_id(call_id)
        handler = tool.handler
        if isinstance(handler, MFHandler):
            return await self._call_mf(handler, args, call_id)
        dest: ProcessDest
        if isinstance(handler, ProcessHandler):
            dest = handler.dest
        elif self.request.options.tool_handler is not None:
            dest = self.request.options.tool_handler
        else:
            dest = self.request.caller
        return await self._call_process(dest, tool, call_id, args)

    def _function_node(self, handler: MFHandler) -> str:
        return function_node(handler, self.agent.definition.home, self.request.caller.node)

    async def _call_mf(self, handler: MFHandler, args: dict[str, Any], call_id: str) -> ToolReply:
        """An ``{M, F}`` tool: its return read as Elixir means it; any failure told to the model.

        ``M:F(Args, Ctx)`` when ``M`` exports ``F/2`` (docs/protocol.md section 3).
        """
        assert self.node is not None
        where = self._function_node(handler)
        with_ctx = self._takes_context.get((where, handler))
        if with_ctx is None:
            with_ctx = self._takes_context[(where, handler)] = await takes_context(self.node, where, handler)
        ctx: Term = None
        if with_ctx:
            ctx = {
                Atom("deps"): from_json(self.request.options.deps or {}),
                Atom("run_id"): self.run_id,
                Atom("agent"): Atom(self.agent.agent_name),
                Atom("call_id"): call_id,
                Atom("trace_context"): tool_trace_context(),  # the execute_tool span's: a span M:F opens nests under it
            }
        try:
            value = await call_function(self.node, where, handler, from_json(args), ctx=ctx)
        except BridgeError as exc:
            return ToolFailed(exc.message)
        return function_reply(value)

    async def _instructions(self, handler: MFHandler, deps: dict[str, JSONValue]) -> str:
        """An ``{M, F}`` instruction: ``M:F(Deps)`` must give a binary or iolist; else the run fails."""
        assert self.node is not None
        where = self._function_node(handler)
        try:
            value = await call_function(self.node, where, handler, from_json(deps))
        except BridgeError as exc:
            raise BridgeError(exc.kind, f"instructions {exc.message}") from None
        try:
            return text_from_prompt(value)
        except BridgeError:
            raise BridgeError(
                "tool_error",
                f"instructions {handler} on node {where} returned {format_term(value, limit=200)},"
                " not a binary or an iolist",
            ) from None

    async def _call_process(self, dest: ProcessDest, tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
        loop = asyncio.get_running_loop()
        wait: asyncio.Future[ToolReply] = loop.create_future()
        self._waits[call_id] = wait
        self.agent.calls[call_id] = self
        monitor = self.monitor(dest)
        self._handler_monitors[monitor] = call_id
        assert self.pid is not None
        self.send(
            dest,
            (
                PYNODE_TOOL_CALL,
                self.ref,
                {
                    Atom("call_id"): call_id,
                    Atom("name"): tool.name,
                    Atom("args"): from_json(args),
                    Atom("reply_to"): self.pid,
                    Atom("trace_context"): tool_trace_context(),
                },
            ),
        )
        try:
            return await wait
        finally:
            self._waits.pop(call_id, None)
            if self.agent.calls.get(call_id) is self:
                del self.agent.calls[call_id]
            if self._handler_monitors.pop(monitor, None) is not None:
                self.demonitor(monitor)

    # -- approvals -------------------------------------------------------------------

    def _approval_handler(self) -> ApprovalHandler | None:
        """The run's approver as pydantic-ai's deferred-call handler; ``None`` to defer (the Result lists the calls)."""
        approver = self.request.options.approver
        if approver == "defer" or (approver is None and self.request.reply_to is not None):
            return None
        return self._approve

    async def _approve(self, ctx: RunContext[Any], requests: DeferredToolRequests) -> DeferredToolResults | None:
        """Ask the approver about every call waiting for approval, at once, and wait for each decision."""
        if not requests.approvals:
            return None
        approver = self.request.options.approver
        dest: ProcessDest = self.request.caller if approver is None or approver == "defer" else approver
        waits = [
            (call.tool_call_id, self._ask(dest, call.tool_name, call.args_as_dict(), call.tool_call_id))
            for call in requests.approvals
        ]
        decisions: dict[str, Any] = {}
        for model_id, wait in waits:
            decision = await wait
            decisions[model_id] = decision
            await self._send_event((APPROVAL, self.wire_call_id(model_id), decision_term(decision)))
        return DeferredToolResults(approvals=decisions)

    def _ask(self, dest: ProcessDest, name: str, args: dict[str, Any], model_id: str) -> asyncio.Future[Decision]:
        call_id = self.wire_call_id(model_id)
        wait: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._approval_waits[call_id] = wait
        self.agent.calls[call_id] = self
        monitor = self.monitor(dest)
        self._approver_monitors[monitor] = call_id
        assert self.pid is not None
        if self._stream_to is not None:  # before the request: the approver may answer at once
            self.send(self._stream_to, (PYNODE_EVENT, self.ref, (APPROVAL_REQUIRED, name, from_json(args), call_id)))
        message = {
            Atom("call_id"): call_id,
            Atom("name"): name,
            Atom("args"): from_json(args),
            Atom("reply_to"): self.pid,
        }
        self.send(dest, (PYNODE_APPROVAL, self.ref, message))

        def settled(_: asyncio.Future[Decision]) -> None:
            self._approval_waits.pop(call_id, None)
            if self.agent.calls.get(call_id) is self:
                del self.agent.calls[call_id]
            if self._approver_monitors.pop(monitor, None) is not None:
                self.demonitor(monitor)

        wait.add_done_callback(settled)
        return wait

    # -- streaming -------------------------------------------------------------------

    async def _on_event(self, event: RunEvent) -> None:
        """Send one stream event; wait while the reader's connection is backed up."""
        target = self._stream_to
        if target is None:
            return
        term: Term
        if isinstance(event, TextDelta):
            term = (TEXT_DELTA, event.text)
        elif isinstance(event, ToolCallStarted):
            term = (TOOL_CALL, event.name, from_json(event.args), self.wire_call_id(event.call_id))
        elif isinstance(event, ToolCallFinished):
            term = (TOOL_RESULT, event.name, _content_term(event.content), self.wire_call_id(event.call_id))
        elif isinstance(event, ToolCallFailed):
            term = (TOOL_ERROR, event.name, event.message, self.wire_call_id(event.call_id))
        elif isinstance(event, OutputDelta):
            term = (OUTPUT_DELTA, from_json(event.partial))
        else:
            return
        await self._send_event(term)

    async def _send_event(self, term: Term) -> None:
        """Send one stream event to ``stream_to`` (or the caller); wait while its connection is backed up."""
        target = self._stream_to
        if target is None:
            return
        self.send(target, (PYNODE_EVENT, self.ref, term))
        node = self.node
        conn = node.connections.get(target.node) if node is not None else None
        if conn is not None:
            await conn.drain()


def _content_term(content: Any) -> Term:
    """A tool's return value for a ``tool_result`` event: its JSON form, as pydantic-ai gives it to the model.

    Python tools may return models, dataclasses or datetimes; their JSON form, never a repr, reaches
    the BEAM (docs/protocol.md section 8). Only a value with no JSON form at all is sent as its text.
    """
    try:
        return from_json(to_jsonable_python(content))
    except Exception:
        return str(content)


def call_key(call_id: Term) -> str:
    """A ``CallId`` as a handler sent it back (a binary, usually) -> the key runs wait under."""
    return call_id.decode("utf-8", "replace") if isinstance(call_id, bytes) else str(call_id)
