"""scripts/bench_rtt.py --quick runs end to end and prints its JSON line (speed is never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.beam

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_rtt.py"


def test_quick_bench_prints_the_json_line() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--time-limit", "240"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {
        "calls", "concurrency", "seq", "conc", "ratio_median_py_beam", "ratio_median_py_beam_conc",
        "node_cpu_us_per_call", "rss_kb", "codec", "node_loop", "otp",
    } <= result.keys()  # fmt: skip
    assert result["calls"] == 1000 and result["quick"] is True
    for mode in ("seq", "conc"):
        for target in ("py", "beam"):
            figures = result[mode][target]
            assert figures["calls"] > 0
            assert {"median_us", "p90_us", "p99_us", "calls_per_s"} <= figures.keys()
    assert {"start", "before", "after", "peak"} <= result["rss_kb"].keys()
    for term in ("maps_1000x5", "binary_1mb"):
        codec = result["codec"][term]
        assert codec["bytes"] > 0
        assert {"best_ms", "median_ms"} <= codec["encode"].keys() == codec["decode"].keys()
    assert result["node_loop"] == "asyncio"
