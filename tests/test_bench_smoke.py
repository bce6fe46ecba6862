"""Each benchmark's --quick run goes end to end and prints its JSON line (speed is never asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.beam

ROOT = Path(__file__).resolve().parent.parent


def quick(script: str, *args: str) -> dict[str, Any]:
    """Run ``scripts/<script> --quick``; the JSON object of its last line."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_bench_rtt_quick() -> None:
    result = quick("bench_rtt.py", "--time-limit", "240", "--node-busy-wait", "50")
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
    assert result["node_busy_wait_us"] == 50  # passed to the node as --busy-wait


def test_bench_dispatch_quick() -> None:
    result = quick("bench_dispatch.py")
    assert result["calls"] == 100 and result["cpu_us_per_call_best"] > 0
    # Every recorded call was answered again on replay: one reply written per call, at least one read.
    assert result["writes_per_call"] == 1.0 and result["chunks_per_call"] >= 1 / 100


def test_bench_run_split_quick() -> None:
    result = quick("bench_run_split.py")
    [row] = result["rounds"]
    assert result["runs"] == 20 and result["allocator"] in ("pymalloc", "malloc", "jemalloc")
    # Every part was clocked, within what the node's thread spent over the runs.
    parts = ("start (feed)", "Agent.run", "result term", "reply")
    assert all(0 < row[part] < row["node CPU"] for part in parts), row


def test_bench_floor_quick() -> None:
    result = quick("bench_floor.py")
    assert result["calls"] == 500
    for loop in ("asyncio", "uvloop"):  # the dev extras install uvloop
        assert result[loop]["rtt_median_us"] > 0 and result[loop]["server_cpu_us_per_rtt"] > 0


def test_bench_runs_quick() -> None:
    # Pinned where there are two cores to pin to (erl on one, the node and the bench on the other).
    pinned = {0, 1} <= os.sched_getaffinity(0)
    result = quick("bench_runs.py", *(["--pin"] if pinned else []))
    assert result["pinned"] is pinned
    keys = {"through_node", "in_process", "in_flight", "bridge_overhead_median", "bridge_overhead_pooled"}
    assert set(result) >= keys | {"round_overheads"}
    assert len(result["round_overheads"]) == 5  # --quick: five alternating rounds
    # Nothing may be lost: every held run answered, every result ok.
    assert result["in_flight"]["held_tool_calls"] == "{held,200}"
    assert result["in_flight"]["results"] == "{results,200,200}"


def test_bench_runs_memory_rounds_quick() -> None:
    result = quick("bench_runs.py", "--memory-rounds", "2", "--tracemalloc", "--trim")
    assert result["memory_rounds"] == 2 and result["runs_per_round"] == 200
    assert result["rss_start_kb"] > 0 and {"after_round_1_vs_start", "spread_rounds_2_on"} <= result.keys()
    assert len(result["rounds"]) == 2
    for row in result["rounds"]:
        # Every round's runs were all in flight at once, and all ended well.
        assert (row["held_tool_calls"], row["results"]) == ("{held,200}", "{results,200,200}")
        assert row["rss_after_kb"] > 0 and row["rss_after_trim_kb"] > 0
        assert row["grown"] and row["grown"][0].startswith("live Python allocations")


def test_bench_streams_quick() -> None:
    result = quick("bench_streams.py")
    node, local = result["through_node"], result["in_process"]
    # Every stream ended well and every chunk reached its BEAM process, stamped by the server.
    assert node["streams_ok"] == result["streams"] == 20
    assert node["events"] == local["events"] == 20 * 20
    assert node["delay_p50_ms"] > 0 and local["delay_p50_ms"] > 0


def test_bench_cluster_quick() -> None:
    result = quick("bench_cluster.py")
    for label in ("test_model", "provider_50ms"):
        one, two = result[label]
        # Every run through the group found a member and ended well, on one node and on two.
        assert (one["nodes"], one["ok"], two["nodes"], two["ok"]) == (1, 40, 2, 40)
        assert one["runs_per_s"] > 0 and two["runs_per_s"] > 0
        # The killed node's member left the group on the BEAM node (within the 10 s the script waits).
        assert two["member_gone_after_kill_ms"] is not None


def test_bench_codec_quick() -> None:
    result = quick("bench_codec.py")
    assert result["quick"] is True and result["rounds"] == 3
    for term in ("maps_1000x5", "ints_10000", "binary_1mb", "nested_lists_depth_50", "strings_1000"):
        row = result[term]
        assert row["bytes"] > 0
        assert row["pynode"]["encode"]["best_ms"] > 0 and row["pynode"]["decode"]["best_ms"] > 0
