"""Real providers on the wire: OpenAI Chat Completions, Responses and Anthropic Messages, from erl.

Every run here goes through pydantic-ai's provider models and the providers' own SDKs, over HTTP
to the scripted servers of ``pynode.testing.fake_provider`` on 127.0.0.1: the requests the model
was sent are asserted as the server recorded them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from agent_support import PY, REG, load_erlang, term
from beam import BeamNode

from pynode.etf.types import Atom, Term
from pynode.node import Node
from pynode.testing import FakeProvider, ToolCall, Turn

pytestmark = [pytest.mark.beam, pytest.mark.model_requests]

KEY = "sk-test-4f9c1b2e7d"
"""A known API key: no reply, event or log line may ever show it."""

WEATHER_ERL = """
-module(weather_erl).
-export([lookup/1]).
lookup(#{<<"city">> := City}) -> {ok, #{city => City, sky => <<"clear">>, temp => 21}}.
"""

CITY_PARAMS = (
    '#{<<"type">> => <<"object">>, <<"properties">> => #{<<"city">> => #{<<"type">> => <<"string">>}},'
    ' <<"required">> => [<<"city">>]}'
)
WEATHER_TOOL = f'#{{name => <<"weather">>, parameters => {CITY_PARAMS}, handler => {{weather_erl, lookup}}}}'

COLLECT = (
    "Collect = fun Loop(Ref, Acc) -> receive"
    " {pynode_event, Ref, E} -> Loop(Ref, [E | Acc]);"
    " {pynode_result, Ref, R} -> {lists:reverse(Acc), R}"
    " after 20000 -> {lists:reverse(Acc), timeout} end end,"
)

APIS = ["chat", "responses", "anthropic"]


def model_map(api: str, server: FakeProvider, *, key: str = KEY, extra: str = "") -> str:
    """A section 3 model map, in Erlang syntax, for one of the fake server's APIs."""
    if api == "anthropic":
        base = f'provider => anthropic, name => <<"claude-sonnet-5-5">>, base_url => <<"{server.anthropic_url}">>'
    else:
        base = f'provider => openai, name => <<"gpt-4o">>, base_url => <<"{server.openai_url}">>, api => {api}'
    return f'#{{{base}, api_key => <<"{key}">>{extra}}}'


def server_for(api: str, fake_openai: FakeProvider, fake_anthropic: FakeProvider) -> FakeProvider:
    return fake_anthropic if api == "anthropic" else fake_openai


async def create(erl: BeamNode, name: str, spec: str) -> None:
    assert await erl.eval(f"gen_server:call({REG}, {{create_agent, {name}, {spec}}})") == f"{{ok,{name}}}"


def event_kinds(events: list[Term]) -> list[str]:
    return [str(e[0]) for e in events]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
async def test_a_run_with_an_erlang_tool_on_each_provider(
    api: str,
    streamed: bool,
    py_node: Node,
    erl: BeamNode,
    fake_openai: FakeProvider,
    fake_anthropic: FakeProvider,
    tmp_path: Path,
) -> None:
    server = server_for(api, fake_openai, fake_anthropic)
    await load_erlang(erl, tmp_path, WEATHER_ERL, "weather_erl")
    await create(erl, "forecaster", f"#{{model => {model_map(api, server)}, tools => [{WEATHER_TOOL}]}}")
    answer = "Clear skies over Lisbon, 21 degrees: a fine day for a walk."
    server.script(
        Turn(tool_calls=[ToolCall("weather", {"city": "Lisbon"})], input_tokens=30, output_tokens=9),
        Turn(text=answer, input_tokens=50, output_tokens=14, chunk_chars=3),
    )
    if streamed:
        got = await term(
            erl,
            COLLECT + f'{{ok, Ref}} = gen_server:call({{forecaster, {PY}}}, {{start_run, <<"Weather?">>, #{{}}}}),'
            " Collect(Ref, [])",
        )
        events, (status, result) = got
    else:
        events = []
        status, result = await term(erl, f'gen_server:call({{forecaster, {PY}}}, {{run, <<"Weather?">>}}, 20000)')
    assert status == Atom("ok"), result
    assert result[Atom("output")] == answer.encode()
    usage = result[Atom("usage")]
    assert (usage[Atom("requests")], usage[Atom("tool_calls")]) == (2, 1)
    assert (usage[Atom("input_tokens")], usage[Atom("output_tokens")]) == (80, 23)  # the provider's counts

    first, second = server.requests
    assert first.api == api
    if streamed or api != "anthropic":  # pydantic-ai streams every Anthropic request: its SDK asks for it
        assert (first.stream, second.stream) == (streamed, streamed)
    assert first.headers.get("authorization", first.headers.get("x-api-key", "")).endswith(KEY)
    assert "Weather?" in first.texts()
    # The model was sent the Erlang tool's result, as JSON.
    assert [json.loads(r) for r in second.tool_results()] == [{"city": "Lisbon", "sky": "clear", "temp": 21}]
    if streamed:
        texts = [e[1] for e in events if e[0] == Atom("text_delta")]
        assert b"".join(texts) == answer.encode()
        calls = [e for e in events if e[0] == Atom("tool_call")]
        assert [(c[1], c[2]) for c in calls] == [(b"weather", {b"city": b"Lisbon"})]  # once, complete
        assert event_kinds(events).index("tool_call") < event_kinds(events).index("tool_result")


@pytest.mark.parametrize("api", APIS)
async def test_streamed_structured_output_grows_from_the_tool_arguments(
    api: str, py_node: Node, erl: BeamNode, fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    server = server_for(api, fake_openai, fake_anthropic)
    schema = (
        '#{<<"type">> => <<"object">>, <<"properties">> => #{<<"city">> => #{<<"type">> => <<"string">>},'
        ' <<"summary">> => #{<<"type">> => <<"string">>}}, <<"required">> => [<<"city">>, <<"summary">>]}'
    )
    await create(erl, "reporter", f"#{{model => {model_map(api, server)}, output_schema => {schema}}}")
    output = {"city": "Porto", "summary": "Light rain in the morning, sun after noon."}
    server.script(Turn(output=output, args_chunk_chars=6, chunk_chars=6))
    events, (status, result) = await term(
        erl,
        COLLECT + f'{{ok, Ref}} = gen_server:call({{reporter, {PY}}}, {{start_run, <<"Report">>, #{{}}}}),'
        " Collect(Ref, [])",
    )
    assert status == Atom("ok"), result
    assert result[Atom("output")] == {b"city": b"Porto", b"summary": output["summary"].encode()}
    partials = [e[1] for e in events if e[0] == Atom("output_delta")]
    assert len(partials) >= 3, events  # it grew as the arguments arrived in pieces
    summaries = [p.get(b"summary", b"") for p in partials]
    assert summaries == sorted(summaries, key=len) and summaries[-1] == output["summary"].encode()


# -- errors an app can act on (section 6) ------------------------------------------------------


async def run_error(erl: BeamNode, agent: str, timeout: int = 30000) -> tuple[str, str]:
    got = await term(
        erl, f'gen_server:call({{{agent}, {PY}}}, {{run, <<"Hi">>}}, {timeout})', timeout=timeout / 1000 + 5
    )
    assert isinstance(got, tuple) and got[0] == Atom("error"), got
    kind, message = got[1]
    return str(kind), message.decode()


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "auth_failed"), (403, "auth_failed"), (400, "model_http_error"), (404, "model_http_error")],
)
async def test_provider_statuses_become_error_kinds_with_the_providers_message(
    api: str,
    status: int,
    kind: str,
    py_node: Node,
    erl: BeamNode,
    fake_openai: FakeProvider,
    fake_anthropic: FakeProvider,
) -> None:
    server = server_for(api, fake_openai, fake_anthropic)
    await create(erl, "failing", f"#{{model => {model_map(api, server)}}}")
    server.script(Turn(status=status, error=f"the provider says no ({status})"))
    got_kind, message = await run_error(erl, "failing")
    assert got_kind == kind
    assert f"the provider says no ({status})" in message and str(status) in message
    assert "{'" not in message and KEY not in message  # the provider's words, never a Python dict or the key


@pytest.mark.parametrize("api", APIS)
async def test_429_is_rate_limited_after_the_sdks_retries_spaced_by_retry_after(
    api: str, py_node: Node, erl: BeamNode, fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    server = server_for(api, fake_openai, fake_anthropic)
    await create(erl, "busy", f"#{{model => {model_map(api, server)}}}")
    server.script(*[Turn(status=429, error="slow down", retry_after=0.5)] * 3)
    kind, message = await run_error(erl, "busy")
    assert kind == "rate_limited"
    assert "slow down" in message and "retry after 0.5 s" in message
    times = [r.received_at for r in server.requests]
    assert len(times) == 3  # the SDK's own two retries, then the error
    assert all(later - earlier >= 0.45 for earlier, later in itertools.pairwise(times))


@pytest.mark.parametrize("api", APIS)
async def test_a_5xx_then_success_is_retried_by_the_sdk_and_the_run_succeeds(
    api: str, py_node: Node, erl: BeamNode, fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    server = server_for(api, fake_openai, fake_anthropic)
    await create(erl, "flaky", f"#{{model => {model_map(api, server)}}}")
    server.script(Turn(status=503, error="overloaded", retry_after=0.1), Turn(text="fine now"))
    got = await term(erl, f'gen_server:call({{flaky, {PY}}}, {{run, <<"Hi">>}}, 20000)')
    assert got[0] == Atom("ok") and got[1][Atom("output")] == b"fine now"
    assert len(server.requests) == 2


async def test_connection_refused_is_model_http_error_and_a_fallback_answers(
    py_node: Node, erl: BeamNode, fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    nowhere = FakeProvider()
    await nowhere.start()
    port = nowhere.port
    await nowhere.stop()  # a port where nothing listens any more
    url = f"http://127.0.0.1:{port}/v1"
    dead = f'#{{provider => openai, name => <<"gpt-4o">>, base_url => <<"{url}">>, api_key => <<"{KEY}">>}}'
    await create(erl, "unreachable", f"#{{model => {dead}}}")
    kind, message = await run_error(erl, "unreachable")
    assert kind == "model_http_error" and "could not be reached" in message, message

    fake_anthropic.script(Turn(text="the fallback answered"))
    await create(erl, "resilient", f"#{{model => {dead}, fallback => [{model_map('anthropic', fake_anthropic)}]}}")
    got = await term(erl, f'gen_server:call({{resilient, {PY}}}, {{run, <<"Hi">>}}, 30000)')
    assert got[0] == Atom("ok") and got[1][Atom("output")] == b"the fallback answered"
    info = await term(erl, f"gen_server:call({{resilient, {PY}}}, info)")
    assert info[1][Atom("model")] == f"openai:gpt-4o at http://127.0.0.1:{port}/v1".encode()


async def test_every_fallback_failing_gives_the_shared_kind(
    py_node: Node, erl: BeamNode, fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    fake_openai.script(*[Turn(status=429, error="openai is busy", retry_after=0.05)] * 3)
    fake_anthropic.script(*[Turn(status=429, error="anthropic is busy", retry_after=0.05)] * 3)
    spec = f"#{{model => {model_map('chat', fake_openai)}, fallback => [{model_map('anthropic', fake_anthropic)}]}}"
    await create(erl, "both_busy", spec)
    kind, message = await run_error(erl, "both_busy")
    assert kind == "rate_limited"
    assert "openai is busy" in message and "anthropic is busy" in message


NO_PROVIDER = '#{api_key => {env, <<"NO_SUCH_VAR">>}}'


def _collect_everything(caplog: pytest.LogCaptureFixture, *texts: Any) -> str:
    return "\n".join([*(r.getMessage() for r in caplog.records), *(repr(t) for t in texts)])


async def test_the_api_key_never_shows(
    py_node: Node, erl: BeamNode, fake_openai: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="pynode")
    await create(erl, "secretive", f"#{{model => {model_map('chat', fake_openai)}}}")
    fake_openai.script(Turn(status=401, error=f"Incorrect API key provided: {KEY}"))
    replies: list[Term] = [
        await term(erl, f"gen_server:call({REG}, list_agents)"),
        await term(erl, f"gen_server:call({REG}, info)"),
        await term(erl, f"gen_server:call({{secretive, {PY}}}, info)"),
        await term(erl, f'gen_server:call({{secretive, {PY}}}, {{run, <<"Hi">>}}, 20000)'),
        # a bad model map is refused without showing its key
        await term(
            erl,
            f"gen_server:call({REG}, {{create_agent, leaky, #{{model => #{{provider => nobody,"
            f' name => <<"x">>, api_key => <<"{KEY}-other">>}}}}}})',
        ),
        await term(erl, f"gen_server:call({REG}, {{create_agent, leaky, #{{model => {NO_PROVIDER}}}}})"),
    ]
    assert replies[3][0] == Atom("error") and replies[3][1][0] == Atom("auth_failed")
    assert b"[redacted]" in replies[3][1][1]  # the provider echoed the key: it is taken out
    assert replies[4][0] == Atom("error") and replies[4][1][0] == Atom("bad_spec")
    everything = _collect_everything(caplog, *replies)
    assert KEY not in everything
    assert "openai:gpt-4o at" in everything  # the model is shown, by provider, name and base_url


# -- cancellation reaches the provider ---------------------------------------------------------

SLOW = Turn(text="word " * 200, chunk_chars=5, chunk_delay=0.05, delay=0.2)
"""200 chunks, 50 ms apart: a stream still going when the run is cancelled."""
STALLED = Turn(text="late", delay=5.0)
"""No first byte for 5 s: a plain request still waiting when its call times out."""

HOW = {
    "cancel": (
        f'{{ok, Ref}} = gen_server:call({{slow, {PY}}}, {{start_run, <<"Go">>, #{{}}}}), timer:sleep(600),'
        f" T = erlang:system_time(millisecond), ok = gen_server:call({{slow, {PY}}}, {{cancel, Ref}}), T"
    ),
    "timeout": (
        f'{{ok, Ref}} = gen_server:call({{slow, {PY}}}, {{start_run, <<"Go">>, #{{timeout => 600}}}}),'
        " receive {pynode_result, Ref, _} -> erlang:system_time(millisecond) after 5000 -> none end"
    ),
    "caller_exit": (
        "Self = self(), {Pid, Mon} = spawn_monitor(fun() ->"
        f' {{ok, Ref}} = gen_server:call({{slow, {PY}}}, {{start_run, <<"Go">>, #{{}}}}),'
        " receive {pynode_event, Ref, _} -> Self ! streaming end, timer:sleep(300), exit(gone) end),"
        " receive streaming -> ok end, receive {'DOWN', Mon, process, Pid, _} -> erlang:system_time(millisecond) end"
    ),
    "call_timeout": (f'catch gen_server:call({{slow, {PY}}}, {{run, <<"Go">>}}, 700), erlang:system_time(millisecond)'),
}


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("how", list(HOW))
async def test_a_cancelled_run_closes_its_provider_connection_within_a_second(
    api: str, how: str, py_node: Node, erl: BeamNode, fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    server = server_for(api, fake_openai, fake_anthropic)
    await create(erl, "slow", f"#{{model => {model_map(api, server)}}}")
    server.script(STALLED if how == "call_timeout" else SLOW)
    ended_ms = await term(erl, HOW[how])
    assert isinstance(ended_ms, int), ended_ms
    (request,) = await server.wait_for_requests(1)
    for _ in range(100):  # bounded: at most a second and a half
        if request.closed_by_client_at is not None:
            break
        await asyncio.sleep(0.015)
    assert request.closed_by_client_at is not None, "the provider's connection stayed open"
    closed_ms = time.time() * 1000 - (time.monotonic() - request.closed_by_client_at) * 1000
    assert closed_ms - ended_ms < 1000
    if how != "call_timeout":
        assert request.stream and 0 < request.events_sent < 200  # it was cut off mid-stream
    sent = request.events_sent
    await asyncio.sleep(0.2)
    assert request.events_sent == sent  # nothing is sent, or read, after the close


# -- the model's own timeouts ------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("stall", ["first_byte", "next_chunk"])
async def test_a_provider_stalling_past_the_models_timeout_is_model_timeout(
    api: str, stall: str, py_node: Node, erl: BeamNode, fake_openai: FakeProvider, fake_anthropic: FakeProvider
) -> None:
    server = server_for(api, fake_openai, fake_anthropic)
    timeout = ", settings => #{timeout => 0.3}"
    await create(erl, "stalling", f"#{{model => {model_map(api, server, extra=timeout)}}}")
    if stall == "first_byte":
        server.script(*[Turn(text="too late", delay=3.0)] * 3)  # the SDK retries a timed-out request twice
        kind, message = await run_error(erl, "stalling")
    else:  # the stream starts, then no next chunk comes
        server.script(Turn(text="a start and then nothing " * 4, chunk_chars=25, chunk_delay=3.0))
        got = await term(
            erl,
            COLLECT + f'{{ok, Ref}} = gen_server:call({{stalling, {PY}}}, {{start_run, <<"Go">>, #{{}}}}),'
            " Collect(Ref, [])",
        )
        _events, (status, (error_kind, text)) = got
        assert status == Atom("error")
        (request,) = server.requests
        assert request.stream and request.events_sent >= 1  # the stream had started: no next chunk came
        kind, message = str(error_kind), text.decode()
    assert kind == "model_timeout", message
    assert "did not answer in time" in message and KEY not in message


# -- a model's max_concurrency -----------------------------------------------------------------


async def test_max_concurrency_bounds_requests_in_flight_across_agents_and_the_rest_wait(
    py_node: Node, erl: BeamNode, fake_openai: FakeProvider
) -> None:
    bounded = model_map("chat", fake_openai, extra=", max_concurrency => 2")
    await create(erl, "first", f"#{{model => {bounded}}}")
    await create(erl, "second", f"#{{model => {bounded}}}")  # an equal map: the same model, the same limit
    fake_openai.script(*[Turn(text="done", delay=0.25)] * 8)
    got = await term(
        erl,
        "Self = self(), Agents = [first, second, first, second, first, second, first, second],"
        f' [spawn(fun() -> Self ! {{done, catch gen_server:call({{A, {PY}}}, {{run, <<"Hi">>}}, 20000)}} end)'
        " || A <- Agents], [receive {done, R} -> R after 25000 -> timeout end || _ <- Agents]",
        timeout=30,
    )
    assert [r[0] for r in got] == [Atom("ok")] * 8, got  # none failed with overloaded: they waited
    assert len(fake_openai.requests) == 8
    assert fake_openai.most_in_flight == 2


# -- many streams at once ----------------------------------------------------------------------


async def test_200_concurrent_streamed_runs_each_get_exactly_their_own_text(
    py_node: Node, erl: BeamNode, fake_openai: FakeProvider
) -> None:
    await create(erl, "echoer", f"#{{model => {model_map('chat', fake_openai)}}}")  # the server echoes each prompt
    got = await term(
        erl,
        "Self = self(), N = 200,"
        " Stream = fun Loop(Ref, Acc) -> receive"
        " {pynode_event, Ref, {text_delta, T}} -> Loop(Ref, [T | Acc]);"
        " {pynode_event, Ref, _} -> Loop(Ref, Acc);"
        " {pynode_result, Ref, R} -> {iolist_to_binary(lists:reverse(Acc)), R}"
        " after 60000 -> {timeout, timeout} end end,"
        ' [spawn(fun() -> Prompt = iolist_to_binary([<<"stream number ">>, integer_to_binary(I),'
        ' <<" of many, each with its own words">>]),'
        f" {{ok, Ref}} = gen_server:call({{echoer, {PY}}}, {{start_run, Prompt, #{{}}}}, 30000),"
        " Self ! {I, Prompt, Stream(Ref, [])} end) || I <- lists:seq(1, N)],"
        " [receive {I, P, Got} -> {P, Got} after 90000 -> {I, lost} end || I <- lists:seq(1, N)]",
        timeout=100,
    )
    assert len(got) == 200
    for prompt, (streamed, (status, result)) in got:
        expected = b"echo: " + prompt
        assert status == Atom("ok"), result
        assert streamed == expected  # the deltas reassemble this run's text, nothing from another run
        assert result[Atom("output")] == expected
    assert len(fake_openai.requests) == 200


async def test_node_shutdown_closes_the_provider_connections_of_its_runs(
    py_node: Node, erl: BeamNode, fake_openai: FakeProvider
) -> None:
    from pynode.bridge.registry import current_registry

    await create(erl, "slow", f"#{{model => {model_map('chat', fake_openai)}}}")
    fake_openai.script(SLOW)
    await erl.eval(
        "spawn(fun() ->"
        f' {{ok, Ref}} = gen_server:call({{slow, {PY}}}, {{start_run, <<"Go">>, #{{}}}}),'
        " receive {pynode_result, Ref, R} -> pynode_test ! {ended, R} after 10000 -> ok end end), ok"
    )
    (request,) = await fake_openai.wait_for_requests(1)
    for _ in range(100):  # bounded: until the stream has begun
        if request.events_sent > 2:
            break
        await asyncio.sleep(0.02)
    registry = current_registry(py_node)
    assert registry is not None
    started = time.monotonic()
    await registry.shutdown()
    for _ in range(100):  # bounded: at most a second and a half
        if request.closed_by_client_at is not None:
            break
        await asyncio.sleep(0.015)
    assert request.closed_by_client_at is not None, "the provider's connection stayed open"
    assert request.closed_by_client_at - started < 1.0
    assert 0 < request.events_sent < 200
    _, ended = await erl.receive(timeout=5, match=lambda m: isinstance(m, tuple) and m[0] == Atom("ended"))
    assert ended[0] == Atom("error") and ended[1][0] == Atom("cancelled"), ended  # the caller was told
