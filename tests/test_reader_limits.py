"""The reader's limits on bytes alone: inflated sizes, joined fragments, fragment memory per connection."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import pytest

from pynode.errors import CodecError, RemoteProtocolError
from pynode.etf.decode import decode, decode_at
from pynode.etf.encode import encode
from pynode.etf.types import Atom, Pid
from pynode.limits import DEFAULT_LIMITS, Limits, MiB
from pynode.wire import control as c
from pynode.wire.flags import DEFAULT_FLAGS
from pynode.wire.framing import NEED_DATA, BadPayload, DistMessage, DistReader, DistWriter

NODE = Atom("a@h")
A = Pid(NODE, 1, 0, 2)
B = Pid(NODE, 3, 0, 2)
SEND = c.SendSender(A, B)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def compressed(inner: bytes, declared: int | None = None) -> bytes:
    """``80, Size:32, zlib`` of ``inner`` (a term without its version byte); ``declared`` may lie."""
    size = len(inner) if declared is None else declared
    return b"P" + struct.pack(">I", size) + zlib.compress(inner, 9)


def binary_term(size: int) -> bytes:
    return b"m" + struct.pack(">I", size) + bytes(size)


def header_message(control: c.ControlMessage, payload: bytes) -> bytes:
    """``131, 68, 0, Control, Payload`` as one frame; ``payload`` is raw term bytes."""
    return frame(b"\x83\x44\x00" + encode(control.to_term())[1:] + payload)


def drain(reader: DistReader) -> list[object]:
    out: list[object] = []
    for _ in range(10_000):
        event = reader.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
    raise AssertionError("reader never asked for data")


def drain_measured(reader: DistReader) -> tuple[list[object], int]:
    """The events, and the peak of memory allocated while reading them (tracemalloc sees zlib's output)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = drain(reader)
        return out, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


# -- compressed terms --------------------------------------------------------------------------


def test_limits_default_to_the_documented_values() -> None:
    reader = DistReader(DEFAULT_FLAGS)
    assert reader.max_message_size == DEFAULT_LIMITS.max_message_size == 256 * MiB
    assert reader.max_fragment_bytes == DEFAULT_LIMITS.max_fragment_bytes
    assert reader.max_fragment_sequences == DEFAULT_LIMITS.max_fragment_sequences == 1024
    with pytest.raises(ValueError):
        DistReader(DEFAULT_FLAGS, max_fragment_sequences=0)
    assert Limits(max_message_size=5).max_fragment_bytes == 256 * MiB


def test_a_compressed_payload_declared_over_the_limit_is_dropped_without_inflating() -> None:
    bomb = compressed(binary_term(64 * MiB))  # 64 MiB of zeros: about 64 KiB compressed
    reader = DistReader(DEFAULT_FLAGS, max_message_size=1 * MiB)
    reader.receive_data(header_message(SEND, bomb) + header_message(SEND, encode(Atom("next"))[1:]))
    (bad, good), peak = drain_measured(reader)
    assert isinstance(bad, BadPayload) and "declares" in str(bad.error), bad
    assert isinstance(good, DistMessage) and good.payload == Atom("next")
    assert peak < 1 * MiB, peak


def test_a_compressed_payload_that_lies_about_its_size_stops_inflating_at_the_claim() -> None:
    # Declares 512 KiB (under the 1 MiB limit) but holds 64 MiB: inflation stops at the claim.
    bomb = compressed(binary_term(64 * MiB), declared=512 * 1024)
    reader = DistReader(DEFAULT_FLAGS, max_message_size=1 * MiB)
    reader.receive_data(header_message(SEND, bomb))
    (bad,), peak = drain_measured(reader)
    assert isinstance(bad, BadPayload) and "does not inflate to its declared" in str(bad.error), bad
    assert peak < 2 * MiB, peak  # the claim, once (and the compressed frame is already held)


def test_a_compressed_payload_that_inflates_short_of_its_claim_is_refused() -> None:
    term = compressed(encode([1, 2, 3])[1:], declared=100)
    with pytest.raises(CodecError, match="does not inflate to its declared 100 bytes"):
        decode(b"\x83" + term)


def test_a_compressed_payload_within_the_limit_is_accepted() -> None:
    inner = binary_term(512 * 1024)
    reader = DistReader(DEFAULT_FLAGS, max_message_size=1 * MiB)
    reader.receive_data(header_message(SEND, compressed(inner)))
    (message,) = drain(reader)
    assert isinstance(message, DistMessage) and message.payload == bytes(512 * 1024)


def test_a_compressed_control_term_over_the_limit_costs_the_connection() -> None:
    control = compressed(encode((22, A, B, Atom("x" * 200)))[1:] + b"", declared=2 * MiB)
    reader = DistReader(DEFAULT_FLAGS, max_message_size=1 * MiB)
    reader.receive_data(frame(b"\x83\x44\x00" + control))
    with pytest.raises(RemoteProtocolError, match="undecodable control term"):
        drain(reader)


def test_decode_at_checks_the_declared_size_before_inflating() -> None:
    bomb = compressed(binary_term(64 * MiB))
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="declares"):
            decode_at(bomb, 0, max_size=MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MiB


# -- fragments -----------------------------------------------------------------------------------


def first_fragment(seq: int, frag: int, chunk: bytes) -> bytes:
    return frame(b"\x83\x45" + struct.pack(">QQ", seq, frag) + b"\x00" + chunk)


def next_fragment(seq: int, frag: int, chunk: bytes) -> bytes:
    return frame(b"\x83\x46" + struct.pack(">QQ", seq, frag) + chunk)


def test_fragment_sequences_per_connection_are_capped() -> None:
    reader = DistReader(DEFAULT_FLAGS, max_fragment_sequences=10)
    reader.receive_data(b"".join(first_fragment(seq, 2, b"x" * 100) for seq in range(10)))
    assert drain(reader) == [] and reader.pending_fragments == 10
    reader.receive_data(first_fragment(99, 2, b"x"))
    with pytest.raises(RemoteProtocolError, match="more than 10 unfinished fragment sequences"):
        drain(reader)


def test_fragment_memory_per_connection_is_capped_across_sequences() -> None:
    reader = DistReader(DEFAULT_FLAGS, max_fragment_bytes=10_000, max_message_size=8_000)
    reader.receive_data(first_fragment(1, 3, b"x" * 4000) + first_fragment(2, 3, b"y" * 4000))
    assert drain(reader) == [] and reader.fragment_bytes == 8000
    reader.receive_data(next_fragment(1, 2, b"x" * 2001))
    with pytest.raises(RemoteProtocolError, match="over 10000 bytes"):
        drain(reader)


def test_finished_sequences_give_their_bytes_back() -> None:
    writer = DistWriter(DEFAULT_FLAGS, fragment_size=1000)
    frames = writer.encode(SEND, bytes(5000))
    reader = DistReader(DEFAULT_FLAGS, max_fragment_bytes=6000)
    for _ in range(3):  # each message alone fits; three would not, held at once
        reader.receive_data(b"".join(frames[:-1]))
        assert drain(reader) == [] and reader.fragment_bytes > 4000
        reader.receive_data(frames[-1])
        (message,) = drain(reader)
        assert isinstance(message, DistMessage) and message.payload == bytes(5000)
        assert reader.fragment_bytes == 0 and reader.pending_fragments == 0


def test_close_releases_unfinished_fragments_and_buffered_bytes() -> None:
    reader = DistReader(DEFAULT_FLAGS)
    reader.receive_data(b"".join(first_fragment(seq, 5, b"z" * 1000) for seq in range(1000)))
    reader.receive_data(b"\x00\x01\x00\x00partial")
    assert drain(reader) == []
    assert reader.pending_fragments == 1000 and reader.fragment_bytes == 1_000_000
    reader.close()
    assert reader.pending_fragments == 0 and reader.fragment_bytes == 0


def test_a_joined_message_over_the_limit_costs_the_connection() -> None:
    reader = DistReader(DEFAULT_FLAGS, max_message_size=3000)
    reader.receive_data(first_fragment(7, 3, b"a" * 1500) + next_fragment(7, 2, b"b" * 1501))
    with pytest.raises(RemoteProtocolError, match="exceeds 3000 bytes"):
        drain(reader)
