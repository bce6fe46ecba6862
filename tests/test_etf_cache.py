"""The pid and reference caches of the codec: shared objects, bounded tables, no bad input let through."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynode.errors import CodecError
from pynode.etf import Atom, ImproperList, Pid, Reference, decode, decode_at, encode
from pynode.etf.decode import _PIDS, _REFS, PID_CACHE_LIMIT, REF_CACHE_LIMIT
from pynode.etf.encodings import ENCODED, ENCODED_CACHE_LIMIT

NODE = Atom("caller@127.0.0.1")
u32 = st.integers(0, 2**32 - 1)


@pytest.fixture(autouse=True)
def empty_caches() -> Iterator[None]:
    for table in (_PIDS, _REFS, ENCODED):
        table.clear()
    yield
    for table in (_PIDS, _REFS, ENCODED):
        table.clear()


def pid_bytes(node: bytes, pid_id: int, serial: int = 0, creation: int = 7) -> bytes:
    """NEW_PID_EXT with a SMALL_ATOM_UTF8_EXT node, without the version byte."""
    return b"X\x77" + bytes((len(node),)) + node + struct.pack(">III", pid_id, serial, creation)


def ref_bytes(node: bytes, creation: int, *ids: int) -> bytes:
    """NEWER_REFERENCE_EXT with a SMALL_ATOM_UTF8_EXT node, without the version byte."""
    head = b"Z" + struct.pack(">H", len(ids)) + b"\x77" + bytes((len(node),)) + node
    return head + struct.pack(f">{len(ids) + 1}I", creation, *ids)


# -- decoding --------------------------------------------------------------------------------


def test_the_same_pid_bytes_decode_to_the_same_object() -> None:
    data = pid_bytes(b"caller@127.0.0.1", 91)
    first = decode(b"\x83" + data)
    again, end = decode_at(memoryview(b"\x83h\x01" + data), 3)  # inside a tuple, from a view
    assert first is again
    assert end == 3 + len(data)
    assert first == Pid(NODE, 91, 0, 7)
    assert type(first.node) is Atom


def test_one_call_shares_one_pid_and_one_reference() -> None:
    pid = Pid(NODE, 91, 0, 7)
    ref = Reference(NODE, 7, (1, 2, 3))
    monitor, call = (19, pid, Atom("echo"), ref), (Atom("$gen_call"), (pid, ImproperList((Atom("alias"),), ref)), 1)
    got_monitor = decode(encode(monitor))
    got_call = decode(encode(call))
    assert got_monitor == monitor and got_call == call
    assert got_monitor[1] is got_call[1][0]
    assert got_monitor[3] is got_call[1][1].tail


def test_distinct_references_stay_distinct() -> None:
    base = Reference(NODE, 7, (1, 2, 3))
    variants = [
        base,
        Reference(NODE, 7, (1, 2, 4)),
        Reference(NODE, 8, (1, 2, 3)),
        Reference(Atom("other@127.0.0.1"), 7, (1, 2, 3)),
        Reference(NODE, 7, (1, 2, 3, 0)),
        Reference(NODE, 7, (1,)),
    ]
    decoded = [decode(encode(ref)) for ref in variants]
    assert decoded == variants
    assert len({id(ref) for ref in decoded}) == len(variants)
    assert [decode(encode(ref)) for ref in variants] == variants  # second time, from the cache
    assert all(decode(encode(ref)) is ref for ref in decoded)


def test_distinct_pids_stay_distinct() -> None:
    variants = [Pid(NODE, 1, 0, 7), Pid(NODE, 2, 0, 7), Pid(NODE, 1, 1, 7), Pid(NODE, 1, 0, 8)]
    decoded = [decode(encode(pid)) for pid in variants]
    assert [decode(encode(pid)) for pid in variants] == decoded == variants
    assert len({id(pid) for pid in decoded}) == len(variants)


def test_pid_table_is_bounded() -> None:
    for n in range(PID_CACHE_LIMIT + 50):
        assert decode(b"\x83" + pid_bytes(b"a@h", n)) == Pid(Atom("a@h"), n, 0, 7)
        assert len(_PIDS) <= PID_CACHE_LIMIT
    assert 0 < len(_PIDS) <= PID_CACHE_LIMIT
    assert len(ENCODED) <= ENCODED_CACHE_LIMIT


def test_reference_table_is_bounded() -> None:
    for n in range(REF_CACHE_LIMIT + 50):
        assert decode(b"\x83" + ref_bytes(b"a@h", 7, n, 2, 3)) == Reference(Atom("a@h"), 7, (n, 2, 3))
        assert len(_REFS) <= REF_CACHE_LIMIT
    assert 0 < len(_REFS) <= REF_CACHE_LIMIT
    assert len(ENCODED) <= ENCODED_CACHE_LIMIT


def test_a_cached_pid_does_not_make_its_truncations_valid() -> None:
    data = pid_bytes(b"caller@127.0.0.1", 91)
    decode(b"\x83" + data)
    for cut in range(1, len(data)):
        with pytest.raises(CodecError, match="truncated"):
            decode(b"\x83" + data[:cut])
        with pytest.raises(CodecError):
            decode_at(memoryview(data[:cut]), 0)
    assert list(_PIDS) == [data]


def test_a_cached_reference_does_not_make_its_truncations_valid() -> None:
    data = ref_bytes(b"caller@127.0.0.1", 7, 1, 2, 3)
    decode(b"\x83" + data)
    for cut in range(1, len(data)):
        with pytest.raises(CodecError):
            decode(b"\x83" + data[:cut])
    assert list(_REFS) == [data]


def test_bad_pids_and_references_are_refused_every_time_and_never_cached() -> None:
    bad = [
        pid_bytes(b"\xff\xfe@h", 1),  # node not UTF-8
        ref_bytes(b"\xff\xfe@h", 7, 1, 2, 3),
        ref_bytes(b"a@h", 7, 1, 2, 3, 4, 5, 6),  # six words
        b"Z\x00\x00\x77\x03a@h" + struct.pack(">I", 7),  # no words
        b"Z\x01\x03\x77\x03a@h" + struct.pack(">4I", 7, 1, 2, 3),  # 259 words declared
    ]
    for data in bad:
        for _ in range(2):
            with pytest.raises(CodecError):
                decode(b"\x83" + data)
    assert not _PIDS and not _REFS and not ENCODED


def test_node_named_true_is_still_an_atom() -> None:
    pid = decode(b"\x83" + pid_bytes(b"true", 1))
    again = decode(b"\x83" + pid_bytes(b"true", 1))
    assert pid is again
    assert type(pid.node) is Atom and pid.node == "true"


def test_slot_built_values_are_ordinary_frozen_dataclasses() -> None:
    pid = decode(b"\x83" + pid_bytes(b"caller@127.0.0.1", 91))
    ref = decode(b"\x83" + ref_bytes(b"caller@127.0.0.1", 7, 1, 2, 3))
    made_pid, made_ref = Pid(NODE, 91, 0, 7), Reference(NODE, 7, (1, 2, 3))
    assert (pid, hash(pid), repr(pid)) == (made_pid, hash(made_pid), repr(made_pid))
    assert (ref, hash(ref), repr(ref)) == (made_ref, hash(made_ref), repr(made_ref))
    assert isinstance(pid, Pid) and isinstance(ref, Reference)
    assert dataclasses.replace(pid) == pid and dataclasses.replace(ref) == ref
    with pytest.raises(dataclasses.FrozenInstanceError):
        pid.id = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.ids = ()


# -- encoding --------------------------------------------------------------------------------


def test_decoded_pids_and_references_encode_back_to_their_bytes() -> None:
    for data in (pid_bytes(b"caller@127.0.0.1", 91), ref_bytes(b"caller@127.0.0.1", 7, 1, 2, 3, 4, 5)):
        term = decode(b"\x83" + data)
        assert ENCODED[id(term)] == (term, data)
        assert encode(term) == b"\x83" + data
        assert isinstance(term, (Pid, Reference))
        fresh = dataclasses.replace(term)  # equal, not the cached object
        assert id(fresh) not in ENCODED
        assert encode(fresh) == b"\x83" + data


def test_encoding_is_cached_per_object() -> None:
    pid = Pid(NODE, 42, 0, 7)
    first = encode((pid, pid))
    assert ENCODED[id(pid)][0] is pid
    assert encode((pid, pid)) == first == b"\x83h\x02" + pid_bytes(b"caller@127.0.0.1", 42) * 2


def test_an_equal_but_malformed_pid_is_still_refused() -> None:
    good = Pid(NODE, 1, 0, 7)
    encode(good)
    for bad in (Pid(NODE, True, 0, 7), Pid(NODE, 1.0, 0, 7)):  # type: ignore[arg-type]
        assert bad == good
        with pytest.raises(CodecError, match="Pid field"):
            encode(bad)
    bad_ref = Reference(NODE, 7, (1.0,))  # type: ignore[arg-type]
    encode(Reference(NODE, 7, (1,)))
    with pytest.raises(CodecError, match="Reference word"):
        encode(bad_ref)


def test_bad_values_are_not_cached_and_fail_every_time() -> None:
    for bad in (Pid(NODE, -1, 0, 7), Reference(NODE, 7, ()), Reference(NODE, 2**32, (1,))):
        for _ in range(2):
            with pytest.raises(CodecError):
                encode(bad)
    assert not ENCODED


def test_encoded_table_is_bounded() -> None:
    for n in range(ENCODED_CACHE_LIMIT + 50):
        encode(Pid(NODE, n, 0, 7))
        assert len(ENCODED) <= ENCODED_CACHE_LIMIT
    assert len(ENCODED) > 0


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(u32, u32, u32, st.lists(u32, min_size=1, max_size=5))
def test_cached_and_fresh_encodings_agree(pid_id: int, serial: int, creation: int, ids: list[int]) -> None:
    for table in (_PIDS, _REFS, ENCODED):
        table.clear()
    for term in (Pid(NODE, pid_id, serial, creation), Reference(NODE, creation, tuple(ids))):
        data = encode(term)
        decoded = decode(data)
        assert decoded == term
        assert decode(data) is decoded
        assert encode(decoded) == data == encode(term) == encode(dataclasses.replace(term))
