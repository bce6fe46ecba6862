"""The test infrastructure itself: private epmd, BEAM nodes under control, their teardown."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from beam import BeamEvalError, BeamFactory, BeamNode, BeamNodeError, Epmd, epmd_answers, epmd_names

import pynode.testing.beam as beam_module

pytestmark = pytest.mark.beam


@dataclass
class _Seen:
    pid: int = 0
    port: int = 0


@pytest.fixture
def epmd_gone_afterwards() -> Iterator[_Seen]:
    """Set up before `epmd`, so torn down after it: checks what the epmd fixture left behind."""
    seen = _Seen()
    yield seen
    assert seen.pid, "the test did not record the epmd pid"
    with pytest.raises(ProcessLookupError):
        os.kill(seen.pid, 0)
    assert not epmd_answers(seen.port)
    assert os.environ.get("ERL_EPMD_PORT") != str(seen.port)


def test_epmd_fixture_runs_a_private_epmd_and_ends_it(epmd_gone_afterwards: _Seen, epmd: Epmd, epmd_port: int) -> None:
    epmd_gone_afterwards.pid, epmd_gone_afterwards.port = epmd.pid, epmd_port
    assert epmd.port == epmd_port
    assert os.environ["ERL_EPMD_PORT"] == str(epmd_port)
    assert epmd_answers(epmd_port)
    argv = Path(f"/proc/{epmd.pid}/cmdline").read_bytes().split(b"\0")
    assert argv[0].endswith(b"epmd")
    assert b"-daemon" not in argv
    assert argv[argv.index(b"-port") + 1] == str(epmd_port).encode()


async def test_two_erl_nodes_ping_each_other(beam: BeamFactory, epmd_port: int) -> None:
    e1, e2 = await asyncio.gather(beam("e1"), beam("e2"))
    assert e1.name == "e1@127.0.0.1"
    assert await e1.eval("net_adm:ping('e2@127.0.0.1')") == "pong"
    assert await e2.eval("nodes()") == "['e1@127.0.0.1']"
    assert await e2.eval("net_adm:ping('e1@127.0.0.1')") == "pong"
    # both registered with the private epmd, which the nodes found through ERL_EPMD_PORT
    names = await e1.eval("{ok, Names} = net_adm:names(), lists:sort([N || {N, _} <- Names])")
    assert names == '["e1","e2"]'
    assert sorted(epmd_names(epmd_port)) == ["e1", "e2"]
    assert await e1.eval('os:getenv("ERL_EPMD_PORT")') == f'"{epmd_port}"'


async def test_a_wrong_cookie_gives_pang(beam: BeamFactory) -> None:
    e1 = await beam("e1")
    await beam("e2", cookie="another_cookie")
    assert await e1.eval("net_adm:ping('e2@127.0.0.1')") == "pang"


async def test_eval_prints_terms(beam: BeamFactory) -> None:
    e1 = await beam("e1")
    printed = await e1.eval('{ok, [1, 2.5, "abc"], <<"é"/utf8>>, #{a => 1}, self() =:= self()}')
    assert printed == '{ok,[1,2.5,"abc"],<<"é"/utf8>>,#{a => 1},true}'
    assert await e1.eval("X = 20, X + 1.") == "21"  # a final dot is accepted too
    assert await e1.eval("lists:seq(1, 300)") == "[" + ",".join(map(str, range(1, 301))) + "]"


async def test_eval_term_gives_external_term_format(beam: BeamFactory) -> None:
    e1 = await beam("e1")
    data = await e1.eval_term('{hello, [1, 2, 3], <<"bin">>}')
    assert data[0] == 131
    literal = ",".join(str(b) for b in data)
    assert await e1.eval(f"binary_to_term(<<{literal}>>)") == '{hello,[1,2,3],<<"bin">>}'
    assert await e1.eval_term("[]") == bytes([131, 106])


async def test_errors_become_beam_eval_error(beam: BeamFactory) -> None:
    e1 = await beam("e1")
    with pytest.raises(BeamEvalError) as raised:
        await e1.eval('1 + list_to_atom("a")')
    assert raised.value.error_class == "error"
    assert raised.value.reason == "badarith"
    assert "error:badarith" in str(raised.value)
    with pytest.raises(BeamEvalError, match=r"throw:\{oops,1\}"):
        await e1.eval("throw({oops, 1})")
    with pytest.raises(BeamEvalError, match="exit:bye"):
        await e1.eval("exit(bye)")
    with pytest.raises(BeamEvalError, match="exit:killed"):
        await e1.eval("exit(self(), kill)")
    with pytest.raises(BeamEvalError, match="parse_error"):
        await e1.eval("{unclosed,")
    assert await e1.eval("ok") == "ok"  # the control loop survived all of it


async def test_evals_run_concurrently(beam: BeamFactory) -> None:
    e1 = await beam("e1")
    waiting = asyncio.create_task(
        e1.eval("register(waiter, self()), receive go -> released after 10000 -> timeout end")
    )
    try:
        for _ in range(200):
            if await e1.eval("is_pid(whereis(waiter))") == "true":
                break
            await asyncio.sleep(0.01)
        assert await e1.eval("waiter ! go") == "go"
        assert await asyncio.wait_for(waiting, 10) == "released"
    finally:
        waiting.cancel()


async def test_an_eval_that_times_out_or_is_cancelled_is_killed(beam: BeamFactory) -> None:
    e1 = await beam("e1")
    with pytest.raises(TimeoutError):
        await e1.eval("register(sleeper, self()), receive after infinity -> ok end", timeout=0.5)
    for _ in range(200):
        if await e1.eval("whereis(sleeper)") == "undefined":
            break
        await asyncio.sleep(0.01)
    assert await e1.eval("whereis(sleeper)") == "undefined"
    # a cancelled eval is killed on the node too
    task = asyncio.create_task(e1.eval("register(sleeper, self()), receive after infinity -> ok end"))
    for _ in range(200):
        if await e1.eval("whereis(sleeper)") != "undefined":
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if await e1.eval("whereis(sleeper)") == "undefined":
            break
        await asyncio.sleep(0.01)
    assert await e1.eval("whereis(sleeper)") == "undefined"


async def test_elixir_node_defines_and_calls_a_module(beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    source = 'defmodule Greeter do\n  def hi(name), do: "hi #{name}"\nend\nGreeter.hi("x")'
    assert await ex.eval(source) == '"hi x"'
    assert await ex.eval("Greeter.hi(1)") == '"hi 1"'
    assert await ex.eval("%{a: [1, 2], b: {:ok, 3.0}}") == "%{a: [1, 2], b: {:ok, 3.0}}"
    assert (await ex.eval_term(":ok"))[0] == 131
    with pytest.raises(BeamEvalError, match=r"\(RuntimeError\) boom") as raised:
        await ex.eval('raise "boom"')
    assert raised.value.error_class == "error"


async def test_output_of_an_eval_does_not_break_the_channel(beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    noisy = 'IO.puts("<<pynode-ctl>> 1 ok bm9pc2U="); IO.write(:user, "stray without newline"); :done'
    assert await ex.eval(noisy) == ":done"
    assert await ex.eval("1 + 1") == "2"
    e1 = await beam("e1")
    assert await e1.eval('io:format("~p~n", [printed]), io:format(user, "x", []), 7') == "7"
    assert await e1.eval("8") == "8"


async def test_kill_really_kills(beam: BeamFactory) -> None:
    e1 = await beam("e1")
    pid = e1.os_pid
    assert await e1.eval("list_to_integer(os:getpid())") == str(pid)
    e1.kill()
    assert await e1.wait() != 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not e1.running
    with pytest.raises(BeamNodeError):
        await e1.eval("ok")


@pytest.mark.parametrize("orderly", [True, False], ids=["init_stop", "halt"])
async def test_stop_ends_the_node(epmd_port: int, cookie: str, orderly: bool) -> None:
    node = await BeamNode.start("e9", cookie=cookie, epmd_port=epmd_port)
    await node.eval('io:format(user, "written before the stop~n", [])')
    await node.stop(orderly=orderly)
    assert "written before the stop\n" in node._stdout_tail  # flushed, even by a halt
    assert not node.running
    assert await node.wait() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(node.os_pid, 0)


async def test_a_node_that_cannot_start_fails_clearly(beam: BeamFactory) -> None:
    await beam("twin")
    with pytest.raises(BeamNodeError, match=r"twin@127\.0\.0\.1 did not start") as raised:
        await beam("twin")
    assert "stderr" in str(raised.value)


async def test_a_node_that_hangs_at_boot_is_killed_after_the_start_timeout(
    beam: BeamFactory, epmd_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(beam_module, "START_TIMEOUT", 2.0)
    with pytest.raises(BeamNodeError, match=r"hang@127\.0\.0\.1 did not start: no answer within 2\.0 s"):
        await beam("hang", extra_args=["-eval", "receive after infinity -> ok end"])
    for _ in range(100):  # killed: its epmd registration goes with it
        if "hang" not in epmd_names(epmd_port):
            break
        await asyncio.sleep(0.05)
    assert "hang" not in epmd_names(epmd_port)


async def test_an_otp28_node_really_runs_otp28(beam: BeamFactory, epmd_port: int) -> None:
    e28 = await beam("e28", otp="28")
    assert e28.otp_release == "28"
    assert await e28.eval("erlang:system_info(otp_release)") == '"28"'
    assert await e28.eval("code:which(pynode_ctl) =/= non_existing") == "true"  # OTP 25's erlc built it
    e25 = await beam("e25", otp="25")
    assert await e25.eval("erlang:system_info(otp_release)") == '"25"'
    assert await e28.eval("net_adm:ping('e25@127.0.0.1')") == "pong"
    assert sorted(epmd_names(epmd_port)) == ["e25", "e28"]


async def test_a_release_that_is_not_there_fails_the_start(beam: BeamFactory, epmd_port: int) -> None:
    with pytest.raises(BeamNodeError, match=r"e99@127\.0\.0\.1 runs OTP 25 \(.*\), not OTP 99: no OTP 99 runtime"):
        await beam("e99", otp="99")
    for _ in range(100):  # the node that came up on 25 was stopped: its registration goes with it
        if "e99" not in epmd_names(epmd_port):
            break
        await asyncio.sleep(0.05)
    assert "e99" not in epmd_names(epmd_port)
