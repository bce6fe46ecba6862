"""output_schema: a StructuredDict output plus a jsonschema check that makes the model retry."""

from __future__ import annotations

import gc
import os
import tracemalloc
from typing import Any

import jsonschema
import pytest
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.exceptions import UnexpectedModelBehavior
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from pynode.bridge.errors import BridgeError, classify
from pynode.bridge.output import JSONSchemaValidator, schema_output

PERSON = {
    "type": "object",
    "title": "person",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def answering(*outputs: dict[str, Any]) -> tuple[FunctionModel, list[AgentInfo]]:
    """A model that answers each request with the next output (the last one repeats)."""
    seen: list[AgentInfo] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(info)
        output = outputs[min(len(seen), len(outputs)) - 1]
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, output)])

    return FunctionModel(respond), seen


def retry_feedback(messages: list[ModelMessage]) -> list[str]:
    return [
        str(part.content)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart) and part.outcome == "retried"
    ]


async def test_bad_output_then_good_output() -> None:
    output = schema_output(PERSON)
    model, seen = answering({"name": "Ada", "age": -3}, {"name": "Ada", "age": 36})
    result = await Agent(model).run("who?", output_type=output.output_type, capabilities=[output.check])
    assert result.output == {"name": "Ada", "age": 36}
    assert len(seen) == 2
    (feedback,) = retry_feedback(result.all_messages())
    assert "$.age" in feedback
    assert "minimum of 0" in feedback


async def test_model_is_shown_the_schema() -> None:
    output = schema_output(PERSON)
    model, seen = answering({"name": "Ada", "age": 36})
    await Agent(model).run("who?", output_type=output.output_type, capabilities=[output.check])
    (tool,) = seen[0].output_tools
    assert tool.parameters_json_schema["properties"] == PERSON["properties"]
    assert seen[0].allow_text_output is False


async def test_always_bad_output_ends_as_unexpected_model_behavior() -> None:
    output = schema_output(PERSON)
    model, seen = answering({"name": "Ada", "age": 36, "extra": True})
    with pytest.raises(UnexpectedModelBehavior) as exc:
        await Agent(model, retries=2).run("who?", output_type=output.output_type, capabilities=[output.check])
    assert len(seen) == 3  # the first answer and two retries
    kind, message = classify(exc.value)
    assert kind == "unexpected_model_behavior"
    assert "retries" in message


async def test_test_model_output_fits_the_schema() -> None:
    output = schema_output(PERSON)
    result = await Agent(TestModel()).run("x", output_type=output.output_type, capabilities=[output.check])
    assert set(result.output) == {"name", "age"}
    assert output.check.validate(result.output) == result.output


def test_check_lists_every_problem() -> None:
    check = schema_output(PERSON).check
    with pytest.raises(ModelRetry) as exc:
        check.validate({"age": "old", "x": 1})
    message = exc.value.message
    assert "'name' is a required property" in message
    assert "$.age: 'old' is not of type 'integer'" in message
    assert "Additional properties are not allowed" in message


def test_check_passes_good_output_through() -> None:
    value = {"name": "Ada", "age": 36}
    assert schema_output(PERSON).check.validate(value) is value


def test_invalid_schema_is_refused_with_the_given_kind() -> None:
    with pytest.raises(BridgeError) as exc:
        schema_output({"type": "object", "properties": {"a": {"type": 5}}})
    assert exc.value.kind == "bad_spec"
    assert "not a valid JSON Schema" in exc.value.message
    with pytest.raises(BridgeError) as exc:
        schema_output({"type": "object", "minProperties": -1}, kind="bad_request")
    assert exc.value.kind == "bad_request"


def test_schema_root_must_be_an_object() -> None:
    with pytest.raises(BridgeError) as exc:
        schema_output({"type": "array", "items": {"type": "string"}})
    assert exc.value.kind == "bad_spec"
    assert '"type": "object"' in exc.value.message


_TYPED = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "x": {"type": ["number", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "flag": {"type": "boolean"},
    },
    "required": ["n"],
}


@pytest.mark.parametrize(
    "instance",
    [
        {"n": 1},
        {"n": 2.0, "x": None},
        {"n": 1.5},
        {"n": True},
        {"n": 1, "x": True},
        {"n": 1, "x": 3.25, "tags": ["a", 1], "flag": 0},
        {"n": 1, "tags": "a", "flag": False},
        [],
        "text",
    ],
)
def test_the_nodes_validator_judges_types_as_jsonschema_does(instance: Any) -> None:
    ours = sorted(e.message for e in JSONSchemaValidator(_TYPED).iter_errors(instance))
    assert ours == sorted(e.message for e in jsonschema.Draft202012Validator(_TYPED).iter_errors(instance))


def test_an_unknown_type_is_still_refused_as_jsonschema_refuses_it() -> None:
    with pytest.raises(jsonschema.exceptions.UnknownType):
        JSONSchemaValidator({"type": "nonsense"}).is_valid(1)


def test_a_burst_of_validations_leaves_no_blocks_alive() -> None:
    # Blocks alive after a burst of tool calls keep pymalloc's arenas from going back (output.py).
    validator = JSONSchemaValidator(_TYPED)
    instance = {"n": 1, "x": 2.5, "tags": ["a"], "flag": True}
    list(validator.iter_errors(instance))
    # What jsonschema (with rpds under it) and the node's validator made, as it was made there.
    theirs = [
        tracemalloc.Filter(True, f"*{os.sep}jsonschema{os.sep}*"),
        tracemalloc.Filter(True, f"*{os.sep}pynode{os.sep}*"),
    ]
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.take_snapshot().filter_traces(theirs)
        for i in range(2000):
            assert not list(validator.iter_errors({**instance, "n": i}))
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(theirs)
    finally:
        tracemalloc.stop()
    grown = [d for d in after.compare_to(before, "lineno") if d.count_diff > 0]
    left = sum(d.count_diff for d in grown)
    assert left <= 5, f"{left} blocks made by 2,000 validations are still alive: {grown}"
