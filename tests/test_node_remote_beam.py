"""Python reaching into the cluster: calls to Elixir GenServers, and erpc to erl and Elixir nodes."""

from __future__ import annotations

import asyncio
import logging

import pytest
from beam import BeamFactory, BeamNode
from test_node_beam import E1, PY, beam_term, evals_to, eventually

from pynode.errors import CallExit, CallTimeout, ErpcError
from pynode.etf import Atom, Pid
from pynode.node import Node

pytestmark = pytest.mark.beam

EX = "ex@127.0.0.1"
OK = Atom("ok")

STACK = """
defmodule Stack do
  use GenServer
  def init(items), do: {:ok, items}
  def handle_call(:pop, _from, [head | tail]), do: {:reply, head, tail}
  def handle_call({:push, item}, _from, items), do: {:reply, :ok, [item | items]}
  def handle_call(:whoami, _from, items), do: {:reply, self(), items}
  def handle_call(:never, _from, items), do: {:noreply, items}
end
{:ok, _} = GenServer.start(Stack, [], name: :stack)
:started
"""

FOO = """
defmodule Foo do
  def bar(x) do
    IO.puts("Foo.bar got #{inspect(x)}")
    {:doubled, x * 2}
  end
  def fail(message), do: raise(ArgumentError, message)
end
:defined
"""


async def elixir_with_stack(beam: BeamFactory) -> BeamNode:
    ex = await beam("ex", kind="elixir")
    assert await ex.eval(STACK) == ":started"
    return ex


async def test_python_calls_an_elixir_genserver(py_node: Node, beam: BeamFactory) -> None:
    await elixir_with_stack(beam)
    assert await py_node.call(("stack", EX), (Atom("push"), "hello")) == OK
    assert await py_node.call(("stack", EX), (Atom("push"), {"k": [1, 2.5]})) == OK
    assert await py_node.call(("stack", EX), Atom("pop")) == {b"k": [1, 2.5]}
    pid = await py_node.call(("stack", EX), Atom("whoami"))
    assert type(pid) is Pid and pid.node == EX
    assert await py_node.call(pid, Atom("pop")) == b"hello"
    conn = py_node.connections[EX]
    assert not conn.signals.monitors_out


async def test_a_call_to_a_missing_remote_name_raises_noproc_at_once(py_node: Node, beam: BeamFactory) -> None:
    await beam("ex", kind="elixir")
    await py_node.connect(EX)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CallExit) as failure:
        await py_node.call(("nobody", EX), Atom("x"), timeout=30)
    assert failure.value.reason == Atom("noproc")
    assert loop.time() - started < 1.0
    # Not yet connected: the same, once the connection is made on the way.
    await beam("e1")
    with pytest.raises(CallExit) as failure:
        await py_node.call(("nobody", E1), Atom("x"), timeout=30)
    assert failure.value.reason == Atom("noproc")


async def test_a_call_timeout_leaves_no_monitor_behind(py_node: Node, beam: BeamFactory) -> None:
    ex = await elixir_with_stack(beam)
    processes_before = len(py_node.processes)
    with pytest.raises(CallTimeout):
        await py_node.call(("stack", EX), Atom("never"), timeout=0.3)
    conn = py_node.connections[EX]
    assert not conn.signals.monitors_out
    assert len(py_node.processes) == processes_before
    monitors = "Process.whereis(:stack) |> Process.info(:monitored_by)"
    await eventually(lambda: evals_to(ex.eval(monitors), "{:monitored_by, []}"), what="no monitor on the BEAM")
    # The server is still there and answers; the late reply to the timed-out call went nowhere.
    assert await py_node.call(("stack", EX), (Atom("push"), 1)) == OK


async def test_erpc_to_elixir_returns_the_value_and_logs_its_output(
    py_node: Node, beam: BeamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pynode.io")
    ex = await beam("ex", kind="elixir")
    assert await ex.eval(FOO) == ":defined"
    result = await asyncio.wait_for(py_node.erpc(EX, "Elixir.Foo", "bar", [21]), 10)
    assert result == (Atom("doubled"), 42)
    await eventually(lambda: any("Foo.bar got 21" in r.getMessage() for r in caplog.records), what="the line")
    with pytest.raises(ErpcError) as failure:
        await asyncio.wait_for(py_node.erpc(EX, "Elixir.Foo", "fail", ["bad input"]), 10)
    assert failure.value.kind == "error"
    assert type(failure.value.reason) is dict  # the ArgumentError exception struct
    assert failure.value.reason[Atom("message")] == b"bad input"


async def test_erpc_to_erl_with_io_format_errors_exits_and_throws(
    py_node: Node, beam: BeamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pynode.io")
    await beam("e1")
    assert await py_node.erpc(E1, "io", "format", ["hello ~p from ~s~n", [42, "erl"]]) == OK
    await eventually(lambda: any("hello 42 from erl" in r.getMessage() for r in caplog.records), what="output")
    assert await py_node.erpc(E1, "lists", "reverse", [[1, 2, 3]]) == [3, 2, 1]
    with pytest.raises(ErpcError) as failure:
        await py_node.erpc(E1, "erlang", "error", [Atom("boom")])
    assert (failure.value.kind, failure.value.reason) == ("error", Atom("boom"))
    with pytest.raises(ErpcError) as failure:
        await py_node.erpc(E1, "erlang", "exit", [Atom("gone")])
    assert (failure.value.kind, failure.value.reason) == ("exit", Atom("gone"))
    with pytest.raises(ErpcError) as failure:
        await py_node.erpc(E1, "erlang", "throw", [Atom("ball")])
    assert (failure.value.kind, failure.value.reason) == ("throw", Atom("ball"))
    with pytest.raises(ErpcError) as failure:
        await py_node.erpc(E1, "no_such_module", "f", [])
    assert failure.value.kind == "error" and failure.value.reason == Atom("undef")
    with pytest.raises(CallTimeout):
        await py_node.erpc(E1, "timer", "sleep", [5000], timeout=0.3)
    assert not py_node.connections[E1].signals.spawn_requests


async def test_erpc_from_the_beam_is_refused_and_the_connection_stays(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    refused = f"try erpc:call({PY}, erlang, node, [], 5000) catch Class:Reason -> {{Class, Reason}} end"
    assert await erl.eval(refused, timeout=10) == "{error,{erpc,notsup}}"
    assert await erl.eval(f"rpc:call({PY}, erlang, node, [], 5000)", timeout=10) == "{badrpc,notsup}"
    assert await erl.eval(f"lists:member({PY}, nodes(hidden))") == "true"
    assert await erl.eval(f"gen_server:call({{pynode, {PY}}}, ping)") == "pong"


async def test_an_erpc_timed_out_or_cancelled_ends_the_remote_function(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    sleeper = await beam_term(erl, "fun() -> register(sleeper, self()), timer:sleep(infinity) end")
    gone = "whereis(sleeper)"
    with pytest.raises(CallTimeout):
        await py_node.erpc(E1, "erlang", "apply", [sleeper, []], timeout=0.5)
    await eventually(lambda: evals_to(erl.eval(gone), "undefined"), what="the timed-out function ended")

    call = asyncio.create_task(py_node.erpc(E1, "erlang", "apply", [sleeper, []], timeout=30))
    await eventually(lambda: evals_to(erl.eval(f"is_pid({gone})"), "true"), what="the function running")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: evals_to(erl.eval(gone), "undefined"), what="the cancelled function ended")
    conn = py_node.connections[E1]
    assert not conn.signals.spawn_requests and not conn.signals.monitors_out
