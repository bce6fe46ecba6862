"""The model cache: one model object per name, and pydantic-ai's own reasons when a model is unavailable."""

from __future__ import annotations

import pydantic_ai.models
import pytest
from pydantic_ai.exceptions import UserError
from pydantic_ai.models import Model
from pydantic_ai.models.test import TestModel

from pynode.bridge.errors import BridgeError
from pynode.bridge.models import ModelCache
from pynode.etf.types import Atom


def unavailable(cache: ModelCache, name: str) -> str:
    with pytest.raises(BridgeError) as exc:
        cache.get(name)
    assert exc.value.kind == "model_unavailable"
    assert name not in cache
    return exc.value.message


def test_test_is_the_offline_test_model() -> None:
    assert isinstance(ModelCache().get("test"), TestModel)


def test_one_model_object_per_name() -> None:
    cache = ModelCache()
    first = cache.get("test")
    assert cache.get("test") is first
    assert "test" in cache
    assert len(cache) == 1


def test_factory_called_once_per_name() -> None:
    calls: list[str] = []

    def factory(name: str) -> Model:
        calls.append(name)
        return TestModel(custom_output_text=name)

    cache = ModelCache(factory)
    a, b = cache.get("a"), cache.get("b")
    assert cache.get("a") is a
    assert a is not b
    assert calls == ["a", "b"]


def test_unknown_model_name() -> None:
    assert "Unknown model: gpt-4o" in unavailable(ModelCache(), "gpt-4o")
    assert "Unknown model: nope:x" in unavailable(ModelCache(), "nope:x")


def test_missing_provider_package_or_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the openai package pydantic-ai says to install it; with it, that OPENAI_API_KEY is missing.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    message = unavailable(ModelCache(), "openai:gpt-4o")
    assert message.startswith("openai:gpt-4o: ")
    assert "pip install" in message or "OPENAI_API_KEY" in message


def test_missing_provider_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYSTEM_ONE_BASE_URL", raising=False)
    assert "SYSTEM_ONE_BASE_URL" in unavailable(ModelCache(), "system-one:model")


def test_empty_name() -> None:
    assert "empty" in unavailable(ModelCache(), "")


def test_failures_are_not_cached() -> None:
    ready = False

    def factory(name: str) -> Model:
        if not ready:
            raise UserError("Set the `X_API_KEY` environment variable")
        return TestModel()

    cache = ModelCache(factory)
    assert "X_API_KEY" in unavailable(cache, "x:model")
    ready = True
    assert isinstance(cache.get("x:model"), TestModel)


def test_no_test_reaches_a_provider_unless_marked() -> None:
    assert pydantic_ai.models.ALLOW_MODEL_REQUESTS is False


@pytest.mark.model_requests
def test_a_marked_test_may_send_model_requests() -> None:
    assert pydantic_ai.models.ALLOW_MODEL_REQUESTS is True


@pytest.mark.parametrize(("provider", "module"), [("openai", "openai"), ("anthropic", "anthropic")])
def test_a_provider_whose_package_is_missing_is_unavailable_with_the_pip_line(
    provider: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynode.bridge.models import ModelConfig, Secret

    # As on a node installed without the extra: the provider's model module cannot be imported.
    monkeypatch.setitem(__import__("sys").modules, f"pydantic_ai.models.{module}", None)
    config = ModelConfig(provider=provider, name="some-model", api_key=Secret("sk-missing-package"))  # type: ignore[arg-type]
    with pytest.raises(BridgeError) as exc:
        ModelCache().get(config)
    assert exc.value.kind == "model_unavailable"
    assert f"pip install 'pynode[{provider}]'" in exc.value.message
    assert "sk-missing-package" not in exc.value.message


def test_error_texts_carry_no_links_to_python_docs() -> None:
    """A BEAM caller reads errors without pydantic's "For further information visit" lines."""
    from pydantic_ai.models import infer_model

    with pytest.raises(UserError) as raised:
        infer_model("nosuchprovider:model")
    error = BridgeError(
        "model_unavailable",
        f"{raised.value}\n  For further information visit https://errors.pydantic.dev/2.11/v/missing",
    )
    assert "https://" not in error.message and "For further information" not in error.message
    assert "nosuchprovider" in error.message
    assert error.to_term() == (Atom("error"), (Atom("model_unavailable"), error.message))
    with_link = BridgeError("bad_spec", "Unknown model (see https://ai.pydantic.dev/models/) try again")
    assert with_link.message == "Unknown model try again"
