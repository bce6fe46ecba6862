"""Model objects by name, built once each.

Building a provider client costs tens of milliseconds (and reads the environment for keys), so
agents and runs naming the same model share one object.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic_ai.exceptions import UserError
from pydantic_ai.models import Model, infer_model

from pynode.bridge.errors import BridgeError

__all__ = ["ModelCache"]


class ModelCache:
    """One pydantic-ai ``Model`` per model name (``"test"`` is the offline ``TestModel``).

    Failures are not cached: setting an API key and asking again works.
    """

    def __init__(self, factory: Callable[[str], Model] = infer_model) -> None:
        self._factory = factory
        self._models: dict[str, Model] = {}

    def get(self, name: str) -> Model:
        """The model for ``name``, or ``BridgeError(model_unavailable)`` with pydantic-ai's reason."""
        model = self._models.get(name)
        if model is None:
            model = self._build(name)
            self._models[name] = model
        return model

    def register(self, name: str, model: Model) -> None:
        """Offer ``model`` under ``name`` (a configured provider, a scripted model for tests)."""
        self._models[name] = model

    def _build(self, name: str) -> Model:
        if not name:
            raise BridgeError("model_unavailable", "the model name is empty")
        try:
            return self._factory(name)
        except (UserError, ImportError, ValueError) as exc:
            # Unknown model or provider (UserError), provider package not installed (ImportError),
            # missing API key or endpoint (UserError from the provider).
            raise BridgeError("model_unavailable", f"{name}: {exc}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __len__(self) -> int:
        return len(self._models)
