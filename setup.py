"""pynode's build: the metadata is in pyproject.toml; this file only adds the compiled codec.

The codec and the framing (pynode/etf/decode.py, encode.py, pynode/wire/framing.py) are on the
path of every message. Where mypyc and a C compiler are at hand, a wheel or a plain install
compiles them from the same typed source; where not, they stay pure Python, which behaves the
same (the codec's tests run against both forms). ``PYNODE_COMPILE=0`` keeps them pure,
``PYNODE_COMPILE=1`` makes a failed compile an error. An editable install (``pip install -e``)
never compiles: its modules are the files being edited.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from typing import Any

from setuptools import setup

HOT_MODULES = ["pynode/etf/decode.py", "pynode/etf/encode.py", "pynode/wire/framing.py"]


def _say(message: str) -> None:
    print(f"pynode build: {message}", file=sys.stderr)


def _has_c_compiler() -> bool:
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(compiler.split()[0]) is not None


def _compiled_modules() -> list[Any]:
    wanted = os.environ.get("PYNODE_COMPILE", "auto")
    if wanted == "0" or any(arg.startswith(("editable", "develop")) for arg in sys.argv[1:]):
        return []
    if not sys.argv[1:] or sys.argv[1] in {"egg_info", "dist_info", "sdist"}:
        return []  # metadata only: nothing is built
    try:
        from mypyc.build import mypycify

        if not _has_c_compiler():
            raise RuntimeError("no C compiler (set CC)")
        # The isolated build has none of the runtime dependencies: what the rest of the package
        # imports from them is not needed to compile the hot modules, and only their own types
        # are checked (mypy itself checks the whole package in scripts/test).
        options = ["--ignore-missing-imports", "--follow-imports=silent"]
        return list(mypycify([*options, *HOT_MODULES], opt_level="3", debug_level="0"))
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        if wanted == "1":
            raise
        _say(f"the codec stays pure Python: {exc}")
        return []


setup(ext_modules=_compiled_modules())
