"""Frames after the handshake, on bytes alone: header modes, ticks, fragments, bad input."""

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynode.errors import CodecError, LocalProtocolError, RemoteProtocolError
from pynode.etf.encode import encode
from pynode.etf.types import Atom, ImproperList, Pid, Reference
from pynode.wire import control as c
from pynode.wire.flags import DEFAULT_FLAGS, MANDATORY_OTP25, DFlag
from pynode.wire.framing import (
    NEED_DATA,
    NO_PAYLOAD,
    TICK,
    TICK_FRAME,
    BadPayload,
    DistMessage,
    DistReader,
    DistWriter,
    Tick,
)

FRAGMENTS = DEFAULT_FLAGS  # negotiated with any OTP 25+ node: FRAGMENTS, no atom cache
PASS_THROUGH = DFlag(MANDATORY_OTP25)  # neither FRAGMENTS nor the atom cache: 'p' mode
NODE = Atom("a@h")
A = Pid(NODE, 1, 0, 2)
B = Pid(NODE, 3, 0, 2)
REF = Reference(NODE, 2, (1, 2, 3))
NAME = Atom("net_kernel")


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def pid_bytes(pid: Pid) -> bytes:
    node = str(pid.node).encode()
    return b"X" + bytes([119, len(node)]) + node + struct.pack(">III", pid.id, pid.serial, pid.creation)


LINK_TERM = b"h\x03a\x01" + pid_bytes(A) + pid_bytes(B)  # {1, A, B} without the version byte


def events(reader: DistReader, limit: int = 10_000) -> list[object]:
    out: list[object] = []
    for _ in range(limit):
        event = reader.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
    raise AssertionError("reader never asked for data")


def feed_all(reader: DistReader, data: bytes, chunk: int | None = None) -> list[object]:
    if chunk is None:
        reader.receive_data(data)
        return events(reader)
    out: list[object] = []
    for i in range(0, len(data), chunk):
        reader.receive_data(data[i : i + chunk])
        out += events(reader)
    return out


# -- golden bytes --------------------------------------------------------------------------


def test_pass_through_mode_golden_bytes() -> None:
    (out,) = DistWriter(PASS_THROUGH).encode(c.Link(A, B))
    assert out == frame(b"p\x83" + LINK_TERM)
    (out,) = DistWriter(PASS_THROUGH).encode(c.RegSend(A, NAME), 7)
    assert out == frame(b"p" + encode(c.RegSend(A, NAME).to_term()) + encode(7))


def test_header_mode_golden_bytes() -> None:
    (out,) = DistWriter(FRAGMENTS).encode(c.Link(A, B))
    assert out == frame(b"\x83D\x00" + LINK_TERM)  # no 131 before the control term
    (out,) = DistWriter(FRAGMENTS).encode(c.Send(B), 7)
    assert out == frame(b"\x83D\x00" + encode(c.Send(B).to_term())[1:] + b"a\x07")


def test_tick_frame() -> None:
    assert TICK_FRAME == b"\x00\x00\x00\x00"
    reader = DistReader(FRAGMENTS)
    reader.receive_data(TICK_FRAME * 3)
    assert events(reader) == [TICK, TICK, TICK]
    assert isinstance(TICK, Tick)


# -- reading in any chunking ---------------------------------------------------------------

MESSAGES: list[tuple[c.ControlMessage, Any]] = [
    (c.Link(A, B), NO_PAYLOAD),
    (c.RegSend(A, NAME), (Atom("$gen_call"), (A, REF), Atom("ping"))),
    (c.MonitorP(A, NAME, REF), NO_PAYLOAD),
    (c.SendSender(A, B), [1, 2, 3]),
    (c.AliasSend(A, REF), {b"k": 1.5}),
    (c.PayloadExit2(A, B), Atom("kill")),
    (c.DemonitorP(A, NAME, REF), NO_PAYLOAD),
]


def stream(flags: DFlag) -> bytes:
    writer = DistWriter(flags)
    parts: list[bytes] = []
    for control, payload in MESSAGES:
        parts += writer.encode(control, payload)
        parts.append(TICK_FRAME)
    return b"".join(parts)


def expected() -> list[object]:
    out: list[object] = []
    for control, payload in MESSAGES:
        out += [DistMessage(control, payload), TICK]
    return out


@pytest.mark.parametrize("flags", [FRAGMENTS, PASS_THROUGH])
@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 7, 64])
def test_reader_any_chunking(flags: DFlag, chunk: int | None) -> None:
    assert feed_all(DistReader(flags), stream(flags), chunk) == expected()


@pytest.mark.parametrize("flags", [FRAGMENTS, PASS_THROUGH])
def test_trailing_partial_frame_waits(flags: DFlag) -> None:
    data = stream(flags)
    reader = DistReader(flags)
    reader.receive_data(data + data[:5])
    assert events(reader) == expected()
    reader.receive_data(data[5:])
    assert events(reader) == expected()


def test_reader_accepts_either_header_form() -> None:
    reader = DistReader(FRAGMENTS)
    reader.receive_data(stream(PASS_THROUGH) + stream(FRAGMENTS))
    assert events(reader) == expected() * 2


def test_message_fields_and_falsy_payloads_survive() -> None:
    writer, reader = DistWriter(FRAGMENTS), DistReader(FRAGMENTS)
    for payload in [0, [], False, b"", Atom("")]:
        reader.receive_data(b"".join(writer.encode(c.Send(B), payload)))
        (event,) = events(reader)
        assert isinstance(event, DistMessage)
        assert event.payload == payload and type(event.payload) is type(payload)


def test_buffer_is_compacted_while_streaming() -> None:
    writer, reader = DistWriter(FRAGMENTS), DistReader(FRAGMENTS)
    one = b"".join(writer.encode(c.Send(B), b"x" * 1000))
    for _ in range(500):  # 500 KB through one reader, each read ending mid-frame
        reader.receive_data(one[:10])
        events(reader)
        reader.receive_data(one[10:])
        assert len(events(reader)) == 1
    assert len(reader._buf) < 2 * len(one) + (1 << 17)


def test_one_call_reads_back_with_one_pid_and_one_reference() -> None:
    caller, ref = Pid(Atom("caller@h"), 90, 0, 5), Reference(Atom("caller@h"), 5, (4, 5, 6))
    tag = ImproperList((Atom("alias"),), ref)
    writer, reader = DistWriter(FRAGMENTS), DistReader(FRAGMENTS)
    for control, payload in [
        (c.MonitorP(caller, NAME, ref), NO_PAYLOAD),
        (c.RegSend(caller, NAME), (Atom("$gen_call"), (caller, tag), Atom("ping"))),
        (c.DemonitorP(caller, NAME, ref), NO_PAYLOAD),
    ]:
        reader.receive_data(b"".join(writer.encode(control, payload)))
    monitor, call, demonitor = events(reader)
    assert isinstance(monitor, DistMessage) and isinstance(call, DistMessage) and isinstance(demonitor, DistMessage)
    assert monitor == DistMessage(c.MonitorP(caller, NAME, ref), NO_PAYLOAD)
    assert demonitor == DistMessage(c.DemonitorP(caller, NAME, ref), NO_PAYLOAD)
    assert call.payload == (Atom("$gen_call"), (caller, tag), Atom("ping"))
    first, middle, last = monitor.control, call.control, demonitor.control
    assert isinstance(first, c.MonitorP) and isinstance(middle, c.RegSend) and isinstance(last, c.DemonitorP)
    pids = [first.from_pid, middle.from_pid, call.payload[1][0], last.from_pid]
    refs = [first.ref, call.payload[1][1].tail, last.ref]
    assert all(p is pids[0] for p in pids) and all(r is refs[0] for r in refs)


def test_messages_read_back_are_ordinary_frozen_dataclasses() -> None:
    reader = DistReader(FRAGMENTS)
    reader.receive_data(b"".join(DistWriter(FRAGMENTS).encode(c.Send(B), 1)))
    (event,) = events(reader)
    assert isinstance(event, DistMessage)
    made = DistMessage(c.Send(B), 1)
    assert (event, hash(event), repr(event)) == (made, hash(made), repr(made))
    with pytest.raises(AttributeError):
        event.payload = 2  # type: ignore[misc]


@pytest.mark.parametrize("flags", [FRAGMENTS, PASS_THROUGH])
def test_frames_over_the_copy_size_are_read_in_place(flags: DFlag) -> None:
    payload = (A, REF, b"x" * 100_000)
    writer, reader = DistWriter(flags, fragment_size=1 << 20), DistReader(flags)
    (data,) = writer.encode(c.SendSender(A, B), payload)
    assert len(data) > 1 << 16
    assert feed_all(reader, data + data, chunk=30_000) == [DistMessage(c.SendSender(A, B), payload)] * 2
    bad = bytearray(data)
    bad[-100_001] = 0xFF  # inside the payload: the binary's length runs past the frame
    (event,) = feed_all(reader, bytes(bad))
    assert isinstance(event, BadPayload) and event.control == c.SendSender(A, B)


# -- fragments -----------------------------------------------------------------------------


def fragment_header(data: bytes) -> tuple[int, int, int]:
    """(kind, seq, frag_id) of one fragment frame."""
    assert data[4] == 131
    seq, frag = struct.unpack_from(">QQ", data, 6)
    return data[5], seq, frag


def test_big_message_is_fragmented_with_ids_counting_down() -> None:
    writer = DistWriter(FRAGMENTS, fragment_size=100)
    payload = bytes(range(256)) * 4
    frames = writer.encode(c.Send(B), payload)
    assert len(frames) > 2
    heads = [fragment_header(f) for f in frames]
    seq = heads[0][1]
    assert heads == [(69, seq, len(frames))] + [(70, seq, n) for n in range(len(frames) - 1, 0, -1)]
    assert frames[0][22] == 0  # no atom cache refs in the first fragment
    assert all(len(f) - 4 <= 100 + 23 for f in frames)
    again = writer.encode(c.Send(B), payload)
    assert fragment_header(again[0])[1] != seq  # a fresh sequence id per message
    reader = DistReader(FRAGMENTS)
    assert feed_all(reader, b"".join(frames)) == [DistMessage(c.Send(B), payload)]
    assert reader.pending_fragments == 0


def test_small_message_is_one_frame_even_with_fragments() -> None:
    frames = DistWriter(FRAGMENTS, fragment_size=1000).encode(c.Send(B), b"x" * 10)
    assert len(frames) == 1 and frames[0][4:6] == b"\x83D"


def test_pass_through_mode_never_fragments() -> None:
    frames = DistWriter(PASS_THROUGH, fragment_size=10).encode(c.Send(B), b"x" * 1000)
    assert len(frames) == 1 and frames[0][4:5] == b"p"


def interleaved() -> tuple[bytes, list[object]]:
    writer = DistWriter(FRAGMENTS, fragment_size=64)
    big1 = writer.encode(c.Send(B), b"1" * 500)
    big2 = writer.encode(c.RegSend(A, NAME), [b"2" * 300, 2])
    small = writer.encode(c.Link(A, B))
    assert len(big1) > 3 and len(big2) > 3 and len(small) == 1
    order: list[bytes] = []
    for i in range(max(len(big1), len(big2))):
        order += big1[i : i + 1] + big2[i : i + 1]
        if i == 1:
            order += [*small, TICK_FRAME]
    want: list[object] = [DistMessage(c.Link(A, B), NO_PAYLOAD), TICK]
    done = sorted([(len(big1), 0), (len(big2), 1)])
    finals = {0: DistMessage(c.Send(B), b"1" * 500), 1: DistMessage(c.RegSend(A, NAME), [b"2" * 300, 2])}
    want += [finals[which] for _, which in done]
    return b"".join(order), want


@pytest.mark.parametrize("chunk", [None, 1, 5, 63, 64, 65, 1000])
def test_interleaved_fragmented_messages(chunk: int | None) -> None:
    data, want = interleaved()
    reader = DistReader(FRAGMENTS)
    assert feed_all(reader, data, chunk) == want
    assert reader.pending_fragments == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=400))
def test_interleaved_fragments_any_chunking(cuts: list[int]) -> None:
    data, want = interleaved()
    reader = DistReader(FRAGMENTS)
    got: list[object] = []
    pos = 0
    for cut in cuts:
        reader.receive_data(data[pos : pos + cut])
        pos += cut
        got += events(reader)
    reader.receive_data(data[pos:])
    got += events(reader)
    assert got == want


def test_single_first_fragment_is_a_whole_message() -> None:
    body = encode(c.Send(B).to_term())[1:] + encode(5)[1:]
    data = frame(b"\x83E" + struct.pack(">QQ", 9, 1) + b"\x00" + body)
    assert feed_all(DistReader(FRAGMENTS), data) == [DistMessage(c.Send(B), 5)]


def test_many_small_fragments_reassemble() -> None:
    payload = b"z" * 100_000
    frames = DistWriter(FRAGMENTS, fragment_size=50).encode(c.Send(B), payload)
    assert len(frames) > 1000
    assert feed_all(DistReader(FRAGMENTS), b"".join(frames)) == [DistMessage(c.Send(B), payload)]


# -- protocol errors (the connection goes) -------------------------------------------------


def frag_frames() -> list[bytes]:
    return DistWriter(FRAGMENTS, fragment_size=32).encode(c.Send(B), b"q" * 200)


def test_unknown_sequence_is_an_error() -> None:
    frames = frag_frames()
    with pytest.raises(RemoteProtocolError, match="unknown sequence"):
        feed_all(DistReader(FRAGMENTS), frames[1])


def test_out_of_order_fragment_is_an_error() -> None:
    frames = frag_frames()
    with pytest.raises(RemoteProtocolError, match="expected"):
        feed_all(DistReader(FRAGMENTS), frames[0] + frames[2])


def test_sequence_started_twice_is_an_error() -> None:
    frames = frag_frames()
    with pytest.raises(RemoteProtocolError, match="started twice"):
        feed_all(DistReader(FRAGMENTS), frames[0] + frames[0])


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\x83D\x01\x00", "atom cache"),
        (b"\x83E" + struct.pack(">QQ", 1, 2) + b"\x02", "atom cache"),
        (b"\x83E" + struct.pack(">QQ", 1, 0) + b"\x00", "fragment id 0"),
        (b"\x83E" + b"\x00" * 10, "truncated"),
        (b"\x83F" + b"\x00" * 10, "truncated"),
        (b"\x83Z\x00", "unknown distribution header"),
        (b"\x83", "bad distribution header"),
        (b"\x00\x83h", "bad distribution header"),
        (b"p", "version byte"),
        (b"ph\x01", "version byte"),
        (b"\x83D\x00\xff", "undecodable control"),
        (b"\x83D\x00" + encode((99, A, B))[1:], "unknown control operation"),
        (b"\x83D\x00" + encode((1, A))[1:], "LINK control tuple"),
        (b"\x83D\x00" + LINK_TERM + b"a\x01", "after the control term"),
        (b"p\x83" + LINK_TERM + b"\x83a\x01", "after the control term"),
        (b"\x83D\x00" + encode(c.Send(B).to_term())[1:], "payload missing"),
        (b"p" + encode(c.Send(B).to_term()), "payload missing"),
        (b"p" + encode(c.Send(B).to_term()) + b"a\x01", "payload missing"),
    ],
)
def test_bad_frames_are_remote_protocol_errors(body: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        feed_all(DistReader(FRAGMENTS), frame(body))


def test_frame_over_max_size_is_refused_before_buffering() -> None:
    reader = DistReader(FRAGMENTS, max_message_size=1000)
    reader.receive_data(struct.pack(">I", 1001))
    with pytest.raises(RemoteProtocolError, match="max_message_size"):
        reader.next_event()


def test_reassembly_over_max_size_is_refused() -> None:
    frames = DistWriter(FRAGMENTS, fragment_size=100).encode(c.Send(B), b"x" * 1000)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        feed_all(DistReader(FRAGMENTS, max_message_size=500), b"".join(frames))


# -- a bad payload costs one message -------------------------------------------------------


def test_undecodable_payload_drops_only_that_message() -> None:
    good = DistWriter(FRAGMENTS).encode(c.Send(B), 1)[0]
    bad = frame(b"\x83D\x00" + encode(c.RegSend(A, NAME).to_term())[1:] + b"y\x00")  # LOCAL_EXT
    reader = DistReader(FRAGMENTS)
    got = feed_all(reader, bad + good)
    assert len(got) == 2
    assert isinstance(got[0], BadPayload) and got[0].control == c.RegSend(A, NAME)
    assert isinstance(got[0].error, CodecError)
    assert got[1] == DistMessage(c.Send(B), 1)
    assert feed_all(reader, good) == [DistMessage(c.Send(B), 1)]  # the buffer still grows


def test_bytes_after_the_payload_are_a_bad_payload() -> None:
    data = frame(b"p" + encode(c.Send(B).to_term()) + encode(1) + b"\x00")
    (event,) = feed_all(DistReader(PASS_THROUGH), data)
    assert isinstance(event, BadPayload) and "after the payload" in str(event.error)


# -- the writer refuses mistakes -----------------------------------------------------------


def test_writer_checks_payload_presence() -> None:
    writer = DistWriter(FRAGMENTS)
    with pytest.raises(LocalProtocolError):
        writer.encode(c.Send(B))
    with pytest.raises(LocalProtocolError):
        writer.encode(c.Link(A, B), 1)
    with pytest.raises(ValueError):
        DistWriter(FRAGMENTS, fragment_size=0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(max_size=40), max_size=5),
    st.sampled_from([b"\x83D\x00", b"p\x83", b"\x83E", b"\x83F"]),
)
def test_garbage_frames_raise_only_remote_protocol_errors(bodies: list[bytes], head: bytes) -> None:
    reader = DistReader(FRAGMENTS)
    reader.receive_data(b"".join(frame(head + body) for body in bodies))
    try:
        for event in events(reader):
            assert isinstance(event, DistMessage | BadPayload | Tick)
    except RemoteProtocolError:
        pass
