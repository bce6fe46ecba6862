"""The BEAM test machinery, kept importable as ``beam`` for the tests: it lives in pynode.testing.

``from beam import BeamNode, BeamFactory, epmd_names, ...`` works as it always has; the fixtures
themselves come from the pytest plugin ``pynode.testing.plugin``.
"""

from __future__ import annotations

from pynode.testing.beam import (
    START_TIMEOUT,
    BeamEvalError,
    BeamFactory,
    BeamKind,
    BeamNode,
    BeamNodeError,
    Destination,
    control_module_dir,
    node_command,
)
from pynode.testing.cluster import Beam
from pynode.testing.epmd import Epmd, epmd_answers, epmd_executable, epmd_names, free_port, running_epmd

__all__ = [
    "START_TIMEOUT",
    "Beam",
    "BeamEvalError",
    "BeamFactory",
    "BeamKind",
    "BeamNode",
    "BeamNodeError",
    "Destination",
    "Epmd",
    "control_module_dir",
    "epmd_answers",
    "epmd_executable",
    "epmd_names",
    "free_port",
    "node_command",
    "running_epmd",
]
