"""The wire bytes of pids and references seen lately, shared by the decoder and the encoder.

One ``gen_server:call`` brings the caller's pid and the call's reference several
times, and the reply sends them straight back; parsing or building those bytes
again each time is most of a small message's cost. The decoder keeps every pid
and reference it parsed here with its exact bytes; the encoder keeps what it
built. Both are the same bytes, since the two directions share one encoding.

Keyed by identity because ``Pid(n, 1, 0, 0) == Pid(n, True, 0, 0)`` and only the
first encodes. An entry holds its term alive, so its id is not reused while the
entry exists; a full table is emptied.
"""

from __future__ import annotations

from typing import Final

from pynode.etf.types import Pid, Reference

__all__ = ["ENCODED", "ENCODED_CACHE_LIMIT", "remember_encoding"]

ENCODED_CACHE_LIMIT: Final = 2048

ENCODED: dict[int, tuple[Pid | Reference, bytes]] = {}
"""id(term) -> (term, its encoding, tag included); a hit must check that the term is the very object."""


def remember_encoding(term: Pid | Reference, raw: bytes) -> None:
    """Keep ``raw`` as the encoding of ``term`` (which must be exactly what encoding it writes)."""
    if len(ENCODED) >= ENCODED_CACHE_LIMIT:
        ENCODED.clear()
    ENCODED[id(term)] = (term, raw)
