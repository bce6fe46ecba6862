"""The links-and-monitors table on data alone: processes without tasks, connections that record.

No socket and no event loop: what the table decides shows as exit reasons,
mailbox contents and the control messages handed to a peer's port.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pynode.errors import PynodeError
from pynode.etf.types import Atom, Pid, Reference, Term
from pynode.limits import Admission, Limits
from pynode.runtime.process import DOWN, EXIT, NOCONNECTION, NOPROC, NORMAL, PROCESS, Process
from pynode.runtime.signals import SPAWN_REPLY, PeerSignals, Signals
from pynode.runtime.table import ProcessTable
from pynode.wire import control as c
from pynode.wire.framing import NO_PAYLOAD

HERE = Atom("py@127.0.0.1")
THERE = "e1@127.0.0.1"
KILL = Atom("kill")


class RecordingPort:
    """An established connection as the table sees it: every signal it is asked to send, in order."""

    def __init__(self, peer_name: str = THERE) -> None:
        self.peer_name = peer_name
        self.signals = PeerSignals()
        self.sent: list[tuple[str, Any]] = []

    def send(self, control: c.ControlMessage, payload: Term = NO_PAYLOAD) -> None:
        self.sent.append(("send", control if payload is NO_PAYLOAD else (control, payload)))

    def send_exit(self, sender: Pid, to: Pid, reason: Term, *, linked: bool) -> None:
        self.sent.append(("exit" if linked else "exit2", (sender, to, reason)))

    def send_monitor_exit(self, target: Pid | Atom, watcher: Pid, ref: Reference, reason: Term) -> None:
        self.sent.append(("monitor_exit", (target, watcher, ref, reason)))


class RecordingPeers:
    def __init__(self) -> None:
        self.connections: dict[str, RecordingPort] = {}
        self.later: list[tuple[str, c.ControlMessage]] = []

    def send_later(self, node: str, control: c.ControlMessage, payload: Term = NO_PAYLOAD) -> None:
        self.later.append((node, control))


class World:
    """One node's processes and its table, with ids minted by counting."""

    def __init__(self) -> None:
        self.processes = ProcessTable()
        self.peers = RecordingPeers()
        self._ids = itertools.count(1)
        self.signals = Signals(HERE, self.processes, self.peers, self.ref)

    def ref(self) -> Reference:
        return Reference(HERE, 1, (next(self._ids), 0, 0))

    def process(self, *, trap_exit: bool = False) -> Process:
        process = Process()
        process.pid = Pid(HERE, next(self._ids), 0, 1)
        process.trap_exit = trap_exit
        process.node = self  # type: ignore[assignment]  # the one Kernel method a task-less process calls
        self.processes.add(process)
        return process

    def process_ended(self, process: Process, reason: Term) -> None:
        if process.exit_reason is None:
            self.end(process, reason)

    def connect(self) -> RecordingPort:
        port = RecordingPort()
        self.peers.connections[THERE] = port
        return port

    def end(self, process: Process, reason: Term) -> None:
        """What the node does when a process ends: out of the table, then its signals."""
        process.ended(reason)
        self.processes.remove(process)
        self.signals.process_ended(process, reason)


def remote(n: int) -> Pid:
    return Pid(Atom(THERE), n, 0, 7)


def mailbox(process: Process) -> list[Any]:
    out = []
    for _ in range(len(process.mailbox)):
        found, message = process.mailbox.take_nowait()
        assert found
        out.append(message)
    return out


def pid_of(process: Process) -> Pid:
    assert process.pid is not None
    return process.pid


# -- links ----------------------------------------------------------------------------------


def test_a_local_link_ends_the_other_side_or_tells_it_when_it_traps() -> None:
    w = World()
    a, b, watcher = w.process(), w.process(), w.process(trap_exit=True)
    w.signals.link(pid_of(a), pid_of(b))
    w.signals.link(pid_of(watcher), pid_of(a))
    assert pid_of(b) in a.links and pid_of(a) in b.links
    w.end(a, Atom("boom"))
    assert b.kill_reason == Atom("boom")
    assert mailbox(watcher) == [(EXIT, pid_of(a), Atom("boom"))]
    assert not w.peers.later


def test_a_normal_exit_through_a_link_ends_nobody() -> None:
    w = World()
    a, b = w.process(), w.process()
    w.signals.link(pid_of(a), pid_of(b))
    w.end(a, NORMAL)
    assert b.kill_reason is None and not b.links


def test_linking_to_a_dead_local_pid_is_a_noproc_exit() -> None:
    w = World()
    a = w.process(trap_exit=True)
    ghost = Pid(HERE, 999, 0, 1)
    w.signals.link(pid_of(a), ghost)
    assert mailbox(a) == [(EXIT, ghost, NOPROC)]
    assert ghost not in a.links


def test_linking_from_a_process_that_is_not_here_is_refused() -> None:
    w = World()
    with pytest.raises(PynodeError):
        w.signals.link(Pid(HERE, 999, 0, 1), remote(1))


def test_a_remote_link_is_sent_recorded_and_ends_with_an_exit_to_the_peer() -> None:
    w = World()
    port = w.connect()
    a = w.process()
    w.signals.link(pid_of(a), remote(1))
    assert port.sent == [("send", c.Link(pid_of(a), remote(1)))]
    assert port.signals.links == {(pid_of(a), remote(1))}
    w.end(a, Atom("crash"))
    assert port.sent[-1] == ("exit", (pid_of(a), remote(1), Atom("crash")))
    assert not port.signals.links


def test_a_peer_exit_ends_the_linked_process_and_forgets_the_link() -> None:
    w = World()
    port = w.connect()
    a = w.process()
    w.signals.on_link(port, c.Link(remote(1), pid_of(a)), NO_PAYLOAD)
    assert port.signals.links == {(pid_of(a), remote(1))}
    w.signals.on_exit(port, c.PayloadExit(remote(1), pid_of(a)), Atom("gone"))
    assert a.kill_reason == Atom("gone") and not port.signals.links


def test_a_peer_linking_to_a_dead_pid_gets_noproc() -> None:
    w = World()
    port = w.connect()
    ghost = Pid(HERE, 999, 0, 1)
    w.signals.on_link(port, c.Link(remote(1), ghost), NO_PAYLOAD)
    assert port.sent == [("exit", (ghost, remote(1), NOPROC))]


def test_unlink_tells_the_peer_and_a_peer_unlink_is_acknowledged() -> None:
    w = World()
    port = w.connect()
    a = w.process()
    w.signals.link(pid_of(a), remote(1))
    w.signals.unlink(pid_of(a), remote(1))
    _, control = port.sent[-1]
    assert isinstance(control, c.UnlinkId) and (control.from_pid, control.to_pid) == (pid_of(a), remote(1))
    assert not a.links and not port.signals.links
    w.signals.on_link(port, c.Link(remote(2), pid_of(a)), NO_PAYLOAD)
    w.signals.on_unlink_id(port, c.UnlinkId(42, remote(2), pid_of(a)), NO_PAYLOAD)
    assert port.sent[-1] == ("send", c.UnlinkIdAck(42, pid_of(a), remote(2)))  # from the acker
    assert not a.links


def test_exit2_kill_cannot_be_trapped() -> None:
    w = World()
    port = w.connect()
    a = w.process(trap_exit=True)
    w.signals.on_exit2(port, c.PayloadExit2(remote(1), pid_of(a)), KILL)
    assert a.kill_reason == Atom("killed")


def test_while_stopping_links_to_peers_are_left_to_the_closing_connection() -> None:
    w = World()
    port = w.connect()
    a = w.process()
    w.signals.link(pid_of(a), remote(1))
    w.signals.stopping = True
    w.end(a, Atom("shutdown"))
    assert port.sent == [("send", c.Link(pid_of(a), remote(1)))]


# -- monitors -------------------------------------------------------------------------------


def test_a_local_monitor_fires_once_with_the_target_as_named() -> None:
    w = World()
    watcher, target = w.process(), w.process()
    w.processes.register(Atom("worker"), target)
    by_pid = w.signals.monitor(pid_of(watcher), pid_of(target))
    by_name = w.signals.monitor(pid_of(watcher), "worker")
    w.end(target, Atom("oops"))
    assert mailbox(watcher) == [
        (DOWN, by_pid, PROCESS, pid_of(target), Atom("oops")),
        (DOWN, by_name, PROCESS, (Atom("worker"), HERE), Atom("oops")),
    ]
    assert not watcher.monitors


def test_monitoring_a_missing_local_name_is_an_immediate_noproc_down() -> None:
    w = World()
    watcher = w.process()
    ref = w.signals.monitor(pid_of(watcher), "nobody")
    assert mailbox(watcher) == [(DOWN, ref, PROCESS, (Atom("nobody"), HERE), NOPROC)]


def test_a_remote_monitor_by_name_goes_out_and_its_down_comes_back_as_named() -> None:
    w = World()
    port = w.connect()
    watcher = w.process()
    ref = w.signals.monitor(pid_of(watcher), ("server", THERE))
    assert port.sent == [("send", c.MonitorP(pid_of(watcher), Atom("server"), ref))]
    assert port.signals.monitors_out == {ref: (pid_of(watcher), (Atom("server"), Atom(THERE)))}
    w.signals.on_monitor_p_exit(port, c.PayloadMonitorPExit(Atom("server"), pid_of(watcher), ref), Atom("bye"))
    assert mailbox(watcher) == [(DOWN, ref, PROCESS, (Atom("server"), Atom(THERE)), Atom("bye"))]
    assert not port.signals.monitors_out and not watcher.monitors


def test_demonitor_tells_the_peer_and_flushes_a_queued_down() -> None:
    w = World()
    port = w.connect()
    watcher = w.process()
    ref = w.signals.monitor(pid_of(watcher), remote(1))
    watcher.deliver((DOWN, ref, PROCESS, remote(1), Atom("late")))
    watcher.deliver("other")
    w.signals.demonitor(pid_of(watcher), ref)
    assert port.sent[-1] == ("send", c.DemonitorP(pid_of(watcher), remote(1), ref))
    assert mailbox(watcher) == ["other"]
    assert not port.signals.monitors_out


def test_a_peer_monitor_of_ours_fires_to_the_peer_or_is_noproc() -> None:
    w = World()
    port = w.connect()
    target = w.process()
    w.processes.register(Atom("svc"), target)
    ref, missing = w.ref(), w.ref()
    w.signals.on_monitor_p(port, c.MonitorP(remote(1), Atom("svc"), ref), NO_PAYLOAD)
    w.signals.on_monitor_p(port, c.MonitorP(remote(1), Atom("absent"), missing), NO_PAYLOAD)
    assert port.sent == [("monitor_exit", (Atom("absent"), remote(1), missing, NOPROC))]
    assert port.signals.monitors_in == {ref: pid_of(target)}
    w.end(target, Atom("done"))
    assert port.sent[-1] == ("monitor_exit", (Atom("svc"), remote(1), ref, Atom("done")))
    assert not port.signals.monitors_in


def test_a_peer_demonitor_forgets_the_monitor() -> None:
    w = World()
    port = w.connect()
    target = w.process()
    ref = w.ref()
    w.signals.on_monitor_p(port, c.MonitorP(remote(1), pid_of(target), ref), NO_PAYLOAD)
    w.signals.on_demonitor_p(port, c.DemonitorP(remote(1), pid_of(target), ref), NO_PAYLOAD)
    assert not target.monitored_by and not port.signals.monitors_in
    w.end(target, Atom("done"))
    assert port.sent == []


# -- connections ----------------------------------------------------------------------------


def test_a_lost_connection_fires_every_link_monitor_and_spawn_request_with_noconnection() -> None:
    w = World()
    port = w.connect()
    linked, watcher, target, requester = w.process(trap_exit=True), w.process(), w.process(), w.process()
    w.signals.link(pid_of(linked), remote(1))
    mon = w.signals.monitor(pid_of(watcher), remote(2))
    w.signals.on_monitor_p(port, c.MonitorP(remote(3), pid_of(target), w.ref()), NO_PAYLOAD)
    req = w.ref()
    port.signals.spawn_requests[req] = pid_of(requester)
    w.signals.connection_lost(port)
    assert mailbox(linked) == [(EXIT, remote(1), NOCONNECTION)]
    assert mailbox(watcher) == [(DOWN, mon, PROCESS, remote(2), NOCONNECTION)]
    assert not target.monitored_by
    assert mailbox(requester) == [(SPAWN_REPLY, req, 0, NOCONNECTION)]
    assert port.signals == PeerSignals()


def test_signals_queued_while_connecting_are_admitted_only_if_they_still_hold() -> None:
    w = World()
    a, b = w.process(), w.process()
    w.signals.link(pid_of(a), remote(1))
    w.signals.link(pid_of(b), remote(2))
    ref = w.signals.monitor(pid_of(a), remote(3))
    assert [control for _, control in w.peers.later] == [
        c.Link(pid_of(a), remote(1)),
        c.Link(pid_of(b), remote(2)),
        c.MonitorP(pid_of(a), remote(3), ref),
    ]
    w.signals.unlink(pid_of(b), remote(2))
    port = RecordingPort()
    admitted = [w.signals.admit_pending(port, control) for _, control in w.peers.later]
    assert admitted == [True, False, True]
    assert port.signals.links == {(pid_of(a), remote(1))}
    assert port.signals.monitors_out == {ref: (pid_of(a), remote(3))}


def test_signals_that_never_got_a_connection_fire_noconnection_and_messages_are_counted() -> None:
    w = World()
    a, watcher = w.process(trap_exit=True), w.process()
    w.signals.link(pid_of(a), remote(1))
    ref = w.signals.monitor(pid_of(watcher), remote(2))
    queued = [control for _, control in w.peers.later] + [c.Send(remote(4)), c.Send(remote(5))]
    assert w.signals.fail_pending(queued) == 2
    assert mailbox(a) == [(EXIT, remote(1), NOCONNECTION)]
    assert mailbox(watcher) == [(DOWN, ref, PROCESS, remote(2), NOCONNECTION)]


def test_a_spawn_reply_with_the_monitor_flag_sets_up_the_monitor() -> None:
    w = World()
    port = w.connect()
    requester = w.process()
    req = w.ref()
    port.signals.spawn_requests[req] = pid_of(requester)
    w.signals.on_spawn_reply(port, c.SpawnReply(req, pid_of(requester), 2, remote(9)), NO_PAYLOAD)
    assert mailbox(requester) == [(SPAWN_REPLY, req, 2, remote(9))]
    assert port.signals.monitors_out == {req: (pid_of(requester), remote(9))}
    assert requester.monitors == {req: remote(9)}


def test_a_spawn_reply_for_a_requester_that_gave_up_kills_what_it_started() -> None:
    w = World()
    port = w.connect()
    req = w.ref()
    gone = Pid(HERE, 999, 0, 1)
    port.signals.spawn_requests[req] = gone
    w.signals.on_spawn_reply(port, c.SpawnReply(req, gone, 2, remote(9)), NO_PAYLOAD)
    assert port.sent == [("exit2", (gone, remote(9), KILL))]
    assert not port.signals.spawn_requests


# -- admission (limits on accepted sockets) ---------------------------------------------------


def test_admission_refuses_past_max_connections_counting_the_others() -> None:
    admission: Admission[str] = Admission(Limits(max_connections=3, net_setuptime=1.0))
    assert admission.open("a", 0.0, others=1)
    assert admission.open("b", 0.0, others=1)
    assert not admission.open("c", 0.0, others=1)
    admission.settled("a")
    assert admission.open("c", 0.0, others=1)
    assert admission.handshaking == 2


def test_admission_names_the_handshakes_past_their_set_up_time_in_order() -> None:
    admission: Admission[str] = Admission(Limits(net_setuptime=0.5))
    assert admission.next_deadline() is None
    admission.open("first", 10.0, others=0)
    admission.open("second", 10.2, others=0)
    admission.open("done", 10.3, others=0)
    admission.settled("done")
    assert admission.next_deadline() == 10.5
    assert admission.expired(10.4) == []
    assert admission.expired(10.5) == ["first"]
    assert admission.next_deadline() == pytest.approx(10.7)
    assert admission.expired(11.0) == ["second"]
    assert admission.expired(99.0) == [] and admission.next_deadline() is None


def test_admission_counts_set_up_time_from_arrival_even_when_opened_out_of_order() -> None:
    """A TLS socket opens its handshake here only once TLS is up: its clock started at arrival."""
    admission: Admission[str] = Admission(Limits(net_setuptime=1.0))
    admission.open("plain", 10.5, others=0)  # arrived at 10.5, opened at once
    admission.open("tls", 10.0, others=0)  # arrived at 10.0, opened later, after its TLS handshake
    assert admission.next_deadline() == 11.0
    assert admission.expired(11.0) == ["tls"]
    assert admission.next_deadline() == 11.5
    assert admission.expired(11.5) == ["plain"]
