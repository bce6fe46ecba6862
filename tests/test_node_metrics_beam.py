"""The registry's ``info`` counts what the node did since it started (docs/protocol.md section 3).

Runs are scripted from an erl node (``{function, Fun}`` models), so every outcome is chosen and
every token count is pydantic-ai's own, as the run's Result reports it.
"""

from __future__ import annotations

import base64

import pytest
from agent_support import COUNT_TOOL, eventually
from beam import BeamNode

from pynode.bridge.metrics import NodeMetrics, RecentDurations, percentile
from pynode.etf import decode
from pynode.etf.encode import encode
from pynode.etf.types import Atom, Reference, Term
from pynode.node import Node
from pynode.testing.fake_provider import FakeProvider, Turn
from pynode.testing.script import ScriptedModel, text, tool_call

A = Atom
PY = "'py@127.0.0.1'"
AGENT = ("metered", "py@127.0.0.1")
REGISTRY = ("pynode", "py@127.0.0.1")
SLEEPY = 'fun(_, _) -> timer:sleep(3000), <<"late">> end'
"""A model turn that answers only after every test here has stopped waiting for it."""
NIL = A("nil")


async def info(erl: BeamNode) -> dict[Term, Term]:
    got = await erl.call(REGISTRY, A("info"))
    assert type(got) is tuple and got[0] == A("ok"), got
    assert isinstance(got[1], dict)
    return got[1]


async def run(erl: BeamNode, turns: list[Term], prompt: str, **opts: Term) -> Term:
    script = await ScriptedModel.start(erl, turns)
    options: dict[Term, Term] = {A("model"): script.model, A("messages_as"): A("terms")}
    options.update({A(k): v for k, v in opts.items()})
    return await erl.call(AGENT, (A("run"), prompt, options), timeout=20)


def usage_of(reply: Term) -> dict[Term, Term]:
    assert type(reply) is tuple and reply[0] == A("ok"), reply
    usage = reply[1][A("usage")]  # type: ignore[index]
    assert isinstance(usage, dict)
    return usage


def first_response_usage(reply: Term) -> tuple[int, int]:
    """The tokens of the first model response of a Result (``messages_as => terms``)."""
    messages = reply[1][A("messages")]  # type: ignore[index]
    assert isinstance(messages, list)
    first = next(m for m in messages if m[b"kind"] == b"response")
    return first[b"usage"][b"input_tokens"], first[b"usage"][b"output_tokens"]


def error_kind(reply: Term) -> Term:
    assert type(reply) is tuple and reply[0] == A("error"), reply
    return reply[1][0]  # type: ignore[index]


def term_expr(term: Term) -> str:
    """Erlang source for ``term``, decoded on the BEAM from its external format."""
    return f'binary_to_term(base64:decode(<<"{base64.b64encode(encode(term)).decode()}">>))'


@pytest.mark.beam
async def test_info_counts_outcomes_usage_tool_calls_runs_in_flight_and_durations(erl: BeamNode, py_node: Node) -> None:
    created = await erl.call(
        REGISTRY, (A("create_agent"), A("metered"), {A("model"): "test", A("tools"): [COUNT_TOOL]})
    )
    assert created == (A("ok"), A("metered"))
    before = await info(erl)
    assert before[A("runs_ended")] == {A("ok"): 0, A("error"): {}}
    assert before[A("usage")] == {
        A("requests"): 0,
        A("input_tokens"): 0,
        A("output_tokens"): 0,
        A("tool_calls"): 0,
        A("cost"): NIL,
    }
    assert before[A("agent_runs")] == {A("metered"): 0}
    assert before[A("run_duration_ms")] == {A("runs"): 0, A("p50"): NIL, A("p99"): NIL}

    # Three runs that end ok: one tool call, none, two at once.
    asked = await run(erl, [tool_call("count", {"a": 1, "b": 2}), text("two")], "how many?")
    said = await run(erl, [text("hi")], "hello")
    both = await run(
        erl, [[tool_call("count", {"a": 1}), tool_call("count", {"a": 1, "b": 2})], text("done")], "count twice"
    )
    ok_usages = [usage_of(reply) for reply in (asked, said, both)]
    assert [u[A("tool_calls")] for u in ok_usages] == [1, 0, 2]

    # A run whose model fails after a first tool call (the script has no second turn: its fun
    # raises), and one that times out waiting for its second answer. Both spent what the first
    # request of `asked` spent (the same prompt and first answer): that counts too.
    failed = await run(erl, [tool_call("count", {"a": 1, "b": 2})], "how many?")
    assert error_kind(failed) == A("model_error")
    timed_out = await run(
        erl, [tool_call("count", {"a": 1, "b": 2}), decode(await erl.eval_term(SLEEPY))], "how many?", timeout=300
    )
    assert error_kind(timed_out) == A("timeout")
    partial_in, partial_out = first_response_usage(asked)

    # A run in flight (counted from the moment start_run answers) is its agent's until it is cancelled.
    script = await ScriptedModel.start(erl, [decode(await erl.eval_term(SLEEPY))])
    started = await erl.call(AGENT, (A("start_run"), "wait", {A("model"): script.model, A("events"): False}))
    assert type(started) is tuple and started[0] == A("ok"), started
    ref = started[1]
    assert isinstance(ref, Reference)
    during = await info(erl)
    assert during[A("agent_runs")] == {A("metered"): 1} and during[A("runs")] == 1
    assert await erl.call(AGENT, (A("cancel"), ref)) == A("ok")
    result = await erl.receive(timeout=10, match=lambda m: type(m) is tuple and m[:2] == (A("pynode_result"), ref))
    assert error_kind(result[2]) == A("cancelled")  # type: ignore[index]

    after = await info(erl)
    assert after[A("runs_ended")] == {
        A("ok"): 3,
        A("error"): {A("cancelled"): 1, A("model_error"): 1, A("timeout"): 1},
    }
    assert after[A("usage")] == {
        A("requests"): sum(u[A("requests")] for u in ok_usages) + 2,  # type: ignore[misc]
        A("input_tokens"): sum(u[A("input_tokens")] for u in ok_usages) + 2 * partial_in,  # type: ignore[misc]
        A("output_tokens"): sum(u[A("output_tokens")] for u in ok_usages) + 2 * partial_out,  # type: ignore[misc]
        A("tool_calls"): 3 + 2,
        A("cost"): NIL,  # a function model has no price
    }
    assert after[A("agent_runs")] == {A("metered"): 0} and after[A("runs")] == 0
    durations = after[A("run_duration_ms")]
    assert isinstance(durations, dict) and durations[A("runs")] == 6
    p50, p99 = durations[A("p50")], durations[A("p99")]
    assert isinstance(p50, float) and isinstance(p99, float)
    # Six runs: p50 is the third fastest, p99 the slowest: the one that timed out after 300 ms.
    assert 0 < p50 < 300 <= p99 < 5000

    # The totals live in the node's run table: a killed registry's successor goes on from them.
    old = py_node.whereis("pynode")
    assert old is not None
    await erl.eval(f"exit({term_expr(old)}, kill)")
    await eventually(lambda: py_node.whereis("pynode") not in (None, old), what="the registry back")
    restarted = await info(erl)
    for key in ("runs_ended", "usage", "agent_runs"):
        assert restarted[A(key)] == after[A(key)], key
    assert restarted[A("run_duration_ms")][A("runs")] == 6  # type: ignore[index]


@pytest.mark.beam
@pytest.mark.model_requests
async def test_info_sums_the_cost_pydantic_ai_gives_a_priced_model(
    erl: BeamNode, py_node: Node, fake_openai: FakeProvider
) -> None:
    # gpt-4o as genai-prices (bundled with pydantic-ai) prices it: $2.50 a million tokens in, $10 out.
    model = {
        A("provider"): A("openai"),
        A("name"): "gpt-4o",
        A("base_url"): fake_openai.openai_url,
        A("api"): A("chat"),
        A("api_key"): "sk-test",
    }
    created = await erl.call(REGISTRY, (A("create_agent"), A("priced"), {A("model"): model}))
    assert created == (A("ok"), A("priced"))
    fake_openai.script(
        Turn(text="one", input_tokens=1000, output_tokens=500), Turn(text="two", input_tokens=3000, output_tokens=0)
    )
    for prompt in ("first", "second"):
        reply = await erl.call(("priced", "py@127.0.0.1"), (A("run"), prompt))
        assert type(reply) is tuple and reply[0] == A("ok"), reply
    usage = (await info(erl))[A("usage")]
    assert usage == {
        A("requests"): 2,
        A("input_tokens"): 4000,
        A("output_tokens"): 500,
        A("tool_calls"): 0,
        A("cost"): pytest.approx(0.0075 + 0.0075),
    }


# -- the counting itself, without a node ------------------------------------------------------


def test_durations_cover_the_last_minute_and_keep_a_bounded_number() -> None:
    recent = RecentDurations(window=60.0, limit=5)
    for second in range(8):
        recent.add(float(second), now=100.0 + second)
    assert recent.recent(now=107.0) == [3.0, 4.0, 5.0, 6.0, 7.0]  # only the newest five are kept
    assert recent.recent(now=164.5) == [5.0, 6.0, 7.0]  # those that ended in the last 60 s
    assert recent.recent(now=1000.0) == []


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (50.0, 99.0)
    assert (percentile([7.0], 0.5), percentile([7.0], 0.99)) == (7.0, 7.0)
    assert (percentile([1.0, 2.0], 0.5), percentile([1.0, 2.0], 0.99)) == (1.0, 2.0)


def test_metrics_terms() -> None:
    metrics = NodeMetrics()
    metrics.run_ended("ok", None, 0.010, now=10.0)
    metrics.run_ended("timeout", None, 0.300, now=10.5)
    metrics.run_ended("timeout", None, 0.300, now=11.0)
    assert metrics.outcomes_term() == {A("ok"): 1, A("error"): {A("timeout"): 2}}
    assert metrics.durations_term(now=11.0) == {A("runs"): 3, A("p50"): 300.0, A("p99"): 300.0}
    assert metrics.durations_term(now=70.7) == {A("runs"): 1, A("p50"): 300.0, A("p99"): 300.0}
