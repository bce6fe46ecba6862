"""The limit flags of the pynode command, down to the Limits the node passes to its readers."""

from __future__ import annotations

import argparse

import pytest

from pynode.cli import build_parser, limits_from, parse_size
from pynode.limits import DEFAULT_LIMITS, MiB


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", MiB), ("512k", 512 * 1024), ("16M", 16 * MiB), ("16MiB", 16 * MiB), ("1G", 1 << 30), ("2gb", 2 << 30)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "12x", "-1", "0", "1.5M"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_defaults_are_the_documented_limits() -> None:
    args = build_parser().parse_args(["--name", "py@127.0.0.1"])
    assert limits_from(args) == DEFAULT_LIMITS


def test_flags_reach_the_limits() -> None:
    args = build_parser().parse_args([
        "--name", "py@127.0.0.1", "--max-message-size", "16M", "--max-fragment-bytes", "32M",
        "--max-fragment-sequences", "500", "--log-lines", "3", "--log-interval", "0.5",
    ])  # fmt: skip
    limits = limits_from(args)
    assert (limits.max_message_size, limits.max_fragment_bytes) == (16 * MiB, 32 * MiB)
    assert (limits.max_fragment_sequences, limits.log_lines, limits.log_interval) == (500, 3, 0.5)


def test_a_bad_flag_value_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--name", "py@127.0.0.1", "--max-fragment-sequences", "0"])
    assert "must be 1 or more" in capsys.readouterr().err


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from pynode._version import __version__

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"pynode {__version__}"
