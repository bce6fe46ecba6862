"""Shared by the ``fuzz_*.py`` scripts: run one target under atheris (libFuzzer), pynode instrumented."""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["pynode", "targets"]):
    from targets import TARGETS


def main(target: str) -> None:
    """libFuzzer's own flags apply: ``-runs=N``, ``-max_total_time=S``, corpus folders, ``-merge=1``."""
    atheris.Setup(sys.argv, TARGETS[target])
    atheris.Fuzz()
