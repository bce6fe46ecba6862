"""The BEAM test machinery, kept importable as ``beam`` for the tests: it lives in pynode.testing.

``from beam import BeamNode, BeamFactory, epmd_names, ...`` works as it always has; the fixtures
themselves come from the pytest plugin ``pynode.testing.plugin``.
"""

from __future__ import annotations

from pynode.testing import *  # noqa: F403 (the names of pynode.testing, listed once there)
from pynode.testing import __all__ as __all__
