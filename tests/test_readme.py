"""The README's Python examples are valid code that uses names pynode really exports."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pynode

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_python_examples_parse_and_import_real_names() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "pynode":
                for alias in node.names:
                    assert hasattr(pynode, alias.name), alias.name


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "scripts/demo" in text and "scripts/test" in text
    assert Path(README.parent / ".ci" / "run").read_text().count("scripts/test") == 1


def example_files() -> dict[str, str]:
    """The README's example project: each block marked ``<!-- pynode-example: PATH -->``."""
    found = re.findall(r"<!-- pynode-example: (\S+) -->\n```\w+\n(.*?)```", README.read_text(), flags=re.S)
    return dict(found)


@pytest.mark.beam
def test_the_testing_example_passes_as_written(tmp_path: Path) -> None:
    files = example_files()
    assert sorted(files) == ["agents/greeter.py", "conftest.py", "pyproject.toml", "tests/test_greeter.py"]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "no Python agents" not in done.stdout  # the node served agents/greeter.py


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a project of its own, as its user runs it: the plugin comes from its conftest line."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "ERL_EPMD"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_installing_pynode_adds_no_fixtures_to_a_project(tmp_path: Path) -> None:
    """Without the conftest line a project's own ``cookie`` is the one its tests get, and ``beam`` is unknown."""
    (tmp_path / "conftest.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef cookie():\n    return 'the project cookie'\n"
    )
    (tmp_path / "test_own.py").write_text(
        "def test_own_cookie(cookie):\n    assert cookie == 'the project cookie'\n\ndef test_no_beam(beam):\n    pass\n"
    )
    done = run_pytest(tmp_path)
    assert "1 passed" in done.stdout and "1 error" in done.stdout, done.stdout + done.stderr
    assert "fixture 'beam' not found" in done.stdout


def test_the_plugin_loads_by_its_flag_without_the_agent_bridge(tmp_path: Path) -> None:
    (tmp_path / "test_flag.py").write_text(
        "import sys\n\n"
        "def test_fixtures_there_bridge_not_loaded(cookie):\n"
        "    assert cookie.startswith('pynode_')\n"
        "    assert 'pydantic_ai' not in sys.modules and 'pynode.bridge' not in sys.modules\n"
    )
    done = run_pytest(tmp_path, "-p", "pynode.testing.plugin")
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_the_flag_table_lists_every_flag_of_the_command() -> None:
    from pynode.cli import build_parser

    flags = {s for a in build_parser()._actions for s in a.option_strings if s.startswith("--")} - {"--help"}
    table = README.read_text().split("## Starting a node", 1)[1].split("\n\n", 3)[2]
    first_cells = "\n".join(row.split("|")[1] for row in table.splitlines() if row.startswith("| `"))
    documented = set(re.findall(r"(--[a-z][a-z-]*)", first_cells))
    assert flags == documented, (sorted(flags - documented), sorted(documented - flags))
