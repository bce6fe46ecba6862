"""Which form of the codec the tests run against: pure Python, or compiled from the same source.

``scripts/test`` runs the codec's tests twice: against the source tree, and against a wheel built
with the compiled modules (``PYNODE_EXPECT_COMPILED=1``). This test makes each run prove that it
ran the form it claims, so a build that silently fell back to pure Python cannot pass for the
compiled one.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES

import pynode.etf
import pynode.wire.framing

HOT = ("pynode.etf.decode", "pynode.etf.encode", "pynode.wire.framing")


def _compiled(module: str) -> bool:
    path = str(getattr(sys.modules[module], "__file__", ""))
    return path.endswith(tuple(EXTENSION_SUFFIXES))


def test_the_codec_runs_in_the_form_this_run_expects() -> None:
    expected = os.environ.get("PYNODE_EXPECT_COMPILED") == "1"
    assert pynode.etf.decode is not None
    assert {module: _compiled(module) for module in HOT} == dict.fromkeys(HOT, expected)
