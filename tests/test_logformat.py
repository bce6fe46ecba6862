"""``--log-format json``: one JSON object a line, with the record's level, logger, message and metadata."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pynode.bridge.secrets import REDACTED, SECRETS
from pynode.cli import build_parser, configure_logging
from pynode.logformat import JsonFormatter, level_name


@contextlib.contextmanager
def configured(*flags: str) -> Iterator[io.StringIO]:
    """The root logger as ``pynode --name py@127.0.0.1 FLAGS`` sets it up, writing to the stream yielded.

    The test's own handlers (pytest's) are set aside meanwhile, and put back with the root's level.
    """
    root = logging.getLogger()
    saved, level = root.handlers, root.level
    root.handlers = []
    stream = io.StringIO()
    try:
        configure_logging(build_parser().parse_args(["--name", "py@127.0.0.1", *flags]), stream)
        yield stream
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = saved
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_record_is_one_json_object_with_its_level_logger_message_and_node() -> None:
    with configured("--log-format", "json") as stream:
        logging.getLogger("pynode.registry").info("agent %s registered", "greeter", extra={"agent": "greeter"})
        logging.getLogger("pynode").warning("plain")
    assert lines(stream) == [
        {
            "level": "info",
            "logger": "pynode.registry",
            "message": "agent greeter registered",
            "node": "py@127.0.0.1",
            "agent": "greeter",
        },
        {"level": "warning", "logger": "pynode", "message": "plain", "node": "py@127.0.0.1"},
    ]


def test_a_run_line_carries_its_agent_and_run_id_and_debug_shows_only_at_debug() -> None:
    extra = {"agent": "assistant", "run_id": "abc123"}
    with configured("--log-format", "json") as stream:
        logging.getLogger("pynode.run").debug("run abc123 of assistant ended: ok", extra=extra)
    assert stream.getvalue() == ""
    with configured("--log-format", "json", "--log-level", "debug") as stream:
        logging.getLogger("pynode.run").debug("run abc123 of assistant ended: ok", extra=extra)
    [line] = lines(stream)
    assert line == {
        "level": "debug",
        "logger": "pynode.run",
        "message": "run abc123 of assistant ended: ok",
        "node": "py@127.0.0.1",
        "agent": "assistant",
        "run_id": "abc123",
    }


@pytest.mark.parametrize(
    ("levelno", "name"),
    [
        (logging.DEBUG, "debug"),
        (5, "debug"),
        (logging.INFO, "info"),
        (25, "info"),
        (logging.WARNING, "warning"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "critical"),
        (60, "critical"),
    ],
)
def test_levels_have_the_five_names(levelno: int, name: str) -> None:
    assert level_name(levelno) == name
    record = logging.LogRecord("pynode", levelno, __file__, 1, "x", None, None)
    assert json.loads(JsonFormatter().format(record))["level"] == name


def test_an_exception_is_appended_to_the_message_on_the_same_line() -> None:
    with configured("--log-format", "json") as stream:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("pynode.run").exception("run %s failed", "r1", extra={"run_id": "r1"})
    [line] = lines(stream)  # one line, the traceback's newlines escaped inside it
    assert line["level"] == "error" and line["run_id"] == "r1"
    first, *rest = line["message"].split("\n")
    assert first == "run r1 failed"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: boom"


def test_the_json_handler_redacts_the_nodes_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setattr(SECRETS, "_values", set())
    SECRETS.add(secret)
    with configured("--log-format", "json") as stream:
        log = logging.getLogger("pynode.run")
        log.warning("the provider said: bad key %s", secret)
        try:
            raise RuntimeError(f"401 for key {secret}")
        except RuntimeError:
            log.exception("run failed")
    text = stream.getvalue()
    assert secret not in text
    said, failed = lines(stream)
    assert said["message"] == f"the provider said: bad key {REDACTED}"
    assert failed["message"].startswith("run failed\nTraceback")
    assert failed["message"].endswith(f"RuntimeError: 401 for key {REDACTED}")


def test_non_ascii_is_escaped() -> None:
    with configured("--log-format", "json") as stream:
        logging.getLogger("pynode").info("café ☕ 😀")
    assert stream.getvalue().isascii()
    assert lines(stream)[0]["message"] == "café ☕ 😀"


def test_text_stays_the_default_with_a_timestamp_and_level() -> None:
    with configured() as stream:
        logging.getLogger("pynode").warning("plain")
    assert stream.getvalue().rstrip("\n").endswith(" WARNING pynode: plain")
    with pytest.raises(json.JSONDecodeError):
        json.loads(stream.getvalue())


def test_the_format_flag_and_its_environment_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNODE_LOG_FORMAT", raising=False)
    assert build_parser().parse_args(["--name", "py@h"]).log_format == "text"
    assert build_parser().parse_args(["--name", "py@h", "--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("PYNODE_LOG_FORMAT", "json")
    assert build_parser().parse_args(["--name", "py@h"]).log_format == "json"
    assert build_parser().parse_args(["--name", "py@h", "--log-format", "text"]).log_format == "text"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unknown_format_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    argv = ["--name", "py@h"]
    if how == "flag":
        argv += ["--log-format", "yaml"]
    else:
        monkeypatch.setenv("PYNODE_LOG_FORMAT", "yaml")
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert "not a log format: 'yaml' (say text or json)" in capsys.readouterr().err


def test_no_agents_excludes_agents(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["--name", "py@h", "--no-agents"]).no_agents is True
    assert build_parser().parse_args(["--name", "py@h"]).no_agents is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--name", "py@h", "--no-agents", "--agents", "agents"])
    assert "not allowed with argument" in capsys.readouterr().err
