"""The package's layers load apart: the codec, the wire cores and the node bring no pydantic-ai.

Each check runs in a fresh interpreter, since this one has long imported everything.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT_MODULES = ["pynode", "pynode.etf", "pynode.wire", "pynode.node", "pynode.epmd", "pynode.runtime"]


def _modules_after(statement: str) -> set[str]:
    """The modules loaded by ``statement`` in a new interpreter."""
    script = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_importing_a_lower_layer_loads_no_pydantic_ai(module: str) -> None:
    loaded = _modules_after(f"import {module}")
    assert module in loaded
    assert "pydantic_ai" not in loaded
    assert not any(name.startswith("pynode.bridge") for name in loaded)


def test_the_codec_the_wire_and_the_node_together_load_no_pydantic_ai() -> None:
    loaded = _modules_after("import pynode.etf, pynode.wire, pynode.node")
    assert {"pynode.etf", "pynode.wire", "pynode.node"} <= loaded
    assert "pydantic_ai" not in loaded


def test_the_bridge_names_of_the_package_load_when_first_used() -> None:
    loaded = _modules_after("import pynode\nassert pynode.cluster.__module__ == 'pynode.bridge.context'")
    assert "pydantic_ai" in loaded
    assert "pynode.bridge.context" in loaded


def test_an_unknown_name_of_the_package_is_an_attribute_error() -> None:
    import pynode

    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        _ = pynode.nonesuch  # type: ignore[attr-defined]
