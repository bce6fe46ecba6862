"""The agent side of the node: pydantic-ai agents served to BEAM callers, with no socket in sight.

- ``termmap``: terms <-> JSON values where the protocol means JSON, prompts to text, envelope keys.
- ``errors``: the protocol's error kinds and the one mapping of exceptions to them.
- ``spec``: agent specs and run options, checked once, with messages that name the key.
- ``models``: one pydantic-ai model object per model name.
- ``output``: ``output_schema`` as an output type plus a jsonschema check that asks the model to retry.
- ``structs``: Elixir's calendar and Decimal structs as the strings Elixir's JSON libraries write.
- ``tools``: BEAM-implemented tools as a pydantic-ai toolset over a dispatch seam the node fills,
  what an ``{M, F}`` tool's return means, and the runs refused because nobody could answer a tool.
- ``functions``: ``{M, F}`` tools and instructions called on their node, failures told in words.
- ``runner``: agent definitions and one run, from prompt and options to the Result term.
- ``warmup``: one run of the node's own before it joins, so pydantic-ai's first-run work is done.
- ``tracing``: OpenTelemetry from the ``OTEL_*`` variables; runs joined to the caller's trace, tool
  calls sent with their ``execute_tool`` span's context.
- ``loader``: agents defined in Python files.
"""

from pynode.bridge.errors import ERROR_KINDS, BridgeError, ErrorKind, classify, error_term
from pynode.bridge.loader import AgentScan, LoadError, load_agents, scan_agents
from pynode.bridge.models import ModelCache
from pynode.bridge.output import SchemaCheck, SchemaOutput, schema_output
from pynode.bridge.runner import (
    AgentDefinition,
    InstructionResolver,
    RunEvent,
    TextDelta,
    ToolCallFailed,
    ToolCallFinished,
    ToolCallStarted,
    build_agent,
    execute_run,
)
from pynode.bridge.spec import (
    AgentSpec,
    Instruction,
    MFHandler,
    ProcessHandler,
    RunOptions,
    ToolSpec,
    parse_agent_spec,
    parse_run_options,
)
from pynode.bridge.termmap import JSONValue, from_json, key, text_from_prompt, to_json
from pynode.bridge.tools import (
    ToolDispatcher,
    ToolFailed,
    ToolOk,
    ToolReply,
    ToolRetry,
    beam_toolset,
    check_run_tools,
    function_reply,
    parse_tool_reply,
)

__all__ = [
    "ERROR_KINDS",
    "AgentDefinition",
    "AgentScan",
    "AgentSpec",
    "BridgeError",
    "ErrorKind",
    "Instruction",
    "InstructionResolver",
    "JSONValue",
    "LoadError",
    "MFHandler",
    "ModelCache",
    "ProcessHandler",
    "RunEvent",
    "RunOptions",
    "SchemaCheck",
    "SchemaOutput",
    "TextDelta",
    "ToolCallFailed",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolDispatcher",
    "ToolFailed",
    "ToolOk",
    "ToolReply",
    "ToolRetry",
    "ToolSpec",
    "beam_toolset",
    "build_agent",
    "check_run_tools",
    "classify",
    "error_term",
    "execute_run",
    "from_json",
    "function_reply",
    "key",
    "load_agents",
    "parse_agent_spec",
    "parse_run_options",
    "parse_tool_reply",
    "scan_agents",
    "schema_output",
    "text_from_prompt",
    "to_json",
]
