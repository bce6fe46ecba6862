"""What the sans-IO protocol cores share: the sentinel for "feed me more bytes"."""

from __future__ import annotations

from typing import Final

__all__ = ["NEED_DATA", "NeedData"]


class NeedData:
    """Sentinel type: nothing to report until more bytes (or the owner's answer) arrive."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()
