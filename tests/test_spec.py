"""Agent specs and run options: every key of docs/protocol.md sections 3 and 4, and every refusal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessagesTypeAdapter, ModelRequest, ModelResponse
from pydantic_ai.models.test import TestModel

from pynode.bridge.errors import BridgeError
from pynode.bridge.spec import (
    AGENT_SPEC_KEYS,
    RUN_OPTION_KEYS,
    CreateOptions,
    MFHandler,
    ProcessHandler,
    parse_agent_spec,
    parse_create_options,
    parse_run_options,
)
from pynode.bridge.termmap import from_json
from pynode.etf.decode import decode
from pynode.etf.encode import encode
from pynode.etf.types import Atom, MapKey, Pid

PID = Pid(Atom("caller@host"), 42, 0, 3)
A = Atom


def spec_error(term: Any) -> str:
    with pytest.raises(BridgeError) as exc:
        parse_agent_spec(term)
    assert exc.value.kind == "bad_spec"
    return exc.value.message


def option_error(term: Any) -> str:
    with pytest.raises(BridgeError) as exc:
        parse_run_options(term)
    assert exc.value.kind == "bad_request"
    return exc.value.message


WEATHER_PARAMS = {
    b"type": b"object",
    b"properties": {b"city": {b"type": b"string"}},
    b"required": [b"city"],
}


# --- agent spec -------------------------------------------------------------------------------


def test_spec_tables_match_the_protocol() -> None:
    assert {
        "model",
        "fallback",
        "instructions",
        "system_prompt",
        "output_schema",
        "tools",
        "toolsets",
        "model_settings",
        "usage_limits",
        "retries",
        "max_concurrency",
    } == AGENT_SPEC_KEYS
    assert {
        "message_history",
        "deps",
        "instructions",
        "model",
        "model_settings",
        "usage_limits",
        "output_schema",
        "timeout",
        "tools",
        "tool_handler",
        "stream_to",
        "events",
        "messages_as",
        "trace_context",
        "approver",
        "approvals",
    } == RUN_OPTION_KEYS


def test_minimal_spec_with_atom_keys() -> None:
    spec = parse_agent_spec({A("model"): b"test"})
    assert spec.model == "test"
    assert spec.instructions == ()
    assert spec.tools == ()
    assert spec.output_schema is None
    assert spec.retries is None


def test_full_spec_with_binary_keys() -> None:
    spec = parse_agent_spec(
        {
            b"model": b"openai:gpt-4o",
            b"instructions": [b"Be brief.", b"Answer in French."],
            b"system_prompt": b"You are a weather bot.",
            b"output_schema": {b"type": b"object", b"properties": {b"temp": {b"type": b"number"}}},
            b"tools": [{b"name": b"weather", b"description": b"Weather now", b"parameters": WEATHER_PARAMS}],
            b"model_settings": {b"temperature": 0.2, b"max_tokens": 100},
            b"usage_limits": {b"request_limit": 3, b"total_tokens_limit": 1000},
            b"retries": 2,
            b"max_concurrency": 4,
        }
    )
    assert spec.model == "openai:gpt-4o"
    assert spec.instructions == ("Be brief.", "Answer in French.")
    assert spec.system_prompt == ("You are a weather bot.",)
    assert spec.output_schema == {"type": "object", "properties": {"temp": {"type": "number"}}}
    assert spec.output is not None and spec.output.schema == spec.output_schema  # built once, here
    assert spec.model_settings == {"temperature": 0.2, "max_tokens": 100}
    assert spec.usage_limits is not None
    assert spec.usage_limits.request_limit == 3
    assert spec.usage_limits.total_tokens_limit == 1000
    assert spec.retries == 2
    assert spec.max_concurrency == 4
    (tool,) = spec.tools
    assert tool.name == "weather"
    assert tool.description == "Weather now"
    assert tool.parameters == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    assert tool.handler is None


def test_charlists_from_the_erl_shell_are_text() -> None:
    spec = parse_agent_spec({A("model"): list(b"test"), A("instructions"): list(b"Be kind.")})
    assert spec.model == "test"
    assert spec.instructions == ("Be kind.",)
    spec = parse_agent_spec({A("model"): b"test", A("instructions"): [list(b"One."), list(b"Two.")]})
    assert spec.instructions == ("One.", "Two.")


def test_nil_means_not_given() -> None:
    spec = parse_agent_spec({A("model"): b"test", A("retries"): A("nil"), A("tools"): A("undefined")})
    assert spec.retries is None
    assert spec.tools == ()


def test_model_is_required() -> None:
    assert "model" in spec_error({A("instructions"): b"x"})


def test_spec_must_be_a_map() -> None:
    assert "must be a map" in spec_error([(A("model"), b"test")])


def test_unknown_key_is_named() -> None:
    assert "'temprature'" in spec_error({A("model"): b"test", A("temprature"): 1})


def test_key_that_is_not_atom_or_binary_is_refused() -> None:
    assert "not an atom or a binary" in spec_error({A("model"): b"test", 7: 1})
    assert "not an atom or a binary" in spec_error({A("model"): b"test", MapKey(1.5): 1})


def test_same_key_as_atom_and_binary_is_refused() -> None:
    assert "twice" in spec_error({A("model"): b"test", b"model": b"test"})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("model", A("test"), "model must be a binary"),
        ("model", 5, "model must be a binary"),
        ("instructions", 5, "instructions must be a binary"),
        ("instructions", [b"ok", 5], "instructions[1] must be a binary"),
        ("system_prompt", {b"a": 1}, "system_prompt must be a binary"),
        ("output_schema", b"{}", "output_schema must be a map"),
        ("tools", {b"name": b"x"}, "tools must be a list"),
        ("model_settings", [1], "model_settings must be a map"),
        ("usage_limits", 5, "usage_limits must be a map"),
        ("retries", b"2", "retries must be an integer"),
        ("retries", True, "retries must be an integer"),
        ("retries", -1, "retries must be at least 0"),
        ("max_concurrency", 0, "max_concurrency must be at least 1"),
        ("max_concurrency", 1.5, "max_concurrency must be an integer"),
    ],
)
def test_wrong_types_name_key_and_expected_type(key: str, value: Any, expected: str) -> None:
    assert expected in spec_error({A("model"): b"test", A(key): value})


def test_output_schema_that_is_not_a_json_schema() -> None:
    message = spec_error({A("model"): b"test", A("output_schema"): {b"type": b"nope"}})
    assert "output_schema is not a valid JSON Schema" in message


def test_output_schema_must_describe_an_object() -> None:
    message = spec_error({A("model"): b"test", A("output_schema"): {b"type": b"string"}})
    assert "output_schema" in message
    assert "object" in message


def test_model_settings_types_are_checked() -> None:
    message = spec_error({A("model"): b"test", A("model_settings"): {A("temperature"): b"hot"}})
    assert "model_settings.temperature" in message


def test_unknown_model_setting_is_named() -> None:
    message = spec_error({A("model"): b"test", A("model_settings"): {A("temprature"): 1}})
    assert "'temprature'" in message


def test_provider_specific_settings_pass_through() -> None:
    spec = parse_agent_spec(
        {A("model"): b"test", A("model_settings"): {A("openai_reasoning_effort"): b"low", A("seed"): 7}}
    )
    assert spec.model_settings == {"openai_reasoning_effort": "low", "seed": 7}


def test_usage_limits() -> None:
    spec = parse_agent_spec(
        {
            A("model"): b"test",
            A("usage_limits"): {
                A("tool_calls_limit"): 5,
                A("count_tokens_before_request"): True,
                A("cost_limit"): 0.5,
                A("request_limit"): A("nil"),
            },
        }
    )
    limits = spec.usage_limits
    assert limits is not None
    assert limits.tool_calls_limit == 5
    assert limits.count_tokens_before_request is True
    assert limits.cost_limit == Decimal("0.5")
    assert limits.request_limit is None


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({A("requests"): 1}, "unknown limit 'requests'"),
        ({A("request_limit"): -1}, "usage_limits.request_limit must be a non-negative integer"),
        ({A("request_limit"): b"1"}, "usage_limits.request_limit"),
        ({A("count_tokens_before_request"): 1}, "must be true or false"),
    ],
)
def test_bad_usage_limits(limits: Any, expected: str) -> None:
    assert expected in spec_error({A("model"): b"test", A("usage_limits"): limits})


# --- tools ------------------------------------------------------------------------------------


def tool_spec(**fields: Any) -> dict[Any, Any]:
    return {A("model"): b"test", A("tools"): [{A(k): v for k, v in fields.items()}]}


def test_tool_handler_module_function() -> None:
    (tool,) = parse_agent_spec(tool_spec(name=b"t", handler=(A("weather"), A("lookup")))).tools
    assert tool.handler == MFHandler(A("weather"), A("lookup"))


def test_tool_handler_pid() -> None:
    (tool,) = parse_agent_spec(tool_spec(name=b"t", handler=PID)).tools
    assert tool.handler == ProcessHandler(PID)


def test_tool_handler_registered_name_on_a_node() -> None:
    (tool,) = parse_agent_spec(tool_spec(name=b"t", handler=(A("tool_server"), A("app@host")))).tools
    assert tool.handler == ProcessHandler((A("tool_server"), A("app@host")))


def test_tool_requires_approval() -> None:
    (tool,) = parse_agent_spec(tool_spec(name=b"t", requires_approval=True)).tools
    assert tool.requires_approval is True
    (tool,) = parse_agent_spec(tool_spec(name=b"t")).tools
    assert tool.requires_approval is False
    with pytest.raises(BridgeError) as info:
        parse_agent_spec(tool_spec(name=b"t", requires_approval=b"yes"))
    assert info.value.kind == "bad_spec" and "requires_approval must be true or false" in info.value.message


def test_approver_and_approvals_options() -> None:
    assert parse_run_options({A("approver"): A("defer")}).approver == "defer"
    assert parse_run_options({A("approver"): PID}).approver == PID
    assert parse_run_options({A("approver"): (A("desk"), A("app@host"))}).approver == (A("desk"), A("app@host"))
    assert parse_run_options({}).approver is None
    opts = parse_run_options({A("approvals"): {b"c1": A("approve"), b"c2": (A("deny"), b"no")}})
    assert opts.approvals == {"c1": A("approve"), "c2": (A("deny"), b"no")}
    for bad in [{A("approver"): b"later"}, {A("approvals"): [b"c1"]}, {A("approvals"): {1: A("approve")}}]:
        with pytest.raises(BridgeError) as info:
            parse_run_options(bad)
        assert info.value.kind == "bad_request"


def test_tool_without_handler_or_parameters() -> None:
    (tool,) = parse_agent_spec(tool_spec(name=b"t", handler=A("nil"))).tools
    assert tool.handler is None
    assert tool.parameters == {"type": "object", "properties": {}}
    assert tool.description == ""


def test_tool_parameters_get_type_object_by_default() -> None:
    (tool,) = parse_agent_spec(tool_spec(name=b"t", parameters={b"properties": {}})).tools
    assert tool.parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"description": b"no name"}, "tools[0] needs a name"),
        ({"name": b"has space"}, "must be 1 to 64 letters"),
        ({"name": b"x" * 65}, "must be 1 to 64 letters"),
        ({"name": b"t", "colour": b"red"}, "unknown key 'colour'"),
        ({"name": b"t", "handler": (A("m"), A("f"), A("x"))}, "handler must be {Module, Function}"),
        ({"name": b"t", "handler": b"m:f"}, "handler must be {Module, Function}"),
        ({"name": b"t", "parameters": {b"type": b"array"}}, "must describe an object"),
        (
            {"name": b"t", "parameters": {b"type": b"object", b"properties": {b"x": {b"type": b"nope"}}}},
            "parameters is not a valid JSON Schema",
        ),
        ({"name": b"t", "parameters": [1]}, "parameters must be a map"),
    ],
)
def test_bad_tool_specs(fields: dict[str, Any], expected: str) -> None:
    assert expected in spec_error(tool_spec(**fields))


def test_tool_names_must_differ() -> None:
    message = spec_error({A("model"): b"test", A("tools"): [{A("name"): b"t"}, {A("name"): b"t"}]})
    assert "two tools are named 't'" in message


def test_tools_must_be_maps() -> None:
    assert "tools[0] must be a map" in spec_error({A("model"): b"test", A("tools"): [b"weather"]})


# --- run options ------------------------------------------------------------------------------


def test_empty_options() -> None:
    options = parse_run_options({})
    assert options.message_history is None
    assert options.deps is None
    assert options.timeout is None
    assert options.timeout_seconds is None
    assert options.tool_handler is None
    assert options.trace_context == ()


TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_trace_context_as_inject_returns_it_or_as_a_map() -> None:
    """``otel_propagator_text_map:inject([])`` gives ``[{Bin, Bin}]``; keys are read case-insensitively."""
    injected = [(b"traceparent", TRACEPARENT), (b"tracestate", b"rojo=00f067aa0ba902b7"), (b"baggage", b"k=v")]
    options = parse_run_options({A("trace_context"): injected})
    assert options.trace_context == (
        ("traceparent", TRACEPARENT.decode()),
        ("tracestate", "rojo=00f067aa0ba902b7"),
        ("baggage", "k=v"),
    )
    as_map = parse_run_options({b"trace_context": {b"Traceparent": TRACEPARENT, A("baggage"): b"k=v"}})
    assert as_map.trace_context == (("traceparent", TRACEPARENT.decode()), ("baggage", "k=v"))
    assert parse_run_options({A("trace_context"): []}).trace_context == ()
    assert parse_run_options({A("trace_context"): A("undefined")}).trace_context == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TRACEPARENT, "trace_context must be a list of {Key, Value} binaries"),
        ([TRACEPARENT], "trace_context must be a list of {Key, Value} binaries"),
        ([(b"traceparent", TRACEPARENT, b"x")], "trace_context must be a list of {Key, Value} binaries"),
        (
            [(b"traceparent", A("none"))],
            'trace_context entries must be binaries, {Key, Value}, got {<<"traceparent">>,none}',
        ),
        ([(7, TRACEPARENT)], "trace_context entries must be binaries"),
        ({b"traceparent": 1}, "trace_context entries must be binaries"),
        (
            [(b"traceparent", TRACEPARENT), (b"TraceParent", TRACEPARENT)],
            "trace_context has the key 'traceparent' twice",
        ),
    ],
)
def test_bad_trace_context_is_a_bad_request(value: Any, expected: str) -> None:
    assert expected in option_error({A("trace_context"): value})


async def earlier_messages() -> bytes:
    result = await Agent(TestModel()).run("hello")
    return result.all_messages_json()


async def test_all_options() -> None:
    history = await earlier_messages()
    options = parse_run_options(
        {
            A("message_history"): history,
            A("deps"): {A("user"): b"ada", b"level": 3},
            A("instructions"): b"Be brief.",
            A("model"): b"test",
            A("model_settings"): {A("temperature"): 0},
            A("usage_limits"): {A("request_limit"): 2},
            A("output_schema"): {b"type": b"object"},
            A("timeout"): 1500,
            A("tool_handler"): (A("tools"), A("app@host")),
            A("stream_to"): PID,
        }
    )
    assert options.message_history == ModelMessagesTypeAdapter.validate_json(history)
    assert isinstance(options.message_history[0], ModelRequest)
    assert isinstance(options.message_history[1], ModelResponse)
    assert options.deps == {"user": "ada", "level": 3}
    assert options.instructions == ("Be brief.",)
    assert options.model == "test"
    assert options.model_settings == {"temperature": 0.0}
    assert options.usage_limits is not None
    assert options.usage_limits.request_limit == 2
    assert options.output_schema == {"type": "object"}
    assert options.output is not None and options.output.schema == {"type": "object"}
    assert options.timeout == 1500
    assert options.timeout_seconds == 1.5
    assert options.tool_handler == (A("tools"), A("app@host"))
    assert options.stream_to == PID
    assert options.events is True
    assert options.messages_as == "json"


async def test_history_as_terms_reads_as_the_json_does() -> None:
    history = await earlier_messages()
    messages = ModelMessagesTypeAdapter.validate_json(history)
    as_terms = from_json(ModelMessagesTypeAdapter.dump_python(messages, mode="json"))
    assert isinstance(as_terms, list) and all(isinstance(m, dict) for m in as_terms)
    # As a BEAM node sends it back: binaries for strings, atoms for null and booleans.
    wire = decode(encode(as_terms))
    assert parse_run_options({A("message_history"): wire}).message_history == ModelMessagesTypeAdapter.validate_json(
        history
    )


def test_events_messages_as_and_text_output() -> None:
    options = parse_run_options({A("events"): A("false"), A("messages_as"): A("terms"), A("output_schema"): A("text")})
    assert (options.events, options.messages_as, options.output_schema) == (False, "terms", "text")
    options = parse_run_options({b"events": True, b"messages_as": b"json", b"output_schema": b"text"})
    assert (options.events, options.messages_as, options.output_schema) == (True, "json", "text")


def test_option_errors_show_terms_in_erlang_syntax() -> None:
    assert option_error({A("events"): b"soon"}) == 'events must be true or false, got <<"soon">>'
    assert option_error({A("messages_as"): A("Erlang")}) == "messages_as must be json or terms, got 'Erlang'"
    with pytest.raises(BridgeError) as exc:
        parse_create_options({A("if_exists"): (A("ok"), 1)})
    assert exc.value.message == "if_exists must be error, replace or keep, got {ok,1}"


def test_create_options() -> None:
    assert parse_create_options({}) == CreateOptions(if_exists="error", owner=None)
    for choice in ("error", "replace", "keep"):
        assert parse_create_options({A("if_exists"): A(choice)}).if_exists == choice
        assert parse_create_options({b"if_exists": choice.encode()}).if_exists == choice
    assert parse_create_options({A("owner"): PID, A("if_exists"): A("nil")}) == CreateOptions(owner=PID)


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ([], "the create options must be a map"),
        ({A("if_exists"): A("overwrite")}, "if_exists must be error, replace or keep"),
        ({A("owner"): b"me"}, "owner must be a pid"),
        ({A("ownr"): PID}, "unknown key 'ownr'"),
    ],
)
def test_bad_create_options(opts: Any, expected: str) -> None:
    with pytest.raises(BridgeError) as exc:
        parse_create_options(opts)
    assert exc.value.kind == "bad_request"
    assert expected in exc.value.message


def test_tool_handler_pid_and_infinite_timeout() -> None:
    options = parse_run_options({A("tool_handler"): PID, A("timeout"): A("infinity")})
    assert options.tool_handler == PID
    assert options.timeout is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({A("timout"): 5}, "unknown key 'timout'"),
        ({A("timeout"): 0}, "timeout must be at least 1"),
        ({A("timeout"): -5}, "timeout must be at least 1"),
        ({A("timeout"): True}, "timeout must be an integer"),
        ({A("timeout"): 1.5}, "timeout must be an integer"),
        ({A("message_history"): [1, 2]}, "message_history must be the messages of a Result"),
        ({A("message_history"): [{b"kind": b"nonsense"}]}, "message_history is not the messages"),
        ({A("events"): A("no")}, "events must be true or false"),
        ({A("messages_as"): A("erlang")}, "messages_as must be json or terms"),
        ({A("output_schema"): A("json")}, "output_schema must be a JSON Schema map or text"),
        ({A("message_history"): b"not json"}, "message_history is not the messages of an earlier Result"),
        ({A("message_history"): b'[{"kind": "nonsense"}]'}, "message_history is not the messages"),
        ({A("deps"): [1]}, "deps must be a map"),
        ({A("deps"): {A("who"): PID}}, "deps:"),
        ({A("tool_handler"): b"pid"}, "tool_handler must be a pid or {Name, Node}"),
        ({A("stream_to"): (A("a"), A("b@c"))}, "stream_to must be a pid"),
        ({A("model"): A("test")}, "model must be a binary"),
        ({A("output_schema"): {b"type": b"string"}}, "output_schema"),
        ({A("model_settings"): {A("max_tokens"): b"many"}}, "model_settings.max_tokens"),
    ],
)
def test_bad_options_name_the_option(options: Any, expected: str) -> None:
    assert expected in option_error(options)


def test_options_must_be_a_map() -> None:
    assert "must be a map" in option_error([(A("timeout"), 5)])
