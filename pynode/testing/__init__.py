"""Test fixtures for pynode users and for pynode itself: real epmd, BEAM and pynode nodes.

Installed with the ``testing`` extra (``pip install 'pynode[testing]'``), the pytest plugin
:mod:`pynode.testing.plugin` is registered as a ``pytest11`` entry point and gives every test
the fixtures ``epmd``, ``epmd_port``, ``cookie``, ``otp``, ``beam``, ``pynode_node``,
``pynode_agents_dir``, ``py_node`` and ``erl``. The classes behind them live here::

    async def test_ping(beam, pynode_node):
        assert await beam.call(pynode_node.address("pynode"), Atom("ping")) == Atom("pong")
"""

from __future__ import annotations

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
from pynode.testing.local import AgentsNotLoaded, PynodeNode, running_pynode

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
    "PynodeNode",
    "control_module_dir",
    "epmd_answers",
    "epmd_executable",
    "epmd_names",
    "free_port",
    "node_command",
    "on_otp",
    "running_epmd",
    "running_pynode",
]


def on_otp(*releases: str) -> pytest.MarkDecorator:
    """Run a test once per Erlang/OTP release: its BEAM nodes (``beam``, ``erl``) start on that release.

    ``@on_otp("25", "28")``: a release whose runtime is missing fails the test, never skips it.
    """
    return pytest.mark.parametrize("otp", releases, indirect=True, ids=[f"otp{r}" for r in releases])
