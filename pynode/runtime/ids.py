"""Minting pids and references that are unique on this node's incarnation."""

from __future__ import annotations

import itertools
import secrets

from pynode.etf.types import Atom, Pid, Reference

__all__ = ["IdMint"]

_PID_ID_LIMIT = 1 << 28


class IdMint:
    """Hands out pids and references for one node name and creation."""

    __slots__ = ("_next_ref", "_pid_counter", "_ref_salt", "creation", "node")

    def __init__(self, node: Atom, creation: int) -> None:
        self.node = node
        self.creation = creation
        self._pid_counter = itertools.count(1)
        self._next_ref = itertools.count(1)
        # Two refs of different incarnations of a name must differ even at equal creation.
        self._ref_salt = secrets.randbits(32)

    def pid(self) -> Pid:
        n = next(self._pid_counter)
        return Pid(self.node, n % _PID_ID_LIMIT, n // _PID_ID_LIMIT, self.creation)

    def ref(self) -> Reference:
        n = next(self._next_ref)
        return Reference(self.node, self.creation, (n & 0x3FFFF, (n >> 18) & 0xFFFFFFFF, self._ref_salt))
