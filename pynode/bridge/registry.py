"""The registered process ``pynode``: the node's front door (docs/protocol.md §3)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pynode._version import __version__
from pynode.bridge.agents import AgentProcess, RunLimits
from pynode.bridge.errors import BridgeError, error_term
from pynode.bridge.loader import load_agents
from pynode.bridge.models import ModelCache
from pynode.bridge.runner import AgentDefinition, build_agent
from pynode.bridge.spec import AgentSpec, parse_agent_spec, parse_create_options, spec_has_toolsets
from pynode.bridge.supervision import start_agent, stop_agent
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.runtime.genserver import DEFER, CallNowReply, CallReply, From, GenServer
from pynode.runtime.pgscope import DEFAULT_SCOPE, PgScope
from pynode.runtime.process import DOWN, Process
from pynode.runtime.services import node_supervisor
from pynode.runtime.supervisor import ChildSpec, Supervisor

if TYPE_CHECKING:
    from pynode.node import Node
    from pynode.runtime.kernel import Kernel

__all__ = ["Registry", "current_registry", "start_registry", "start_supervised_registry"]

log = logging.getLogger("pynode.registry")

OK: Final = Atom("ok")
PONG: Final = Atom("pong")
PYTHON: Final = Atom("python")
REMOTE: Final = Atom("remote")
REGISTRY_GROUP: Final = Atom("pynode")


def _pydantic_ai_version() -> str:
    try:
        import pydantic_ai

        return str(pydantic_ai.__version__)
    except Exception:  # an import error must not take the registry down
        return "unavailable"


class Registry(GenServer):
    """Answers ``ping``, ``info``, ``{echo, Term}``; creates, lists and deletes agents."""

    def __init__(
        self,
        *,
        max_runs: int = 1000,
        models: ModelCache | None = None,
        limits: RunLimits | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__()
        # Given by the supervisor's child spec, the table outlives this process: a restarted
        # registry knows every agent and every run in flight.
        self.limits = limits or RunLimits(max_runs=max_runs)
        self.supervisor = supervisor
        """Where agents are started (the node's ``pynode_sup``); None: agents run unsupervised."""
        self.models = models if models is not None else ModelCache()
        self._pydantic_ai = _pydantic_ai_version()
        self.owners: dict[Reference, tuple[str, Pid]] = {}
        """The monitor on each owner of an owned agent -> the agent's name and that owner."""
        self.wind_down_timeout = 5.0
        """Seconds a deleted or replaced agent's runs get to answer before the agent ends anyway."""

    @property
    def agents(self) -> dict[str, AgentProcess]:
        return self.limits.agents

    def handle_call_now(self, request: Term, caller: From) -> CallNowReply:
        # Requests answered without waiting take the fast path whenever this process is idle;
        # those that may wait for an old agent's runs to answer go through the mailbox, in order.
        if _may_wait(request):
            return DEFER
        try:
            return self.handle_request(request, caller)
        except BridgeError as exc:
            return error_term(exc.kind, exc.message)

    async def handle_call(self, request: Term, caller: From) -> CallReply:
        try:
            if _may_wait(request):
                return await self.handle_waiting_request(request, caller)
            return self.handle_request(request, caller)
        except BridgeError as exc:
            return error_term(exc.kind, exc.message)

    async def handle_info(self, message: Term) -> None:
        if type(message) is tuple and len(message) == 5 and message[0] == DOWN:
            ref = message[1]
            if type(ref) is Reference and ref in self.owners:
                await self.owner_down(ref, message[4])

    def handle_request(self, request: Term, caller: From | None = None) -> Term:
        """One request; ``caller`` (absent for a cast) is the creator of an agent it creates."""
        if request == Atom("ping"):
            return PONG
        if request == Atom("info"):
            return (OK, self.info())
        if request == Atom("list_agents"):
            return (OK, [self.describe(a) for a in self.agents.values()])
        if request == Atom("drain"):
            self.drain()
            return OK
        if type(request) is tuple and request:
            op, args = request[0], request[1:]
            if op == Atom("echo") and len(args) == 1:
                return (OK, args[0])
            if op == Atom("create_agent") and len(args) == 2:
                return self.create_agent(args[0], args[1], home=_home(caller))
        raise BridgeError("bad_request", f"the pynode registry does not understand {format_term(request)}")

    def create_agent(self, name: Term, spec_term: Term, *, home: Atom | None = None) -> Term:
        """``home``: the creator's node, where the agent's ``{M, F}`` tools and instructions run."""
        if type(name) is not Atom:
            raise BridgeError("bad_request", f"an agent name is an atom, not {format_term(name)}")
        if name in self.agents or (self.node is not None and self.node.whereis(name) is not None):
            raise BridgeError("already_exists", f"a process named {name} already exists on this node")
        spec = parse_agent_spec(spec_term)
        definition = build_agent(spec, self.models, name=str(name), home=home)
        self.add_agent(definition)
        return (OK, name)

    def add_agent(self, definition: AgentDefinition) -> AgentProcess:
        assert self.node is not None
        process = start_agent(self.node, self.supervisor, definition, limits=self.limits, models=self.models)
        log.info(
            "agent %s registered (model %s, %s)",
            definition.name,
            definition.model_name,
            definition.origin,
            extra={"agent": definition.name},
        )
        return process

    async def handle_waiting_request(self, request: Term, caller: From | None = None) -> Term:
        """``delete_agent`` and ``create_agent/4``: they may end an agent, after its runs have answered."""
        assert type(request) is tuple
        if request[0] == Atom("delete_agent"):
            return await self.delete_agent(request[1])
        if len(request) == 3:  # create_agent/3 of an agent with MCP toolsets
            reply = self.create_agent(request[1], request[2], home=_home(caller))
            await self.sessions_opened(str(request[1]))
            return reply
        return await self.create_agent_with_options(request[1], request[2], request[3], home=_home(caller))

    async def create_agent_with_options(
        self, name: Term, spec_term: Term, opts_term: Term, *, home: Atom | None = None
    ) -> Term:
        """``{create_agent, Name, Spec, CreateOpts}``: ``if_exists`` and ``owner`` (docs/protocol.md section 3).

        ``home``: the creator's node, where the agent's ``{M, F}`` tools and instructions run.
        """
        opts = parse_create_options(opts_term)
        if type(name) is not Atom:
            raise BridgeError("bad_request", f"an agent name is an atom, not {format_term(name)}")
        existing = self.agents.get(name)
        if existing is None and self.node is not None and self.node.whereis(name) is not None:
            raise BridgeError("already_exists", f"a process named {name} already exists on this node")
        spec = parse_agent_spec(spec_term)
        if existing is not None and opts.if_exists == "error":
            raise BridgeError("already_exists", f"an agent named {name} already exists")
        if existing is not None and opts.owner is not None and self.shared(existing, spec, opts.if_exists):
            self.add_owner(existing.definition.name, opts.owner)
            return (OK, name)
        if existing is not None and opts.if_exists == "keep":
            return (OK, name)
        # A model that fails replaces nothing.
        definition = build_agent(spec, self.models, name=str(name), home=home)
        if existing is not None:
            await self.remove_agent(str(name), f"agent {name} was replaced")
        self.add_agent(definition)
        await self.sessions_opened(definition.name)
        if opts.owner is not None:
            self.add_owner(definition.name, opts.owner)
        return (OK, name)

    def shared(self, existing: AgentProcess, spec: AgentSpec, if_exists: str) -> bool:
        """Whether a create with an owner joins the owners of ``existing`` instead of replacing it.

        The same app on several BEAM nodes declares the same agent on every node it runs on: each
        node's create must neither cancel the others' runs nor end the agent when one node leaves.
        So an owned agent asked for again with ``keep``, or with ``replace`` and an equal spec, is
        shared: it goes when its last owner has gone.
        """
        if existing.definition.name not in self.limits.owners:
            return False
        return if_exists == "keep" or (if_exists == "replace" and existing.definition.spec == spec)

    def add_owner(self, name: str, owner: Pid) -> None:
        owners = self.limits.owners.setdefault(name, [])
        if owner not in owners:
            owners.append(owner)
            self.owners[self.monitor(owner)] = (name, owner)

    async def sessions_opened(self, name: str) -> None:
        """Wait until agent ``name`` holds its MCP sessions; one that could not open them goes (``bad_spec``)."""
        process = self.agents.get(name)
        if process is None:
            return
        error = await process.sessions_opened()
        if error is not None:
            await self.remove_agent(name, f"agent {name} was not created: {error.message}")
            raise error

    async def delete_agent(self, name: Term) -> Term:
        key = name.decode() if isinstance(name, bytes) else str(name)
        if not isinstance(name, str | bytes) or key not in self.agents:
            raise BridgeError("unknown_agent", f"there is no agent named {key}")
        await self.remove_agent(key, f"agent {key} was deleted")
        return OK

    async def remove_agent(self, name: str, reason: str) -> None:
        """End agent ``name``: its runs' callers get ``{error, {cancelled, Reason}}`` before its ``DOWN``."""
        timeout = self.wind_down_timeout
        process = self.agents.pop(name)
        self.limits.agents_changed()  # it leaves its group now, while its runs wind down
        self.limits.owners.pop(name, None)
        for ref in [ref for ref, (owned, _) in self.owners.items() if owned == name]:
            del self.owners[ref]
            self.demonitor(ref)
        try:
            await process.wind_down(reason, timeout)
        finally:
            # Even when this registry is killed while the runs wind down: the agent is out of the
            # table already, and a restarted registry would never end it.
            stop_agent(self.supervisor, process)
        try:
            await process.join(timeout)
        except TimeoutError:
            log.warning("agent %s did not end within %s s", name, timeout, extra={"agent": name})
        log.info("agent %s removed: %s", name, reason, extra={"agent": name})

    def watch_owners(self) -> None:
        """Monitor the owner of every owned agent: a restarted registry takes over what the last one watched.

        An owner that exited while no registry was there is seen at once (``DOWN`` with ``noproc``).
        """
        for name, owners in list(self.limits.owners.items()):
            for owner in owners:
                self.owners[self.monitor(owner)] = (name, owner)

    async def owner_down(self, ref: Reference, reason: Term) -> None:
        """An owner of an agent exited or its node went away: the agent goes with its last owner."""
        name, owner = self.owners.pop(ref)
        owners = self.limits.owners.get(name, [])
        if owner in owners:
            owners.remove(owner)
        agent = self.agents.get(name)
        if agent is None:
            return
        if owners:
            # The {M, F} tools and instructions run on the home node: one of the owners' nodes.
            homes = [other.node for other in owners]
            if agent.definition.home == owner.node and owner.node not in homes:
                agent.definition.home = homes[0]
            log.info(
                "agent %s: an owner exited (%s); %d remain, home node %s",
                name,
                format_term(reason),
                len(owners),
                agent.definition.home,
                extra={"agent": name},
            )
            return
        await self.remove_agent(name, f"agent {name} was deleted: its owner exited ({format_term(reason)})")

    def describe(self, agent: AgentProcess) -> dict[Atom, Term]:
        d = agent.definition
        return {Atom("name"): Atom(d.name), Atom("model"): d.model_name, Atom("origin"): Atom(d.origin)}

    def info(self) -> dict[Atom, Term]:
        assert self.node is not None
        metrics = self.limits.metrics
        return {
            Atom("node"): self.node.name,
            Atom("version"): __version__,
            Atom("pydantic_ai"): self._pydantic_ai,
            Atom("agents"): len(self.agents),
            Atom("runs"): self.limits.in_flight,
            Atom("draining"): self.limits.draining,
            # Since the node started (docs/protocol.md section 3): a restarted registry keeps them.
            Atom("agent_runs"): {Atom(name): len(agent.runs) for name, agent in self.agents.items()},
            Atom("runs_ended"): metrics.outcomes_term(),
            Atom("usage"): metrics.usage_term(),
            Atom("run_duration_ms"): metrics.durations_term(),
        }

    def drain(self) -> None:
        """Leave every group, refuse new runs with ``draining``, let the runs in flight end; the
        node's owner stops the node once they have (docs/protocol.md section 9). Idempotent."""
        if self.limits.draining:
            return
        log.info("draining: leaving every group; %d runs in flight go on", self.limits.in_flight)
        self.limits.draining = True
        self.limits.agents_changed()
        self.limits.drain_requested.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until no run is in flight, at most ``timeout`` seconds; whether none is."""
        limits = self.limits
        if limits.in_flight > 0:
            limits.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(limits.idle.wait(), timeout)
        return limits.in_flight == 0

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel every run in flight and refuse new ones; their callers get ``{error, {cancelled, _}}``.

        Returns once the replies have left this process (or ``timeout`` has passed), so that
        closing the connections next does not lose them.
        """
        self.limits.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        runs = [run for agent in self.agents.values() for run in agent.cancel_all("the node is shutting down")]
        tasks = [run.task for run in runs if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if self.node is not None:
            await _flushed(self.node, deadline)


def _home(caller: From | None) -> Atom | None:
    """The node of the process that sent ``create_agent`` (none for a cast)."""
    return None if caller is None else caller.pid.node


def _may_wait(request: Term) -> bool:
    """``delete_agent`` and ``create_agent/4`` may end an agent, which waits for its runs to answer;
    creating an agent with MCP toolsets waits for its servers."""
    if type(request) is not tuple or not request:
        return False
    op = request[0]
    if op == Atom("create_agent") and len(request) == 3:
        return spec_has_toolsets(request[2])
    return (op == Atom("delete_agent") and len(request) == 2) or (op == Atom("create_agent") and len(request) == 4)


async def _flushed(node: Kernel[Process], deadline: float) -> None:
    """Wait until every connection has handed its buffered bytes to the kernel, or ``deadline``."""
    loop = asyncio.get_running_loop()
    while True:
        pending = [
            name
            for name, conn in node.connections.items()
            if not conn.closed and conn.transport.get_write_buffer_size() > 0
        ]
        if not pending:
            return
        if loop.time() >= deadline:
            log.warning("stopping with unsent data to %s", ", ".join(pending))
            return
        await asyncio.sleep(0.01)


async def start_registry(
    node: Node,
    *,
    agents_dir: Path | None = None,
    max_runs: int = 1000,
    models: ModelCache | None = None,
    pg_scope: str | None = DEFAULT_SCOPE,
) -> Registry:
    """Register ``pynode`` and the Python-defined agents found in ``agents_dir``.

    ``pg_scope``: the ``pg`` scope the agents and the registry are members of (``None``: none).
    """
    registry = start_supervised_registry(node, max_runs=max_runs, models=models, pg_scope=pg_scope)
    if agents_dir is not None:
        for definition in load_agents(agents_dir):
            if node.whereis(definition.name) is not None:
                log.error(
                    "agent %s not registered: the name is taken", definition.name, extra={"agent": definition.name}
                )
                continue
            registry.add_agent(definition)
    return registry


def start_supervised_registry(
    node: Node, *, max_runs: int = 1000, models: ModelCache | None = None, pg_scope: str | None = None
) -> Registry:
    """``pynode`` as a child of the node's supervisor, with a table that outlives each registry process.

    With ``pg_scope``, the scope's process too: every agent is a member of the group named as it
    is, and the registry of the group ``pynode`` (docs/protocol.md section 9).
    """
    supervisor = node_supervisor(node)
    models = models if models is not None else ModelCache()
    limits = RunLimits(max_runs=max_runs)
    child = _registry_child(supervisor=supervisor, limits=limits, models=models)
    registry = supervisor.start_child(child)
    assert isinstance(registry, Registry)
    if pg_scope is not None:
        supervisor.start_child(_pg_child(node, pg_scope, limits))
    return registry


def _pg_child(node: Node, scope: str, limits: RunLimits) -> ChildSpec:
    """The ``pg`` scope process, told of every change of the agent table."""

    def members() -> dict[Term, list[Pid]]:
        if limits.draining:
            return {}
        groups: dict[Term, list[Pid]] = {
            Atom(name): [agent.pid] for name, agent in limits.agents.items() if agent.pid is not None and agent.alive
        }
        registry = node.whereis("pynode")
        if registry is not None:
            groups[REGISTRY_GROUP] = [registry]
        return groups

    def changed() -> None:
        process = node.processes.name(scope)
        if isinstance(process, PgScope):
            process.changed()

    limits.watchers.append(changed)
    return ChildSpec(name=scope, start=lambda: PgScope(scope, members))


def _registry_child(*, supervisor: Supervisor, limits: RunLimits, models: ModelCache) -> ChildSpec:
    """The registry ``pynode``: every process started for it shares one agent table and run count."""

    def started(process: Process) -> None:
        assert isinstance(process, Registry)
        process.watch_owners()
        limits.agents_changed()  # a new registry pid for the group pynode

    return ChildSpec(
        name="pynode",
        start=lambda: Registry(limits=limits, models=models, supervisor=supervisor),
        started=started,
    )


def current_registry(node: Node) -> Registry | None:
    """The registry process now registered as ``pynode`` (a new one after each restart)."""
    process = node.processes.name("pynode")
    return process if isinstance(process, Registry) else None
