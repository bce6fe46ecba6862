"""Structure-aware fuzzing with hypothesis: valid messages bent the ways a hostile peer bends them.

Raw-byte fuzzing (tests/fuzz) rarely builds a well-formed fragment sequence or
a control tuple naming a live process; these tests start from well-formed ones
and break them on purpose: interleaved and unfinished fragment sequences, lying
compressed sizes, control messages to the node's own processes with any payload.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import zlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_etf_props import terms

from pynode.errors import RemoteProtocolError
from pynode.etf.encode import encode
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, ImproperList, Pid, Reference, Term
from pynode.node import Node
from pynode.wire import control as c
from pynode.wire.flags import DEFAULT_FLAGS
from pynode.wire.framing import NEED_DATA, NO_PAYLOAD, BadPayload, DistMessage, DistReader, DistWriter

PEER = Atom("peer@127.0.0.1")
THEM = Pid(PEER, 40, 0, 5)
LIMIT = 4096


def read_all(reader: DistReader, data: bytes, cuts: list[int]) -> list[object]:
    out: list[object] = []
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    for start, end in itertools.pairwise(points):
        reader.receive_data(data[start:end])
        for _ in range(len(data) + 1):
            event = reader.next_event()
            assert reader.fragment_bytes <= reader.max_fragment_bytes
            assert reader.pending_fragments <= reader.max_fragment_sequences
            if event is NEED_DATA:
                break
            out.append(event)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(terms, min_size=1, max_size=6),
    fragment_size=st.integers(1, 200),
    order=st.randoms(use_true_random=False),
    drop_last=st.lists(st.booleans(), max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_interleaved_and_unfinished_fragments_stay_within_their_limits(
    payloads: list[Term], fragment_size: int, order: Any, drop_last: list[bool], cuts: list[int]
) -> None:
    writer = DistWriter(DEFAULT_FLAGS, fragment_size=fragment_size)
    sequences = [writer.encode(c.SendSender(THEM, Pid(PEER, 1 + i, 0, 5)), p) for i, p in enumerate(payloads)]
    unfinished = set()
    for index, dropped in enumerate(drop_last[: len(sequences)]):
        if dropped and len(sequences[index]) > 1:
            sequences[index] = sequences[index][:-1]
            unfinished.add(index)
    # Interleave the sequences, each kept in order (as the BEAM sends them).
    queues = [list(s) for s in sequences]
    frames: list[bytes] = []
    while any(queues):
        queue = order.choice([q for q in queues if q])
        frames.append(queue.pop(0))
    reader = DistReader(DEFAULT_FLAGS, max_message_size=1 << 20, max_fragment_bytes=LIMIT, max_fragment_sequences=4)
    try:
        events = read_all(reader, b"".join(frames), cuts)
    except RemoteProtocolError as exc:
        # Only a limit may refuse these well-formed sequences.
        assert "(max_fragment_bytes)" in str(exc) or "(max_fragment_sequences)" in str(exc), exc
        return
    finished = [p for i, p in enumerate(payloads) if i not in unfinished]
    got = [e.payload for e in events if isinstance(e, DistMessage)]
    assert sorted(map(format_term, got)) == sorted(map(format_term, finished))
    assert reader.pending_fragments == len(unfinished)
    reader.close()
    assert reader.fragment_bytes == 0


@settings(max_examples=150, deadline=None)
@given(payload=terms, declared_delta=st.integers(-50, 1 << 20), level=st.integers(0, 9))
def test_compressed_payloads_that_lie_cost_their_message_only(payload: Term, declared_delta: int, level: int) -> None:
    inner = encode(payload)[1:]
    declared = max(1, len(inner) + declared_delta)
    body = b"P" + struct.pack(">I", declared) + zlib.compress(inner, level)
    control = encode(c.SendSender(THEM, THEM).to_term())[1:]
    bodies = (b"\x83\x44\x00" + control + body, b"\x83\x44\x00" + control + encode(Atom("after"))[1:])
    frames = b"".join(struct.pack(">I", len(b)) + b for b in bodies)
    reader = DistReader(DEFAULT_FLAGS, max_message_size=LIMIT)
    events = read_all(reader, frames, [])
    assert len(events) == 2 and isinstance(events[1], DistMessage) and events[1].payload == Atom("after")
    first = events[0]
    if declared == len(inner) and declared <= LIMIT:
        assert isinstance(first, DistMessage) and format_term(first.payload) == format_term(payload)
    else:
        assert isinstance(first, BadPayload), first


# -- control messages to a running node ----------------------------------------------------------


def _controls(local: list[Pid], names: list[Atom]) -> st.SearchStrategy[tuple[c.ControlMessage, Term]]:
    targets = st.sampled_from(local) | st.builds(Pid, st.just(Atom("py@127.0.0.1")), st.integers(0, 200), st.just(0),
                                                  st.integers(0, 3))  # fmt: skip
    named = st.sampled_from(names)
    refs = st.builds(Reference, st.just(PEER), st.just(5), st.tuples(st.integers(0, 9), st.integers(0, 9)))
    call_tag = refs.map(lambda r: ImproperList((Atom("alias"),), r))
    gen_call = st.tuples(st.just(Atom("$gen_call")), st.tuples(st.just(THEM), call_tag), terms)
    payloads = gen_call | terms
    return st.one_of(
        st.tuples(st.builds(c.RegSend, st.just(THEM), named), payloads),
        st.tuples(st.builds(c.SendSender, st.just(THEM), targets), payloads),
        st.tuples(st.builds(c.MonitorP, st.just(THEM), targets | named, refs), st.just(NO_PAYLOAD)),
        st.tuples(st.builds(c.DemonitorP, st.just(THEM), targets | named, refs), st.just(NO_PAYLOAD)),
        st.tuples(st.builds(c.Link, st.just(THEM), targets), st.just(NO_PAYLOAD)),
        st.tuples(st.builds(c.UnlinkId, st.integers(0, 9), st.just(THEM), targets), st.just(NO_PAYLOAD)),
        st.tuples(st.builds(c.PayloadExit, st.just(THEM), targets), terms),
        st.tuples(st.builds(c.AliasSend, st.just(THEM), refs), terms),
        st.tuples(st.builds(c.GroupLeader, st.just(THEM), targets), st.just(NO_PAYLOAD)),
        st.tuples(st.builds(c.SpawnRequest, refs, st.just(THEM), st.just(THEM),
                            st.tuples(atoms_, atoms_, st.integers(0, 3)), st.just([])), st.lists(terms, max_size=3)),
    )  # fmt: skip


atoms_ = st.sampled_from([Atom("os"), Atom("cmd"), Atom("erlang"), Atom("halt")])


class _Transport:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.frames.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class _Protocol:
    def __init__(self) -> None:
        self.transport = _Transport()


def test_any_control_message_to_the_nodes_processes_leaves_the_node_answering() -> None:
    """Hundreds of control messages (calls with any request, monitors, links, exits) to a real node's
    processes over a connection; the node never raises, and net_kernel still answers a call."""
    asyncio.run(_storm())


async def _storm() -> None:
    from pynode.net.channel import Connection

    node = Node("py@127.0.0.1", "cookie", listen_host="127.0.0.1")
    await node.start(register_epmd=False)
    try:
        # net_kernel is left alone (a kill would end it: restarting it is supervision's part)
        # so that it can answer the last call.
        kernel = node.whereis("net_kernel")
        local = [pid for pid in node.processes.by_pid if pid != kernel]
        names = [*(Atom(n) for n in node.processes.by_name if n != "net_kernel"), Atom("nobody")]
        protocol = _Protocol()
        conn = Connection(
            node.net,
            protocol,
            peer_name=str(PEER),
            peer_creation=5,
            flags=DEFAULT_FLAGS,
            net_ticktime=60.0,  # type: ignore[arg-type]
            limits=node.net.limits,
            log_budget=node.net.log_budget,
        )
        node.net.connection_up(conn)

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def storm(data: st.DataObject) -> None:
            control, payload = data.draw(_controls(local, names))
            node.net.dispatch_control(conn, control, payload if control.HAS_PAYLOAD else NO_PAYLOAD)

        storm()
        for _ in range(20):
            await asyncio.sleep(0)
        protocol.transport.frames.clear()
        ref = Reference(PEER, 5, (77, 77))
        call = (Atom("$gen_call"), (THEM, ImproperList((Atom("alias"),), ref)), (Atom("is_auth"), PEER))
        node.net.dispatch_control(conn, c.RegSend(THEM, Atom("net_kernel")), call)
        for _ in range(200):
            if protocol.transport.frames:
                break
            await asyncio.sleep(0.01)
        replies = protocol.transport.frames
        assert replies, "net_kernel did not answer after the storm"
        assert encode(Atom("yes"))[1:] in replies[0]
    finally:
        await node.stop()
