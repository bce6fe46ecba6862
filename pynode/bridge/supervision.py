"""The agents as children of the node's supervisor (docs/protocol.md section 1); the registry's is in ``registry``.

What must outlive a killed process lives outside it: the agent table and the
run counters (:class:`~pynode.bridge.agents.RunLimits`) and the model cache are
made once and handed to every registry process started for ``pynode``; an
agent's child spec holds its definition (a remote agent's last spec, or the
Python definition it was loaded from), so a restarted agent is the same agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pynode.bridge.agents import AgentProcess, RunLimits
from pynode.bridge.models import ModelCache
from pynode.bridge.runner import AgentDefinition
from pynode.etf.types import Term
from pynode.runtime.process import SHUTDOWN, Process
from pynode.runtime.supervisor import ChildSpec, Supervisor

if TYPE_CHECKING:
    from pynode.runtime.kernel import Kernel

__all__ = ["agent_child", "start_agent", "stop_agent"]


def agent_child(definition: AgentDefinition, *, limits: RunLimits, models: ModelCache) -> ChildSpec:
    """An agent, restarted from ``definition`` unless it ended normally (deleted, or ``shutdown``)."""
    name = definition.name

    def start() -> AgentProcess:
        return AgentProcess(definition, models=models, limits=limits)

    def started(process: Process) -> None:
        assert isinstance(process, AgentProcess)
        limits.agents[name] = process
        limits.agents_changed()

    def gone(process: Process, reason: Term) -> None:
        if limits.agents.get(name) is process:
            del limits.agents[name]
        limits.agents_changed()

    return ChildSpec(name=name, start=start, restart="transient", started=started, gone=gone)


def start_agent(
    kernel: Kernel[Process],
    supervisor: Supervisor | None,
    definition: AgentDefinition,
    *,
    limits: RunLimits,
    models: ModelCache,
) -> AgentProcess:
    """Start an agent under ``supervisor``; registered under its name when this returns.

    Without a supervisor (a registry spawned by hand, outside the node's tree) the agent runs
    unsupervised, as every agent did before supervision.
    """
    child = agent_child(definition, limits=limits, models=models)
    if supervisor is not None:
        process = supervisor.start_child(child)
    else:
        process = kernel.spawn(child.start(), name=child.name)
        assert child.started is not None
        child.started(process)
    assert isinstance(process, AgentProcess)
    return process


def stop_agent(supervisor: Supervisor | None, process: AgentProcess) -> None:
    """End an agent for good: a deletion is not a crash, the supervisor does not restart it."""
    if supervisor is None or supervisor.terminate_child(process.agent_name) is None:
        process.exit(SHUTDOWN)
