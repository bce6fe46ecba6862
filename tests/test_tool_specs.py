"""Handlers, instructions and run tools as the spec reads them, and the refusals made before a run.

No node: specs are terms, the run's ``{M, F}`` seams (``dispatch``, ``resolve``) are plain functions.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pynode.bridge.errors import BridgeError
from pynode.bridge.models import ModelCache
from pynode.bridge.runner import build_agent, execute_run
from pynode.bridge.spec import (
    MFHandler,
    ProcessHandler,
    RunOptions,
    ToolSpec,
    parse_agent_spec,
    parse_run_options,
)
from pynode.bridge.termmap import JSONValue
from pynode.bridge.tools import ToolFailed, ToolOk, ToolReply, ToolRetry, check_run_tools, function_reply
from pynode.etf.types import Atom, Pid

A = Atom
CALLER = Pid(A("e1@127.0.0.1"), 90, 0, 1)
OTHER = Pid(A("e1@127.0.0.1"), 91, 0, 1)


def spec_error(term: Any) -> str:
    with pytest.raises(BridgeError) as exc:
        parse_agent_spec(term)
    assert exc.value.kind == "bad_spec"
    return exc.value.message


# --- handlers ---------------------------------------------------------------------------------


def tool_with(handler: Any) -> dict[Any, Any]:
    return {A("model"): b"test", A("tools"): [{A("name"): b"t", A("handler"): handler}]}


def test_handlers_mf_mf_node_pid_and_name_node() -> None:
    def handler(term: Any) -> Any:
        return parse_agent_spec(tool_with(term)).tools[0].handler

    assert handler((A("Elixir.Weather"), A("lookup"))) == MFHandler(A("Elixir.Weather"), A("lookup"))
    assert handler((A("Elixir.Weather"), A("lookup"), A("ex1@h"))) == MFHandler(
        A("Elixir.Weather"), A("lookup"), A("ex1@h")
    )
    assert handler((A("tools"), A("ex1@h"))) == ProcessHandler((A("tools"), A("ex1@h")))
    assert handler(CALLER) == ProcessHandler(CALLER)
    assert str(MFHandler(A("Elixir.Weather"), A("lookup"))) == "Weather.lookup/1"


@pytest.mark.parametrize(
    "bad",
    [(A("m"), A("f"), A("not_a_node")), (A("m"), A("f"), b"n@h"), (A("m"),), (1, 2), b"m:f"],
)
def test_other_handlers_are_refused_in_erlang_syntax(bad: Any) -> None:
    message = spec_error(tool_with(bad))
    assert "handler must be {Module, Function}, {Module, Function, Node}, a pid or {Name, Node}" in message
    assert "Atom(" not in message and "b'" not in message


# --- instructions -----------------------------------------------------------------------------


def instructions(term: Any) -> tuple[Any, ...]:
    return parse_agent_spec({A("model"): b"test", A("instructions"): term}).instructions


def test_instructions_texts_functions_and_lists_of_both() -> None:
    system = MFHandler(A("Elixir.Prompts"), A("system"))
    assert instructions(b"Be brief.") == ("Be brief.",)
    assert instructions(list(b"typed in erl")) == ("typed in erl",)
    assert instructions([b"a", b"b"]) == ("a", "b")
    assert instructions((A("Elixir.Prompts"), A("system"))) == (system,)
    assert instructions([b"Be brief.", (A("Elixir.Prompts"), A("system")), list(b"x")]) == ("Be brief.", system, "x")
    on = MFHandler(A("prompts"), A("system"), A("ex1@h"))
    assert instructions([(A("prompts"), A("system"), A("ex1@h"))]) == (on,)


@pytest.mark.parametrize(
    "bad",
    [(A("only_one"),), [b"a", (1, 2)], [b"a", 42], (A("m"), A("f"), A("nonode")), A("hello")],
)
def test_instructions_that_are_neither_are_refused(bad: Any) -> None:
    assert spec_error({A("model"): b"test", A("instructions"): bad}).startswith("instructions")


def respond_with_instructions(seen: list[str | None]) -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(info.instructions)
        return ModelResponse(parts=[TextPart("ok")])

    return FunctionModel(respond)


async def no_dispatch(tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
    raise AssertionError("no tool is called")


async def test_dynamic_instructions_are_resolved_in_order_with_the_deps() -> None:
    seen: list[str | None] = []
    models = ModelCache()
    models.register("listener", respond_with_instructions(seen))
    spec = parse_agent_spec(
        {A("model"): b"listener", A("instructions"): [b"First.", (A("prompts"), A("system")), b"Last."]}
    )
    defn = build_agent(spec, models, name="helper", home=A("ex1@h"))
    assert defn.home == A("ex1@h")
    calls: list[tuple[MFHandler, dict[str, JSONValue]]] = []

    async def resolve(handler: MFHandler, deps: dict[str, JSONValue]) -> str:
        calls.append((handler, deps))
        return f"Dynamic for {deps.get('user', 'nobody')}."

    for deps in ({"user": "ada"}, None):
        options = RunOptions(deps=deps, instructions=("Extra.",))
        await execute_run(
            defn, "hi", options, models=models, dispatch=no_dispatch, on_event=None, run_id="r", resolve=resolve
        )
    first, second = seen
    assert first is not None and second is not None
    positions = [first.index(t) for t in ("First.", "Dynamic for ada.", "Last.", "Extra.")]
    assert positions == sorted(positions)  # the agent's in their order, then the run's own
    assert "Dynamic for nobody." in second
    assert calls == [
        (MFHandler(A("prompts"), A("system")), {"user": "ada"}),
        (MFHandler(A("prompts"), A("system")), {}),
    ]


async def test_a_failing_resolver_fails_the_run_with_its_error() -> None:
    models = ModelCache()
    models.register("listener", respond_with_instructions([]))
    spec = parse_agent_spec({A("model"): b"listener", A("instructions"): (A("prompts"), A("system"))})
    defn = build_agent(spec, models, name="helper")

    async def resolve(handler: MFHandler, deps: dict[str, JSONValue]) -> str:
        raise BridgeError("tool_error", "instructions prompts:system/1 raised badarg")

    with pytest.raises(BridgeError) as exc:
        await execute_run(
            defn, "hi", RunOptions(), models=models, dispatch=no_dispatch, on_event=None, run_id="r", resolve=resolve
        )
    assert (exc.value.kind, exc.value.message) == ("tool_error", "instructions prompts:system/1 raised badarg")


# --- what an {M, F} tool returns --------------------------------------------------------------


def test_function_replies_mean_what_they_mean_in_elixir() -> None:
    assert function_reply((A("ok"), {A("temp"): 21})) == ToolOk({"temp": 21})
    assert function_reply({A("temp"): 21}) == ToolOk({"temp": 21})
    assert function_reply(A("ok")) == ToolOk("ok")
    assert function_reply((A("ok"), 1, 2)) == ToolOk(["ok", 1, 2])
    assert function_reply((A("error"), (A("http"), 404))) == ToolFailed("{http,404}")
    assert function_reply((A("error"), b"not found")) == ToolFailed("not found")
    assert function_reply((A("retry"), b"which one?")) == ToolRetry("which one?")
    no_json = function_reply((A("ok"), CALLER))
    assert isinstance(no_json, ToolFailed)
    assert "no JSON form" in no_json.message and "the pid" in no_json.message


# --- run tools and what a synchronous run refuses ---------------------------------------------


def run_options(**opts: Any) -> RunOptions:
    return parse_run_options({A(k): v for k, v in opts.items()})


ASK = {A("name"): b"ask"}
AGENT_TOOL = ToolSpec(name="lookup", parameters={"type": "object"}, handler=MFHandler(A("m"), A("f")))


def refusal(options: RunOptions, *, agent_tools: tuple[ToolSpec, ...] = (), synchronous: bool = True) -> str:
    with pytest.raises(BridgeError) as exc:
        check_run_tools(agent_tools, [t.name for t in agent_tools], options, CALLER, synchronous=synchronous)
    assert exc.value.kind == "bad_request"
    return exc.value.message


def test_run_tools_are_parsed_like_spec_tools() -> None:
    options = run_options(tools=[ASK, {A("name"): b"find", A("handler"): (A("m"), A("f"))}])
    assert [t.name for t in options.tools] == ["ask", "find"]
    assert options.tools[1].handler == MFHandler(A("m"), A("f"))
    with pytest.raises(BridgeError) as exc:
        run_options(tools=[{A("name"): b"bad name"}])
    assert exc.value.kind == "bad_request"


def test_what_a_synchronous_run_refuses() -> None:
    assert "tool(s) ask have no handler" in refusal(run_options(tools=[ASK]))
    assert "tool_handler is the calling process" in refusal(run_options(tools=[ASK], tool_handler=CALLER))
    assert "tool_handler is the calling process" in refusal(run_options(tool_handler=CALLER))
    own = run_options(tools=[{A("name"): b"ask", A("handler"): CALLER}])
    assert "the handler of tool(s) ask is the calling process" in refusal(own)
    clash = run_options(tools=[{A("name"): b"lookup"}], tool_handler=OTHER)
    assert "'lookup' has the name of one of the agent's tools" in refusal(clash, agent_tools=(AGENT_TOOL,))
    assert "'lookup'" in refusal(clash, agent_tools=(AGENT_TOOL,), synchronous=False)


def test_what_a_synchronous_run_accepts() -> None:
    for options in (
        run_options(tools=[ASK], tool_handler=OTHER),
        run_options(tools=[{A("name"): b"ask", A("handler"): OTHER}]),
        run_options(),
    ):
        check_run_tools((AGENT_TOOL,), ["lookup"], options, CALLER, synchronous=True)
    # start_run may serve its own tools, and be its own tool_handler.
    check_run_tools((), [], run_options(tools=[ASK], tool_handler=CALLER), CALLER, synchronous=False)
