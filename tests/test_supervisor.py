"""The supervisor on one node, without any socket: restarts, restart types, intensity, the node's own processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from agent_support import eventually

from pynode.errors import CallExit
from pynode.etf.types import Atom, Pid, Term
from pynode.node import Node
from pynode.runtime.genserver import From, GenServer
from pynode.runtime.process import KILL, KILLED, NORMAL, SHUTDOWN, Process, ProcessExit
from pynode.runtime.services import IoServer, NetKernel, node_supervisor
from pynode.runtime.supervisor import ChildSpec, RestartIntensity, Supervisor, is_normal_exit

PING = Atom("ping")
PONG = Atom("pong")


class Echo(GenServer):
    """Answers ``ping``."""

    async def handle_call(self, request: Term, caller: From) -> Term:
        if request == PING:
            return PONG
        return await super().handle_call(request, caller)


class Stopper(Process):
    """Ends as its first message says: ``(Reason,)`` exits with Reason, ``raise`` crashes."""

    async def run(self) -> None:
        message = await self.receive()
        if message == Atom("raise"):
            raise RuntimeError("boom")
        raise ProcessExit(message[0])


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node("sup@127.0.0.1", "cookie")
    await n.start(register_epmd=False)
    yield n
    await n.stop()


def supervisor(node: Node, *specs: ChildSpec, intensity: RestartIntensity | None = None) -> Supervisor:
    sup = Supervisor(intensity=intensity, label="test_sup")
    node.spawn(sup, name="test_sup")
    for spec in specs:
        sup.start_child(spec)
    return sup


async def restarted(node: Node, name: str, old: Pid | None, what: str = "") -> Pid:
    """Wait until ``name`` is registered to a pid other than ``old``; that pid."""
    await eventually(lambda: node.whereis(name) not in (None, old), what=what or f"{name} registered again")
    pid = node.whereis(name)
    assert pid is not None
    return pid


def kill(node: Node, name: str) -> Process:
    """``exit(whereis(Name), kill)`` from another process of the node; the process that was killed."""
    process = node.processes.name(name)
    assert process is not None and process.pid is not None
    node.exit(process.pid, KILL)
    return process


# -- the intensity rule, on numbers alone -----------------------------------------------------


def test_intensity_allows_max_restarts_in_a_period_and_refuses_one_more() -> None:
    intensity = RestartIntensity(3, 5.0)
    assert [intensity.allow(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert intensity.allow(3.0) is False


def test_intensity_forgets_restarts_older_than_the_period() -> None:
    intensity = RestartIntensity(2, 5.0)
    assert intensity.allow(0.0) and intensity.allow(4.0)
    assert intensity.allow(5.0)  # the one at 0.0 is out of the window (0, 5]
    assert not intensity.allow(6.0)  # 4.0, 5.0, 6.0: three within 5 s


def test_intensity_zero_means_no_restart_at_all() -> None:
    assert RestartIntensity(0, 1.0).allow(0.0) is False
    with pytest.raises(ValueError):
        RestartIntensity(1, 0)
    with pytest.raises(ValueError):
        RestartIntensity(-1, 5)


def test_normal_exits_are_normal_shutdown_and_shutdown_tuples() -> None:
    assert is_normal_exit(NORMAL) and is_normal_exit(SHUTDOWN)
    assert is_normal_exit((SHUTDOWN, Atom("replaced")))
    assert not is_normal_exit(KILLED)
    assert not is_normal_exit((Atom("python_error"), "boom"))
    assert not is_normal_exit((SHUTDOWN, 1, 2))


# -- restarts ---------------------------------------------------------------------------------


async def test_a_killed_permanent_child_comes_back_under_its_name(node: Node) -> None:
    starts: list[Process] = []
    supervisor(node, ChildSpec(name="echo", start=Echo, started=starts.append))
    first = node.whereis("echo")
    victim = kill(node, "echo")
    assert await victim.join(5) == KILLED
    second = await restarted(node, "echo", first)
    assert await node.call(Atom("echo"), PING) == PONG
    assert [p.pid for p in starts] == [first, second]


async def test_a_crash_inside_the_child_is_restarted_too(node: Node) -> None:
    supervisor(node, ChildSpec(name="worker", start=Stopper))
    first = node.processes.name("worker")
    assert first is not None
    node.send(Atom("worker"), Atom("raise"))
    reason = await first.join(5)
    assert type(reason) is tuple and reason[0] == Atom("python_error")
    await restarted(node, "worker", first.pid)


async def test_transient_child_ending_normally_is_not_restarted(node: Node) -> None:
    gone: list[Term] = []
    sup = supervisor(
        node,
        ChildSpec(name="worker", start=Stopper, restart="transient", gone=lambda p, r: gone.append(r)),
    )
    first = node.processes.name("worker")
    assert first is not None
    node.send(Atom("worker"), (Atom("normal"),))
    assert await first.join(5) == NORMAL
    await eventually(lambda: gone == [NORMAL], what="the supervisor told of the normal end")
    assert node.whereis("worker") is None
    assert "worker" not in sup.children()
    # {shutdown, _} is a normal end as well; a crash is not.
    sup.start_child(ChildSpec(name="worker", start=Stopper, restart="transient", gone=lambda p, r: gone.append(r)))
    node.send(Atom("worker"), ((SHUTDOWN, Atom("done")),))
    await eventually(lambda: len(gone) == 2, what="the {shutdown, done} end reported")
    sup.start_child(ChildSpec(name="worker", start=Stopper, restart="transient"))
    old = node.whereis("worker")
    node.send(Atom("worker"), (Atom("crash"),))
    await restarted(node, "worker", old)


async def test_temporary_child_is_never_restarted(node: Node) -> None:
    gone: list[Term] = []
    supervisor(node, ChildSpec(name="once", start=Stopper, restart="temporary", gone=lambda p, r: gone.append(r)))
    kill(node, "once")
    await eventually(lambda: gone == [KILLED], what="the temporary child reported gone")
    assert node.whereis("once") is None


async def test_terminate_child_is_not_a_crash(node: Node) -> None:
    sup = supervisor(node, ChildSpec(name="echo", start=Echo), ChildSpec(name="other", start=Echo))
    process = sup.terminate_child("echo")
    assert process is not None
    assert node.whereis("echo") is None  # free at once, as after OTP's terminate_child
    assert await process.join(5) == SHUTDOWN
    # Give the supervisor every chance to (wrongly) restart it: a call to it is answered after
    # any EXIT already in its mailbox.
    assert await node.call(Atom("test_sup"), Atom("count_children")) == [
        (Atom("specs"), 1),
        (Atom("active"), 1),
        (Atom("supervisors"), 0),
        (Atom("workers"), 1),
    ]
    assert node.whereis("echo") is None
    assert sup.terminate_child("echo") is None
    # The name is free for a new child, even before the old process has finished ending.
    sup.start_child(ChildSpec(name="echo", start=Echo))
    assert await node.call(Atom("echo"), PING) == PONG
    old = sup.terminate_child("echo")
    new = sup.start_child(ChildSpec(name="echo", start=Echo))
    assert old is not None and old is not new and node.whereis("echo") == new.pid
    assert await old.join(5) == SHUTDOWN
    assert await node.call(Atom("echo"), PING) == PONG


async def test_which_children_lists_names_and_pids(node: Node) -> None:
    supervisor(node, ChildSpec(name="a", start=Echo), ChildSpec(name="b", start=Echo))
    children = await node.call(Atom("test_sup"), Atom("which_children"))
    assert children == [
        (Atom("a"), node.whereis("a"), Atom("worker"), []),
        (Atom("b"), node.whereis("b"), Atom("worker"), []),
    ]
    reply = await node.call(Atom("test_sup"), Atom("what"))
    assert isinstance(reply, tuple) and reply[0] == Atom("error") and reply[1][0] == Atom("bad_request")
    assert "what" in reply[1][1]


async def test_an_exit_signal_from_a_stranger_is_trapped_and_ignored(node: Node) -> None:
    sup = supervisor(node, ChildSpec(name="echo", start=Echo))
    stranger = node.spawn(Process())
    assert sup.pid is not None and stranger.pid is not None
    node.exit(sup.pid, Atom("go_away"), sender=stranger.pid)
    assert await node.call(Atom("test_sup"), Atom("count_children")) is not None
    assert sup.alive and node.whereis("echo") is not None


async def test_a_child_whose_restart_fails_is_tried_again_until_the_intensity(node: Node) -> None:
    attempts: list[int] = []

    def start() -> Process:
        attempts.append(1)
        if len(attempts) > 1:
            raise RuntimeError("cannot start again")
        return Echo()

    bystander_starts: list[Process] = []
    sup = supervisor(
        node,
        ChildSpec(name="bystander", start=Echo, started=bystander_starts.append),
        ChildSpec(name="flaky", start=start),
        intensity=RestartIntensity(3, 60.0),
    )
    kill(node, "flaky")
    assert await sup.join(10) == SHUTDOWN
    assert len(attempts) == 1 + 3  # the first start, then three failed restarts; the fourth is refused
    assert sup.gave_up
    assert await bystander_starts[0].join(5) == SHUTDOWN


# -- the restart intensity reached ------------------------------------------------------------


async def test_past_the_intensity_the_supervisor_ends_its_children_and_itself(node: Node) -> None:
    sup = supervisor(
        node,
        ChildSpec(name="echo", start=Echo),
        ChildSpec(name="quiet", start=Echo),
        intensity=RestartIntensity(2, 60.0),
    )
    pid = node.whereis("echo")
    for _ in range(2):
        kill(node, "echo")
        pid = await restarted(node, "echo", pid)
    quiet = node.processes.name("quiet")
    assert quiet is not None
    last = kill(node, "echo")
    assert await sup.join(10) == SHUTDOWN
    assert await last.join(5) == KILLED
    assert await quiet.join(5) == SHUTDOWN
    assert node.whereis("echo") is None and node.whereis("test_sup") is None
    with pytest.raises(RuntimeError):
        sup.start_child(ChildSpec(name="late", start=Echo))
    with pytest.raises(CallExit):
        await node.call(Atom("echo"), PING, timeout=5)


async def test_killing_the_supervisor_takes_its_children_with_it(node: Node) -> None:
    sup = supervisor(node, ChildSpec(name="echo", start=Echo))
    child = node.processes.name("echo")
    assert child is not None
    kill(node, "test_sup")
    assert await sup.join(5) == KILLED
    assert await child.join(5) == KILLED


async def test_stopping_the_node_restarts_nothing(node: Node) -> None:
    starts: list[Process] = []
    supervisor(node, ChildSpec(name="echo", start=Echo, started=starts.append))
    await node.stop()
    assert len(starts) == 1
    assert not node.processes.by_pid


# -- the node's own processes -----------------------------------------------------------------


async def test_net_kernel_and_the_io_server_run_under_pynode_sup(node: Node) -> None:
    sup = node_supervisor(node)
    children = sup.children()
    assert isinstance(children["net_kernel"], NetKernel)
    assert isinstance(children["pynode_io"], IoServer)
    for name in ("net_kernel", "pynode_io"):
        old = node.whereis(name)
        victim = kill(node, name)
        assert await victim.join(5) == KILLED
        await restarted(node, name, old)
    is_auth = (Atom("is_auth"), Atom("someone@127.0.0.1"))
    assert await node.call(Atom("net_kernel"), is_auth) == Atom("yes")
    assert isinstance(node.processes.name("pynode_io"), IoServer)


async def test_an_untrappable_kill_ends_the_process_at_once_even_if_its_task_holds_on(node: Node) -> None:
    release = asyncio.Event()
    running = asyncio.Event()

    async def stubborn(process: Process) -> None:
        try:
            running.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # swallows the cancellation and lingers

    holder = node.spawn(stubborn, name="stubborn")
    holder.trap_exit = True
    await asyncio.wait_for(running.wait(), 5)
    watcher = node.spawn(Process())
    assert watcher.pid is not None and holder.pid is not None
    ref = watcher.monitor(holder.pid)
    node.exit(holder.pid, KILL, sender=watcher.pid)
    assert await holder.join(5) == KILLED
    assert node.whereis("stubborn") is None
    down = await watcher.receive(timeout=5)
    assert down == (Atom("DOWN"), ref, Atom("process"), holder.pid, KILLED)
    assert holder.task is not None and not holder.task.done()
    release.set()
    await asyncio.wait_for(holder.task, 5)
    assert holder.exit_reason == KILLED


async def test_a_child_that_ended_normally_can_be_replaced_before_its_exit_is_handled(node: Node) -> None:
    gone: list[Term] = []
    sup = supervisor(node, ChildSpec(name="agent", start=Echo, restart="transient", gone=lambda p, r: gone.append(r)))
    old = sup.child("agent")
    assert old is not None
    old.exit(SHUTDOWN)  # as a registry ends an agent it replaces, without terminate_child
    assert await old.join(5) == SHUTDOWN
    new = sup.start_child(ChildSpec(name="agent", start=Echo, restart="transient"))
    assert gone == [SHUTDOWN] and node.whereis("agent") == new.pid
    assert await node.call(Atom("test_sup"), Atom("count_children")) is not None  # the late EXIT is ignored
    assert sup.child("agent") is new
    # A crashed one, in contrast, is restarted by the same settling: the name stays taken.
    crashed = sup.child("agent")
    assert crashed is not None and crashed.pid is not None
    node.exit(crashed.pid, KILL)
    with pytest.raises(ValueError):
        sup.start_child(ChildSpec(name="agent", start=Echo))
    assert node.whereis("agent") not in (None, crashed.pid)
