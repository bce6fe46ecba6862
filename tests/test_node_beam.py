"""The node against real OTP and Elixir nodes: handshakes, cookies, calls, links and monitors.

Every comparison of terms is made on the BEAM (``=:=``), and every wait is a poll with a
bounded deadline.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable

import pytest
from beam import BeamFactory, BeamNode

from pynode.errors import HandshakeError, PynodeError
from pynode.etf import Atom, Pid, Term, decode, encode
from pynode.node import Node
from pynode.runtime.genserver import From, GenServer
from pynode.runtime.process import Process, ProcessExit
from pynode.testing import on_otp

pytestmark = pytest.mark.beam

PY = "'py@127.0.0.1'"
EX_PY = ':"py@127.0.0.1"'
E1 = "e1@127.0.0.1"
OK = Atom("ok")
EXIT = Atom("EXIT")
DOWN = Atom("DOWN")
PROCESS = Atom("process")


# -- helpers ----------------------------------------------------------------------------------


def term_expr(term: Term) -> str:
    """Erlang source for ``term`` (pids and refs included): decoded on the BEAM from its bytes."""
    return f'binary_to_term(base64:decode(<<"{base64.b64encode(encode(term)).decode()}">>))'


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = 5.0, what: str = "") -> None:
    """Poll ``check`` until it holds, for at most ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not true within {within} s: {what or check}")
        await asyncio.sleep(0.02)


async def beam_term(node: BeamNode, expr: str, timeout: float = 15) -> Term:
    """Evaluate on the BEAM and decode the result with our codec."""
    return decode(await node.eval_term(expr, timeout))


def idle_process(node: Node, *, trap_exit: bool = False, name: str | None = None) -> Process:
    process = Process()
    process.trap_exit = trap_exit
    return node.spawn(process, name=name)


async def exit_on_go(process: Process) -> None:
    """Waits for ``{go, Reason}`` and exits with Reason."""
    message = await process.receive(lambda m: type(m) is tuple and m[0] == Atom("go"))
    raise ProcessExit(message[1])


class Counter(GenServer):
    """A small GenServer in Python, called from erl and Elixir."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.casts: list[Term] = []

    async def handle_call(self, request: Term, caller: From) -> Term:
        if request == Atom("whoami"):
            return self.pid
        if request == Atom("get"):
            return (OK, self.total)
        if type(request) is tuple and len(request) == 2 and request[0] == Atom("add"):
            self.total += request[1]
            return (OK, self.total)
        return await super().handle_call(request, caller)

    async def handle_cast(self, request: Term) -> None:
        self.casts.append(request)


# -- handshakes and cookies --------------------------------------------------------------------


@on_otp("25", "28")
async def test_erl_pings_and_calls_the_registry(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    assert await erl.eval(f"gen_server:call({{pynode, {PY}}}, ping)") == "pong"
    assert await erl.eval(f"lists:member({PY}, nodes(hidden))") == "true"
    assert await erl.eval(f"lists:member({PY}, nodes())") == "false"


@on_otp("25", "28")
async def test_we_dial_the_beam_and_call_its_gen_server(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    conn = await py_node.connect(E1)
    assert conn.peer_name == E1
    assert E1 in py_node.nodes()
    # net_kernel is a gen_server on every distributed BEAM node.
    assert await py_node.call(("net_kernel", E1), (Atom("is_auth"), py_node.name)) == Atom("yes")
    assert await erl.eval(f"lists:member({PY}, nodes(hidden))") == "true"
    assert await erl.eval(f"lists:member({PY}, nodes())") == "false"
    # A second connect() gives the same connection, not a second socket.
    assert await py_node.connect(E1) is conn


async def test_elixir_pings_us_and_sees_a_hidden_node(py_node: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    assert await ex.eval(f"Node.ping({EX_PY})") == ":pong"
    assert await ex.eval(f"{EX_PY} in Node.list(:hidden)") == "true"
    assert await ex.eval(f"{EX_PY} in Node.list()") == "false"
    assert await ex.eval(f"GenServer.call({{:pynode, {EX_PY}}}, :ping)") == ":pong"


async def test_wrong_cookie_dialling_us_gets_pang_and_we_keep_serving(
    py_node: Node, beam: BeamFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pynode")
    intruder = await beam("bad", cookie="not_the_cookie")
    assert await intruder.eval(f"net_adm:ping({PY})") == "pang"
    assert "bad@127.0.0.1" not in py_node.connections
    assert any("handshake" in r.getMessage() and "bad@127.0.0.1" in r.getMessage() for r in caplog.records)
    friend = await beam("e1")
    assert await friend.eval(f"net_adm:ping({PY})") == "pong"
    assert await friend.eval(f"gen_server:call({{pynode, {PY}}}, ping)") == "pong"


async def test_our_connect_to_a_beam_with_another_cookie_raises(py_node: Node, beam: BeamFactory) -> None:
    await beam("bad", cookie="not_the_cookie")
    with pytest.raises(HandshakeError) as failure:
        await asyncio.wait_for(py_node.connect("bad@127.0.0.1"), 15)
    assert "cookie" in str(failure.value)
    assert "bad@127.0.0.1" not in py_node.connections
    # The failed attempt leaves nothing behind: a later connect tries again (and fails again).
    with pytest.raises(PynodeError):
        await asyncio.wait_for(py_node.connect("bad@127.0.0.1"), 15)


async def test_connect_to_a_node_nobody_registered_raises(py_node: Node, beam: BeamFactory) -> None:
    with pytest.raises(PynodeError, match="not registered"):
        await asyncio.wait_for(py_node.connect("nobody@127.0.0.1"), 15)


# -- GenServer calls and casts -----------------------------------------------------------------


@on_otp("25", "28")
async def test_erl_calls_a_python_genserver_by_name_and_by_pid(py_node: Node, beam: BeamFactory) -> None:
    counter = py_node.spawn(Counter(), name="counter")
    erl = await beam("e1")
    assert await erl.eval(f"gen_server:call({{counter, {PY}}}, {{add, 2}})") == "{ok,2}"
    by_pid = (
        f"P = gen_server:call({{counter, {PY}}}, whoami), "
        f"{{node(P), gen_server:call(P, {{add, 3}}), P =:= {term_expr(counter.pid)}}}"
    )
    assert await erl.eval(by_pid) == f"{{{PY},{{ok,5}},true}}"
    # gen_server:call with an explicit timeout, and an unknown request gets an error, not silence.
    assert await erl.eval(f"gen_server:call({{counter, {PY}}}, get, 5000)") == "{ok,5}"
    unknown = await erl.eval(f"element(1, gen_server:call({{counter, {PY}}}, what))")
    assert unknown == "error"


async def test_elixir_genserver_call_by_name_and_by_pid(py_node: Node, beam: BeamFactory) -> None:
    py_node.spawn(Counter(), name="counter")
    ex = await beam("ex1", kind="elixir")
    assert await ex.eval(f"GenServer.call({{:counter, {EX_PY}}}, {{:add, 4}})") == "{:ok, 4}"
    by_pid = f"pid = GenServer.call({{:counter, {EX_PY}}}, :whoami); GenServer.call(pid, {{:add, 1}})"
    assert await ex.eval(by_pid) == "{:ok, 5}"


@on_otp("25", "28")
async def test_raw_pid_ref_request_envelope_gets_ref_reply(py_node: Node, beam: BeamFactory) -> None:
    py_node.spawn(Counter(), name="counter")
    erl = await beam("e1")
    raw = (
        f"Ref = make_ref(), {{counter, {PY}}} ! {{self(), Ref, {{add, 7}}}}, "
        "receive {Ref, Reply} -> Reply after 5000 -> timeout end"
    )
    assert await erl.eval(raw) == "{ok,7}"
    registry = (
        f"Ref = make_ref(), {{pynode, {PY}}} ! {{self(), Ref, ping}}, "
        "receive {Ref, Reply} -> Reply after 5000 -> timeout end"
    )
    assert await erl.eval(registry) == "pong"


async def test_gen_server_cast_arrives(py_node: Node, beam: BeamFactory) -> None:
    counter = Counter()
    py_node.spawn(counter, name="counter")
    erl = await beam("e1")
    assert await erl.eval(f'gen_server:cast({{counter, {PY}}}, {{note, <<"hi">>}})') == "ok"
    await eventually(lambda: counter.casts == [(Atom("note"), b"hi")], what="the cast")
    ex = await beam("ex1", kind="elixir")
    assert await ex.eval(f"GenServer.cast({{:counter, {EX_PY}}}, :again)") == ":ok"
    await eventually(lambda: counter.casts[-1:] == [Atom("again")], what="the Elixir cast")


@on_otp("25", "28")
async def test_call_to_a_missing_name_exits_noproc_at_once(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    timed = (
        "T0 = erlang:monotonic_time(millisecond), "
        f"{{'EXIT', {{Reason, _}}}} = (catch gen_server:call({{nobody, {PY}}}, x, 30000)), "
        "{Reason, erlang:monotonic_time(millisecond) - T0}"
    )
    reason, elapsed_ms = await beam_term(erl, timed)
    assert reason == Atom("noproc")
    assert elapsed_ms < 1000
    monitor = (
        f"Ref = monitor(process, {{nobody, {PY}}}), "
        "receive {'DOWN', Ref, process, Who, Why} -> {Who, Why} after 5000 -> timeout end"
    )
    assert await erl.eval(monitor) == f"{{{{nobody,{PY}}},noproc}}"


async def test_elixir_call_to_a_missing_name_exits_noproc(py_node: Node, beam: BeamFactory) -> None:
    ex = await beam("ex1", kind="elixir")
    expr = f"try do GenServer.call({{:nobody, {EX_PY}}}, :x, 30_000) catch :exit, {{reason, _}} -> reason end"
    assert await ex.eval(expr, timeout=5) == ":noproc"


# -- links -------------------------------------------------------------------------------------


@on_otp("25", "28")
async def test_beam_linked_to_a_python_process_gets_its_exit_reason(py_node: Node, beam: BeamFactory) -> None:
    proc = py_node.spawn(exit_on_go)
    erl = await beam("e1")
    expr = (
        f"process_flag(trap_exit, true), P = {term_expr(proc.pid)}, link(P), "
        'P ! {go, {shutdown, <<"boom">>}}, '
        "receive {'EXIT', P, R} -> R after 5000 -> timeout end"
    )
    assert await erl.eval(expr) == '{shutdown,<<"boom">>}'
    assert await proc.join(5) == (Atom("shutdown"), b"boom")
    assert not py_node.connections[E1].signals.links


@on_otp("25", "28")
async def test_python_linked_to_a_beam_pid_gets_exit(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    remote = await beam_term(erl, "spawn(fun() -> receive {die, R} -> exit(R) end end)")
    assert type(remote) is Pid
    watcher = idle_process(py_node, trap_exit=True)
    watcher.link(remote)  # not connected yet: the link must still reach the BEAM before the message
    watcher.send(remote, (Atom("die"), Atom("bye")))
    assert await watcher.receive(timeout=5) == (EXIT, remote, Atom("bye"))
    assert remote not in watcher.links
    assert not py_node.connections[E1].signals.links


async def test_a_non_trapping_python_process_dies_with_its_beam_link(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    await py_node.connect(E1)
    remote = await beam_term(erl, "spawn(fun() -> receive {die, R} -> exit(R) end end)")
    victim = idle_process(py_node)
    victim.link(remote)
    py_node.send(remote, (Atom("die"), Atom("crash")))
    assert await victim.join(5) == Atom("crash")
    assert victim.pid not in py_node.processes.by_pid


async def test_exit_kill_from_the_beam_kills_a_trapping_python_process(py_node: Node, beam: BeamFactory) -> None:
    proc = idle_process(py_node, trap_exit=True)
    erl = await beam("e1")
    expr = (
        f"P = {term_expr(proc.pid)}, Ref = monitor(process, P), exit(P, kill), "
        "receive {'DOWN', Ref, process, P, R} -> R after 5000 -> timeout end"
    )
    assert await erl.eval(expr) == "killed"
    assert await proc.join(5) == Atom("killed")
    # A catchable exit signal is a message for a trapping process.
    trapper = idle_process(py_node, trap_exit=True)
    await erl.eval(f"exit({term_expr(trapper.pid)}, please_stop)")
    message = await trapper.receive(timeout=5)
    assert message[0] == EXIT and message[2] == Atom("please_stop")
    assert trapper.alive


@on_otp("25", "28")
async def test_unlink_from_the_beam_cuts_the_link(py_node: Node, beam: BeamFactory) -> None:
    proc = py_node.spawn(exit_on_go)
    erl = await beam("e1")
    expr = (
        f"process_flag(trap_exit, true), P = {term_expr(proc.pid)}, link(P), unlink(P), "
        "P ! {go, boom}, "
        "receive {'EXIT', P, R} -> {linked, R} after 500 -> unlinked end"
    )
    assert await erl.eval(expr) == "unlinked"
    assert await proc.join(5) == Atom("boom")
    assert not py_node.connections[E1].signals.links


async def test_unlink_from_python_cuts_the_link(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    await py_node.connect(E1)
    remote = await beam_term(erl, "spawn(fun() -> receive {die, R} -> exit(R) end end)")
    watcher = idle_process(py_node, trap_exit=True)
    watcher.link(remote)
    links_of_remote = f"{{links, L}} = process_info({term_expr(remote)}, links), L =:= [{term_expr(watcher.pid)}]"
    await eventually(lambda: evals_to(erl.eval(links_of_remote), "true"), what="linked on the BEAM")
    no_links = f"process_info({term_expr(remote)}, links)"
    watcher.unlink(remote)
    await eventually(lambda: evals_to(erl.eval(no_links), "{links,[]}"), what="unlinked on the BEAM")
    watcher.send(remote, (Atom("die"), Atom("bye")))
    with pytest.raises(TimeoutError):
        await watcher.receive(timeout=0.5)
    assert not py_node.connections[E1].signals.links


async def test_link_to_a_dead_python_pid_gets_noproc(py_node: Node, beam: BeamFactory) -> None:
    proc = idle_process(py_node)
    proc.exit(Atom("normal"))
    await proc.join(5)
    erl = await beam("e1")
    expr = (
        f"process_flag(trap_exit, true), P = {term_expr(proc.pid)}, link(P), "
        "receive {'EXIT', P, R} -> R after 5000 -> timeout end"
    )
    assert await erl.eval(expr) == "noproc"


async def test_python_link_to_a_dead_beam_pid_gets_noproc(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    dead = await beam_term(erl, "P = spawn(fun() -> ok end), Ref = monitor(process, P), "
                                "receive {'DOWN', Ref, _, _, _} -> P end")  # fmt: skip
    watcher = idle_process(py_node, trap_exit=True)
    watcher.link(dead)
    assert await watcher.receive(timeout=5) == (EXIT, dead, Atom("noproc"))


# -- monitors ----------------------------------------------------------------------------------


@on_otp("25", "28")
async def test_beam_monitors_a_python_process_by_pid_and_by_name(py_node: Node, beam: BeamFactory) -> None:
    by_pid = py_node.spawn(exit_on_go)
    py_node.spawn(exit_on_go, name="watched")
    erl = await beam("e1")
    expr = (
        f"P = {term_expr(by_pid.pid)}, Ref = monitor(process, P), P ! {{go, {{bad, 1}}}}, "
        "receive {'DOWN', Ref, process, P, R} -> R after 5000 -> timeout end"
    )
    assert await erl.eval(expr) == "{bad,1}"
    expr = (
        f"Ref = monitor(process, {{watched, {PY}}}), {{watched, {PY}}} ! {{go, gone}}, "
        "receive {'DOWN', Ref, process, Who, R} -> {Who, R} after 5000 -> timeout end"
    )
    assert await erl.eval(expr) == f"{{{{watched,{PY}}},gone}}"
    conn = py_node.connections[E1]
    assert not conn.signals.monitors_in


@on_otp("25", "28")
async def test_python_monitors_beam_processes(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    remote = await beam_term(erl, "spawn(fun() -> receive {die, R} -> exit(R) end end)")
    watcher = idle_process(py_node)
    ref = watcher.monitor(remote)  # before any connection: the monitor goes out first
    watcher.send(remote, (Atom("die"), (Atom("oops"), 42)))
    assert await watcher.receive(timeout=5) == (DOWN, ref, PROCESS, remote, (Atom("oops"), 42))
    # By name on the remote node: the DOWN names {Name, Node}.
    await erl.eval("register(named_one, spawn(fun() -> receive {die, R} -> exit(R) end end))")
    ref = watcher.monitor(("named_one", E1))
    watcher.send(("named_one", E1), (Atom("die"), Atom("by_name")))
    assert await watcher.receive(timeout=5) == (DOWN, ref, PROCESS, (Atom("named_one"), Atom(E1)), Atom("by_name"))
    # A name nobody holds over there: DOWN noproc at once.
    ref = watcher.monitor(("nobody", E1))
    assert await watcher.receive(timeout=2) == (DOWN, ref, PROCESS, (Atom("nobody"), Atom(E1)), Atom("noproc"))
    assert not watcher.monitors
    assert not py_node.connections[E1].signals.monitors_out


@on_otp("25", "28")
async def test_demonitor_leaves_nothing_behind(py_node: Node, beam: BeamFactory) -> None:
    target = idle_process(py_node, name="target")
    erl = await beam("e1")
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    expr = (
        f"P = {term_expr(target.pid)}, R1 = monitor(process, P), R2 = monitor(process, {{target, {PY}}}), "
        "true = demonitor(R1), true = demonitor(R2), ok"
    )
    assert await erl.eval(expr) == "ok"
    conn = py_node.connections[E1]
    await eventually(lambda: not target.monitored_by and not conn.signals.monitors_in, what="demonitored")
    # And from our side: a monitor and a demonitor leave no monitor on the BEAM process.
    remote = await beam_term(erl, "spawn(fun() -> receive _ -> ok end end)")
    watcher = idle_process(py_node)
    ref = watcher.monitor(remote)
    monitored_by = f"{{monitored_by, M}} = process_info({term_expr(remote)}, monitored_by), length(M)"
    await eventually(lambda: evals_to(erl.eval(monitored_by), "1"), what="monitored on the BEAM")
    watcher.demonitor(ref)
    await eventually(lambda: evals_to(erl.eval(monitored_by), "0"), what="demonitored on the BEAM")
    assert not conn.signals.monitors_out and not watcher.monitors


async def test_a_python_process_exiting_tells_remote_links_and_monitors_once(py_node: Node, beam: BeamFactory) -> None:
    proc = py_node.spawn(exit_on_go)
    erl = await beam("e1")
    expr = (
        f"process_flag(trap_exit, true), P = {term_expr(proc.pid)}, link(P), Ref = monitor(process, P), "
        "P ! {go, done}, "
        "A = receive {'EXIT', P, R1} -> R1 after 5000 -> timeout end, "
        "B = receive {'DOWN', Ref, process, P, R2} -> R2 after 5000 -> timeout end, "
        "C = receive Extra -> {extra, Extra} after 300 -> none end, {A, B, C}"
    )
    assert await erl.eval(expr) == "{done,done,none}"
    assert proc.pid not in py_node.processes.by_pid


# -- small utilities ------------------------------------------------------------------------------


async def evals_to(result: Awaitable[str], expected: str) -> bool:
    return await result == expected


# -- more signals --------------------------------------------------------------------------------


@on_otp("25", "28")
async def test_exit_signals_from_the_beam_follow_erlang_rules(py_node: Node, beam: BeamFactory) -> None:
    survivor = idle_process(py_node)
    victim = idle_process(py_node)
    erl = await beam("e1")
    await erl.eval(f"exit({term_expr(survivor.pid)}, normal), exit({term_expr(victim.pid)}, {{bad, <<1>>}})")
    assert await victim.join(5) == (Atom("bad"), b"\x01")
    assert survivor.alive
    # And from Python to the BEAM: exit/2 with a reason.
    remote, watching = await watched_beam_process(erl)
    py_node.exit(remote, (Atom("stop"), 1))
    assert await watching == "{stop,1}"


async def test_exit2_sent_while_disconnected_connects_and_arrives_in_the_negotiated_form(
    py_node: Node, beam: BeamFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``exit(Pid, Reason)`` to a node not connected connects first, as a message would, and then
    goes out in the form the peer's flags ask for (the payload form), not the form it was queued in."""
    from pynode.net.channel import Connection
    from pynode.wire import control as c
    from pynode.wire.framing import NO_PAYLOAD

    erl = await beam("e1")
    remote, watching = await watched_beam_process(erl)
    assert E1 not in py_node.net.connections  # the pid came through the shell, not distribution
    sent: list[type] = []
    real_send = Connection.send

    def recording_send(self: Connection, control: c.ControlMessage, payload: Term = NO_PAYLOAD) -> None:
        sent.append(type(control))
        real_send(self, control, payload)

    monkeypatch.setattr(Connection, "send", recording_send)
    py_node.exit(remote, (Atom("stop"), 2))
    assert await watching == "{stop,2}"
    assert c.PayloadExit2 in sent and c.Exit2 not in sent


async def test_messages_and_calls_carrying_a_seq_trace_token(py_node: Node, beam: BeamFactory) -> None:
    """With a trace token set, the BEAM uses the *_TT control messages; they must work like the others."""
    counter = Counter()
    py_node.spawn(counter, name="counter")
    inbox = idle_process(py_node, name="inbox", trap_exit=True)
    erl = await beam("e1")
    # A message received without a token clears the sender's token: so the calls come last.
    expr = (
        "seq_trace:set_token(label, 17), seq_trace:set_token(send, true), "
        f"{{inbox, {PY}}} ! by_name, {term_expr(inbox.pid)} ! by_pid, "
        f"exit({term_expr(inbox.pid)}, {{by_exit, 1}}), exit({term_expr(counter.pid)}, normal), "
        f"E = try erpc:call({PY}, erlang, node, [], 5000) catch error:Error -> Error end, "
        f"R = gen_server:call({{counter, {PY}}}, {{add, 1}}), "
        "{E, R}"
    )
    assert await erl.eval(expr, timeout=10) == "{{erpc,notsup},{ok,1}}"
    assert await inbox.receive(timeout=5) == Atom("by_name")
    assert await inbox.receive(timeout=5) == Atom("by_pid")
    assert (await inbox.receive(timeout=5))[::2] == (EXIT, (Atom("by_exit"), 1))
    assert counter.total == 1


async def watched_beam_process(erl: BeamNode) -> tuple[Pid, asyncio.Task[str]]:
    """A BEAM process that waits forever, and a task giving its exit reason as a watcher saw it."""
    remote = await beam_term(erl, "spawn(fun() -> receive after infinity -> ok end end)")
    assert type(remote) is Pid
    watching = await beam_task(
        erl,
        "watcher",
        setup=f"Ref = monitor(process, {term_expr(remote)})",
        then="receive {'DOWN', Ref, _, _, R} -> R after 10000 -> timeout end",
    )
    return remote, watching


async def beam_task(erl: BeamNode, name: str, *, setup: str, then: str, timeout: float = 30) -> asyncio.Task[str]:
    """Evaluate ``setup, then`` in a BEAM process registered as ``name``; return once ``setup`` is done."""
    task = asyncio.create_task(
        erl.eval(f"register({name}, self()), {setup}, put(pynode_ready, true), {then}", timeout=timeout)
    )
    ready = (
        f"case whereis({name}) of undefined -> false; P -> "
        "{dictionary, D} = process_info(P, dictionary), proplists:get_value(pynode_ready, D, false) end"
    )
    try:
        await eventually(lambda: evals_to(erl.eval(ready), "true"), what=f"{name} set up")
    except BaseException:
        task.cancel()
        raise
    return task
