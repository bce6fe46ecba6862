"""What the OTEL_* variables switch on (pynode.bridge.tracing), decided without the SDK or a node.

The end-to-end behaviour, spans exported to a receiver from runs made on a BEAM node, is in
tests/test_tracing_beam.py. This process never installs a tracer provider: what is checked here
is the node with tracing off.
"""

from __future__ import annotations

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

from pynode.bridge.agents import RunLimits
from pynode.bridge.tracing import TracingPlan, configure, joined, observe_node, plan_from_env, tool_trace_context

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("env", "traces", "metrics"),
    [
        ({}, (), ()),
        ({"OTEL_SERVICE_NAME": "shop", "OTEL_RESOURCE_ATTRIBUTES": "a=b"}, (), ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",), ()),
        ({"OTEL_TRACES_EXPORTER": "otlp_proto_http,console"}, ("otlp", "console"), ()),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, (), ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("otlp",), ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",), ()),
        ({"OTEL_METRICS_EXPORTER": "console", "OTEL_TRACES_EXPORTER": " OTLP "}, ("otlp",), ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, (), ()),
    ],
)
def test_the_variables_choose_the_exporters(
    env: dict[str, str], traces: tuple[str, ...], metrics: tuple[str, ...]
) -> None:
    plan = plan_from_env(env)
    assert (plan.traces, plan.metrics, plan.problems) == (traces, metrics, ())
    assert plan.wanted == bool(traces or metrics)


def test_what_the_node_cannot_export_is_named() -> None:
    plan = plan_from_env({"OTEL_TRACES_EXPORTER": "zipkin,otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert plan == TracingPlan(
        problems=(
            "OTEL_TRACES_EXPORTER=zipkin,otlp: the node has no exporter 'zipkin' (it has otlp, console, none)",
            "OTLP over grpc is not served (only http/protobuf): no traces exported by OTLP",
        )
    )
    per_signal = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    per_signal["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
    assert plan_from_env(per_signal).traces == ("otlp",)


def test_nothing_configured_configures_nothing() -> None:
    assert configure(include_content=False, node_name="py@127.0.0.1", environ={}) is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_with_tracing_off_a_run_extracts_nothing_and_tools_get_an_empty_context() -> None:
    before = otel_context.get_current()
    with joined((("traceparent", TRACEPARENT),)):
        assert otel_context.get_current() == before
        assert not trace.get_current_span().get_span_context().is_valid
        assert tool_trace_context() == []


def test_a_tool_call_carries_the_current_span_traceparent_first() -> None:
    from opentelemetry import baggage
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")  # never the global one: this process stays untraced
    parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(
                0x0AF7651916CD43DD8448EB211C80319C,
                0xB7AD6B7169203331,
                is_remote=True,
                trace_flags=trace.TraceFlags(1),
                trace_state=trace.TraceState([("rojo", "00f067aa0ba902b7")]),
            )
        ),
        baggage.set_baggage("tenant", "acme"),
    )
    token = otel_context.attach(parent)
    try:
        with tracer.start_as_current_span("execute_tool lookup") as span:
            sent = tool_trace_context()
    finally:
        otel_context.detach(token)
    span_id = format(span.get_span_context().span_id, "016x")
    assert sent == [
        ("traceparent", f"00-0af7651916cd43dd8448eb211c80319c-{span_id}-01"),
        ("tracestate", "rojo=00f067aa0ba902b7"),
        ("baggage", "tenant=acme"),
    ]


def test_without_a_metrics_exporter_the_node_makes_no_instruments() -> None:
    limits = RunLimits(max_runs=10)
    assert observe_node(limits) is False
    assert limits.metrics.listeners == []


def test_the_node_instruments_read_the_totals_info_returns() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from pynode.bridge.otel_metrics import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])  # never the global one
    limits = RunLimits(max_runs=10)
    instrument(limits, provider)
    totals = limits.metrics
    totals.run_ended("ok", None, 0.25, agent="shop")
    totals.run_ended("ok", None, 0.5)
    totals.run_ended("timeout", None, 2.0, agent="shop")
    data = reader.get_metrics_data()
    assert data is not None
    found = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    # No agent, no point of pynode.runs.in_flight (the test of a real node sees it by agent).
    assert {n: found[n].unit for n in found} == {
        "pynode.runs": "{run}",
        "pynode.usage.requests": "{request}",
        "pynode.usage.tool_calls": "{call}",
        "pynode.run.duration": "s",
    }
    runs = {tuple(sorted(p.attributes.items())): p.value for p in found["pynode.runs"].data.data_points}
    assert runs == {
        (("agent", "shop"), ("outcome", "ok")): 1,
        (("outcome", "ok"),): 1,  # a run whose agent was not named
        (("agent", "shop"), ("error.type", "timeout"), ("outcome", "error")): 1,
    }
    durations = {tuple(sorted(p.attributes.items())): p for p in found["pynode.run.duration"].data.data_points}
    assert durations[(("agent", "shop"), ("error.type", "timeout"), ("outcome", "error"))].sum == 2.0
    assert sum(p.count for p in durations.values()) == 3
    provider.shutdown()
