"""How the ``pynode`` command writes its log: ``text`` for a person, ``json`` for the program that started it.

With ``--log-format json`` every record is one JSON object on one line::

    {"level": "info", "logger": "pynode.registry", "message": "agent greeter registered (...)",
     "node": "py@127.0.0.1", "agent": "greeter"}

``level`` is one of ``debug``, ``info``, ``warning``, ``error``, ``critical``; ``message`` is the
formatted message with its traceback, if any, after a newline; ``node``, ``agent`` and ``run_id``
are there when the record has them (log calls pass ``agent`` and ``run_id`` with ``extra=``, and
:class:`NodeFilter` stamps ``node`` on every record). There is no timestamp: the reader adds its own.
The output is ASCII (other characters as ``\\uXXXX`` escapes), whatever the stream's encoding.
"""

from __future__ import annotations

import json
import logging
from typing import Final

__all__ = ["LOG_FORMATS", "METADATA", "TEXT_FORMAT", "JsonFormatter", "NodeFilter", "level_name"]

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
METADATA: Final = ("node", "agent", "run_id")
"""Record attributes a JSON line carries when the record has them (and they are not ``None``)."""

_LEVELS: Final = (
    (logging.CRITICAL, "critical"),
    (logging.ERROR, "error"),
    (logging.WARNING, "warning"),
    (logging.INFO, "info"),
)


def level_name(levelno: int) -> str:
    """The record's level as one of the five names; a custom level goes to the standard one below it."""
    for threshold, name in _LEVELS:
        if levelno >= threshold:
            return name
    return "debug"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``level``, ``logger``, ``message``, and the :data:`METADATA` it has."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        line: dict[str, str] = {"level": level_name(record.levelno), "logger": record.name, "message": message}
        for key in METADATA:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = str(value)
        return json.dumps(line)


class NodeFilter(logging.Filter):
    """Stamps the node's name on every record that has none, for a handler's formatter to show."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "node", None) is None:
            record.node = self.node
        return True
