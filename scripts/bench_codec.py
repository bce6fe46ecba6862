"""The term codec against erlpack (a C extension from the package index), same terms, one run.

Encodes and decodes the same terms with ``pynode.etf`` and, when it is installed (``pip install
erlpack``; it is not a dependency: it needs a C compiler to build), with ``erlpack``: each side
decodes its own encoding of the terms. Prints the best and median of several rounds per term and,
last, one JSON line. The form of pynode's codec that ran (pure Python, or compiled) is reported.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from pynode.etf import decode, encode

Term = Any


def terms() -> dict[str, Term]:
    """The terms both codecs take alike (no atoms: erlpack and pynode spell them differently)."""
    return {
        "maps_1000x5": [{"a": 1, "b": b"x", "c": [1, 2, 3], "d": 1.5, "e": "str"} for _ in range(1000)],
        "ints_10000": list(range(-5000, 5000)),
        "binary_1mb": bytes(1 << 20),
        "nested_lists_depth_50": _nested(50),
        "strings_1000": [f"item number {i}" for i in range(1000)],
    }


def _nested(depth: int) -> Term:
    term: Term = [1, 2.5, b"leaf"]
    for level in range(depth):
        term = [term, {"level": level}]
    return term


def timed(action: Callable[[], object], rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return {"best_ms": min(times), "median_ms": statistics.median(times)}


def measure(rounds: int) -> dict[str, Any]:
    try:
        import erlpack  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        erlpack = None
    # The module, not the function ``pynode.etf.encode`` that the package exports under its name.
    compiled = not str(getattr(sys.modules["pynode.etf.encode"], "__file__", "")).endswith(".py")
    result: dict[str, Any] = {"rounds": rounds, "pynode_compiled": compiled, "erlpack": erlpack is not None}
    for name, term in terms().items():
        ours = encode(term)
        row: dict[str, Any] = {
            "bytes": len(ours),
            "pynode": {
                "encode": timed(functools.partial(encode, term), rounds),
                "decode": timed(functools.partial(decode, ours), rounds),
            },
        }
        if erlpack is not None:
            theirs = erlpack.pack(term)
            row["erlpack"] = {
                "encode": timed(functools.partial(erlpack.pack, term), rounds),
                "decode": timed(functools.partial(erlpack.unpack, theirs), rounds),
            }
            for op in ("encode", "decode"):
                row[f"{op}_ratio_pynode_erlpack"] = row["pynode"][op]["best_ms"] / row["erlpack"][op]["best_ms"]
        result[name] = row
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="few rounds, for a smoke test")
    opts = parser.parse_args()
    result = measure(3 if opts.quick else opts.rounds)
    result["quick"] = opts.quick
    form = "compiled" if result["pynode_compiled"] else "pure Python"
    print(f"pynode.etf ({form}) against {'erlpack' if result['erlpack'] else 'nothing: erlpack is not installed'}")
    print(
        f"{'term':24} {'bytes':>9} {'enc ms':>8} {'dec ms':>8} {'erlpack enc':>12} {'dec':>8} {'x enc':>6} {'x dec':>6}"
    )
    for name in terms():
        row = result[name]
        ours = row["pynode"]
        line = f"{name:24} {row['bytes']:9d} {ours['encode']['best_ms']:8.3f} {ours['decode']['best_ms']:8.3f}"
        if "erlpack" in row:
            theirs = row["erlpack"]
            line += f" {theirs['encode']['best_ms']:12.3f} {theirs['decode']['best_ms']:8.3f}"
            line += f" {row['encode_ratio_pynode_erlpack']:6.2f} {row['decode_ratio_pynode_erlpack']:6.2f}"
        print(line)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
