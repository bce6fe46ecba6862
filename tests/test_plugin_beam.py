"""The fixtures of the pytest plugin pynode.testing: the default BEAM node, its test process, pynode_node."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest
from pydantic_ai import Agent

from pynode import Atom, Node, Pid
from pynode.testing import Beam, BeamEvalError, PynodeNode

pytestmark = pytest.mark.beam

AGENTS = Path(__file__).resolve().parent.parent / "agents"

ECHO = "register(echo, spawn(fun Loop() -> receive {From, M} -> From ! {echoed, M}, Loop() end end)), ok"
"""An erl process that answers {From, M} with {echoed, M}."""


async def test_beam_drives_a_default_node_and_still_starts_others(beam: Beam) -> None:
    assert await beam.eval("node()") == "'test@127.0.0.1'"
    assert beam.name == "test@127.0.0.1"
    other = await beam("e1")
    assert await other.eval("net_adm:ping('test@127.0.0.1')") == "pong"
    default = await beam.node()
    assert beam.nodes == [default, other]  # one default node, started once
    assert await beam.eval("lists:sort(nodes())") == "['e1@127.0.0.1']"


async def test_the_test_process_sends_and_receives_terms(beam: Beam) -> None:
    node = await beam.node()
    pid = node.test_pid
    assert isinstance(pid, Pid)
    assert pid.node == "test@127.0.0.1"
    assert await node.eval("pid_to_list(whereis(pynode_test))") == f'"<0.{pid.id}.{pid.serial}>"'
    await beam.eval(ECHO)
    term = {Atom("a"): [1, 2.5, b"bin"], "key": (Atom("ok"), -(2**70))}
    await beam.send("echo", (node.test_pid, term))
    assert await beam.receive() == (Atom("echoed"), {Atom("a"): [1, 2.5, b"bin"], b"key": (Atom("ok"), -(2**70))})


async def test_receive_is_selective_and_times_out(beam: Beam) -> None:
    node = await beam.node()
    for n in (1, 2, 3):
        await beam.send(node.test_pid, (Atom("n"), n))
    assert await beam.receive(match=lambda m: m == (Atom("n"), 2)) == (Atom("n"), 2)
    assert await beam.receive() == (Atom("n"), 1)  # what the match refused kept its place
    assert await beam.receive() == (Atom("n"), 3)
    with pytest.raises(TimeoutError, match=r"no message within 0\.2 s"):
        await beam.receive(timeout=0.2)
    await beam.eval("pynode_test ! late, ok")  # the mailbox is the registered pynode_test's
    assert await beam.receive() == Atom("late")


async def test_calls_answer_terms_and_exits_carry_their_reason(beam: Beam, py_node: Node) -> None:
    assert await beam.call(("pynode", "py@127.0.0.1"), Atom("ping")) == Atom("pong")
    echoed = await beam.call(("pynode", "py@127.0.0.1"), (Atom("echo"), [b"\xff", (), {}]))
    assert echoed == (Atom("ok"), [b"\xff", (), {}])
    with pytest.raises(BeamEvalError) as raised:
        await beam.call(("nobody", "py@127.0.0.1"), Atom("ping"))
    assert raised.value.error_class == "exit"
    assert raised.value.reason_term[0] == Atom("noproc")
    assert raised.value.reason.startswith("{noproc,{gen_server,call,")
    assert await beam.call(("pynode", "py@127.0.0.1"), Atom("ping")) == Atom("pong")  # it carries on


async def test_a_test_process_that_dies_fails_its_request_and_is_replaced(beam: Beam) -> None:
    node = await beam.node()
    first = node.test_pid
    waiting = asyncio.create_task(node.receive(timeout=60))
    for _ in range(200):  # until the test process is inside its receive
        if await node.eval("element(2, process_info(whereis(pynode_test), status))") == "waiting":
            break
        await asyncio.sleep(0.01)
    await node.eval("exit(whereis(pynode_test), kill)")
    with pytest.raises(BeamEvalError, match="exit:killed"):
        await waiting
    for _ in range(200):
        if node.test_pid != first:
            break
        await asyncio.sleep(0.01)
    assert node.test_pid not in (first, None)
    await node.send(node.test_pid, Atom("hello"))
    assert await node.receive() == Atom("hello")


async def test_pynode_node_serves_the_projects_agents(pynode_node: PynodeNode, beam: Beam) -> None:
    assert pynode_node.name == "pynode@127.0.0.1"
    assert pynode_node.agents_dir == AGENTS
    ok, agents = await beam.call(pynode_node.address("pynode"), Atom("list_agents"))
    assert ok == Atom("ok")
    assert sorted(a[Atom("name")] for a in agents) == ["inventory", "research"]
    assert isinstance(pynode_node.agent("research"), Agent)


GREETER = """
    from pydantic_ai import Agent

    agent = Agent("openai:gpt-4o", defer_model_check=True)

    @agent.tool_plain
    def shout(text: str) -> str:
        return text.upper() + "!"
"""


class TestAgentsOfTheirOwn:
    @pytest.fixture
    def pynode_agents_dir(self, tmp_path: Path) -> Path:
        (tmp_path / "greeter.py").write_text(dedent(GREETER))
        return tmp_path

    async def test_a_run_from_the_beam_uses_the_python_tool(self, pynode_node: PynodeNode, beam: Beam) -> None:
        ok, result = await beam.call(pynode_node.address("greeter"), (Atom("run"), "Hi", {"model": "test"}))
        assert ok == Atom("ok")
        assert result[Atom("output")] == b'{"shout":"A!"}'
        assert list(pynode_node.registry.agents) == ["greeter"]


STRICT_PROJECT = {
    "pytest.ini": "[pytest]\npynode_agents_dir = nowhere\n",
    "conftest.py": 'pytest_plugins = ["pynode.testing.plugin"]\n',
    "test_missing.py": """
        import pytest

        @pytest.mark.asyncio
        async def test_missing_folder(pynode_node):
            pass
    """,
    "test_broken.py": """
        from pathlib import Path

        import pytest

        @pytest.fixture
        def pynode_agents_dir():
            return Path(__file__).parent / "broken_agents"

        @pytest.mark.asyncio
        async def test_broken_agent(pynode_node):
            pass
    """,
    "test_strict.py": """
        import pytest
        from pynode import Atom

        @pytest.mark.asyncio
        async def test_strict_mode_gets_the_beam(beam):
            assert await beam.call(("no_such", "test@127.0.0.1"), Atom("x"), timeout=1) == 0
    """,
    "test_otp.py": """
        import pytest
        from pynode.testing import on_otp

        @on_otp("28")
        @pytest.mark.asyncio
        async def test_on_a_release_that_is_missing(beam):
            pass
    """,
    "broken_agents/good.py": "from pydantic_ai import Agent\nagent = Agent('test')\n",
    "broken_agents/broken.py": "import no_such_module_here\n",
}


def test_in_a_project_of_its_own_the_plugin_says_what_is_wrong(tmp_path: Path) -> None:
    for name, text in STRICT_PROJECT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(dedent(text))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "ERL_EPMD"))}
    env["PYNODE_OTP28_ERL"] = str(tmp_path / "no-such-erl")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "1 failed, 3 errors in" in out  # nothing skipped
    assert f"pynode_agents_dir = 'nowhere': {tmp_path / 'nowhere'} is not a directory" in out
    assert f"agents from {tmp_path / 'broken_agents'}:" in out
    assert f"no agent from {tmp_path / 'broken_agents' / 'broken.py'}: ModuleNotFoundError" in out
    # strict mode: the async fixtures work with @pytest.mark.asyncio, and a call exit is an error
    assert "BeamEvalError: exit:{noproc,{gen_server,call," in out
    # a release whose runtime is missing is an error of the test, never a skip
    assert "ERROR test_otp.py::test_on_a_release_that_is_missing[otp28]" in out
    assert "no Erlang/OTP 28 runtime: looked in $PYNODE_OTP28_ERL" in out
