"""OpenTelemetry traces across the distribution (docs/protocol.md sections 3 to 5), end to end.

The node runs as ``python -m pynode`` with OpenTelemetry's own variables pointing at an OTLP/HTTP
receiver the test starts on 127.0.0.1; an erl node creates the agents and makes the runs, with a
``traceparent`` the test chose, as ``:otel_propagator_text_map.inject([])`` would give it. What the
receiver decodes is what a collector would be sent.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import textwrap
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from agent_support import COUNT_TOOL, load_erlang
from beam import BeamFactory, BeamNode
from hostile_peer import PynodeChild
from otlp_receiver import ExportedPoint, ExportedSpan, OtlpReceiver

from pynode.etf import decode
from pynode.etf.types import Atom, Reference, Term
from pynode.testing.script import ScriptedModel, text, tool_call

pytestmark = pytest.mark.beam

A = Atom
NODE = "traced@127.0.0.1"
PROMPT = "Which zebra-prompt-4471 is in stock?"
INSTRUCTIONS = "Answer as kumquat-instructions-9902 would."
TOOL_ARG = "tool-argument-5318"
TOOL_ANSWER = "tool-answer-6604"
COMPLETION = "The walrus-completion-2207 is in stock."
SECRET_TEXTS = (PROMPT, "zebra-prompt", "kumquat-instructions", TOOL_ARG, TOOL_ANSWER, "walrus-completion")

TOOLS_ERL = """
-module(tr_tools).
-export([mf/2]).
%% An {M, F}/2 tool: tells the test process the trace context it was called with.
mf(_Args, #{trace_context := TC}) -> pynode_test ! {mf_ctx, TC}, {ok, #{<<"seen">> => true}}.
"""


def otel_env(receiver: OtlpReceiver, **more: str) -> dict[str, str]:
    """The test's environment without its own OTEL_* variables, exporting to ``receiver``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="shop-agents",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
    )
    env.update(more)
    return env


def traceparent() -> tuple[str, str, str]:
    """A caller's ``traceparent`` (sampled), with its trace id and span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def parse_traceparent(value: bytes) -> tuple[str, str, str]:
    version, trace_id, span_id, flags = value.decode().split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16, value
    return trace_id, span_id, flags


def by_operation(spans: list[ExportedSpan], operation: str) -> list[ExportedSpan]:
    return [s for s in spans if s.attributes.get("gen_ai.operation.name") == operation]


def ancestors(span: ExportedSpan, spans: list[ExportedSpan]) -> list[ExportedSpan]:
    """The span's parents, nearest first, as far as they were exported."""
    ids = {s.span_id: s for s in spans}
    chain = []
    while span.parent_span_id in ids:
        span = ids[span.parent_span_id]
        chain.append(span)
    return chain


def leaked(spans: list[ExportedSpan]) -> list[tuple[str, str]]:
    """(span, text) for every secret text found in any attribute or event of any span."""
    return [(s.name, t) for s in spans for t in s.texts() for secret in SECRET_TEXTS if secret in t]


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver.running() as running:
        yield running


async def started(beam: BeamFactory, tmp_path: Path) -> BeamNode:
    erl = await beam("e1")
    assert await erl.eval(f"net_adm:ping('{NODE}')") == "pong"
    await load_erlang(erl, tmp_path, TOOLS_ERL, "tr_tools")
    return erl


async def create(erl: BeamNode, name: str, spec: Mapping[str, Any]) -> None:
    got = await erl.call(("pynode", NODE), (A("create_agent"), A(name), {A(k): v for k, v in spec.items()}))
    assert got == (A("ok"), A(name)), got


def tool(name: str, handler: Term = None) -> dict[Atom, Term]:
    spec: dict[Atom, Term] = {
        A("name"): name,
        A("description"): f"the {name} tool",
        A("parameters"): {"type": "object", "properties": {"q": {}}},
    }
    if handler is not None:
        spec[A("handler")] = handler
    return spec


def agents_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir(exist_ok=True)
    return folder


async def test_a_run_joins_the_callers_trace_with_gen_ai_attributes_and_no_prompt_text(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = otel_env(receiver)
    async with PynodeChild.running(NODE, cookie, epmd_port, agents_dir(tmp_path), env=env) as node:
        assert node.lines("tracing: spans to OTLP " + receiver.endpoint + "/v1/traces"), node.log
        erl = await started(beam, tmp_path)
        await create(erl, "shop", {"model": "test", "instructions": INSTRUCTIONS})
        parent, trace_id, caller_span = traceparent()
        context = [(b"traceparent", parent.encode()), (b"tracestate", b"shop=t61rcWkgMzE")]
        got = await erl.call(("shop", NODE), (A("run"), PROMPT, {A("trace_context"): context}), timeout=30)
        assert isinstance(got, tuple) and got[0] == A("ok"), got
        usage = got[1][A("usage")]
        await receiver.wait_for(lambda: bool(by_operation(receiver.trace(trace_id), "invoke_agent")))
    spans = receiver.trace(trace_id)
    (run,) = by_operation(spans, "invoke_agent")
    (chat,) = by_operation(spans, "chat")
    # The run is the caller's child, the model request the run's; the caller's tracestate goes along.
    assert run.parent_span_id == caller_span
    assert chat.parent_span_id == run.span_id or run in ancestors(chat, spans)
    assert run.trace_state == chat.trace_state == "shop=t61rcWkgMzE"
    assert run.attributes["gen_ai.agent.name"] == "shop"
    assert run.attributes["gen_ai.agent.call.id"] == got[1][A("run_id")].decode()
    assert chat.attributes["gen_ai.request.model"] == "test"
    # What it cost: the model request's tokens, the run's total, as the Result reports them.
    assert chat.attributes["gen_ai.usage.input_tokens"] == usage[A("input_tokens")] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] == usage[A("output_tokens")] > 0
    assert run.attributes["gen_ai.aggregated_usage.input_tokens"] == usage[A("input_tokens")]
    assert run.scope == "pydantic-ai"
    assert run.resource["service.name"] == "shop-agents"  # OTEL_SERVICE_NAME
    assert run.resource["deployment.environment"] == "test"  # OTEL_RESOURCE_ATTRIBUTES
    assert run.resource["service.instance.id"] == NODE
    # Prompts, instructions and completions stay out of every span without --trace-content.
    assert leaked(receiver.spans) == []


async def test_tool_calls_carry_the_context_of_their_execute_tool_span(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = otel_env(receiver)
    async with PynodeChild.running(NODE, cookie, epmd_port, agents_dir(tmp_path), env=env):
        erl = await started(beam, tmp_path)
        script = await ScriptedModel.start(
            erl, [[tool_call("ask", {"q": TOOL_ARG}, "c1"), tool_call("mf", {"q": 2}, "c2")], text(COMPLETION)]
        )
        await create(
            erl, "tooled", {"model": script.model, "tools": [tool("ask"), tool("mf", (A("tr_tools"), A("mf")))]}
        )
        parent, trace_id, caller_span = traceparent()
        options = {A("trace_context"): [(b"traceparent", parent.encode())], A("events"): False}
        started_run = await erl.call(("tooled", NODE), (A("start_run"), PROMPT, options))
        assert isinstance(started_run, tuple) and started_run[0] == A("ok"), started_run
        ref = started_run[1]

        def tagged(tag: str) -> Any:
            return lambda m: type(m) is tuple and m[0] == A(tag) and (tag == "mf_ctx" or m[1] == ref)

        (_, _, call) = await erl.receive(timeout=20, match=tagged("pynode_tool_call"))
        # Which tool failed: the handler's {error, Msg} marks its span, and the message stays out of it.
        failure = (A("error"), f"no {TOOL_ANSWER} left")
        await erl.send(call[A("reply_to")], (A("tool_result"), call[A("call_id")], failure))
        (_, mf_context) = await erl.receive(timeout=20, match=tagged("mf_ctx"))
        (_, _, result) = await erl.receive(timeout=20, match=tagged("pynode_result"))
        assert result[0] == A("ok"), result
        await receiver.wait_for(lambda: bool(by_operation(receiver.trace(trace_id), "invoke_agent")))
    spans = receiver.trace(trace_id)
    (run,) = by_operation(spans, "invoke_agent")
    assert run.parent_span_id == caller_span
    tool_spans = {s.attributes["gen_ai.tool.name"]: s for s in by_operation(spans, "execute_tool")}
    for name, context in (("ask", call[A("trace_context")]), ("mf", mf_context)):
        assert [key for key, _ in context] == [b"traceparent", b"baggage"], context
        sent_trace, sent_span, flags = parse_traceparent(dict(context)[b"traceparent"])
        assert (sent_trace, flags) == (trace_id, "01")
        # The span id sent is the tool's own execute_tool span, under the run, under the caller.
        assert sent_span == tool_spans[name].span_id, (name, sent_span, tool_spans)
        assert run in ancestors(tool_spans[name], spans)
        assert b"gen_ai.agent.name=tooled" in dict(context)[b"baggage"]
    assert (tool_spans["ask"].status, tool_spans["mf"].status) == ("error", "unset")
    assert leaked(receiver.spans) == []


async def test_a_run_without_trace_context_starts_its_own_trace_and_a_stop_exports_what_is_left(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    # Nothing would leave on its own before a minute: the spans and metrics arrive because the node stops.
    env = otel_env(
        receiver, OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_METRICS_EXPORTER="otlp", OTEL_METRIC_EXPORT_INTERVAL="60000"
    )
    async with PynodeChild.running(NODE, cookie, epmd_port, agents_dir(tmp_path), env=env) as node:
        erl = await started(beam, tmp_path)
        await create(erl, "own", {"model": "test", "tools": [tool("mf", (A("tr_tools"), A("mf")))]})
        got = await erl.call(("own", NODE), (A("run"), "hello", {}), timeout=30)
        assert isinstance(got, tuple) and got[0] == A("ok"), got
        (_, mf_context) = await erl.receive(timeout=20, match=lambda m: type(m) is tuple and m[0] == A("mf_ctx"))
        assert receiver.spans == []
        node.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(node.proc.wait(), 30) == 0
    assert receiver.posts.keys() == {"/v1/traces", "/v1/metrics"}
    assert "gen_ai.client.token.usage" in receiver.metrics  # pydantic-ai's token histogram
    (run,) = by_operation(receiver.spans, "invoke_agent")
    assert run.parent_span_id == ""  # a root span: a trace of its own
    assert run.attributes["gen_ai.agent.name"] == "own"
    sent_trace, sent_span, _ = parse_traceparent(dict(mf_context)[b"traceparent"])
    assert sent_trace == run.trace_id
    (tool_span,) = by_operation(receiver.trace(run.trace_id), "execute_tool")
    assert tool_span.span_id == sent_span


async def test_trace_content_records_prompts_and_a_map_is_a_trace_context_too(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = otel_env(receiver)
    async with PynodeChild.running(NODE, cookie, epmd_port, agents_dir(tmp_path), "--trace-content", env=env) as node:
        assert node.lines("prompts and completions recorded (--trace-content)"), node.log
        erl = await started(beam, tmp_path)
        await create(erl, "open", {"model": "test"})
        parent, trace_id, caller_span = traceparent()
        options = {A("trace_context"): {b"traceparent": parent.encode()}}
        got = await erl.call(("open", NODE), (A("run"), PROMPT, options), timeout=30)
        assert isinstance(got, tuple) and got[0] == A("ok"), got
        await receiver.wait_for(lambda: bool(by_operation(receiver.trace(trace_id), "invoke_agent")))
    spans = receiver.trace(trace_id)
    (run,) = by_operation(spans, "invoke_agent")
    assert run.parent_span_id == caller_span
    (chat,) = by_operation(spans, "chat")
    assert PROMPT in chat.attributes["gen_ai.input.messages"]


BLOCK_SDK = textwrap.dedent("""\
    # The test's stand-in for a machine without the 'otel' extra: its packages cannot be imported.
    import sys

    class _NoOtelExtra:
        def find_spec(self, name, path=None, target=None):
            if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoOtelExtra())
    """)


async def test_without_the_otel_extra_the_node_says_so_and_serves(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_SDK)
    env = otel_env(receiver, PYTHONPATH=str(site))
    async with PynodeChild.running(NODE, cookie, epmd_port, agents_dir(tmp_path), env=env) as node:
        (warning,) = node.lines("tracing: the OTEL_* variables ask for traces but")
        assert "pip install 'pynode[otel]'" in warning and "the node runs without tracing" in warning
        erl = await started(beam, tmp_path)
        await create(erl, "plain", {"model": "test", "tools": [tool("mf", (A("tr_tools"), A("mf")))]})
        parent, _, _ = traceparent()
        got = await erl.call(("plain", NODE), (A("run"), PROMPT, {A("trace_context"): [(b"traceparent", parent)]}))
        assert isinstance(got, tuple) and got[0] == A("ok"), got
        (_, mf_context) = await erl.receive(timeout=20, match=lambda m: type(m) is tuple and m[0] == A("mf_ctx"))
        assert mf_context == []  # no span: nothing to carry
    assert receiver.posts == {}


SLEEPY = 'fun(_, _) -> timer:sleep(3000), <<"late">> end'
"""A model turn that answers only after the run waiting for it was cancelled."""


def runs_by_outcome(points: list[ExportedPoint]) -> dict[Term, Term]:
    """``pynode.runs`` as ``info`` has it: ``#{ok => N, error => #{Kind => N}}``."""
    errors: dict[Term, Term] = {}
    ok = 0
    for point in points:
        if point.attributes["outcome"] == "ok":
            ok += int(point.value)
        else:
            errors[A(point.attributes["error.type"])] = int(point.value)
    return {A("ok"): ok, A("error"): errors}


def single(receiver: OtlpReceiver, name: str) -> float | None:
    points = receiver.latest(name)
    return points[0].value if len(points) == 1 else None


async def test_info_totals_are_opentelemetry_metrics_when_a_metrics_exporter_is_configured(
    beam: BeamFactory, epmd_port: int, cookie: str, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = otel_env(receiver, OTEL_METRICS_EXPORTER="otlp", OTEL_METRIC_EXPORT_INTERVAL="200")
    async with PynodeChild.running(NODE, cookie, epmd_port, agents_dir(tmp_path), env=env) as node:
        assert node.lines("metrics to OTLP " + receiver.endpoint + "/v1/metrics"), node.log
        erl = await started(beam, tmp_path)
        await create(erl, "metered", {"model": "test", "tools": [COUNT_TOOL]})
        await create(erl, "idle", {"model": "test"})

        async def run(turns: list[Term], **opts: Term) -> Term:
            script = await ScriptedModel.start(erl, turns)
            options: dict[Term, Term] = {A("model"): script.model, **{A(k): v for k, v in opts.items()}}
            return await erl.call(("metered", NODE), (A("run"), "how many?", options), timeout=30)

        async def info() -> dict[Term, Term]:
            got = await erl.call(("pynode", NODE), A("info"))
            assert type(got) is tuple and got[0] == A("ok") and isinstance(got[1], dict), got
            return got[1]

        # Two runs that end ok (one with a tool call), one whose model fails after its tool call.
        for turns in ([tool_call("count", {"a": 1, "b": 2}), text("two")], [text("hi")]):
            reply = await run(turns)
            assert type(reply) is tuple and reply[0] == A("ok"), reply
        failed = await run([tool_call("count", {"a": 1})])
        assert type(failed) is tuple and failed[1][0] == A("model_error"), failed  # type: ignore[index]

        # A run in flight is its agent's in pynode.runs.in_flight until it is cancelled.
        script = await ScriptedModel.start(erl, [decode(await erl.eval_term(SLEEPY))])
        begun = await erl.call(
            ("metered", NODE), (A("start_run"), "wait", {A("model"): script.model, A("events"): False})
        )
        assert type(begun) is tuple and begun[0] == A("ok") and isinstance(begun[1], Reference), begun
        in_flight = {"metered": 1.0, "idle": 0.0}
        await receiver.wait_for(
            lambda: {p.attributes["agent"]: p.value for p in receiver.latest("pynode.runs.in_flight")} == in_flight,
            what="one run in flight",
        )
        assert await erl.call(("metered", NODE), (A("cancel"), begun[1])) == A("ok")
        await erl.receive(timeout=10, match=lambda m: type(m) is tuple and m[:2] == (A("pynode_result"), begun[1]))

        totals = await info()
        assert totals[A("runs_ended")] == {A("ok"): 2, A("error"): {A("cancelled"): 1, A("model_error"): 1}}
        usage = totals[A("usage")]
        assert isinstance(usage, dict)

        def caught_up() -> bool:
            durations = receiver.latest("pynode.run.duration")
            return (
                runs_by_outcome(receiver.latest("pynode.runs")) == totals[A("runs_ended")]
                and sum(p.count for p in durations) == 4
                and single(receiver, "pynode.usage.requests") == usage[A("requests")]
                and single(receiver, "pynode.usage.tool_calls") == usage[A("tool_calls")]
                and all(p.value == 0 for p in receiver.latest("pynode.runs.in_flight"))
            )

        await receiver.wait_for(caught_up, what="metrics equal to info's")
    runs = receiver.latest("pynode.runs")
    assert {p.unit for p in runs} == {"{run}"} and all(p.kind == "sum" and p.monotonic and p.cumulative for p in runs)
    # outcome, error.type for an error, and agent once the run's end names it (always this agent here).
    assert {tuple(sorted(set(p.attributes) - {"agent"})) for p in runs} == {("outcome",), ("error.type", "outcome")}
    assert {p.attributes.get("agent", "metered") for p in runs} == {"metered"}
    (flight,) = {(p.unit, p.kind, p.monotonic) for p in receiver.latest("pynode.runs.in_flight")}
    assert flight == ("{run}", "sum", False)  # an up-down counter
    durations = {
        p.attributes.get("error.type", p.attributes["outcome"]): p for p in receiver.latest("pynode.run.duration")
    }
    assert {k: p.count for k, p in durations.items()} == {"ok": 2, "model_error": 1, "cancelled": 1}
    assert all(p.unit == "s" and p.kind == "histogram" and p.bounds[0] == 0.005 for p in durations.values())
    assert 0 < durations["ok"].value < 30  # seconds, not milliseconds
    assert usage[A("tool_calls")] == 2 and usage[A("requests")] == 4  # type: ignore[index]
    # Tokens stay pydantic-ai's own histogram; the node does not export them a second time.
    assert "gen_ai.client.token.usage" in receiver.metrics
    assert not any("token" in name for name in receiver.metrics if name.startswith("pynode."))
