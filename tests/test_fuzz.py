"""The fuzz corpus replayed through every target, and a short coverage-guided run of each in CI.

The corpus under ``tests/fuzz/corpus/<target>/`` holds the inputs that raised
coverage when the targets were fuzzed (minimised with libFuzzer's ``-merge=1``);
replaying it checks, in a second, that nothing found once comes back. The
atheris run then mutates from it for a few thousand inputs per target, in a
subprocess: a crash or a broken invariant fails the test with the input that did it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ))

from targets import TARGETS  # noqa: E402

from pynode.etf.types import Atom  # noqa: E402

CI_RUNS = int(os.environ.get("PYNODE_FUZZ_RUNS", "3000"))


def corpus(target: str) -> list[Path]:
    return sorted((FUZZ / "corpus" / target).iterdir())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_corpus_replays_cleanly(target: str) -> None:
    inputs = corpus(target)
    assert len(inputs) >= 10, f"the {target} corpus is missing"
    for path in inputs:
        try:
            TARGETS[target](path.read_bytes())
        except AssertionError as exc:
            raise AssertionError(f"{path.name}: {exc}") from exc


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_atheris_run_finds_nothing(target: str, tmp_path: Path) -> None:
    """``CI_RUNS`` inputs mutated from the corpus; libFuzzer's count of the inputs it ran is printed."""
    new = tmp_path / "new"
    new.mkdir()
    run = subprocess.run(
        [sys.executable, str(FUZZ / f"fuzz_{target}.py"), f"-runs={CI_RUNS}", "-timeout=60", "-rss_limit_mb=3000",
         "-max_len=4096", f"-artifact_prefix={tmp_path}/", "-seed=1", str(new), str(FUZZ / "corpus" / target)],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    done = re.search(r"Done (\d+) runs in", run.stderr)
    crash = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
    assert run.returncode == 0 and done and not crash, f"{crash}\n{run.stderr[-3000:]}"
    print(f"fuzz {target}: {done.group(1)} inputs ran, none crashed or broke a limit")
    assert int(done.group(1)) >= CI_RUNS


def test_a_huge_integer_in_a_control_tuple_is_a_protocol_error_not_a_crash() -> None:
    """Found while hardening: the error text was built with repr(), which raises past 4,300 digits."""
    from pynode.errors import RemoteProtocolError
    from pynode.etf.encode import encode
    from pynode.wire.control import parse_control

    for term in ((7**20000, 1), (2, Atom(""), 7**20000), 7**20000):
        with pytest.raises(RemoteProtocolError, match="16#"):
            parse_control(term)
    TARGETS["control"](encode((7**20000, 1))[1:])
    TARGETS["connection"](_frame(b"\x83\x44\x00" + encode((6, 7**20000, Atom(""), Atom("pynode")))[1:] + b"a\x01"))


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body
