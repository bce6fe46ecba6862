"""OpenTelemetry for the node's runs: set up from the ``OTEL_*`` variables, joined to the BEAM caller's trace.

pydantic-ai writes the spans (``invoke_agent``, ``chat``, ``execute_tool``, with the GenAI
``gen_ai.*`` attributes); this module decides whether it does, where they go, and how they meet
the BEAM side (docs/protocol.md sections 3 to 5):

- :func:`configure`, called once by the command at start, reads OpenTelemetry's own variables,
  installs the SDK's tracer (and meter) provider with its exporters and switches pydantic-ai's
  instrumentation on for every agent. With nothing configured it returns ``None`` having imported
  nothing; with the ``otel`` extra missing it says so and the node runs without tracing.
- :func:`joined` makes a run's spans children of the caller's span (its ``trace_context`` option).
- :func:`tool_trace_context` is the context of the ``execute_tool`` span a BEAM tool call runs
  under, as the text map sent with the call; ``[]`` when nothing records spans.
- :func:`observe_node` makes the node's own totals (``info``'s) OpenTelemetry metrics too, when
  :func:`configure` installed a metrics exporter (:mod:`pynode.bridge.otel_metrics`).

Only the OpenTelemetry API is imported here at module level (pydantic-ai depends on it); the SDK
and the exporters are the ``otel`` extra, imported by :func:`configure` when it has work to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from pynode.bridge.agents import RunLimits

__all__ = [
    "Tracing",
    "TracingPlan",
    "configure",
    "joined",
    "observe_node",
    "plan_from_env",
    "tool_trace_context",
]

log = logging.getLogger("pynode.tracing")

Exporter: TypeAlias = Literal["otlp", "console"]
"""An exporter this module sets up; ``otlp`` speaks OTLP over HTTP with protobuf bodies."""

_EXPORTERS: Final[tuple[Exporter, ...]] = ("otlp", "console")
_W3C: Final = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
"""The contract names the W3C headers (``traceparent``, ``tracestate``, ``baggage``), whatever
``OTEL_PROPAGATORS`` says: it is what ``:otel_propagator_text_map`` writes by default."""
_OTEL_EXTRA_HINT: Final = "pip install 'pynode[otel]'"


@dataclass(frozen=True, slots=True, kw_only=True)
class TracingPlan:
    """What the environment asks for; decided without importing the SDK."""

    traces: tuple[Exporter, ...] = ()
    """Span exporters; empty: no spans leave the node."""
    metrics: tuple[Exporter, ...] = ()
    """Metric exporters (pydantic-ai's token and cost histograms, the node's totals); empty: none."""
    problems: tuple[str, ...] = ()
    """Values the node cannot act on (an unknown exporter, another OTLP protocol), to be logged."""

    @property
    def wanted(self) -> bool:
        return bool(self.traces or self.metrics)


def plan_from_env(environ: Mapping[str, str]) -> TracingPlan:
    """The exporters the ``OTEL_*`` variables ask for.

    ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` name them (``otlp``, ``console``, ``none``;
    comma-separated). Unlike the SDK's own default (``otlp`` when unset), an unset variable means
    ``otlp`` only when an OTLP endpoint is set for that signal: a node started with nothing
    configured exports nothing and pays nothing. ``OTEL_SDK_DISABLED=true`` turns it all off.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingPlan()
    problems: list[str] = []
    traces = _exporters(environ, "traces", problems)
    metrics = _exporters(environ, "metrics", problems)
    return TracingPlan(traces=traces, metrics=metrics, problems=tuple(problems))


def _setting(environ: Mapping[str, str], pattern: str, signal: str) -> str:
    """A per-signal OTLP variable, else the general one (``..._TRACES_PROTOCOL``, then ``..._PROTOCOL``)."""
    return environ.get(pattern.format(signal.upper() + "_"), "") or environ.get(pattern.format(""), "")


def _exporters(environ: Mapping[str, str], signal: str, problems: list[str]) -> tuple[Exporter, ...]:
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    raw = environ.get(variable, "").strip()
    if raw:
        names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    else:
        names = ["otlp"] if _setting(environ, "OTEL_EXPORTER_OTLP_{}ENDPOINT", signal) else []
    if "none" in names:
        return ()
    chosen: list[Exporter] = []
    for name in names:
        exporter = next((e for e in _EXPORTERS if e == name or (e == "otlp" and name == "otlp_proto_http")), None)
        if exporter is None:
            problems.append(f"{variable}={raw}: the node has no exporter {name!r} (it has otlp, console, none)")
            continue
        protocol = _setting(environ, "OTEL_EXPORTER_OTLP_{}PROTOCOL", signal).strip().lower() or "http/protobuf"
        if exporter == "otlp" and protocol != "http/protobuf":
            problems.append(f"OTLP over {protocol} is not served (only http/protobuf): no {signal} exported by OTLP")
            continue
        if exporter not in chosen:
            chosen.append(exporter)
    return tuple(chosen)


@dataclass(kw_only=True)
class Tracing:
    """The providers :func:`configure` installed; :meth:`shutdown` exports what is left, once."""

    plan: TracingPlan
    include_content: bool
    providers: list[Any] = field(default_factory=list)
    """The SDK's tracer and meter providers (typed loosely: the SDK is an optional extra)."""

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocks up to their export timeout); for the end of the process."""
        providers, self.providers = self.providers, []
        for provider in providers:
            try:
                provider.shutdown()
            except Exception:
                log.warning("tracing: shutting down %s failed", type(provider).__name__, exc_info=True)

    def describe(self, environ: Mapping[str, str]) -> str:
        """One log line: where spans and metrics go, and whether prompts are in them."""
        traces = ", ".join(_where(e, "traces", environ) for e in self.plan.traces) or "none"
        metrics = ", ".join(_where(e, "metrics", environ) for e in self.plan.metrics) or "none"
        content = (
            "prompts and completions recorded (--trace-content)"
            if self.include_content
            else "prompts and completions left out (--trace-content records them)"
        )
        return f"tracing: spans to {traces}; metrics to {metrics}; {content}"


def _where(exporter: Exporter, signal: str, environ: Mapping[str, str]) -> str:
    if exporter == "console":
        return "the console (stderr)"
    own = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if own:
        return f"OTLP {own}"
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    return f"OTLP {base.rstrip('/')}/v1/{signal}"


def configure(*, include_content: bool, node_name: str, environ: Mapping[str, str] | None = None) -> Tracing | None:
    """Install OpenTelemetry as the ``OTEL_*`` variables ask, and instrument every pydantic-ai agent.

    ``None``, having imported nothing, when they ask for nothing; ``None`` with a warning when the
    ``otel`` extra is missing. ``include_content``: prompts, completions and tool arguments and
    results go into the spans (off by default: they may hold what users typed).
    """
    env = os.environ if environ is None else environ
    plan = plan_from_env(env)
    for problem in plan.problems:
        log.warning("tracing: %s", problem)
    if not plan.wanted:
        return None
    try:
        providers = _install(plan, node_name)
    except ImportError as exc:
        log.warning(
            "tracing: the OTEL_* variables ask for %s but %s is not installed (%s); the node runs without tracing",
            " and ".join(s for s, e in (("traces", plan.traces), ("metrics", plan.metrics)) if e),
            exc.name or "the OpenTelemetry SDK",
            _OTEL_EXTRA_HINT,
        )
        return None
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings

    # Built after the providers: the settings take their tracer and meter from the global ones.
    Agent.instrument_all(
        InstrumentationSettings(include_content=include_content, include_binary_content=include_content)
    )
    tracing = Tracing(plan=plan, include_content=include_content, providers=providers)
    log.info("%s", tracing.describe(env))
    return tracing


def _install(plan: TracingPlan, node_name: str) -> list[Any]:
    """The SDK's providers with the plan's exporters, set as the global ones; ``ImportError`` without the extra.

    Every import comes before any provider is made, so a missing package leaves nothing half set up.
    The batch span processor and the periodic metric reader each run a thread of the SDK's own.
    """
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    span_exporters: list[SpanExporter] = []
    metric_exporters: list[MetricExporter] = []
    if "otlp" in plan.traces:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporters.append(OTLPSpanExporter())
    if "otlp" in plan.metrics:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        metric_exporters.append(OTLPMetricExporter())
    if "console" in plan.traces:
        span_exporters.append(ConsoleSpanExporter(out=_stderr()))
    if "console" in plan.metrics:
        metric_exporters.append(ConsoleMetricExporter(out=_stderr()))
    resource = _resource(node_name)
    providers: list[Any] = []
    if span_exporters:
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for span_exporter in span_exporters:
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(tracer_provider)
        providers.append(tracer_provider)
    if metric_exporters:
        readers = [PeriodicExportingMetricReader(e) for e in metric_exporters]
        meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
        metrics.set_meter_provider(meter_provider)
        providers.append(meter_provider)
        global _meter_provider
        _meter_provider = meter_provider
    return providers


_meter_provider: Any = None
"""The meter provider :func:`configure` installed; ``None`` while the node exports no metrics."""
_observed: set[int] = set()


def observe_node(limits: RunLimits) -> bool:
    """The node's totals in ``limits`` as OpenTelemetry metrics, when metrics are exported; once per ``limits``.

    ``False``, having imported and made nothing, when :func:`configure` installed no metrics exporter.
    """
    if _meter_provider is None:
        return False
    if id(limits) not in _observed:
        from pynode.bridge.otel_metrics import instrument

        instrument(limits, _meter_provider)
        _observed.add(id(limits))
    return True


def _stderr() -> Any:
    # The console exporters write to stderr: the node's stdout carries its "ready" line to whoever started it.
    import sys

    return sys.stderr


def _resource(node_name: str) -> Any:
    """The SDK's resource over the node's defaults, under what ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` say: ``service.name`` ``pynode``, ``service.version`` the package's,
    ``service.instance.id`` the node's name (rather than the SDK's random one)."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    from pynode._version import __version__

    defaults = Resource({"service.name": "pynode", "service.version": __version__, "service.instance.id": node_name})
    return Resource.create().merge(defaults).merge(OTELResourceDetector().detect())


# --- the runs' side ---------------------------------------------------------------------------


_provider_seen = False


def _recording() -> bool:
    """Whether a real tracer provider is installed (ours, or one an agent module set up itself).

    A global provider is set at most once, so a ``True`` is kept; until then this is one lookup.
    """
    global _provider_seen
    if not _provider_seen:
        provider = trace.get_tracer_provider()
        _provider_seen = not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
    return _provider_seen


_NOT_JOINED: Final = contextlib.nullcontext()


def joined(text_map: Sequence[tuple[str, str]]) -> contextlib.AbstractContextManager[None]:
    """Within: the caller's trace context is the current one, so the run's spans are its children.

    No text map, or nothing recording spans: nothing is extracted (a shared do-nothing context).
    A text map with no valid ``traceparent`` leaves the run to start a trace of its own (the W3C
    propagator's rule).
    """
    if not text_map or not _recording():
        return _NOT_JOINED
    return _attached(_W3C.extract(dict(text_map)))


@contextlib.contextmanager
def _attached(context: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def tool_trace_context() -> list[tuple[str, str]]:
    """The current span's context (the ``execute_tool`` span of a tool call) as a W3C text map.

    ``traceparent`` first, then ``tracestate`` and ``baggage`` when there are any; ``[]`` when there
    is no span, which is every call when tracing is off.
    """
    if not trace.get_current_span().get_span_context().is_valid:
        return []
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return sorted(carrier.items(), key=_header_order)


_HEADER_ORDER: Final = {"traceparent": 0, "tracestate": 1, "baggage": 2}


def _header_order(item: tuple[str, str]) -> tuple[int, str]:
    return (_HEADER_ORDER.get(item[0], 3), item[0])
