"""Replies go to the caller's alias, as ``gen:reply`` sends them: a late reply never lands in a mailbox.

``gen_server:call`` on OTP 24 and later calls with the tag ``[alias|Mref]`` and deactivates that
alias when it stops waiting, so the BEAM drops a reply that arrives after a timeout. Each test
counts, on the BEAM, the replies left in the caller's mailbox after its calls gave up.
"""

from __future__ import annotations

import pytest

from pynode.etf import Atom, Term
from pynode.node import Node
from pynode.runtime.genserver import From, GenServer
from pynode.testing import Beam, on_otp
from pynode.wire.flags import DEFAULT_FLAGS, DFlag

pytestmark = pytest.mark.beam

PY = "'py@127.0.0.1'"

CALLS = 200


def strays_after_calls(dest: str, request: str, calls: int, timeout_ms: str) -> str:
    """Erlang: in a fresh process, ``calls`` calls that may time out, then a call that waits.

    The last call's reply leaves the Python node after every earlier one, on the same connection,
    so once it is in, any late reply has arrived too. The result is ``{TimedOut, Stray}``:
    ``Stray`` counts the messages left in the caller's mailbox.
    """
    return (
        "Parent = self(), "
        "Caller = spawn(fun() -> "
        f"  TimedOut = length([x || I <- lists:seq(1, {calls}), "
        f"    case catch gen_server:call({dest}, {request}, {timeout_ms}) of "
        "      {'EXIT', {timeout, _}} -> true; _ -> false end]), "
        f"  pong = gen_server:call({{pynode, {PY}}}, ping, 15000), "
        "  {messages, Left} = process_info(self(), messages), "
        "  Parent ! {strays, self(), {TimedOut, length(Left)}} "
        "end), "
        "receive {strays, Caller, Counts} -> Counts after 60000 -> no_answer end"
    )


@on_otp("25", "28")
async def test_late_replies_of_the_registry_never_reach_a_caller_that_gave_up(py_node: Node, beam: Beam) -> None:
    erl = await beam("e1")
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    counts = await erl.eval(strays_after_calls(f"{{pynode, {PY}}}", "ping", CALLS, "0"), timeout=90)
    timed_out, strays = (int(n) for n in counts.strip("{}").split(","))
    # A call with timeout 0 gives up before its reply can cross the connection, unless the caller
    # was descheduled between its send and its receive (a loaded machine): nearly all give up.
    assert timed_out >= CALLS * 9 // 10
    assert strays == 0  # and not one of the late replies reached the caller's mailbox


@on_otp("25", "28")
async def test_late_results_of_synchronous_runs_never_reach_a_caller_that_gave_up(py_node: Node, beam: Beam) -> None:
    erl = await beam("e1")
    created = await erl.eval(f'gen_server:call({{pynode, {PY}}}, {{create_agent, quick, #{{model => <<"test">>}}}})')
    assert created == "{ok,quick}"
    # Timeouts around a run's length: some calls get their result, some give up while it is on its way.
    request = '{run, <<"hello">>}'
    counts = await erl.eval(strays_after_calls(f"{{quick, {PY}}}", request, 100, "(I rem 8)"), timeout=120)
    timed_out, strays = (int(n) for n in counts.strip("{}").split(","))
    assert timed_out > 0
    assert strays == 0
    # The agent still answers, and counts no run left behind by the callers that gave up.
    info = await erl.eval(f"{{ok, #{{runs := N}}}} = gen_server:call({{quick, {PY}}}, info), N")
    assert info == "0"


class Echo(GenServer):
    async def handle_call(self, request: Term, caller: From) -> Term:
        return (Atom("ok"), request)


async def test_a_connection_without_alias_gets_replies_at_the_callers_pid(
    epmd_port: int, cookie: str, beam: Beam
) -> None:
    """A node that does not offer ALIAS cannot reply to an alias: the reply goes to the pid, and arrives."""
    flags = DFlag(int(DEFAULT_FLAGS) & ~int(DFlag.ALIAS))
    async with Node("noalias@127.0.0.1", cookie, epmd_port=epmd_port, flags=flags) as node:
        node.spawn(Echo(), name="echo")
        erl = await beam("e1")
        assert await erl.eval("gen_server:call({echo, 'noalias@127.0.0.1'}, hi, 5000)") == "{ok,hi}"
        assert not node.connections["e1@127.0.0.1"].flags & DFlag.ALIAS
