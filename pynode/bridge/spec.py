"""Agent specs (``create_agent``, docs/protocol.md section 3) and run options (section 4), checked once.

Both arrive as maps whose keys may be atoms or binaries. Anything wrong is refused before an agent
exists or a run starts, with a message naming the key: ``bad_spec`` for a spec, ``bad_request``
for run options. A value of ``nil`` (or ``undefined``) for an optional key means "not given".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Final, Literal, TypeAlias, TypeGuard, get_type_hints

import pydantic
import pydantic_core
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import UsageLimits

from pynode.bridge.errors import BridgeError, ErrorKind, quoted
from pynode.bridge.function_model import FunctionRef, fun_arity
from pynode.bridge.models import EnvKey, ModelConfig, ModelRef, OpenAIApi, Provider, Secret
from pynode.bridge.output import SchemaOutput, check_json_schema, schema_output
from pynode.bridge.termmap import JSONValue, text_from_prompt, to_json
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Export, OpaqueFun, Pid, Term

__all__ = [
    "AGENT_SPEC_KEYS",
    "CREATE_OPTION_KEYS",
    "NO_RUN_OPTIONS",
    "RUN_OPTION_KEYS",
    "TOOL_SPEC_KEYS",
    "AgentSpec",
    "CreateOptions",
    "Defer",
    "IfExists",
    "Instruction",
    "MCPServerSpec",
    "MFHandler",
    "MessagesAs",
    "ProcessDest",
    "ProcessHandler",
    "RunOptions",
    "TextOutput",
    "ToolHandler",
    "ToolSpec",
    "TraceContext",
    "parse_agent_spec",
    "parse_create_options",
    "parse_run_options",
    "spec_has_toolsets",
]

ProcessDest: TypeAlias = Pid | tuple[Atom, Atom]
"""Where a message goes: a pid, or ``{RegisteredName, Node}``."""

TextOutput: TypeAlias = Literal["text"]
"""``output_schema => text``: the run's output is plain text, whatever the agent's schema."""

MessagesAs: TypeAlias = Literal["json", "terms"]
"""How a Result carries its messages: the JSON binary, or lists of maps with binary keys."""

Defer: TypeAlias = Literal["defer"]
"""``approver => defer``: calls that need approval end the run, listed in its Result's ``deferred``."""

TraceContext: TypeAlias = tuple[tuple[str, str], ...]
"""A W3C trace context as a text map, keys lowercased: ``(("traceparent", "00-..."), ("tracestate", ...))``."""


@dataclass(frozen=True, slots=True)
class MFHandler:
    """``Module:Function(Arg)`` called on a BEAM node: a tool (``Arg``: its arguments) or instructions (the deps).

    ``{M, F}`` runs on the agent's home node (its creator's); ``{M, F, Node}`` on ``Node``.
    """

    module: Atom
    function: Atom
    node: Atom | None = None
    """Where it runs; ``None``: the agent's home node."""

    def __str__(self) -> str:
        """As its own language writes it: ``MyApp.Tools.boom/1`` for Elixir, ``shop:find/1`` for Erlang."""
        module = str(self.module)
        if module.startswith("Elixir."):
            return f"{module.removeprefix('Elixir.')}.{self.function}/1"
        return f"{format_term(self.module)}:{format_term(self.function)}/1"


@dataclass(frozen=True, slots=True)
class ProcessHandler:
    """A tool answered by a process: it gets ``{pynode_tool_call, ...}``, replies ``{tool_result, ...}``."""

    dest: ProcessDest


ToolHandler: TypeAlias = MFHandler | ProcessHandler

Instruction: TypeAlias = str | MFHandler
"""A fixed text, or a function of the run's deps that returns the text (a dynamic system prompt)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A tool implemented on the BEAM side."""

    name: str
    """The name the model calls it by."""
    description: str = ""
    """What the model is told the tool does."""
    parameters: dict[str, Any]
    """A JSON Schema for the argument object; arguments are validated against it before dispatch."""
    handler: ToolHandler | None = None
    """Who runs it; ``None``: the run's ``tool_handler``, else the caller of ``start_run``."""
    requires_approval: bool = False
    """A call runs only once it is approved (the run's ``approver``, or a later run's ``approvals``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MCPServerSpec:
    """One entry of ``toolsets``: an MCP server whose tools the agent offers the model.

    Exactly one of ``url`` (streamable HTTP) and ``command`` (stdio: the node starts the program).
    """

    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    """Variables given to a stdio server, over the few it inherits (``PATH``, ``HOME``, ...)."""
    prefix: str | None = None
    """The model sees ``prefix_name`` for each of the server's tools: two servers' names stay apart."""
    requires_approval: bool = False
    """Every call to one of its tools waits for approval, as a tool spec's ``requires_approval``."""

    @property
    def label(self) -> str:
        """The server as a person recognises it in a message: its URL, or its command line."""
        if self.url is not None:
            return self.url
        return " ".join([self.command or "", *self.args])


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    """A BEAM-created agent, as ``{create_agent, Name, Spec}`` described it."""

    model: ModelRef
    """A pydantic-ai model name such as ``openai:gpt-4o`` or ``test``, a ``--models`` name, or a provider map."""
    fallback: tuple[ModelRef, ...] = ()
    """Tried in order when the model before fails with a provider error."""
    instructions: tuple[Instruction, ...] = ()
    """In order; ``{M, F}`` entries are called with the run's deps before each run."""
    system_prompt: tuple[str, ...] = ()
    output_schema: dict[str, Any] | None = None
    """A JSON Schema (root: object) for the run's output; ``None`` for text."""
    tools: tuple[ToolSpec, ...] = ()
    toolsets: tuple[MCPServerSpec, ...] = ()
    """MCP servers; the agent process holds a session with each from its start to its end."""
    model_settings: ModelSettings | None = None
    usage_limits: UsageLimits | None = None
    retries: int | None = None
    """Retry budget for both tools and output validation; ``None``: pydantic-ai's default."""
    max_concurrency: int | None = None
    """Runs of this agent at once; ``None``: the node's default."""
    output: SchemaOutput | None = field(init=False, repr=False, compare=False)
    """``output_schema`` as output type and check, built once here; ``BridgeError(bad_spec)`` if unusable."""

    def __post_init__(self) -> None:
        built = None if self.output_schema is None else schema_output(self.output_schema, kind="bad_spec")
        object.__setattr__(self, "output", built)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """The options of one ``run``/``start_run``; every field is optional."""

    message_history: list[ModelMessage] | None = None
    """The conversation so far, from an earlier Result's ``messages``."""
    deps: dict[str, JSONValue] | None = None
    instructions: tuple[str, ...] = ()
    model: ModelRef | None = None
    model_settings: ModelSettings | None = None
    usage_limits: UsageLimits | None = None
    output_schema: dict[str, Any] | TextOutput | None = None
    """A JSON Schema overriding the agent's; ``"text"``: plain text output for this run."""
    timeout: int | None = None
    """Milliseconds; enforcing it is the caller's job (``asyncio.timeout`` around the run)."""
    tools: tuple[ToolSpec, ...] = ()
    """Tool specs added to the agent's tools for this run only."""
    tool_handler: ProcessDest | None = None
    stream_to: Pid | None = None
    events: bool = True
    """``False``: a ``start_run`` caller gets only ``pynode_result`` (``stream_to`` still gets events)."""
    messages_as: MessagesAs = "json"
    """How the Result carries ``messages``/``new_messages``: a JSON binary, or lists of maps."""
    trace_context: TraceContext = ()
    """The caller's trace context (``traceparent``, ``tracestate``, ``baggage``): the run's spans are
    children of the caller's span; empty: the run starts a trace of its own (when the node traces)."""
    approver: ProcessDest | Defer | None = None
    """Where approval requests go; ``None``: the ``start_run`` caller, ``defer`` for a synchronous ``run``."""
    approvals: dict[str, Term] | None = None
    """Decisions by ``CallId`` for the calls a deferred run left (checked terms, read by the run)."""
    output: SchemaOutput | None = field(init=False, repr=False, compare=False)
    """A schema ``output_schema`` as output type and check; ``BridgeError(bad_request)`` if unusable."""

    def __post_init__(self) -> None:
        schema = self.output_schema
        built = schema_output(schema, kind="bad_request") if isinstance(schema, dict) else None
        object.__setattr__(self, "output", built)

    @property
    def timeout_seconds(self) -> float | None:
        return None if self.timeout is None else self.timeout / 1000


IfExists: TypeAlias = Literal["error", "replace", "keep"]
"""What ``create_agent`` does when an agent of that name exists."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateOptions:
    """The ``CreateOpts`` of ``{create_agent, Name, Spec, CreateOpts}`` (docs/protocol.md section 3)."""

    if_exists: IfExists = "error"
    """``error``: ``already_exists``; ``replace``: the old agent's runs are cancelled and it goes;
    ``keep``: ``{ok, Name}`` and the existing agent stays as it is."""
    owner: Pid | None = None
    """The agent is deleted when this process exits or its node disconnects."""


def _keys(cls: type[Any]) -> frozenset[str]:
    """The map keys a spec class takes: its fields, less those it derives itself."""
    return frozenset(f.name for f in fields(cls) if f.init)


AGENT_SPEC_KEYS: Final = _keys(AgentSpec)
NO_RUN_OPTIONS: Final = RunOptions()
"""The options of a run that gives none, made once: they are frozen, so every such run shares them."""
CREATE_OPTION_KEYS: Final = _keys(CreateOptions)
TOOL_SPEC_KEYS: Final = _keys(ToolSpec)
RUN_OPTION_KEYS: Final = _keys(RunOptions)

_ABSENT_ATOMS: Final = frozenset({"nil", "undefined"})
_TOOL_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MODEL_SETTING_TYPES: Final = get_type_hints(ModelSettings)
_MODEL_SETTINGS_ADAPTER: Final = pydantic.TypeAdapter(ModelSettings)
# Provider-specific settings (``openai_reasoning_effort``, ``anthropic_thinking``, ...) pass through as given.
_PROVIDER_SETTING_PREFIXES: Final = (
    "anthropic_", "azure_", "bedrock_", "cerebras_", "cohere_", "gateway_", "gemini_", "google_", "groq_",
    "huggingface_", "mistral_", "ollama_", "openai_", "openrouter_", "xai_", "zai_",
)  # fmt: skip
_USAGE_LIMIT_KEYS: Final = frozenset(f.name for f in fields(UsageLimits))


def parse_agent_spec(term: Term) -> AgentSpec:
    """The spec map of ``create_agent`` -> :class:`AgentSpec`, or ``BridgeError(bad_spec)``."""
    values = _fields(term, "the agent spec", AGENT_SPEC_KEYS, "bad_spec")
    if "model" not in values:
        raise BridgeError("bad_spec", 'the agent spec needs a model (e.g. <<"openai:gpt-4o">> or <<"test">>)')
    kind: ErrorKind = "bad_spec"
    return AgentSpec(
        model=parse_model("model", values["model"], kind),
        fallback=_fallback(values.get("fallback"), kind),
        instructions=_instructions(values.get("instructions"), kind),
        system_prompt=_texts("system_prompt", values.get("system_prompt"), kind),
        output_schema=_output_schema(values.get("output_schema"), kind),
        tools=_tools(values.get("tools"), kind),
        toolsets=_toolsets(values.get("toolsets")),
        model_settings=_model_settings(values.get("model_settings"), kind),
        usage_limits=_usage_limits(values.get("usage_limits"), kind),
        retries=_int("retries", values.get("retries"), kind, minimum=0),
        max_concurrency=_int("max_concurrency", values.get("max_concurrency"), kind, minimum=1),
    )


def spec_has_toolsets(term: Term) -> bool:
    """Whether a spec term (not yet checked) names MCP toolsets: creating such an agent waits for its servers."""
    if not isinstance(term, dict):
        return False
    return any(_key_name(k) == "toolsets" and isinstance(v, list) and v for k, v in term.items())


def parse_create_options(term: Term) -> CreateOptions:
    """The ``CreateOpts`` map -> :class:`CreateOptions`, or ``BridgeError(bad_request)``."""
    values = _fields(term, "the create options", CREATE_OPTION_KEYS, "bad_request")
    if_exists = values.get("if_exists")
    choices: tuple[IfExists, ...] = ("error", "replace", "keep")
    chosen = next((c for c in choices if _is_word(if_exists, c)), None) if if_exists is not None else "error"
    if chosen is None:
        raise BridgeError("bad_request", f"if_exists must be error, replace or keep, got {_show(if_exists)}")
    return CreateOptions(if_exists=chosen, owner=_pid("owner", values.get("owner")))


def parse_run_options(term: Term) -> RunOptions:
    """The ``Opts`` map of ``run``/``start_run`` -> :class:`RunOptions`, or ``BridgeError(bad_request)``."""
    values = _fields(term, "the run options", RUN_OPTION_KEYS, "bad_request")
    if not values:  # most runs give none: every field's default is what parsing an absent one gives
        return NO_RUN_OPTIONS
    kind: ErrorKind = "bad_request"
    model = values.get("model")
    return RunOptions(
        message_history=_message_history(values.get("message_history")),
        deps=_map("deps", values.get("deps"), kind),
        instructions=_texts("instructions", values.get("instructions"), kind),
        model=None if model is None else parse_model("model", model, kind),
        model_settings=_model_settings(values.get("model_settings"), kind),
        usage_limits=_usage_limits(values.get("usage_limits"), kind),
        output_schema=_run_output_schema(values.get("output_schema")),
        timeout=_timeout(values.get("timeout")),
        tools=_tools(values.get("tools"), kind),
        tool_handler=_process_dest("tool_handler", values.get("tool_handler")),
        stream_to=_pid("stream_to", values.get("stream_to")),
        events=_bool("events", values.get("events", True)),
        messages_as=_messages_as(values.get("messages_as")),
        trace_context=_trace_context(values.get("trace_context")),
        approver=_approver(values.get("approver")),
        approvals=_approvals(values.get("approvals")),
    )


# --- the map itself ---------------------------------------------------------------------------


def _fields(term: Term, what: str, allowed: frozenset[str], kind: ErrorKind) -> dict[str, Term]:
    """The map's entries by key name, absent values (``nil``) dropped; unknown or repeated keys refused."""
    if not isinstance(term, dict):
        raise BridgeError(kind, f"{what} must be a map, got {_show(term)}")
    values: dict[str, Term] = {}
    for raw_key, value in term.items():
        name = _key_name(raw_key)
        if name is None:
            raise BridgeError(kind, f"{what} has a key that is not an atom or a binary: {_show(raw_key)}")
        if name not in allowed:
            raise BridgeError(
                kind, f"{what} has an unknown key {quoted(name)}; known keys: {', '.join(sorted(allowed))}"
            )
        if name in values:
            raise BridgeError(kind, f"{what} has the key {quoted(name)} twice")
        if not _is_absent(value):
            values[name] = value
    return values


def _key_name(raw_key: Term) -> str | None:
    if isinstance(raw_key, str):  # Atom (or a str from Python callers)
        return str(raw_key)
    if isinstance(raw_key, (bytes, bytearray)):
        try:
            return bytes(raw_key).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _is_absent(value: Term) -> bool:
    return value is None or (isinstance(value, Atom) and str(value) in _ABSENT_ATOMS)


def _show_json(value: JSONValue) -> str:
    """A value already read as JSON, in a message."""
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _show(term: Term) -> str:
    """A term in an error text, in Erlang syntax (docs/protocol.md section 8), cut short."""
    return format_term(term, limit=80)


# --- values -----------------------------------------------------------------------------------


def _text(name: str, value: Term, kind: ErrorKind) -> str:
    """A binary (or, as erl users type strings, a charlist)."""
    if isinstance(value, (bytes, bytearray, str, list)) and not isinstance(value, Atom):
        try:
            return text_from_prompt(value)
        except BridgeError as exc:
            raise BridgeError(kind, f"{name} must be a binary: {exc.message}") from None
    raise BridgeError(kind, f"{name} must be a binary, got {_show(value)}")


def _texts(name: str, value: Term, kind: ErrorKind) -> tuple[str, ...]:
    """A binary or a list of binaries (a list of integers is one charlist)."""
    if value is None:
        return ()
    if isinstance(value, list) and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(_text(f"{name}[{i}]", v, kind) for i, v in enumerate(value))
    if isinstance(value, list) and not value:
        return ()
    return (_text(name, value, kind),)


def _map(name: str, value: Term, kind: ErrorKind) -> dict[str, JSONValue] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BridgeError(kind, f"{name} must be a map, got {_show(value)}")
    try:
        converted = to_json(value)
    except BridgeError as exc:
        raise BridgeError(kind, f"{name}: {exc.message}") from None
    assert isinstance(converted, dict)
    return converted


def _int(name: str, value: Term, kind: ErrorKind, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BridgeError(kind, f"{name} must be an integer, got {_show(value)}")
    if value < minimum:
        raise BridgeError(kind, f"{name} must be at least {minimum}, got {value}")
    return value


def _output_schema(value: Term, kind: ErrorKind) -> dict[str, Any] | None:
    return _map("output_schema", value, kind)  # checked once, as the spec or options are made


def _run_output_schema(value: Term) -> dict[str, Any] | TextOutput | None:
    """A run's ``output_schema``: a schema map, or ``text`` (atom or binary) for plain text."""
    if _is_word(value, "text"):
        return "text"
    if value is not None and not isinstance(value, dict):
        raise BridgeError("bad_request", f"output_schema must be a JSON Schema map or text, got {_show(value)}")
    return _output_schema(value, "bad_request")


def _bool(name: str, value: Term) -> bool:
    return _flag(name, value, "bad_request")


def _flag(name: str, value: Term, kind: ErrorKind) -> bool:
    if isinstance(value, bool):
        return value
    if _is_word(value, "true") or _is_word(value, "false"):
        return _is_word(value, "true")
    raise BridgeError(kind, f"{name} must be true or false, got {_show(value)}")


def _approver(value: Term) -> ProcessDest | Defer | None:
    if _is_word(value, "defer"):
        return "defer"
    if value is None or isinstance(value, Pid) or _atom_pair(value):
        return value
    raise BridgeError("bad_request", f"approver must be a pid, {{Name, Node}} or defer, got {_show(value)}")


def _approvals(value: Term) -> dict[str, Term] | None:
    """``#{CallId => Decision}``; each decision is read (and refused if unclear) by the run."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BridgeError("bad_request", f"approvals must be a map of CallId => Decision, got {_show(value)}")
    decisions: dict[str, Term] = {}
    for raw_key, decision in value.items():
        call_id = _binary_text(raw_key) if not isinstance(raw_key, Atom) else str(raw_key)
        if call_id is None:
            raise BridgeError("bad_request", f"approvals keys must be call ids (binaries), got {_show(raw_key)}")
        decisions[call_id] = decision
    return decisions


def _messages_as(value: Term) -> MessagesAs:
    if value is None or _is_word(value, "json"):
        return "json"
    if _is_word(value, "terms"):
        return "terms"
    raise BridgeError("bad_request", f"messages_as must be json or terms, got {_show(value)}")


def _trace_context(value: Term) -> TraceContext:
    """What ``otel_propagator_text_map:inject([])`` returns, ``[{Bin, Bin}]``, or a map of the same.

    Only the shape is checked here; the W3C propagator reads the values (and ignores bad ones), and
    only on a node that traces.
    """
    if value is None:
        return ()
    pairs: list[tuple[Term, Term]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(_is_pair(v) for v in value):
        pairs = [v for v in value if _is_pair(v)]
    else:
        raise BridgeError(
            "bad_request",
            "trace_context must be a list of {Key, Value} binaries (as otel_propagator_text_map:inject/1"
            f" returns) or a map, got {_show(value)}",
        )
    entries: dict[str, str] = {}
    for raw_key, raw_value in pairs:
        name = _key_name(raw_key)
        text = _binary_text(raw_value)
        if name is None or text is None:
            raise BridgeError(
                "bad_request",
                f"trace_context entries must be binaries, {{Key, Value}}, got {_show((raw_key, raw_value))}",
            )
        name = name.lower()  # the W3C header names are case-insensitive
        if name in entries:
            raise BridgeError("bad_request", f"trace_context has the key {quoted(name)} twice")
        entries[name] = text
    return tuple(entries.items())


def _is_pair(value: Term) -> TypeGuard[tuple[Term, Term]]:
    return type(value) is tuple and len(value) == 2


def _binary_text(value: Term) -> str | None:
    """A binary's text (a ``str`` from Python callers); ``None`` for any other term, atoms included."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) and not isinstance(value, Atom) else None


_MODEL_KEYS: Final = frozenset({"provider", "name", "base_url", "api", "api_key", "settings", "max_concurrency"})
_PROVIDERS: Final[tuple[Provider, ...]] = ("openai", "anthropic")
_OPENAI_APIS: Final[tuple[OpenAIApi, ...]] = ("chat", "responses")


def parse_model(where: str, value: Term, kind: ErrorKind) -> ModelRef:
    """A model as a spec or run names it (docs/protocol.md section 3): a name (Bin) or a provider map.

    An ``api_key`` given as a binary is read as a :class:`Secret` before anything can show it.
    """
    if type(value) is tuple and len(value) == 2 and _is_word(value[0], "function"):
        return _function_model(where, value[1], kind)
    if not isinstance(value, dict):
        return _text(where, value, kind)
    value = dict(value)  # the key is taken out of a copy: nothing after this can show it
    api_key = value.pop(Atom("api_key"), None)
    if api_key is None:
        api_key = value.pop(b"api_key", None)
    if isinstance(api_key, (bytes, bytearray)):
        secret: Secret | EnvKey | None = Secret(bytes(api_key).decode(errors="replace"))
    elif api_key is None:
        secret = None
    elif type(api_key) is tuple and len(api_key) == 2 and _is_word(api_key[0], "env"):
        secret = EnvKey(_text(f"{where}.api_key's variable", api_key[1], kind))
    else:
        raise BridgeError(kind, f"{where}.api_key must be a binary or {{env, Name}}")  # never shown: a secret
    values = _fields(value, f"the {where} map", _MODEL_KEYS - {"api_key"}, kind)
    provider = next((p for p in _PROVIDERS if _is_word(values.get("provider"), p)), None)
    if provider is None:
        raise BridgeError(kind, f"{where}.provider must be openai or anthropic, got {_show(values.get('provider'))}")
    if "name" not in values:
        raise BridgeError(kind, f'the {where} map needs a name (e.g. <<"gpt-4o">>)')
    api_value = values.get("api")
    api = next((a for a in _OPENAI_APIS if _is_word(api_value, a)), None)
    if api_value is not None and (api is None or provider != "openai"):
        raise BridgeError(kind, f"{where}.api must be chat or responses, and only for openai, got {_show(api_value)}")
    settings = _model_settings(values.get("settings"), kind)
    return ModelConfig(
        provider=provider,
        name=_text(f"{where}.name", values["name"], kind),
        base_url=None if values.get("base_url") is None else _text(f"{where}.base_url", values["base_url"], kind),
        api=api,
        api_key=secret,
        settings_json=ModelConfig.settings_text(settings),
        max_concurrency=_int(f"{where}.max_concurrency", values.get("max_concurrency"), kind, minimum=1),
    )


def _function_model(where: str, fun: Term, kind: ErrorKind) -> FunctionRef:
    if not isinstance(fun, (OpaqueFun, Export)) or fun_arity(fun) != 2:
        raise BridgeError(kind, f"{where} {{function, Fun}} needs a fun of arity 2 (messages, info), got {_show(fun)}")
    return FunctionRef(fun)


def _fallback(value: Term, kind: ErrorKind) -> tuple[ModelRef, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BridgeError(kind, f"fallback must be a list of models, got {_show(value)}")
    return tuple(parse_model(f"fallback[{i}]", v, kind) for i, v in enumerate(value))


def _is_word(value: Term, word: str) -> bool:
    """``value`` is the atom ``word`` (or the binary an Elixir string gives)."""
    if isinstance(value, Atom):
        return str(value) == word
    return isinstance(value, (bytes, bytearray)) and bytes(value) == word.encode()


def _model_settings(value: Term, kind: ErrorKind) -> ModelSettings | None:
    settings = _map("model_settings", value, kind)
    if settings is None:
        return None
    common = {k: v for k, v in settings.items() if k in _MODEL_SETTING_TYPES}
    for k in settings.keys() - common.keys():
        if not k.startswith(_PROVIDER_SETTING_PREFIXES):
            known = ", ".join(sorted(_MODEL_SETTING_TYPES))
            raise BridgeError(kind, f"model_settings has an unknown setting {quoted(k)}; known settings: {known}")
    try:
        checked = _MODEL_SETTINGS_ADAPTER.validate_python(common)
    except pydantic.ValidationError as exc:
        raise BridgeError(kind, f"model_settings.{_first_error(exc)}") from None
    extra = {k: v for k, v in settings.items() if k not in common}
    merged: dict[str, Any] = {**checked, **extra}
    return merged  # type: ignore[return-value]  # provider-specific keys are not in the TypedDict


def _first_error(exc: pydantic.ValidationError) -> str:
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"])
    return f"{loc}: {error['msg']}"


def _usage_limits(value: Term, kind: ErrorKind) -> UsageLimits | None:
    limits = _map("usage_limits", value, kind)
    if limits is None:
        return None
    kwargs: dict[str, Any] = {}
    for k, v in limits.items():
        if k not in _USAGE_LIMIT_KEYS:
            known = ", ".join(sorted(_USAGE_LIMIT_KEYS))
            raise BridgeError(kind, f"usage_limits has an unknown limit {quoted(k)}; known limits: {known}")
        kwargs[k] = _limit_value(k, v, kind)
    return UsageLimits(**kwargs)


def _limit_value(k: str, v: JSONValue, kind: ErrorKind) -> Any:
    if k == "count_tokens_before_request":
        if not isinstance(v, bool):
            raise BridgeError(kind, f"usage_limits.{k} must be true or false, got {_show_json(v)}")
        return v
    if v is None:
        return None
    if k == "cost_limit" and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
        return Decimal(str(v))
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise BridgeError(kind, f"usage_limits.{k} must be a non-negative integer, got {_show_json(v)}")
    return v


def _tools(value: Term, kind: ErrorKind) -> tuple[ToolSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BridgeError(kind, f"tools must be a list of tool specs, got {_show(value)}")
    tools = tuple(_tool(i, item, kind) for i, item in enumerate(value))
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise BridgeError(kind, f"two tools are named {quoted(tool.name)}")
        seen.add(tool.name)
    return tools


def _tool(index: int, term: Term, kind: ErrorKind) -> ToolSpec:
    where = f"tools[{index}]"
    values = _fields(term, where, TOOL_SPEC_KEYS, kind)
    if "name" not in values:
        raise BridgeError(kind, f"{where} needs a name")
    name = _text(f"{where}.name", values["name"], kind)
    if not _TOOL_NAME.fullmatch(name):
        raise BridgeError(kind, f"{where}.name {_show(name)} must be 1 to 64 letters, digits, '_' or '-'")
    where = f"tool {quoted(name)}"
    description = _text(f"{where} description", values["description"], kind) if "description" in values else ""
    return ToolSpec(
        name=name,
        description=description,
        parameters=_parameters(where, values.get("parameters"), kind),
        handler=_handler(where, values.get("handler"), kind),
        requires_approval=_flag(f"{where} requires_approval", values.get("requires_approval", False), kind),
    )


_TOOLSET_KEYS: Final = frozenset({"mcp", "prefix", "requires_approval"})
_MCP_KEYS: Final = frozenset({"url", "command", "args", "env"})
_PREFIX: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _toolsets(value: Term) -> tuple[MCPServerSpec, ...]:
    """``[#{mcp => #{url => Bin} | #{command => Bin, args => [Bin], env => map()}, prefix, requires_approval}]``."""
    kind: ErrorKind = "bad_spec"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BridgeError(kind, f"toolsets must be a list of #{{mcp => ...}} maps, got {_show(value)}")
    servers = tuple(_toolset(i, item) for i, item in enumerate(value))
    prefixes = [s.prefix for s in servers if s.prefix is not None]
    for prefix in prefixes:
        if prefixes.count(prefix) > 1:
            raise BridgeError(kind, f"two toolsets have the prefix {quoted(prefix)}")
    return servers


def _toolset(index: int, term: Term) -> MCPServerSpec:
    kind: ErrorKind = "bad_spec"
    where = f"toolsets[{index}]"
    values = _fields(term, where, _TOOLSET_KEYS, kind)
    if "mcp" not in values:
        raise BridgeError(kind, f"{where} needs mcp => #{{url => Bin}} or #{{command => Bin, args => [Bin]}}")
    server = _fields(values["mcp"], f"{where}.mcp", _MCP_KEYS, kind)
    prefix = _text(f"{where}.prefix", values["prefix"], kind) if "prefix" in values else None
    if prefix is not None and not _PREFIX.fullmatch(prefix):
        raise BridgeError(kind, f"{where}.prefix {_show(prefix)} must be 1 to 32 letters, digits, '_' or '-'")
    approval = _flag(f"{where}.requires_approval", values.get("requires_approval", False), kind)
    if ("url" in server) == ("command" in server):
        raise BridgeError(kind, f"{where}.mcp needs either a url (streamable HTTP) or a command (stdio), not both")
    if "url" in server:
        if server.keys() - {"url"}:
            raise BridgeError(kind, f"{where}.mcp has a url: args and env are for a command")
        url = _text(f"{where}.mcp.url", server["url"], kind)
        if not url.startswith(("http://", "https://")):
            raise BridgeError(kind, f"{where}.mcp.url must be an http:// or https:// URL, got {_show(url)}")
        return MCPServerSpec(url=url, prefix=prefix, requires_approval=approval)
    command = _text(f"{where}.mcp.command", server["command"], kind)
    if not command:
        raise BridgeError(kind, f"{where}.mcp.command is empty")
    args = server.get("args", [])
    if not isinstance(args, list):
        raise BridgeError(kind, f"{where}.mcp.args must be a list of binaries, got {_show(args)}")
    env = server.get("env", {})
    if not isinstance(env, dict):
        raise BridgeError(kind, f"{where}.mcp.env must be a map of binaries, got {_show(env)}")
    variables: dict[str, str] = {}
    for name, text in env.items():
        key = _key_name(name)
        if key is None or not key:
            raise BridgeError(kind, f"{where}.mcp.env has a key that is not a name: {_show(name)}")
        variables[key] = _text(f"{where}.mcp.env {quoted(key)}", text, kind)
    return MCPServerSpec(
        command=command,
        args=tuple(_text(f"{where}.mcp.args[{i}]", arg, kind) for i, arg in enumerate(args)),
        env=variables,
        prefix=prefix,
        requires_approval=approval,
    )


def _parameters(where: str, value: Term, kind: ErrorKind) -> dict[str, Any]:
    """The tool's argument schema; its root must describe an object (``"type"`` defaults to it)."""
    schema = _map(f"{where} parameters", value, kind)
    if schema is None:
        return {"type": "object", "properties": {}}
    if schema.get("type", "object") != "object":
        raise BridgeError(kind, f'{where} parameters must describe an object ("type": "object")')
    if "type" not in schema:
        schema = {"type": "object", **schema}
    check_json_schema(schema, what=f"{where} parameters", kind=kind)
    return schema


def _handler(where: str, value: Term, kind: ErrorKind) -> ToolHandler | None:
    """``{M, F}`` or ``{M, F, Node}`` (atoms), a pid, or ``{Name, Node}``.

    ``{M, F}`` and ``{Name, Node}`` are both pairs of atoms: the pair is a process when its second
    atom is a node name, which always holds an ``@``; no function name does.
    """
    if value is None:
        return None
    if isinstance(value, Pid):
        return ProcessHandler(value)
    if _atom_pair(value) and "@" in value[1]:
        return ProcessHandler(value)
    handler = _mf(value)
    if handler is None:
        raise BridgeError(
            kind,
            f"{where} handler must be {{Module, Function}}, {{Module, Function, Node}}, a pid or"
            f" {{Name, Node}}, got {_show(value)}",
        )
    return handler


def _atom_pair(value: Term) -> TypeGuard[tuple[Atom, Atom]]:
    return type(value) is tuple and len(value) == 2 and all(type(v) is Atom for v in value)


def _atom_triple(value: Term) -> TypeGuard[tuple[Atom, Atom, Atom]]:
    return type(value) is tuple and len(value) == 3 and all(type(v) is Atom for v in value)


def _mf(value: Term) -> MFHandler | None:
    """``{M, F}`` or ``{M, F, Node}`` (a node name holds an ``@``), else ``None``."""
    if _atom_pair(value) and "@" not in value[1]:
        return MFHandler(value[0], value[1])
    if _atom_triple(value) and "@" in value[2]:
        return MFHandler(value[0], value[1], value[2])
    return None


def _instructions(value: Term, kind: ErrorKind) -> tuple[Instruction, ...]:
    """A binary, ``{M, F}``/``{M, F, Node}``, or a list mixing them (a list of integers is one charlist)."""
    if value is None:
        return ()
    handler = _mf(value)
    if handler is not None:
        return (handler,)
    if type(value) is tuple:
        raise BridgeError(
            kind, f"instructions must be a binary, {{Module, Function}} or a list of those, got {_show(value)}"
        )
    if isinstance(value, list) and any(type(v) is tuple for v in value):
        return tuple(_instruction(f"instructions[{i}]", v, kind) for i, v in enumerate(value))
    return _texts("instructions", value, kind)


def _instruction(where: str, value: Term, kind: ErrorKind) -> Instruction:
    handler = _mf(value)
    if handler is not None:
        return handler
    if type(value) is tuple:
        raise BridgeError(kind, f"{where} must be a binary or {{Module, Function}}, got {_show(value)}")
    return _text(where, value, kind)


def _message_history(value: Term) -> list[ModelMessage] | None:
    """An earlier Result's ``messages``: the JSON binary, or the list ``messages_as => terms`` gave.

    The list is read back through its JSON form, so both arrive exactly as pydantic-ai wrote them
    (timestamps, base64 content).
    """
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        try:
            value = pydantic_core.to_json(to_json(value))
        except BridgeError as exc:
            raise BridgeError("bad_request", f"message_history: {exc.message}") from None
    if not isinstance(value, (bytes, bytearray, str)) or isinstance(value, Atom):
        raise BridgeError(
            "bad_request",
            f"message_history must be the messages of a Result (a binary or a list of maps), got {_show(value)}",
        )
    try:
        return ModelMessagesTypeAdapter.validate_json(value)
    except pydantic.ValidationError as exc:
        raise BridgeError(
            "bad_request", f"message_history is not the messages of an earlier Result: {_first_error(exc)}"
        ) from None


def _timeout(value: Term) -> int | None:
    if isinstance(value, Atom) and str(value) == "infinity":
        return None
    return _int("timeout", value, "bad_request", minimum=1)


def _pid(name: str, value: Term) -> Pid | None:
    if value is None:
        return None
    if not isinstance(value, Pid):
        raise BridgeError("bad_request", f"{name} must be a pid, got {_show(value)}")
    return value


def _process_dest(name: str, value: Term) -> ProcessDest | None:
    if value is None or isinstance(value, Pid):
        return value
    if _atom_pair(value):
        return value
    raise BridgeError("bad_request", f"{name} must be a pid or {{Name, Node}}, got {_show(value)}")
