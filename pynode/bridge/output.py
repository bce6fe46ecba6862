"""Structured output from a JSON Schema sent by the BEAM (``output_schema``).

pydantic-ai gets a ``StructuredDict`` so the model is asked for an object of that shape (as an
output tool); the schema's full meaning (``minimum``, ``pattern``, ``enum``, ...) is then checked
with jsonschema, Draft 2020-12, by :class:`SchemaCheck`, which turns each violation into a
``ModelRetry`` the model sees. When the retries run out pydantic-ai raises
``UnexpectedModelBehavior``, which the caller gets as ``unexpected_model_behavior``.

The check is a capability, passed with the output type to each run, rather than an agent-level
output validator: pydantic-ai refuses a run's own ``output_type`` on an agent that has output
validators, and ``output_schema`` may be overridden per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import jsonschema
from pydantic_ai import ModelRetry, RunContext, StructuredDict
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import UserError
from pydantic_ai.output import OutputContext

from pynode.bridge.errors import BridgeError, ErrorKind

__all__ = [
    "JSONSchemaValidator",
    "SchemaCheck",
    "SchemaOutput",
    "check_json_schema",
    "schema_error_message",
    "schema_output",
]

MAX_REPORTED_ERRORS: Final = 5


def _validator_class() -> type[jsonschema.Draft202012Validator]:
    """Draft 2020-12 as jsonschema has it, with its type checks looked up in a plain dict.

    jsonschema keeps the checks in an ``rpds`` map, and its lookup, made for every ``type`` keyword
    of every tool call, leaves a few hundred small blocks alive: bounded, but made during a burst of
    runs, in the burst's memory, where each keeps one of pymalloc's 1 MiB arenas from going back
    (after the second round of 10,000 runs in flight: 331 MB with this class, 533-546 MB without).
    The checks themselves are jsonschema's own; a jsonschema that keeps them otherwise gets its
    validator as it is.
    """
    base = jsonschema.Draft202012Validator
    try:
        checks: dict[str, Any] = dict(base.TYPE_CHECKER._type_checkers.items())
    except AttributeError:
        return base

    class DictTypeChecker(type(base.TYPE_CHECKER)):  # type: ignore[misc]
        def is_type(self, instance: Any, type: str) -> bool:
            try:
                check = checks[type]
            except KeyError:
                raise jsonschema.exceptions.UndefinedTypeCheck(type) from None
            return bool(check(self, instance))

    extended: type[jsonschema.Draft202012Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        base, type_checker=DictTypeChecker(checks)
    )
    return extended


JSONSchemaValidator: Final = _validator_class()
"""The class of every validator the node builds (output schemas, tool parameters)."""


def check_json_schema(schema: dict[str, Any], *, what: str, kind: ErrorKind) -> jsonschema.Draft202012Validator:
    """A validator for ``schema``, or ``BridgeError(kind)`` saying why it is not a Draft 2020-12 schema."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BridgeError(kind, f"{what} is not a valid JSON Schema: {exc.message}") from None
    return JSONSchemaValidator(schema)


def schema_error_message(validator: jsonschema.Draft202012Validator, instance: Any) -> str | None:
    """Every way ``instance`` breaks the schema, one per line (at most a few), or ``None`` if it fits."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    lines = [f"{e.json_path}: {e.message}" for e in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        lines.append(f"... and {len(errors) - MAX_REPORTED_ERRORS} more")
    return "\n".join(lines)


class SchemaCheck(AbstractCapability[Any]):
    """Validates the run's final output against a JSON Schema; a mismatch asks the model to retry."""

    def __init__(self, validator: jsonschema.Draft202012Validator) -> None:
        self.validator = validator

    def validate(self, output: Any) -> Any:
        """``output`` if it fits the schema, else ``ModelRetry`` with what is wrong."""
        problem = schema_error_message(self.validator, output)
        if problem is not None:
            raise ModelRetry(f"The output does not match the required JSON Schema:\n{problem}")
        return output

    async def after_output_validate(self, ctx: RunContext[Any], *, output_context: OutputContext, output: Any) -> Any:
        if ctx.partial_output:  # a streamed, still incomplete object: judge only the final one
            return output
        return self.validate(output)


@dataclass(frozen=True, slots=True)
class SchemaOutput:
    """What a run needs for an ``output_schema``: the output type and the check to pass with it."""

    schema: dict[str, Any]
    output_type: type[dict[str, Any]]
    check: SchemaCheck


def schema_output(schema: dict[str, Any], *, kind: ErrorKind = "bad_spec") -> SchemaOutput:
    """Build the output for a JSON Schema map; ``BridgeError(kind)`` if it is unusable.

    The root must describe an object (pydantic-ai hands it to the model as an output tool's
    parameters); ``kind`` is ``bad_spec`` for an agent spec and ``bad_request`` for a run option.
    """
    validator = check_json_schema(schema, what="output_schema", kind=kind)
    try:
        output_type = StructuredDict(dict(schema))
    except UserError as exc:
        raise BridgeError(kind, f'output_schema: {exc.message} (the root needs "type": "object")') from None
    return SchemaOutput(schema=schema, output_type=output_type, check=SchemaCheck(validator))
