"""scripts/bench_runs.py runs end to end (its numbers are reported, never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.beam

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_runs.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) >= {"through_node", "in_process", "in_flight", "bridge_overhead_median"}
    # Nothing may be lost: every held run answered, every result ok.
    assert result["in_flight"]["held_tool_calls"] == "{held,200}"
    assert result["in_flight"]["results"] == "{results,200,200}"
