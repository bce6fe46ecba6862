"""Tools that wait for a person (docs/protocol.md sections 3, 4 and 5): ``requires_approval``,
the run's ``approver``, ``approvals`` to resume a deferred run, and the approval events.

A scripted model makes the calls with exact arguments; the erl test process is the run's caller,
so by default it is the approver, and it answers ``{approval, CallId, Decision}`` itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_support import term
from beam import BeamFactory, BeamNode

from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.testing import running_pynode
from pynode.testing.script import ScriptedModel, text, tool_call

pytestmark = pytest.mark.beam

A = Atom
AGENT = ("gate", "py@127.0.0.1")
REGISTRY = ("pynode", "py@127.0.0.1")
COUNT = {
    A("name"): "count",
    A("description"): "Count the keys",
    A("parameters"): {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    A("handler"): (A("maps"), A("size")),
    A("requires_approval"): True,
}


async def create(erl: BeamNode, model: Term) -> None:
    spec = {A("model"): model, A("tools"): [COUNT]}
    got = await erl.call(REGISTRY, (A("create_agent"), A("gate"), spec, {A("if_exists"): A("replace")}))
    assert got == (A("ok"), A("gate"))


def parts(messages: Term, kind: bytes) -> list[dict[bytes, Term]]:
    assert isinstance(messages, list)
    return [p for m in messages if isinstance(m, dict) for p in m[b"parts"] if p[b"part_kind"] == kind]  # type: ignore[union-attr]


async def start(erl: BeamNode, opts: dict[Term, Term] | None = None, prompt: str = "count") -> Reference:
    started = await erl.call(AGENT, (A("start_run"), prompt, opts or {}))
    assert isinstance(started, tuple) and started[0] == A("ok"), started
    ref = started[1]
    assert isinstance(ref, Reference)
    return ref


async def request_for(erl: BeamNode, ref: Reference) -> dict[Term, Term]:
    message = await erl.receive(
        timeout=10, match=lambda m: type(m) is tuple and m[0] == A("pynode_approval") and m[1] == ref
    )
    assert isinstance(message, tuple)
    request = message[2]
    assert isinstance(request, dict)
    return request


async def result_of(erl: BeamNode, ref: Reference) -> dict[Term, Term]:
    message = await erl.receive(
        timeout=10, match=lambda m: type(m) is tuple and m[0] == A("pynode_result") and m[1] == ref
    )
    assert isinstance(message, tuple) and message[2][0] == A("ok"), message  # type: ignore[index]
    result = message[2][1]  # type: ignore[index]
    assert isinstance(result, dict)
    return result


async def events_of(erl: BeamNode, ref: Reference) -> list[Term]:
    """The run's events that are still in the mailbox (read after its result came)."""
    events: list[Term] = []
    while True:
        try:
            message = await erl.receive(
                timeout=0.2, match=lambda m: type(m) is tuple and m[0] == A("pynode_event") and m[1] == ref
            )
        except TimeoutError:
            return events
        assert isinstance(message, tuple)
        events.append(message[2])


async def test_an_approved_call_runs_and_the_events_say_so(erl: BeamNode) -> None:
    script = await ScriptedModel.start(erl, [tool_call("count", {"a": 1, "b": 2}, "c1"), text("two")])
    await create(erl, script.model)
    ref = await start(erl, {A("messages_as"): A("terms")})
    request = await request_for(erl, ref)
    call_id = request[A("call_id")]
    assert isinstance(call_id, bytes) and call_id.startswith(b"c1.")
    assert (request[A("name")], request[A("args")]) == (b"count", {b"a": 1, b"b": 2})
    assert isinstance(request[A("reply_to")], Pid)
    assert len(await script.requests()) == 1  # nothing runs before the decision
    await erl.send(request[A("reply_to")], (A("approval"), call_id, A("approve")))
    result = await result_of(erl, ref)
    assert result[A("output")] == b"two" and A("deferred") not in result
    _, second = await script.requests()
    assert [(p[b"tool_name"], p[b"content"]) for p in parts(second.messages, b"tool-return")] == [(b"count", 2)]
    events = await events_of(erl, ref)
    assert (A("approval_required"), b"count", {b"a": 1, b"b": 2}, call_id) in events
    assert (A("approval"), call_id, A("approve")) in events
    assert events.index((A("approval"), call_id, A("approve"))) > events.index(
        (A("approval_required"), b"count", {b"a": 1, b"b": 2}, call_id)
    )


async def test_approve_with_new_arguments_valid_or_not(erl: BeamNode) -> None:
    script = await ScriptedModel.start(
        erl,
        [
            tool_call("count", {"a": 1, "b": 2}, "c1"),
            tool_call("count", {"a": 1}, "c2"),
            text("done"),
        ],
    )
    await create(erl, script.model)
    ref = await start(erl)
    request = await request_for(erl, ref)
    # As a call to the agent this time: the agent forwards it to the run.
    decided = await erl.call(AGENT, (A("approval"), request[A("call_id")], (A("approve"), {A("a"): 5})))
    assert decided == A("ok")
    request = await request_for(erl, ref)
    # New arguments that break the tool's parameters: the model is told, as for its own bad arguments.
    await erl.send(AGENT, (A("approval"), request[A("call_id")], (A("approve"), {A("a"): "five"})))
    result = await result_of(erl, ref)
    assert result[A("output")] == b"done"
    _, second, third = await script.requests()
    assert [p[b"content"] for p in parts(second.messages, b"tool-return")] == [1]  # maps:size(#{a => 5})
    (retry,) = [p for p in parts(third.messages, b"tool-return") if p[b"tool_call_id"] == b"c2"]
    assert retry[b"outcome"] == b"retried", retry
    assert b"'five' is not of type 'integer'" in retry[b"content"], retry  # type: ignore[operator]


async def test_deny_with_a_message_and_a_decision_not_understood(erl: BeamNode) -> None:
    script = await ScriptedModel.start(
        erl,
        [tool_call("count", {"a": 1}, "c1"), tool_call("count", {"a": 2}, "c2"), text("ok")],
    )
    await create(erl, script.model)
    ref = await start(erl)
    request = await request_for(erl, ref)
    await erl.send(request[A("reply_to")], (A("approval"), request[A("call_id")], (A("deny"), "not today")))
    request = await request_for(erl, ref)
    # A decision that is none of the four: the call is denied, and the reply says why.
    got = await erl.call(AGENT, (A("approval"), request[A("call_id")], A("maybe")))
    assert isinstance(got, tuple) and got[0] == A("error") and got[1][0] == A("bad_request"), got  # type: ignore[index]
    await result_of(erl, ref)
    _, second, third = await script.requests()
    (denied,) = parts(second.messages, b"tool-return")
    assert b"not today" in denied[b"content"]  # type: ignore[operator]
    (unclear,) = [p for p in parts(third.messages, b"tool-return") if p[b"tool_call_id"] == b"c2"]
    assert b"maybe" in unclear[b"content"] and b"not understood" in unclear[b"content"]  # type: ignore[operator]
    events = await events_of(erl, ref)
    assert (A("approval"), request[A("call_id")], (A("deny"), unclear[b"content"])) in events


async def test_an_approver_that_dies_denies_the_call(erl: BeamNode) -> None:
    script = await ScriptedModel.start(erl, [tool_call("count", {"a": 1}, "c1"), text("ok")])
    await create(erl, script.model)
    approver = await term(erl, "spawn(fun() -> receive {pynode_approval, _, _} -> exit(gone_fishing) end end)")
    assert isinstance(approver, Pid)
    ref = await start(erl, {A("approver"): approver})
    assert (await result_of(erl, ref))[A("output")] == b"ok"
    _, second = await script.requests()
    (denied,) = parts(second.messages, b"tool-return")
    assert b"approver exited" in denied[b"content"] and b"gone_fishing" in denied[b"content"]  # type: ignore[operator]


@pytest.mark.parametrize("how", ["disconnect", "halt"])
async def test_an_approver_whose_node_goes_away_denies_the_call(erl: BeamNode, beam: BeamFactory, how: str) -> None:
    script = await ScriptedModel.start(erl, [tool_call("count", {"a": 1}, "c1"), text("ok")])
    await create(erl, script.model)
    other = await beam("approver")
    assert await other.eval("net_adm:ping('py@127.0.0.1')") == "pong"
    # The approver lives on the other node: it tells that node's test process (pynode_test) it
    # got the request, then never decides.
    approver = await term(
        other,
        "spawn(fun() -> receive {pynode_approval, _, R} -> pynode_test ! {asked, R}, timer:sleep(60000) end end)",
    )
    assert isinstance(approver, Pid) and approver.node == A("approver@127.0.0.1")
    ref = await start(erl, {A("approver"): approver})
    asked = await other.receive(timeout=10, match=lambda m: type(m) is tuple and m[0] == A("asked"))
    call_id = asked[1][A("call_id")]  # type: ignore[index]
    if how == "disconnect":  # the approver is alive, but its node no longer connected
        assert await other.eval("erlang:disconnect_node('py@127.0.0.1')") == "true"
    else:
        other.kill()
        await other.wait()
    result = await result_of(erl, ref)  # within 10 s: the wait ended, the run did not hang
    assert result[A("output")] == b"ok" and A("deferred") not in result
    _, second = await script.requests()
    (denied,) = parts(second.messages, b"tool-return")
    assert b"approver exited" in denied[b"content"] and b"noconnection" in denied[b"content"], denied  # type: ignore[operator]
    events = await events_of(erl, ref)
    assert (A("approval"), call_id, (A("deny"), denied[b"content"])) in events


async def test_a_deferred_run_resumes_with_several_decisions(erl: BeamNode) -> None:
    script = await ScriptedModel.start(
        erl,
        [
            [tool_call("count", {"a": 1}, "c1"), tool_call("count", {"a": 1, "b": 2}, "c2")],
            text("resumed"),
        ],
    )
    await create(erl, script.model)
    # A synchronous run defers by default: it ends with the calls to decide.
    got = await erl.call(AGENT, (A("run"), "count both"))
    assert isinstance(got, tuple) and got[0] == A("ok"), got
    paused = got[1]
    assert isinstance(paused, dict)
    assert paused[A("output")] == A("nil")
    assert paused[A("deferred")] == [
        {A("call_id"): b"c1", A("name"): b"count", A("args"): {b"a": 1}},
        {A("call_id"): b"c2", A("name"): b"count", A("args"): {b"a": 1, b"b": 2}},
    ]
    # A synchronous caller cannot be its own approver: it is blocked in the call.
    refused = await term(erl, "gen_server:call({gate, 'py@127.0.0.1'}, {run, <<\"count\">>, #{approver => self()}})")
    assert isinstance(refused, tuple) and refused[0] == A("error"), refused
    assert refused[1][0] == A("bad_request") and b"approver is the calling process" in refused[1][1], refused  # type: ignore[index,operator]
    # An unknown call id is refused, naming it.
    bad = await erl.call(
        AGENT, (A("run"), "", {A("message_history"): paused[A("messages")], A("approvals"): {"c9": A("approve")}})
    )
    assert isinstance(bad, tuple) and bad[0] == A("error"), bad
    assert bad[1][0] == A("bad_request") and b"c9" in bad[1][1], bad  # type: ignore[index,operator]
    approvals = {"c1": A("approve"), "c2": (A("deny"), "too many keys")}
    resumed = await erl.call(
        AGENT, (A("run"), "", {A("message_history"): paused[A("messages")], A("approvals"): approvals})
    )
    assert isinstance(resumed, tuple) and resumed[0] == A("ok"), resumed
    assert resumed[1][A("output")] == b"resumed"  # type: ignore[index]
    requests = await script.requests()
    assert len(requests) == 2  # the resumed run went straight to the tools, then asked the model once
    returns = {p[b"tool_call_id"]: p[b"content"] for p in parts(requests[1].messages, b"tool-return")}
    assert returns[b"c1"] == 1
    assert b"too many keys" in returns[b"c2"]  # type: ignore[operator]


async def test_approver_defer_on_a_start_run(erl: BeamNode) -> None:
    script = await ScriptedModel.start(erl, [tool_call("count", {"a": 1}, "c1")])
    await create(erl, script.model)
    ref = await start(erl, {A("approver"): A("defer")})
    result = await result_of(erl, ref)
    assert result[A("output")] == A("nil")
    assert result[A("deferred")] == [{A("call_id"): b"c1", A("name"): b"count", A("args"): {b"a": 1}}]


GUARDED_AGENT = """
from pydantic_ai import Agent, ApprovalRequired, RunContext

agent = Agent("test")


@agent.tool
def wipe(ctx: RunContext[None], disk: str) -> str:
    if not ctx.tool_call_approved:
        raise ApprovalRequired
    return f"wiped {disk}"
"""


async def test_a_python_tool_that_raises_approval_required(
    tmp_path: Path, epmd_port: int, cookie: str, beam: BeamFactory
) -> None:
    (tmp_path / "guarded.py").write_text(GUARDED_AGENT)
    async with running_pynode("py@127.0.0.1", cookie=cookie, epmd_port=epmd_port, agents_dir=tmp_path):
        erl = await beam("e1")
        script = await ScriptedModel.start(erl, [tool_call("wipe", {"disk": "d1"}, "w1"), text("gone")])
        guarded = ("guarded", "py@127.0.0.1")
        started = await erl.call(guarded, (A("start_run"), "wipe d1", {A("model"): script.model}))
        assert isinstance(started, tuple) and started[0] == A("ok"), started
        ref = started[1]
        assert isinstance(ref, Reference)
        request = await request_for(erl, ref)
        assert (request[A("name")], request[A("args")]) == (b"wipe", {b"disk": b"d1"})
        await erl.call(guarded, (A("approval"), request[A("call_id")], A("approve")))
        assert (await result_of(erl, ref))[A("output")] == b"gone"
        _, second = await script.requests()
        assert [p[b"content"] for p in parts(second.messages, b"tool-return")] == [b"wiped d1"]
        # Deferred by a synchronous run, then resumed with a denial.
        await script.add(tool_call("wipe", {"disk": "d2"}, "w2"), text("kept"))
        paused = await erl.call(guarded, (A("run"), "wipe d2", {A("model"): script.model}))
        assert isinstance(paused, tuple) and paused[0] == A("ok"), paused
        assert paused[1][A("deferred")] == [{A("call_id"): b"w2", A("name"): b"wipe", A("args"): {b"disk": b"d2"}}]  # type: ignore[index]
        opts = {
            A("model"): script.model,
            A("message_history"): paused[1][A("messages")],
            A("approvals"): {"w2": A("deny")},
        }  # type: ignore[index]
        resumed = await erl.call(guarded, (A("run"), "", opts))
        assert isinstance(resumed, tuple) and resumed[0] == A("ok"), resumed
        assert resumed[1][A("output")] == b"kept"  # type: ignore[index]
