"""scripts/bench_streams.py runs end to end (its numbers are reported, never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.beam

ROOT = Path(__file__).resolve().parent.parent


def test_bench_streams_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_streams.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    node, local = result["through_node"], result["in_process"]
    # Every stream ended well and every chunk reached its BEAM process, stamped by the server.
    assert node["streams_ok"] == result["streams"] == 20
    assert node["events"] == local["events"] == 20 * 20
    assert node["delay_p50_ms"] > 0 and local["delay_p50_ms"] > 0
