"""Processes, calls, links and monitors on one node, without any socket to another."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from pynode.errors import CallExit, CallTimeout
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.node import Node
from pynode.runtime.genserver import DEFER, NOREPLY, CallNowReply, CallReply, From, GenServer
from pynode.runtime.process import Process, ProcessExit


class Counter(GenServer):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.later: list[From] = []

    async def handle_call(self, request: Term, caller: From) -> CallReply:
        if request == Atom("incr"):
            self.count += 1
            return self.count
        if request == Atom("boom"):
            raise RuntimeError("handler failed")
        if request == Atom("later"):
            self.later.append(caller)
            return NOREPLY
        if request == Atom("stop"):
            self.stop((Atom("asked"), self.count))
            return Atom("stopping")
        if request == Atom("answer_later"):
            for waiting in self.later:
                self.reply(waiting, Atom("late"))
            self.later.clear()
            return Atom("ok")
        return await super().handle_call(request, caller)

    async def handle_cast(self, request: object) -> None:
        self.count += 100


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node("local@127.0.0.1", "cookie")
    await n.start(register_epmd=False)
    yield n
    await n.stop()


async def test_call_by_name_and_pid(node: Node) -> None:
    server = node.spawn(Counter(), name="counter")
    assert await node.call(Atom("counter"), Atom("incr")) == 1
    assert server.pid is not None
    assert await node.call(server.pid, Atom("incr")) == 2
    assert await node.call((Atom("counter"), node.name), Atom("incr")) == 3


async def test_cast_and_raw_envelope(node: Node) -> None:
    server = node.spawn(Counter(), name="counter")
    node.cast(Atom("counter"), Atom("anything"))
    replies: list[object] = []

    async def client(me: Process) -> None:
        ref = node.make_ref()
        me.send(Atom("counter"), (me.pid, ref, Atom("incr")))
        replies.append(await me.receive(lambda m: type(m) is tuple and m[0] == ref, timeout=2))

    proc = node.spawn(client)
    assert await proc.join(2) == Atom("normal")
    assert server.alive
    assert replies and replies[0][1] == 101


async def test_missing_name_exits_noproc_at_once(node: Node) -> None:
    with pytest.raises(CallExit) as info:
        await asyncio.wait_for(node.call(Atom("nobody"), Atom("ping"), timeout=30), 1)
    assert info.value.reason == Atom("noproc")


async def test_raising_handler_still_replies(node: Node) -> None:
    node.spawn(Counter(), name="counter")
    reply = await node.call(Atom("counter"), Atom("boom"))
    assert reply[0] == Atom("error") and reply[1][0] == Atom("internal_error")
    assert "handler failed" in reply[1][1]
    assert await node.call(Atom("counter"), Atom("incr")) == 1


async def test_unknown_request_is_bad_request(node: Node) -> None:
    node.spawn(Counter(), name="counter")
    reply = await node.call(Atom("counter"), (Atom("what"), 1))
    assert reply[0] == Atom("error") and reply[1][0] == Atom("bad_request")


async def test_noreply_then_reply(node: Node) -> None:
    node.spawn(Counter(), name="counter")
    waiting = asyncio.create_task(node.call(Atom("counter"), Atom("later")))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    assert await node.call(Atom("counter"), Atom("answer_later")) == Atom("ok")
    assert await waiting == Atom("late")


async def test_call_timeout_leaves_nothing_behind(node: Node) -> None:
    server = node.spawn(Counter(), name="counter")
    before = len(node.processes)
    with pytest.raises(CallTimeout):
        await node.call(Atom("counter"), Atom("later"), timeout=0.05)
    assert len(node.processes) == before
    assert server.monitored_by == {}


async def test_many_calls_leave_no_monitor_or_process(node: Node) -> None:
    server = node.spawn(Counter(), name="counter")
    before = len(node.processes)
    for _ in range(1000):
        await node.call(Atom("counter"), Atom("incr"))
    assert len(node.processes) == before
    assert server.monitored_by == {}
    assert await node.call(Atom("counter"), Atom("incr")) == 1001


async def test_stop_replies_then_ends_with_its_reason(node: Node) -> None:
    server = node.spawn(Counter(), name="stopper")
    watcher = node.spawn(Process())
    ref = watcher.monitor(server.pid)
    await node.call(Atom("stopper"), Atom("incr"))
    assert await node.call(Atom("stopper"), Atom("stop")) == Atom("stopping")
    down = await watcher.receive(lambda m: type(m) is tuple and m[0] == Atom("DOWN"), timeout=5)
    assert down == (Atom("DOWN"), ref, Atom("process"), server.pid, (Atom("asked"), 1))
    assert node.whereis("stopper") is None
    with pytest.raises(CallExit):
        await node.call(Atom("stopper"), Atom("incr"), timeout=2)


async def test_link_propagates_exit(node: Node) -> None:
    async def crasher(me: Process) -> None:
        await me.receive()
        raise ProcessExit(Atom("boom"))

    a = node.spawn(Process())
    b = node.spawn(crasher)
    assert a.pid is not None and b.pid is not None
    a.link(b.pid)
    b.mailbox.put(Atom("go"))
    assert await a.join(2) == Atom("boom")


async def test_trap_exit_turns_exit_into_message(node: Node) -> None:
    a = node.spawn(Process())
    a.trap_exit = True
    b = node.spawn(Process())
    assert a.pid is not None and b.pid is not None
    a.link(b.pid)
    b.exit(Atom("bye"))
    message = await a.receive(timeout=2)
    assert message == (Atom("EXIT"), b.pid, Atom("bye"))
    assert a.alive


async def test_normal_exit_does_not_kill_linked(node: Node) -> None:
    a = node.spawn(Process())
    b = node.spawn(Process())
    assert a.pid is not None and b.pid is not None
    a.link(b.pid)
    b.exit(Atom("normal"))
    await asyncio.sleep(0.01)
    assert a.alive


async def test_monitor_down_and_demonitor(node: Node) -> None:
    watcher = node.spawn(Process())
    target = node.spawn(Process(), name="target")
    assert target.pid is not None
    ref = watcher.monitor(Atom("target"))
    other = watcher.monitor(target.pid)
    watcher.demonitor(other)
    target.exit(Atom("gone"))
    down = await watcher.receive(timeout=2)
    assert down == (Atom("DOWN"), ref, Atom("process"), (Atom("target"), node.name), Atom("gone"))
    assert isinstance(ref, Reference)
    assert len(watcher.mailbox) == 0


async def test_monitor_of_dead_pid_is_noproc(node: Node) -> None:
    watcher = node.spawn(Process())
    ghost = Pid(node.name, 999_999, 0, node.creation)
    ref = watcher.monitor(ghost)
    assert await watcher.receive(timeout=1) == (Atom("DOWN"), ref, Atom("process"), ghost, Atom("noproc"))


async def test_crashing_process_reports_python_error(node: Node) -> None:
    async def bad(me: Process) -> None:
        raise ValueError("nope")

    watcher = node.spawn(Process())
    proc = node.spawn(bad)
    assert proc.pid is not None
    assert await proc.join(2) == (Atom("python_error"), "ValueError: nope")
    ref = watcher.monitor(proc.pid)
    assert (await watcher.receive(timeout=1))[4] == Atom("noproc")
    assert isinstance(ref, Reference)


async def test_node_stop_ends_every_process(node: Node) -> None:
    procs = [node.spawn(Process()) for _ in range(10)]
    await node.stop()
    assert all(not p.alive for p in procs)
    assert len(node.processes) == 0


class FastCounter(GenServer):
    """Answers `get` on the fast path; `slow_incr` casts keep the server busy for a while."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.fast_answers = 0

    def handle_call_now(self, request: Term, caller: From) -> CallNowReply:
        if request == Atom("get"):
            self.fast_answers += 1
            return self.count
        return DEFER

    async def handle_call(self, request: Term, caller: From) -> CallReply:
        if request == Atom("get"):
            return self.count
        return await super().handle_call(request, caller)

    async def handle_cast(self, request: object) -> None:
        await asyncio.sleep(0.05)
        self.count += 1


async def test_fast_path_answers_idle_calls_and_keeps_order(node: Node) -> None:
    server = FastCounter()
    node.spawn(server, name="fast")
    await asyncio.sleep(0)
    assert await node.call(Atom("fast"), Atom("get")) == 0
    assert server.fast_answers == 1
    # A busy server queues the call behind the cast: the answer sees the cast's effect.
    node.cast(Atom("fast"), Atom("slow_incr"))
    await asyncio.sleep(0)
    assert await node.call(Atom("fast"), Atom("get")) == 1
    assert server.fast_answers == 1
    # Deferred requests still reach handle_call.
    reply = await node.call(Atom("fast"), Atom("other"))
    assert reply[1][0] == Atom("bad_request")


async def test_messages_waiting_for_a_connection_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynode.net.manager as node_module

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # an "EPMD" that never answers keeps the node connecting
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(node_module, "MAX_PENDING_SENDS", 3)
    n = Node("bounded@127.0.0.1", "cookie", epmd_port=port)
    await n.start(register_epmd=False)
    try:
        for i in range(10):
            n.send((Atom("someone"), Atom("ghost@127.0.0.1")), i)
        await asyncio.sleep(0.05)
        assert [payload for _, payload in n.net._pending_sends["ghost@127.0.0.1"]] == [0, 1, 2]
    finally:
        await n.stop()
        server.close()
        await server.wait_closed()
