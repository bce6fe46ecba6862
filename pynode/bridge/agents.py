"""An agent as a registered process (docs/protocol.md §4).

The agent process only accepts and routes: each run is a
:class:`~pynode.bridge.runs.RunProcess` of its own, so a slow run never
delays another request to the same agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, TypeGuard

from pynode.bridge.errors import BridgeError, error_term
from pynode.bridge.mcp import INIT_TIMEOUT, McpServerToolset, McpSessions
from pynode.bridge.metrics import NodeMetrics
from pynode.bridge.models import ModelCache
from pynode.bridge.runner import AgentDefinition
from pynode.bridge.runs import APPROVAL, TOOL_RESULT, RunProcess, RunRequest, call_key
from pynode.bridge.spec import parse_run_options
from pynode.bridge.termmap import text_from_prompt
from pynode.bridge.tools import check_run_tools
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.runtime.genserver import NOREPLY, CallReply, From, GenServer
from pynode.runtime.memory import Table

__all__ = ["AgentProcess", "RunLimits"]

log = logging.getLogger("pynode.agent")

OK: Final = Atom("ok")
RUN: Final = Atom("run")
START_RUN: Final = Atom("start_run")
CANCEL: Final = Atom("cancel")
INFO: Final = Atom("info")


@dataclass(slots=True)
class RunLimits:
    """Runs in flight on the whole node, and the most it takes (``--max-runs``)."""

    max_runs: int
    in_flight: int = 0
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    owners: dict[str, list[Pid]] = field(default_factory=dict)
    """Owned agents' owners, by agent name: kept here so that a restarted registry watches them again.
    An agent shared by several owners goes with the last of them."""
    accepting: bool = True
    """False once the node is shutting down: new runs are refused as cancelled."""
    draining: bool = False
    """True once the node drains (docs/protocol.md section 9): its agents have left their groups,
    new runs are refused with ``draining``, the runs in flight go on."""
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    """Set each time the last run in flight ends (cleared by whoever waits for it)."""
    drain_requested: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when draining starts: the owner of the node stops it once the runs in flight are over."""
    watchers: list[Callable[[], None]] = field(default_factory=list)
    """Called after every change of the agent table (an agent started, restarted or gone)."""
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    """Every run that ended since the node started: outcomes, usage, recent durations (``info``)."""
    mcp_commands: frozenset[str] = frozenset()
    """The programs a stdio MCP toolset may start (``--mcp-command``), as real paths: no other."""

    def agents_changed(self) -> None:
        for watcher in list(self.watchers):
            watcher()


class AgentProcess(GenServer):
    """Takes ``run``, ``start_run``, ``cancel``, ``tool_result`` and ``info``."""

    def __init__(self, definition: AgentDefinition, *, models: ModelCache, limits: RunLimits) -> None:
        super().__init__()
        self.definition = definition
        self.models = models
        self.limits = limits
        self.runs: dict[Reference, RunProcess] = {}
        self.calls: dict[str, RunProcess] = {}
        self.waiting_calls: dict[Reference, RunProcess] = {}
        """Synchronous runs by the monitor their ``gen_server:call`` holds on this agent."""
        self.closing: str | None = None
        """Why the agent is going away (deleted, replaced): new runs are refused with it."""
        self.max_concurrency = definition.max_concurrency
        self.sessions_ready = asyncio.Event()
        """Set once the agent has opened the sessions of its MCP servers, or failed to (``sessions_error``)."""
        self.sessions_error: BridgeError | None = None

    def compactable_tables(self) -> Iterator[Table]:
        yield from super().compactable_tables()
        yield self.runs
        yield self.calls
        yield self.waiting_calls

    async def run(self) -> None:
        """Serve, holding a session with each of the agent's MCP servers: opened and closed in this task.

        A server that cannot be reached leaves ``sessions_error`` for the creator, which ends the
        agent; a restarted agent serves on, and its runs fail saying that server is not connected.
        """
        spec = self.definition.spec
        servers = spec.toolsets if spec is not None else ()
        if not servers:
            self.sessions_ready.set()
            await super().run()
            return
        sessions = McpSessions(self.agent_name, servers, allowed=self.limits.mcp_commands)
        mine: list[McpServerToolset] = []
        try:
            try:
                await sessions.open(taken=[tool.name for tool in self.definition.tools])
            except BridgeError as exc:
                self.sessions_error = exc
                log.warning("agent %s: %s", self.agent_name, exc.message, extra={"agent": self.agent_name})
            mine = self.definition.mcp_toolsets = list(sessions.toolsets)
            self.sessions_ready.set()
            await super().run()
        finally:
            await self._runs_gone(5.0)  # no run may be inside a session while it closes
            if self.definition.mcp_toolsets is mine:  # not yet a restarted agent's own
                self.definition.mcp_toolsets = []
            await sessions.close()

    async def sessions_opened(self) -> BridgeError | None:
        """Wait until the agent has opened its MCP sessions: ``None``, or why it could not.

        Bounded: each server has ``INIT_TIMEOUT`` to start and answer, and one more for the rest.
        """
        spec = self.definition.spec
        timeout = INIT_TIMEOUT * (1 + (len(spec.toolsets) if spec is not None else 0))
        ready = asyncio.ensure_future(self.sessions_ready.wait())
        gone = asyncio.ensure_future(self.join())
        try:
            await asyncio.wait({ready, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            gone.cancel()
        if self.sessions_error is not None:
            return self.sessions_error
        if not self.sessions_ready.is_set():
            why = "it ended" if self.exit_reason is not None else f"not within {timeout:g} s"
            return BridgeError("bad_spec", f"agent {self.agent_name} did not open its MCP sessions: {why}")
        return None

    async def _runs_gone(self, timeout: float) -> None:
        tasks = [run.task for run in self.runs.values() if run.task is not None and not run.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    @property
    def agent_name(self) -> str:
        return self.definition.name

    def handle_call_now(self, request: Term, caller: From) -> CallReply:
        # Every request is answered without waiting (a run answers later from its own process),
        # so calls take the fast path whenever this process is idle.
        try:
            return self.handle_request(request, caller)
        except BridgeError as exc:
            return error_term(exc.kind, exc.message)

    async def handle_call(self, request: Term, caller: From) -> CallReply:
        return self.handle_call_now(request, caller)

    async def handle_cast(self, request: Term) -> None:
        if _is_tool_result(request):
            self.forward_tool_result(request[1], request[2])
        elif _is_approval(request):
            self.forward_approval(request[1], request[2])

    async def handle_info(self, message: Term) -> None:
        if _is_tool_result(message):
            self.forward_tool_result(message[1], message[2])
        elif _is_approval(message):
            self.forward_approval(message[1], message[2])
        else:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("agent %s ignores %s", self.agent_name, format_term(message, limit=500))

    def handle_request(self, request: Term, caller: From) -> CallReply:
        if request == INFO:
            return (OK, self.info())
        if type(request) is not tuple or not request:
            raise BridgeError("bad_request", f"agent {self.agent_name} does not understand {format_term(request)}")
        op = request[0]
        if op in (RUN, START_RUN) and len(request) in (2, 3):
            opts = request[2] if len(request) == 3 else {}
            return self.start(request[1], opts, caller, synchronous=op == RUN)
        if op == CANCEL and len(request) == 2:
            run = self.runs.get(request[1]) if type(request[1]) is Reference else None
            if run is not None:
                run.cancel("cancelled by request")
            return OK
        if _is_tool_result(request):
            return self.forward_tool_result(request[1], request[2])
        if _is_approval(request):
            return self.forward_approval(request[1], request[2])
        raise BridgeError("bad_request", f"agent {self.agent_name} does not understand {format_term(request)}")

    def start(self, prompt: Term, opts: Term, caller: From, *, synchronous: bool) -> CallReply:
        text = text_from_prompt(prompt)
        options = parse_run_options(opts)
        defn = self.definition
        # The agent's tool names matter only to a run that brings tools of its own.
        names = defn.tool_names() if options.tools else ()
        check_run_tools(defn.tools, names, options, caller.pid, synchronous=synchronous)
        if not self.limits.accepting:
            raise BridgeError("cancelled", "the node is shutting down")
        if self.limits.draining:
            node_name = self.node.name if self.node is not None else "this node"
            raise BridgeError("draining", f"node {node_name} is draining: run {self.agent_name} on another member")
        if self.closing is not None:
            raise BridgeError("cancelled", self.closing)
        if self.max_concurrency is not None and len(self.runs) >= self.max_concurrency:
            raise BridgeError(
                "overloaded", f"agent {self.agent_name} already has {len(self.runs)} runs (max_concurrency)"
            )
        if self.limits.in_flight >= self.limits.max_runs:
            raise BridgeError("overloaded", f"the node already has {self.limits.in_flight} runs in flight")
        node = self.node
        assert node is not None
        ref = node.make_ref()
        run = RunProcess(
            self,
            ref,
            RunRequest(prompt=text, options=options, caller=caller.pid, reply_to=caller if synchronous else None),
        )
        self.runs[ref] = run
        self.limits.in_flight += 1
        call_monitor = caller.monitor if synchronous else None
        if call_monitor is not None:
            self.waiting_calls[call_monitor] = run
        node.spawn(run)
        # A ``gen_server:call`` monitors this process for as long as it waits, and that monitor
        # goes (a DEMONITOR, or its node's connection) once the caller stops waiting for any
        # reason, its death included: it tells the run all a monitor of its own would.
        entry = self.monitored_by.get(call_monitor) if call_monitor is not None else None
        if entry is None or entry[0] != caller.pid:
            run.watch_caller()
        return NOREPLY if synchronous else (OK, ref)

    def run_finished(self, run: RunProcess) -> None:
        if self.runs.pop(run.ref, None) is not None:
            self.limits.in_flight -= 1
            self.limits.metrics.run_ended(
                _outcome_kind(run.outcome), run.usage, time.monotonic() - run.started, agent=self.agent_name
            )
            if self.limits.in_flight == 0:
                self.limits.idle.set()
        reply_to = run.request.reply_to
        call_monitor = reply_to.monitor if reply_to is not None else None
        if call_monitor is not None and self.waiting_calls.get(call_monitor) is run:
            del self.waiting_calls[call_monitor]

    def demonitored(self, ref: Reference, watcher: Pid) -> None:
        """A caller removed its monitor on this agent: a ``gen_server:call`` that stopped waiting.

        ``gen:call`` monitors the server for the length of the call; the monitor goes on a reply,
        a timeout, or the caller's death. A run still going then has nobody waiting for it
        (docs/protocol.md section 4).
        """
        self._call_ended(ref, watcher, "the caller stopped waiting (its call timed out, or it exited)")

    def watcher_lost(self, ref: Reference, watcher: Pid, reason: Term) -> None:
        """A caller's node went away: a synchronous run it waited for has nobody waiting for it."""
        self._call_ended(ref, watcher, f"the caller exited ({format_term(reason)})")

    def _call_ended(self, ref: Reference, watcher: Pid, reason: str) -> None:
        run = self.waiting_calls.pop(ref, None)
        if run is not None and run.request.caller == watcher:
            run.abandon(reason)

    def forward_tool_result(self, call_id: Term, reply: Term) -> Term:
        run = self._waiting_run(call_id, "")
        return run.tool_result(call_id, reply) if isinstance(run, RunProcess) else run

    def forward_approval(self, call_id: Term, decision: Term) -> Term:
        run = self._waiting_run(call_id, " for approval")
        return run.approval(call_id, decision) if isinstance(run, RunProcess) else run

    def _waiting_run(self, call_id: Term, waiting: str) -> RunProcess | Term:
        """The run a call ``call_id`` is waiting in, else the ``bad_request`` answer saying so."""
        key = call_key(call_id)
        run = self.calls.get(key)
        if run is None:
            return error_term("bad_request", f"no tool call {key} is waiting{waiting} on agent {self.agent_name}")
        return run

    def info(self) -> dict[Atom, Term]:
        return {
            Atom("name"): Atom(self.agent_name),
            Atom("model"): self.definition.model_name,
            Atom("tools"): self.definition.tool_names(),
            Atom("runs"): len(self.runs),
        }

    def ended(self, reason: Term) -> None:
        """The agent process is gone (killed, crashed, deleted): so are its runs.

        Called before the agent's links and monitors fire, so each run's caller gets
        ``{error, {cancelled, _}}`` before it can see the agent's ``DOWN``.
        """
        super().ended(reason)
        if self.runs:
            why = f"agent {self.agent_name} exited ({format_term(reason, limit=200)})"
            for run in list(self.runs.values()):
                run.cancel_now(why)

    def cancel_all(self, reason: str) -> list[RunProcess]:
        runs = list(self.runs.values())
        for run in runs:
            run.cancel(reason)
        return runs

    async def wind_down(self, reason: str, timeout: float) -> None:
        """Refuse new runs, cancel those in flight and wait (up to ``timeout``) until each has answered.

        Whoever ends the agent next does so after its runs' results have left: a caller monitoring
        the agent gets its run's ``{error, {cancelled, _}}`` before the agent's ``DOWN``.
        """
        self.closing = reason
        tasks = [run.task for run in self.cancel_all(reason) if run.task is not None and not run.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                log.warning("agent %s: %d runs did not end within %s s", self.agent_name, len(pending), timeout)


def _outcome_kind(outcome: Term) -> str:
    """``ok``, or the error kind of ``{error, {Kind, _}}`` (``internal_error`` for a run that never answered)."""
    if type(outcome) is tuple and len(outcome) == 2:
        if outcome[0] == OK:
            return "ok"
        reason = outcome[1]
        if type(reason) is tuple and len(reason) == 2 and type(reason[0]) is Atom:
            return str(reason[0])
    return "internal_error"


def _is_tool_result(term: Term) -> TypeGuard[tuple[Term, Term, Term]]:
    return type(term) is tuple and len(term) == 3 and term[0] == TOOL_RESULT


def _is_approval(term: Term) -> TypeGuard[tuple[Term, Term, Term]]:
    return type(term) is tuple and len(term) == 3 and term[0] == APPROVAL
