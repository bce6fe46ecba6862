"""Model objects as the BEAM names them, built once each.

A model is a pydantic-ai name (``openai:gpt-4o``, ``test``), a name of the node's ``--models``
file, or a provider map (docs/protocol.md section 3), here a :class:`ModelConfig`. Building a provider
client costs tens of milliseconds (and reads the environment for keys), so agents and runs naming
the same model, or an equal map, share one object. Failures are not cached: setting an API key
and asking again works.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from pydantic_ai.exceptions import UserError
from pydantic_ai.models import Model, infer_model
from pydantic_ai.settings import ModelSettings

from pynode.bridge.errors import BridgeError
from pynode.bridge.function_model import FunctionRef, function_model
from pynode.bridge.secrets import SECRETS

__all__ = ["EnvKey", "ModelCache", "ModelConfig", "ModelRef", "OpenAIApi", "Provider", "Secret", "build_model"]

Provider: TypeAlias = Literal["openai", "anthropic"]
OpenAIApi: TypeAlias = Literal["chat", "responses"]

_PROVIDER_EXTRAS = {"openai": "openai", "anthropic": "anthropic"}
_PROVIDER_KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass(frozen=True, slots=True)
class Secret:
    """An API key given as a value: compared and hashed like one, never shown (``repr``, ``str``)."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        SECRETS.add(self.value)

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class EnvKey:
    """An API key read from the node's environment variable ``variable`` when the model is built."""

    variable: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """A provider map: ``#{provider, name, base_url, api, api_key, settings, max_concurrency}``."""

    provider: Provider
    name: str
    base_url: str | None = None
    api: OpenAIApi | None = None
    """openai only: Chat Completions or the Responses API; ``None``: chat with a base_url, else responses."""
    api_key: Secret | EnvKey | None = None
    """``None``: the provider's usual variable (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``)."""
    settings_json: str | None = None
    """The ``settings`` map as canonical JSON, so that equal maps make equal (and hashable) configs."""
    max_concurrency: int | None = None

    @property
    def label(self) -> str:
        """The model as ``info``, logs and errors show it: never its key."""
        where = f" at {self.base_url}" if self.base_url else ""
        return f"{self.provider}:{self.name}{where}"

    @property
    def chosen_api(self) -> OpenAIApi:
        if self.api is not None:
            return self.api
        return "chat" if self.base_url else "responses"

    @property
    def settings(self) -> ModelSettings | None:
        if self.settings_json is None:
            return None
        loaded: ModelSettings = json.loads(self.settings_json)
        return loaded

    @staticmethod
    def settings_text(settings: Mapping[str, Any] | None) -> str | None:
        return None if not settings else json.dumps(settings, sort_keys=True, separators=(",", ":"))


ModelRef: TypeAlias = str | ModelConfig | FunctionRef
"""A model as a spec or run names it."""


class ModelCache:
    """One pydantic-ai ``Model`` per model name or equal map (``"test"`` is the offline ``TestModel``).

    ``named``: the models of the node's ``--models`` file, by name; a name found there is built
    from its map, others are pydantic-ai names (``factory``).
    """

    def __init__(
        self, factory: Callable[[str], Model] = infer_model, named: Mapping[str, ModelConfig] | None = None
    ) -> None:
        self._factory = factory
        self.named: dict[str, ModelConfig] = dict(named or {})
        self._models: dict[ModelRef | tuple[ModelRef, ...], Model] = {}

    def get(self, ref: ModelRef) -> Model:
        """The model for ``ref``, or ``BridgeError(model_unavailable)`` with the reason.

        A function model is made afresh each time: every test makes new funs, and the cache
        would keep them all.
        """
        if isinstance(ref, FunctionRef):
            return self._build(ref)
        model = self._models.get(ref)
        if model is None:
            model = self._build(ref)
            self._models[ref] = model
        return model

    def get_with_fallbacks(self, ref: ModelRef, fallbacks: tuple[ModelRef, ...]) -> Model:
        """``ref``, then each of ``fallbacks`` in turn when the one before fails with a provider error."""
        if not fallbacks:
            return self.get(ref)
        key = (ref, *fallbacks)
        model = self._models.get(key)
        if model is None:
            from pydantic_ai.models.fallback import FallbackModel

            model = FallbackModel(self.get(ref), *(self.get(f) for f in fallbacks))
            if not any(isinstance(r, FunctionRef) for r in key):
                self._models[key] = model
        return model

    def label(self, ref: ModelRef) -> str:
        """How ``info`` and ``list_agents`` show the model (a name, or ``provider:name at base_url``)."""
        if isinstance(ref, (ModelConfig, FunctionRef)):
            return ref.label
        return ref

    def register(self, name: str, model: Model) -> None:
        """Offer ``model`` under ``name`` (a configured provider, a scripted model for tests)."""
        self._models[name] = model

    def _build(self, ref: ModelRef) -> Model:
        if isinstance(ref, ModelConfig):
            return build_model(ref)
        if isinstance(ref, FunctionRef):
            return function_model(ref)
        if not ref:
            raise BridgeError("model_unavailable", "the model name is empty")
        config = self.named.get(ref)
        if config is not None:
            return build_model(config)
        try:
            return self._factory(ref)
        except (UserError, ImportError, ValueError) as exc:
            # Unknown model or provider (UserError), provider package not installed (ImportError),
            # missing API key or endpoint (UserError from the provider).
            raise BridgeError("model_unavailable", f"{ref}: {exc}") from None

    def __contains__(self, ref: object) -> bool:
        return ref in self._models

    def __len__(self) -> int:
        return len(self._models)


def build_model(config: ModelConfig) -> Model:
    """The pydantic-ai model for a provider map; ``BridgeError(model_unavailable)`` if it cannot be."""
    key = _api_key(config)
    try:
        model = _provider_model(config, key)
    except ImportError:
        extra = _PROVIDER_EXTRAS[config.provider]
        raise BridgeError(
            "model_unavailable",
            f"{config.label}: the {config.provider} provider's package is not installed on the node:"
            f" pip install 'pynode[{extra}]'",
        ) from None
    except (UserError, ValueError) as exc:
        raise BridgeError("model_unavailable", SECRETS.redact(f"{config.label}: {exc}")) from None
    if config.max_concurrency is not None:
        from pydantic_ai.models.concurrency import ConcurrencyLimitedModel

        # Requests beyond the limit wait their turn (bounded by each run's own timeout), never fail.
        return ConcurrencyLimitedModel(model, limiter=config.max_concurrency)
    return model


def _api_key(config: ModelConfig) -> str | None:
    match config.api_key:
        case Secret(value=value):
            return value
        case EnvKey(variable=variable):
            found = os.environ.get(variable)
            if not found:
                raise BridgeError(
                    "model_unavailable", f"{config.label}: the environment variable {variable} is not set on the node"
                )
            SECRETS.add(found)
            return found
        case _:
            # The provider reads its usual variable itself; its value is as secret as any other key.
            SECRETS.add(os.environ.get(_PROVIDER_KEY_VARIABLES[config.provider], ""))
            return None


def _provider_model(config: ModelConfig, key: str | None) -> Model:
    if config.provider == "openai":
        from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
        from pydantic_ai.providers.openai import OpenAIProvider

        provider = OpenAIProvider(base_url=config.base_url, api_key=key)
        if config.chosen_api == "chat":
            return OpenAIChatModel(config.name, provider=provider, settings=config.settings)
        return OpenAIResponsesModel(config.name, provider=provider, settings=config.settings)
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    anthropic = AnthropicProvider(api_key=key, base_url=config.base_url)
    return AnthropicModel(config.name, provider=anthropic, settings=config.settings)
