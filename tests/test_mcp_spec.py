"""The ``toolsets`` key of an agent spec, and what the node needs before it starts any MCP server:
the spec read and refused with messages naming the key, the programs ``--mcp-command`` allows, the
guard a stdio server starts under, and a node without the MCP client."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from pynode.bridge.errors import BridgeError
from pynode.bridge.mcp import guarded_command, resolve_commands
from pynode.bridge.spec import MCPServerSpec, parse_agent_spec, spec_has_toolsets
from pynode.cli import build_parser
from pynode.etf.types import Atom, Term

A = Atom


def toolsets(*entries: Term) -> tuple[MCPServerSpec, ...]:
    return parse_agent_spec({A("model"): b"test", A("toolsets"): list(entries)}).toolsets


def refused(*entries: Term) -> str:
    with pytest.raises(BridgeError) as caught:
        toolsets(*entries)
    assert caught.value.kind == "bad_spec"
    return caught.value.message


def test_both_kinds_of_server_are_read_with_prefix_approval_args_and_env() -> None:
    http, stdio = toolsets(
        {A("mcp"): {A("url"): b"http://127.0.0.1:8000/mcp"}, A("prefix"): b"docs", A("requires_approval"): True},
        {
            b"mcp": {b"command": b"uvx", b"args": [b"mcp-server-time"], b"env": {b"TZ": b"UTC"}},
            b"requires_approval": A("false"),
        },
    )
    assert http == MCPServerSpec(url="http://127.0.0.1:8000/mcp", prefix="docs", requires_approval=True)
    assert stdio == MCPServerSpec(command="uvx", args=("mcp-server-time",), env={"TZ": "UTC"})
    assert (http.label, stdio.label) == ("http://127.0.0.1:8000/mcp", "uvx mcp-server-time")
    assert toolsets() == () and parse_agent_spec({A("model"): b"test"}).toolsets == ()


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (b"http://x", "toolsets must be a list"),
        ({A("prefix"): b"p"}, "toolsets[0] needs mcp =>"),
        ({A("mcp"): {}}, "needs either a url (streamable HTTP) or a command (stdio)"),
        ({A("mcp"): {A("url"): b"http://h/mcp", A("command"): b"x"}}, "not both"),
        ({A("mcp"): {A("url"): b"ftp://h/mcp"}}, "must be an http:// or https:// URL"),
        ({A("mcp"): {A("url"): b"http://h/mcp", A("args"): [b"a"]}}, "args and env are for a command"),
        ({A("mcp"): {A("command"): b"x", A("args"): b"a"}}, "toolsets[0].mcp.args must be a list"),
        ({A("mcp"): {A("command"): b"x", A("env"): [b"A=1"]}}, "toolsets[0].mcp.env must be a map"),
        ({A("mcp"): {A("command"): b""}}, "toolsets[0].mcp.command is empty"),
        ({A("mcp"): {A("command"): b"x", A("cwd"): b"/"}}, "unknown key 'cwd'"),
        ({A("mcp"): {A("url"): b"http://h/mcp"}, A("prefix"): b"a b"}, "must be 1 to 32 letters"),
        ({A("mcp"): {A("url"): b"http://h/mcp"}, A("requires_approval"): b"yes"}, "must be true or false"),
        ({A("mcp"): {A("url"): b"http://h/mcp"}, A("headers"): {}}, "unknown key 'headers'"),
    ],
)
def test_a_bad_toolset_is_refused_naming_what_is_wrong(entry: Term, words: str) -> None:
    with pytest.raises(BridgeError) as caught:
        parse_agent_spec({A("model"): b"test", A("toolsets"): entry if isinstance(entry, bytes) else [entry]})
    assert caught.value.kind == "bad_spec" and words in caught.value.message, caught.value.message


def test_two_toolsets_may_not_share_a_prefix() -> None:
    one = {A("mcp"): {A("url"): b"http://a/mcp"}, A("prefix"): b"p"}
    two = {A("mcp"): {A("url"): b"http://b/mcp"}, A("prefix"): b"p"}
    assert "two toolsets have the prefix 'p'" in refused(one, two)


def test_a_spec_term_says_whether_creating_it_waits_for_servers() -> None:
    entry = {A("mcp"): {A("url"): b"http://a/mcp"}}
    assert spec_has_toolsets({A("model"): b"test", A("toolsets"): [entry]})
    assert spec_has_toolsets({b"toolsets": [entry]})
    assert not spec_has_toolsets({A("model"): b"test", A("toolsets"): []})
    assert not spec_has_toolsets({A("model"): b"test"}) and not spec_has_toolsets(b"not a map")


def test_mcp_commands_name_executables_by_their_real_path() -> None:
    python, sh = os.path.realpath(sys.executable), os.path.realpath(shutil.which("sh") or "/bin/sh")
    assert resolve_commands([sys.executable, "sh"]) == {python, sh}  # a name is looked up on PATH
    with pytest.raises(ValueError, match="no such executable"):
        resolve_commands(["/no/such/program"])
    assert build_parser().parse_args(["--name", "a@b"]).mcp_command == []
    flags = ["--name", "a@b", "--mcp-command", "x", "--mcp-command", "y"]
    assert build_parser().parse_args(flags).mcp_command == ["x", "y"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_guard_sets_the_parent_death_signal_then_becomes_the_program() -> None:
    report = (  # PR_GET_PDEATHSIG, asked by the program itself
        "import ctypes, os; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s));"
        " print(os.getpid(), s.value)"
    )
    command, args = guarded_command(sys.executable, ["-c", report])
    assert command == sys.executable and args[:3] == ["-I", "-S", "-c"]
    with subprocess.Popen([command, *args], stdout=subprocess.PIPE, text=True) as proc:
        out, _ = proc.communicate(timeout=30)
    pid, death_signal = out.split()
    assert proc.returncode == 0 and int(pid) == proc.pid  # the same process: the guard became the program
    assert int(death_signal) == signal.SIGKILL


def test_a_guard_whose_node_is_not_its_parent_refuses_to_start_the_program() -> None:
    command, args = guarded_command("/bin/echo", ["started"])
    assert command == sys.executable  # the guard, as in the test above
    args[4] = "1"  # the pid it expects as its parent: not this test
    done = subprocess.run([command, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "started" not in done.stdout
    assert "the node ended before its MCP server started" in done.stderr


def test_without_the_mcp_client_a_spec_with_toolsets_says_what_to_install() -> None:
    program = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["fastmcp"] = None  # as on a node installed without pynode[mcp]
        sys.modules["pydantic_ai.mcp"] = None
        import pynode.bridge.registry, pynode.cli  # the node itself needs no MCP client
        from pynode.bridge.errors import BridgeError
        from pynode.bridge.mcp import McpSessions
        from pynode.bridge.spec import MCPServerSpec
        try:
            asyncio.run(McpSessions("a", [MCPServerSpec(url="http://127.0.0.1:9/mcp")], allowed=frozenset()).open())
        except BridgeError as exc:
            print(exc.kind, exc.message)
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("bad_spec toolsets need the MCP client"), done.stdout
    assert "pip install 'pynode[mcp]'" in done.stdout


def test_the_node_loads_no_mcp_client_until_an_agent_has_toolsets() -> None:
    program = (
        "import sys, pynode.cli, pynode.bridge.registry\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastmcp', 'mcp') or m == 'pydantic_ai.mcp'))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
