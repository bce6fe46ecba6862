"""The README's Python examples are valid code that uses names pynode really exports."""

import ast
import re
from pathlib import Path

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
