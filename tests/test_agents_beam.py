"""Agents as named processes, driven from real Erlang and Elixir nodes (docs/protocol.md §3-§5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_support import ASK_HUMAN_SPEC as PID_TOOL_SPEC
from agent_support import REG, registry_of
from beam import BeamEvalError, BeamFactory, BeamNode
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pynode.node import Node
from pynode.testing import on_otp

pytestmark = pytest.mark.beam


async def create(erl: BeamNode, name: str, spec: str) -> str:
    return await erl.eval(f"gen_server:call({REG}, {{create_agent, {name}, {spec}}})")


@on_otp("25", "28")
async def test_create_run_info_list_delete(erl: BeamNode, py_node: Node) -> None:
    assert await create(erl, "helper", '#{model => <<"test">>}') == "{ok,helper}"
    assert await create(erl, "helper", '#{model => <<"test">>}') == (
        '{error,{already_exists,<<"a process named helper already exists on this node">>}}'
    )
    got = await erl.eval(
        "{ok, R} = gen_server:call({helper, 'py@127.0.0.1'}, {run, <<\"hello\">>, #{}}),"
        " {maps:get(output, R), maps:get(usage, R), is_binary(maps:get(messages, R)),"
        " is_binary(maps:get(run_id, R))}"
    )
    assert got.startswith('{<<"success (no tool calls)">>,#{')
    assert "requests => 1" in got and got.endswith("true,true}")
    assert await erl.eval(f"gen_server:call({REG}, list_agents)") == (
        '{ok,[#{model => <<"test">>,name => helper,origin => remote}]}'
    )
    info = await erl.eval("gen_server:call({helper, 'py@127.0.0.1'}, info)")
    assert info == '{ok,#{model => <<"test">>,name => helper,runs => 0,tools => []}}'
    registry_info = await erl.eval(
        f"{{ok, I}} = gen_server:call({REG}, info), {{maps:get(agents, I), maps:get(runs, I)}}"
    )
    assert registry_info == "{1,0}"
    assert await erl.eval(f"gen_server:call({REG}, {{delete_agent, helper}})") == "ok"
    assert "unknown_agent" in await erl.eval(f"gen_server:call({REG}, {{delete_agent, helper}})")
    assert await erl.eval("catch gen_server:call({helper, 'py@127.0.0.1'}, info, 2000)") == (
        "{'EXIT',{noproc,{gen_server,call,[{helper,'py@127.0.0.1'},info,2000]}}}"
    )


async def test_bad_specs_name_the_key(erl: BeamNode) -> None:
    assert "bad_spec" in await create(erl, "a1", "#{}")
    assert "model" in await create(erl, "a1", "#{}")
    bad_tools = await create(erl, "a1", '#{model => <<"test">>, tools => [#{name => 42}]}')
    assert bad_tools.startswith("{error,{bad_spec,") and "name" in bad_tools
    unknown = await create(erl, "a1", '#{model => <<"test">>, colour => blue}')
    assert unknown.startswith("{error,{bad_spec,") and "colour" in unknown
    assert (await create(erl, "a1", '#{model => <<"nosuchprovider:model-x">>}')).startswith(
        "{error,{model_unavailable,"
    )
    assert (await create(erl, '"not an atom"', '#{model => <<"test">>}')).startswith("{error,{bad_request,")


async def test_bad_requests_are_answered(erl: BeamNode) -> None:
    await create(erl, "helper", '#{model => <<"test">>}')
    assert (await erl.eval(f"gen_server:call({REG}, what_is_this)")).startswith("{error,{bad_request,")
    agent = "{helper, 'py@127.0.0.1'}"
    assert (await erl.eval(f"gen_server:call({agent}, {{run, 42}})")).startswith("{error,{bad_request,")
    assert (await erl.eval(f'gen_server:call({agent}, {{run, <<"x">>, #{{timeout => -1}}}})')).startswith(
        "{error,{bad_request,"
    )
    assert (await erl.eval(f"gen_server:call({agent}, nonsense)")).startswith("{error,{bad_request,")
    # And the agent still works afterwards.
    assert (await erl.eval(f'element(1, gen_server:call({agent}, {{run, <<"x">>}}))')) == "ok"


async def test_elixir_genserver_call_and_charlist_prompt(py_node: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval('GenServer.call({:pynode, :"py@127.0.0.1"}, {:create_agent, :elixir_agent, %{"model" => "test"}})')
    out = await ex.eval(
        '{:ok, r} = GenServer.call({:elixir_agent, :"py@127.0.0.1"}, {:run, "Hi from Elixir", %{}}); r.output'
    )
    assert out == '"success (no tool calls)"'
    erl = await beam("e2")
    raw = await erl.eval(
        "Ref = make_ref(), {elixir_agent, 'py@127.0.0.1'} ! {self(), Ref, {run, \"hello\"}},"
        " receive {Ref, {ok, R}} -> maps:get(output, R) after 10000 -> timeout end"
    )
    assert raw == '<<"success (no tool calls)">>'
    iolist = await erl.eval(
        '{ok, R} = gen_server:call({elixir_agent, \'py@127.0.0.1\'}, {run, [<<"he">>, "llo", [$!]]}),'
        " maps:get(output, R)"
    )
    assert iolist == '<<"success (no tool calls)">>'


async def test_message_history_continues_the_conversation(erl: BeamNode) -> None:
    await create(erl, "chat", '#{model => <<"test">>, instructions => <<"Be brief.">>}')
    got = await erl.eval(
        "A = {chat, 'py@127.0.0.1'},"
        ' {ok, R1} = gen_server:call(A, {run, <<"first question">>}),'
        ' {ok, R2} = gen_server:call(A, {run, <<"second question">>,'
        "   #{message_history => maps:get(messages, R1)}}),"
        " {maps:get(messages, R1), maps:get(messages, R2), maps:get(new_messages, R2)}"
    )
    first, second, new = _binaries(got)
    assert "first question" in second and "second question" in second
    assert "first question" not in new and "second question" in new
    assert len(json.loads(second)) == len(json.loads(first)) + len(json.loads(new))
    bad = await erl.eval(
        'gen_server:call({chat, \'py@127.0.0.1\'}, {run, <<"x">>, #{message_history => <<"not json">>}})'
    )
    assert bad.startswith("{error,{bad_request,")


def _binaries(printed: str) -> list[str]:
    """The binaries of a printed tuple of binaries (``{<<"...">>,<<"...">>}``), unescaped."""
    parts = printed.strip("{}").split('">>,<<"')
    return [p.removeprefix('<<"').removesuffix('">>').replace('\\"', '"').replace("\\\\", "\\") for p in parts]


SCHEMA = (
    '#{<<"type">> => <<"object">>,'
    ' <<"properties">> => #{<<"city">> => #{<<"type">> => <<"string">>},'
    '                         <<"temp">> => #{<<"type">> => <<"integer">>, <<"minimum">> => -50}},'
    ' <<"required">> => [<<"city">>, <<"temp">>]}'
)


async def test_output_schema_accepted(erl: BeamNode) -> None:
    await create(erl, "typed", f'#{{model => <<"test">>, output_schema => {SCHEMA}}}')
    got = await erl.eval(
        "{ok, R} = gen_server:call({typed, 'py@127.0.0.1'}, {run, <<\"weather?\">>}),"
        ' O = maps:get(output, R), {is_map(O), lists:sort(maps:keys(O)), is_integer(maps:get(<<"temp">>, O))}'
    )
    assert got == '{true,[<<"city">>,<<"temp">>],true}'


def _scripted_output(outputs: list[dict[str, object]]) -> FunctionModel:
    """A model that answers each request with the next of ``outputs`` through the output tool."""
    calls = iter(outputs)

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        tool = info.output_tools[0]
        return ModelResponse(parts=[ToolCallPart(tool.name, next(calls))])

    return FunctionModel(respond)


async def test_output_schema_rejects_then_accepts(erl: BeamNode, py_node: Node) -> None:
    registry_of(py_node).models.register(
        "scripted", _scripted_output([{"city": "Oslo", "temp": -300}, {"city": "Oslo", "temp": -3}])
    )
    await create(erl, "typed", f'#{{model => <<"scripted">>, output_schema => {SCHEMA}}}')
    got = await erl.eval(
        "{ok, R} = gen_server:call({typed, 'py@127.0.0.1'}, {run, <<\"weather?\">>}),"
        " {maps:get(output, R), maps:get(requests, maps:get(usage, R))}"
    )
    assert got == '{#{<<"city">> => <<"Oslo">>,<<"temp">> => -3},2}'


async def test_output_that_never_fits_is_unexpected_model_behavior(erl: BeamNode, py_node: Node) -> None:
    registry_of(py_node).models.register("always_bad", _scripted_output([{"city": "X", "temp": -999}] * 10))
    await create(erl, "typed", f'#{{model => <<"always_bad">>, output_schema => {SCHEMA}, retries => 1}}')
    got = await erl.eval("gen_server:call({typed, 'py@127.0.0.1'}, {run, <<\"weather?\">>})")
    assert got.startswith("{error,{unexpected_model_behavior,")


ELIXIR_TOOLS = """
defmodule Weather do
  def lookup(%{"city" => city}) do
    IO.puts("looking up #{city}")
    %{"city" => city, "forecast" => "sunny", "temp" => 21}
  end
  def broken(_args), do: raise "the weather service is down"
end
"""

TOOL_SPEC = """%{
  model: "test",
  tools: [%{name: "weather", description: "Weather for a city",
            parameters: %{"type" => "object", "properties" => %{"city" => %{"type" => "string"}},
                          "required" => ["city"]},
            handler: {Weather, :lookup}}]}"""


async def test_elixir_function_tool(py_node: Node, beam: BeamFactory, caplog: pytest.LogCaptureFixture) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(ELIXIR_TOOLS)
    created = await ex.eval(f'GenServer.call({{:pynode, :"py@127.0.0.1"}}, {{:create_agent, :weather, {TOOL_SPEC}}})')
    assert created == "{:ok, :weather}"
    with caplog.at_level("INFO", logger="pynode.io"):
        out = await ex.eval(
            '{:ok, r} = GenServer.call({:weather, :"py@127.0.0.1"}, {:run, "Weather in Paris?", %{}}, 15_000);'
            " {r.output, r.usage.tool_calls}"
        )
    assert out.startswith('{"{\\"weather\\":{\\"city\\":') and '\\"forecast\\":\\"sunny\\"' in out
    assert out.endswith(", 1}")
    assert any("looking up" in r.getMessage() for r in caplog.records)


async def test_raising_elixir_tool_is_told_to_the_model(py_node: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    await ex.eval(ELIXIR_TOOLS)
    spec = TOOL_SPEC.replace(":lookup", ":broken")
    await ex.eval(f'GenServer.call({{:pynode, :"py@127.0.0.1"}}, {{:create_agent, :weather, {spec}}})')
    out = await ex.eval('GenServer.call({:weather, :"py@127.0.0.1"}, {:run, "Weather?", %{}}, 15_000)')
    assert out.startswith("{:ok,")
    messages = await ex.eval(
        '{:ok, r} = GenServer.call({:weather, :"py@127.0.0.1"}, {:run, "Weather?", %{}}, 15_000); r.messages'
    )
    assert "the weather service is down" in messages


@on_otp("25", "28")
async def test_start_run_with_caller_as_tool_handler(erl: BeamNode) -> None:
    await create(erl, "asker", PID_TOOL_SPEC)
    got = await erl.eval(
        "A = {asker, 'py@127.0.0.1'},"
        ' {ok, Ref} = gen_server:call(A, {start_run, <<"ask something">>, #{}}),'
        " Call = receive {pynode_tool_call, Ref, C} -> C after 10000 -> timeout end,"
        " #{call_id := Id, name := Name, args := Args, reply_to := To} = Call,"
        ' To ! {tool_result, Id, {ok, #{<<"answer">> => 42}}},'
        " Result = receive {pynode_result, Ref, Res} -> Res after 10000 -> timeout end,"
        " {ok, R} = Result,"
        ' {Name, is_binary(maps:get(<<"question">>, Args)), maps:get(output, R)}'
    )
    assert got == '{<<"ask_human">>,true,<<"{\\"ask_human\\":{\\"answer\\":42}}">>}'


async def test_sync_run_without_handler_is_refused_and_tool_handler_works(erl: BeamNode) -> None:
    await create(erl, "asker", PID_TOOL_SPEC)
    refused = await erl.eval("gen_server:call({asker, 'py@127.0.0.1'}, {run, <<\"x\">>})")
    assert refused.startswith("{error,{bad_request,") and "ask_human" in refused
    got = await erl.eval(
        "Handler = spawn(fun() -> receive {pynode_tool_call, _Ref, #{call_id := Id, reply_to := To}} ->"
        '   gen_server:call(To, {tool_result, Id, {ok, <<"from handler">>}}) end end),'
        " {ok, R} = gen_server:call({asker, 'py@127.0.0.1'}, {run, <<\"x\">>, #{tool_handler => Handler}}),"
        " maps:get(output, R)"
    )
    assert got == '<<"{\\"ask_human\\":\\"from handler\\"}">>'


@on_otp("25", "28")
async def test_tool_reply_error_and_retry(erl: BeamNode) -> None:
    await create(erl, "asker", PID_TOOL_SPEC)
    got = await erl.eval(
        "Answer = fun Loop(N) -> receive {pynode_tool_call, _, #{call_id := Id}} ->"
        '   Reply = case N of 0 -> {retry, <<"ask again">>}; _ -> {error, <<"nobody home">>} end,'
        "   {asker, 'py@127.0.0.1'} ! {tool_result, Id, Reply}, Loop(N + 1) after 10000 -> ok end end,"
        " Handler = spawn(fun() -> Answer(0) end),"
        " {ok, R} = gen_server:call({asker, 'py@127.0.0.1'}, {run, <<\"x\">>, #{tool_handler => Handler}}),"
        " exit(Handler, kill), maps:get(messages, R)"
    )
    assert "ask again" in got and "nobody home" in got


def _bad_then_good_args() -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        sent = sum(1 for m in messages if isinstance(m, ModelResponse))
        if sent == 0:
            return ModelResponse(parts=[ToolCallPart("ask_human", {"question": 7})])
        if sent == 1:
            return ModelResponse(parts=[ToolCallPart("ask_human", {"question": "valid?"})])
        return ModelResponse(parts=[TextPart("done")])

    return FunctionModel(respond)


async def test_tool_arguments_failing_the_schema_never_reach_the_handler(erl: BeamNode, py_node: Node) -> None:
    registry_of(py_node).models.register("bad_args", _bad_then_good_args())
    await create(erl, "asker", PID_TOOL_SPEC.replace('<<"test">>', '<<"bad_args">>', 1))
    got = await erl.eval(
        "Self = self(),"
        " Handler = spawn(fun Loop() -> receive {pynode_tool_call, _, #{call_id := Id, args := A}} ->"
        "   Self ! {seen, A}, {asker, 'py@127.0.0.1'} ! {tool_result, Id, {ok, yes}}, Loop()"
        "   after 10000 -> ok end end),"
        " {ok, R} = gen_server:call({asker, 'py@127.0.0.1'}, {run, <<\"x\">>, #{tool_handler => Handler}}),"
        " Seen = receive {seen, S} -> S after 1000 -> none end,"
        " More = receive {seen, S2} -> S2 after 200 -> none end,"
        " {maps:get(output, R), Seen, More}"
    )
    assert got == '{<<"done">>,#{<<"question">> => <<"valid?">>},none}'


async def test_error_kinds_offline(erl: BeamNode) -> None:
    await create(erl, "limited", '#{model => <<"test">>, usage_limits => #{request_limit => 0}}')
    limited = await erl.eval("gen_server:call({limited, 'py@127.0.0.1'}, {run, <<\"x\">>})")
    assert limited.startswith("{error,{usage_limit_exceeded,")
    await create(erl, "asker", PID_TOOL_SPEC)
    timed_out = await erl.eval(
        "Handler = spawn(fun() -> receive _ -> timer:sleep(60000) end end),"
        " R = gen_server:call({asker, 'py@127.0.0.1'}, {run, <<\"x\">>, #{tool_handler => Handler, timeout => 300}}),"
        " exit(Handler, kill), R"
    )
    assert timed_out.startswith("{error,{timeout,")
    cancelled = await erl.eval(
        "{ok, Ref} = gen_server:call({asker, 'py@127.0.0.1'}, {start_run, <<\"x\">>, #{}}),"
        " receive {pynode_tool_call, Ref, _} -> ok after 5000 -> timeout end,"
        " ok = gen_server:call({asker, 'py@127.0.0.1'}, {cancel, Ref}),"
        " receive {pynode_result, Ref, R} -> R after 5000 -> timeout end"
    )
    assert cancelled.startswith("{error,{cancelled,")


async def test_max_concurrency_refuses_with_overloaded(erl: BeamNode) -> None:
    await create(erl, "single", PID_TOOL_SPEC.replace("#{model", "#{max_concurrency => 1, model", 1))
    got = await erl.eval(
        "A = {single, 'py@127.0.0.1'},"
        ' {ok, Ref} = gen_server:call(A, {start_run, <<"x">>, #{}}),'
        " receive {pynode_tool_call, Ref, #{call_id := Id}} -> ok after 5000 -> Id = timeout end,"
        ' Second = gen_server:call(A, {start_run, <<"y">>, #{}}),'
        " A ! {tool_result, Id, {ok, 1}},"
        " First = receive {pynode_result, Ref, R} -> element(1, R) after 5000 -> timeout end,"
        " {element(1, element(2, Second)), First}"
    )
    assert got == "{overloaded,ok}"


PY_AGENT = '''
from dataclasses import dataclass

from pydantic_ai import Agent, RunContext


@dataclass
class Deps:
    user: str
    limit: int = 3


agent = Agent("test", deps_type=Deps)


@agent.tool
def whoami(ctx: RunContext[Deps]) -> str:
    """The user this run is for."""
    return f"{ctx.deps.user}/{ctx.deps.limit}"
'''


async def test_python_defined_agent_with_deps(epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path) -> None:
    from pynode.bridge.registry import start_registry

    (tmp_path / "greeter.py").write_text(PY_AGENT)
    node = Node("pyagents@127.0.0.1", cookie, epmd_port=epmd_port)
    await node.start()
    try:
        await start_registry(node, agents_dir=tmp_path)
        erl = await beam("e3")
        listed = await erl.eval("gen_server:call({pynode, 'pyagents@127.0.0.1'}, list_agents)")
        assert listed == '{ok,[#{model => <<"test">>,name => greeter,origin => python}]}'
        out = await erl.eval(
            "{ok, R} = gen_server:call({greeter, 'pyagents@127.0.0.1'},"
            ' {run, <<"who?">>, #{deps => #{user => <<"ada">>, limit => 5}}}), maps:get(output, R)'
        )
        assert out == '<<"{\\"whoami\\":\\"ada/5\\"}">>'
        bad = await erl.eval(
            "gen_server:call({greeter, 'pyagents@127.0.0.1'}, {run, <<\"who?\">>, #{deps => #{limit => 5}}})"
        )
        assert bad.startswith("{error,{bad_request,") and "user" in bad
    finally:
        await node.stop()


async def test_200_concurrent_runs_from_200_processes(erl: BeamNode, py_node: Node) -> None:
    await create(erl, "busy", '#{model => <<"test">>}')
    got = await erl.eval(
        "Self = self(),"
        " Pids = [spawn(fun() -> Self ! {done, N, gen_server:call({busy, 'py@127.0.0.1'},"
        "   {run, integer_to_binary(N)}, 30000)} end) || N <- lists:seq(1, 200)],"
        " Results = [receive {done, N, R} -> R after 30000 -> timeout end || N <- lists:seq(1, 200)],"
        ' {length(Pids), length([ok || {ok, #{output := <<"success (no tool calls)">>}} <- Results])}',
        timeout=60,
    )
    assert got == "{200,200}"
    assert registry_of(py_node).limits.in_flight == 0


@on_otp("25", "28")
async def test_echo_any_term(erl: BeamNode) -> None:
    got = await erl.eval(
        "T = {[1, 1.0, #{1 => a, 1.0 => b, [x] => #{}}, <<255, 0>>, <<1:3>>, [a | b], self(), make_ref()]},"
        f" {{ok, T}} =:= gen_server:call({REG}, {{echo, T}})"
    )
    assert got == "true"


@on_otp("25", "28")
async def test_unknown_agent_name_is_noproc_at_once(erl: BeamNode) -> None:
    with pytest.raises(BeamEvalError) as info:
        await erl.eval("gen_server:call({no_such_agent, 'py@127.0.0.1'}, {run, <<\"x\">>}, 30000)", timeout=5)
    assert "noproc" in str(info.value)
