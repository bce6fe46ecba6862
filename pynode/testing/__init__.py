"""Test fixtures for pynode users and for pynode itself: real epmd, BEAM and pynode nodes.

Installed with the ``testing`` extra (``pip install 'pynode[testing]'``), the pytest plugin
:mod:`pynode.testing.plugin` gives a project that asks for it the fixtures ``epmd``,
``epmd_port``, ``cookie``, ``otp``, ``beam``, ``pynode_node``, ``pynode_agents_dir``,
``py_node``, ``erl``, ``fake_openai`` and ``fake_anthropic``. It is opt-in, so a project that
merely installs pynode keeps its own fixtures of those names: put
``pytest_plugins = ["pynode.testing.plugin"]`` in the top-level ``conftest.py``, or run
``pytest -p pynode.testing.plugin``. The classes behind them live here::

    async def test_ping(beam, pynode_node):
        assert await beam.call(pynode_node.address("pynode"), Atom("ping")) == Atom("pong")

Importing this package loads neither pydantic-ai nor the agent bridge until
:class:`PynodeNode` or :func:`running_pynode` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pynode.testing.beam import (
    START_TIMEOUT,
    BeamEvalError,
    BeamKind,
    BeamNode,
    BeamNodeError,
    Destination,
    control_module_dir,
    node_command,
)
from pynode.testing.cluster import Beam, BeamFactory
from pynode.testing.epmd import Epmd, epmd_answers, epmd_executable, epmd_names, free_port, running_epmd
from pynode.testing.script import ScriptedModel, ScriptedRequest

if TYPE_CHECKING:
    from pynode.testing.fake_provider import FakeProvider, Recorded, ToolCall, Turn, running_fake_provider
    from pynode.testing.local import AgentsNotLoaded, PynodeNode, running_pynode

_LOCAL_NAMES = frozenset({"AgentsNotLoaded", "PynodeNode", "running_pynode"})
_FAKE_PROVIDER_NAMES = frozenset({"FakeProvider", "Recorded", "ToolCall", "Turn", "running_fake_provider"})

__all__ = [
    "START_TIMEOUT",
    "AgentsNotLoaded",
    "Beam",
    "BeamEvalError",
    "BeamFactory",
    "BeamKind",
    "BeamNode",
    "BeamNodeError",
    "Destination",
    "Epmd",
    "FakeProvider",
    "PynodeNode",
    "Recorded",
    "ScriptedModel",
    "ScriptedRequest",
    "ToolCall",
    "Turn",
    "control_module_dir",
    "epmd_answers",
    "epmd_executable",
    "epmd_names",
    "free_port",
    "node_command",
    "on_otp",
    "running_epmd",
    "running_fake_provider",
    "running_pynode",
]


def on_otp(*releases: str) -> pytest.MarkDecorator:
    """Run a test once per Erlang/OTP release: its BEAM nodes (``beam``, ``erl``) start on that release.

    ``@on_otp("25", "28")``: a release whose runtime is missing fails the test, never skips it.
    """
    return pytest.mark.parametrize("otp", releases, indirect=True, ids=[f"otp{r}" for r in releases])


def __getattr__(name: str) -> Any:
    """The in-loop node's names, imported on first use: they bring pydantic-ai and the bridge."""
    if name in _LOCAL_NAMES:
        from pynode.testing import local

        return getattr(local, name)
    if name in _FAKE_PROVIDER_NAMES:
        # Lazy too, so that ``python -m pynode.testing.fake_provider`` runs the module only once.
        from pynode.testing import fake_provider

        return getattr(fake_provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
