"""output_schema: a StructuredDict output plus a jsonschema check that makes the model retry."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.exceptions import UnexpectedModelBehavior
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from pynode.bridge.errors import BridgeError, classify
from pynode.bridge.output import schema_output

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
