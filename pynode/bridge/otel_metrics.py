"""The node's own totals as OpenTelemetry metrics, when a metrics exporter is configured.

The same numbers the registry's ``info`` returns (docs/protocol.md section 3), read from the
:class:`~pynode.bridge.agents.RunLimits` that keeps them: observable instruments whose callbacks
run in the SDK's metric reader thread at each export, plus a duration histogram recorded as each
run ends. Tokens and cost are not repeated here: pydantic-ai's instrumentation already exports
them per model request (``gen_ai.client.token.usage``, ``operation.cost``).

Only :func:`pynode.bridge.tracing.observe_node` imports this module, and only when the node
exports metrics; with metrics off nothing here is made or called.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

if TYPE_CHECKING:
    from pynode.bridge.agents import RunLimits

__all__ = ["DURATION_BUCKETS", "METER_NAME", "instrument"]

METER_NAME: Final = "pynode"
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds: from a scripted model's few milliseconds to a long agentic run's minutes."""


def _attributes(agent: str | None, kind: str) -> dict[str, str]:
    """``agent`` when known, ``outcome`` ``ok`` or ``error``, and the error's kind as ``error.type``."""
    attributes = {"agent": agent} if agent else {}
    if kind == "ok":
        attributes["outcome"] = "ok"
    else:
        attributes["outcome"] = "error"
        attributes["error.type"] = kind
    return attributes


def instrument(limits: RunLimits, meter_provider: metrics.MeterProvider | None = None) -> None:
    """Make the node's instruments on ``meter_provider`` (default: the global one), reading ``limits``.

    The callbacks copy what they read (one C-level copy of each dict) before iterating, as the
    event loop goes on changing it meanwhile.
    """
    from pynode._version import __version__

    meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER_NAME, __version__)
    totals = limits.metrics

    def runs(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, _attributes(agent, kind)) for (agent, kind), n in dict(totals.runs).items()]

    def in_flight(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(len(agent.runs), {"agent": name}) for name, agent in dict(limits.agents).items()]

    def requests(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(totals.requests)]

    def tool_calls(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(totals.tool_calls)]

    meter.create_observable_counter(
        "pynode.runs", [runs], unit="{run}", description="Runs ended on the node, by outcome and error type"
    )
    meter.create_observable_up_down_counter(
        "pynode.runs.in_flight", [in_flight], unit="{run}", description="Runs in flight, by agent"
    )
    meter.create_observable_counter(
        "pynode.usage.requests", [requests], unit="{request}", description="Model requests of the runs ended"
    )
    meter.create_observable_counter(
        "pynode.usage.tool_calls", [tool_calls], unit="{call}", description="Tool calls that returned, in runs ended"
    )
    duration = meter.create_histogram(
        "pynode.run.duration",
        unit="s",
        description="How long runs took, from the agent taking the run to its end, whatever the outcome",
        explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
    )

    def ended(agent: str | None, kind: str, seconds: float) -> None:
        duration.record(seconds, _attributes(agent, kind))

    totals.listeners.append(ended)
