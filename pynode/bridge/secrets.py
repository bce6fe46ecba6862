"""The API keys this node has been given, and the one place that keeps them out of what it says.

A key reaches the node in a model map (``api_key => <<"sk-...">>``) or through an environment
variable it was told to read. Every error reply and every log line of the node passes through
:meth:`Secrets.redact`, so a key that a provider echoes back, or that a bad spec shows, is never
repeated to a caller or a log.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["REDACTED", "SECRETS", "RedactingFilter", "Secrets"]

REDACTED: Final = "[redacted]"
_MIN_LENGTH: Final = 6
"""Shorter values are not treated as keys: redacting them would garble ordinary text."""


class Secrets:
    """Known secret values; :meth:`redact` replaces each of them in a text."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        if len(value) >= _MIN_LENGTH:
            self._values.add(value)

    def redact(self, text: str) -> str:
        if not self._values:
            return text
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def __len__(self) -> int:
        return len(self._values)


SECRETS: Final = Secrets()
"""The node's secrets (one process, one set)."""


class RedactingFilter(logging.Filter):
    """A logging filter that takes every known secret out of a record's text (and its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if len(SECRETS):
            message = record.getMessage()
            redacted = SECRETS.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
            if record.exc_info and record.exc_info[1] is not None:
                text = logging.Formatter().formatException(record.exc_info)
                if SECRETS.redact(text) != text:
                    record.exc_text = SECRETS.redact(text)
                    record.exc_info = None
        return True
