"""The version 6 handshake on bytes alone: both roles against each other and every failure."""

import hashlib
import struct
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pynode.errors import HandshakeError, LocalProtocolError
from pynode.wire.flags import DEFAULT_FLAGS, MANDATORY_OTP25, DFlag
from pynode.wire.handshake import (
    NEED_DATA,
    AliveQuery,
    HandshakeAcceptor,
    HandshakeComplete,
    HandshakeInitiator,
    PeerNamed,
    gen_digest,
)

COOKIE = "SECRET"
A_NAME = "py@127.0.0.1"
B_NAME = "b@127.0.0.1"
CH_A = 0xDEADBEEF  # the initiator's challenge
CH_B = 123456  # the acceptor's challenge
B_FLAGS = DFlag(0x1FFFFFFFF) & ~DFlag.NAME_ME  # a published OTP-like peer, with atom cache and SPAWN

Status = Literal["ok", "ok_simultaneous", "nok", "alive", "not_allowed"]


def initiator(**kw: object) -> HandshakeInitiator:
    args: dict[str, object] = {
        "our_name": A_NAME,
        "cookie": COOKIE,
        "flags": DEFAULT_FLAGS,
        "creation": 0x11223344,
        "peer_name": B_NAME,
        "challenge": CH_A,
    }
    args.update(kw)
    return HandshakeInitiator(**args)  # type: ignore[arg-type]


def acceptor(**kw: object) -> HandshakeAcceptor:
    args: dict[str, object] = {
        "our_name": B_NAME,
        "cookie": COOKIE,
        "flags": B_FLAGS,
        "creation": 0x55667788,
        "challenge": CH_B,
    }
    args.update(kw)
    return HandshakeAcceptor(**args)  # type: ignore[arg-type]


def packet(payload: bytes, length_bytes: int = 2) -> bytes:
    return (len(payload).to_bytes(length_bytes, "big")) + payload


def feed(side: HandshakeInitiator | HandshakeAcceptor, data: bytes, *, bytewise: bool) -> list[object]:
    """Feed data (whole or one byte at a time), collecting events until NEED_DATA."""
    events: list[object] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        side.receive_data(chunk)
        for _ in range(10):
            event = side.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
    return events


def run(
    a: HandshakeInitiator,
    b: HandshakeAcceptor,
    *,
    status: Status = "ok",
    alive_answer: bool = True,
    bytewise: bool = False,
) -> tuple[list[object], list[object]]:
    """Shuttle bytes between the two roles until both stop producing output."""
    a_events: list[object] = []
    b_events: list[object] = []
    for _ in range(20):
        out_a = a.data_to_send()
        if out_a:
            for ev in feed(b, out_a, bytewise=bytewise):
                b_events.append(ev)
                if isinstance(ev, PeerNamed):
                    b.send_status(status)
        out_b = b.data_to_send()
        if out_b:
            for ev in feed(a, out_b, bytewise=bytewise):
                a_events.append(ev)
                if isinstance(ev, AliveQuery):
                    a.answer_alive(alive_answer)
        if not out_a and not out_b:
            break
    return a_events, b_events


# -- success -----------------------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize("status", ["ok", "ok_simultaneous"])
def test_both_roles_complete(bytewise: bool, status: Status) -> None:
    a, b = initiator(), acceptor()
    a_events, b_events = run(a, b, status=status, bytewise=bytewise)
    assert b_events == [
        PeerNamed(A_NAME, DEFAULT_FLAGS, 0x11223344),
        HandshakeComplete(A_NAME, DEFAULT_FLAGS, 0x11223344, DEFAULT_FLAGS & B_FLAGS),
    ]
    assert a_events == [HandshakeComplete(B_NAME, B_FLAGS, 0x55667788, DEFAULT_FLAGS & B_FLAGS)]
    assert a.done and b.done
    negotiated = a_events[0].flags  # type: ignore[attr-defined]
    assert not negotiated & DFlag.PUBLISHED  # hidden: PUBLISHED is not in both sets
    assert not negotiated & DFlag.DIST_HDR_ATOM_CACHE
    assert b.peer_name == A_NAME


def test_random_challenges_when_none_given() -> None:
    a, b = initiator(challenge=None), acceptor(challenge=None)
    a_events, _ = run(a, b)
    assert isinstance(a_events[-1], HandshakeComplete)
    assert 0 <= a.challenge < 1 << 32 and 0 <= b.challenge < 1 << 32


def test_four_byte_lengths_for_tls() -> None:
    a, b = initiator(length_bytes=4), acceptor(length_bytes=4)
    first = a.data_to_send()
    assert first[:4] == (len(first) - 4).to_bytes(4, "big")
    assert feed(b, first, bytewise=False) == [PeerNamed(A_NAME, DEFAULT_FLAGS, 0x11223344)]
    b.send_status("ok")
    a_events, b_events = run(a, b)
    assert isinstance(b_events[-1], HandshakeComplete)
    assert isinstance(a_events[-1], HandshakeComplete)


def test_bad_length_bytes() -> None:
    with pytest.raises(ValueError):
        initiator(length_bytes=3)


# -- golden bytes ------------------------------------------------------------------------


def test_digest_rule() -> None:
    assert gen_digest(CH_B, COOKIE) == hashlib.md5(b"SECRET123456").digest()
    assert gen_digest(0xFFFFFFFF, "c") == hashlib.md5(b"c4294967295").digest()
    assert gen_digest(0, "") == hashlib.md5(b"0").digest()


def test_golden_bytes_of_every_packet() -> None:
    a, b = initiator(), acceptor()
    name_a, name_b = A_NAME.encode(), B_NAME.encode()
    send_name = a.data_to_send()
    assert send_name == packet(b"N" + struct.pack(">QIH", DEFAULT_FLAGS, 0x11223344, len(name_a)) + name_a)
    b.receive_data(send_name)
    assert b.next_event() == PeerNamed(A_NAME, DEFAULT_FLAGS, 0x11223344)
    assert b.next_event() is NEED_DATA  # waits for the owner's status
    b.send_status("ok")
    challenge = packet(b"N" + struct.pack(">QIIH", B_FLAGS, CH_B, 0x55667788, len(name_b)) + name_b)
    assert b.data_to_send() == packet(b"sok") + challenge
    a.receive_data(packet(b"sok") + challenge)
    assert a.next_event() is NEED_DATA
    reply = a.data_to_send()
    digest_b = hashlib.md5(COOKIE.encode() + str(CH_B).encode()).digest()
    assert reply == packet(b"r" + CH_A.to_bytes(4, "big") + digest_b)
    b.receive_data(reply)
    assert isinstance(b.next_event(), HandshakeComplete)
    ack = b.data_to_send()
    assert ack == packet(b"a" + hashlib.md5(COOKIE.encode() + str(CH_A).encode()).digest())
    a.receive_data(ack)
    assert isinstance(a.next_event(), HandshakeComplete)
    assert a.data_to_send() == b""


def test_leftover_bytes_after_the_ack_belong_to_the_connection() -> None:
    a, b = initiator(), acceptor()
    b.receive_data(a.data_to_send())
    b.next_event()
    b.send_status("ok")
    a.receive_data(b.data_to_send())
    a.next_event()
    b.receive_data(a.data_to_send())
    b.next_event()
    tick_and_more = b"\x00\x00\x00\x00\x00\x00\x00\x01p"
    a.receive_data(b.data_to_send() + tick_and_more)
    assert a.leftover() == b""  # not done yet: nothing is leftover
    assert isinstance(a.next_event(), HandshakeComplete)
    assert a.leftover() == tick_and_more
    assert a.next_event() is NEED_DATA


# -- statuses ----------------------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
def test_alive_answered_true_goes_on(bytewise: bool) -> None:
    a, b = initiator(), acceptor()
    a_events, b_events = run(a, b, status="alive", alive_answer=True, bytewise=bytewise)
    assert a_events[0] == AliveQuery()
    assert isinstance(a_events[-1], HandshakeComplete)
    assert isinstance(b_events[-1], HandshakeComplete)


def test_alive_answered_false_ends_both_sides() -> None:
    a, b = initiator(), acceptor()
    b.receive_data(a.data_to_send())
    b.next_event()
    b.send_status("alive")
    a.receive_data(b.data_to_send())
    assert a.next_event() == AliveQuery()
    assert a.next_event() is NEED_DATA  # until the owner answers
    a.answer_alive(False)
    sfalse = a.data_to_send()
    assert sfalse == packet(b"sfalse")
    with pytest.raises(HandshakeError) as exc:
        a.next_event()
    assert exc.value.step == "recv_status"
    b.receive_data(sfalse)
    with pytest.raises(HandshakeError) as exc:
        b.next_event()
    assert exc.value.step == "recv_status"


def test_acceptor_rejects_a_garbled_alive_answer() -> None:
    b = acceptor()
    b.receive_data(initiator().data_to_send())
    b.next_event()
    b.send_status("alive")
    b.receive_data(packet(b"smaybe"))
    with pytest.raises(HandshakeError, match="strue or sfalse"):
        b.next_event()


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (b"snok", "nok"),
        (b"snot_allowed", "not_allowed"),
        (b"snamed:\x00\x01x\x00\x00\x00\x01", "named"),
        (b"swhatever", "unknown status"),
        (b"Xok", "expected a status"),
    ],
)
def test_initiator_fails_on_refusing_statuses(status: bytes, reason: str) -> None:
    a = initiator()
    a.receive_data(packet(status))
    with pytest.raises(HandshakeError, match=reason) as exc:
        a.next_event()
    assert exc.value.step == "recv_status"


@pytest.mark.parametrize("status", ["nok", "not_allowed"])
def test_acceptor_refusing_sends_status_then_fails(status: Status) -> None:
    b = acceptor()
    b.receive_data(initiator().data_to_send())
    b.next_event()
    b.send_status(status)
    assert b.data_to_send() == packet(b"s" + status.encode())
    with pytest.raises(HandshakeError, match=status):
        b.next_event()


def test_owner_answers_at_the_wrong_time() -> None:
    b = acceptor()
    with pytest.raises(LocalProtocolError):
        b.send_status("ok")
    a = initiator()
    with pytest.raises(LocalProtocolError):
        a.answer_alive(True)
    b.receive_data(initiator().data_to_send())
    b.next_event()
    with pytest.raises(LocalProtocolError):
        b.send_status("maybe")  # type: ignore[arg-type]


# -- cookies -----------------------------------------------------------------------------


def test_wrong_cookie_is_caught_by_the_acceptor() -> None:
    a, b = initiator(cookie="WRONG"), acceptor()
    b.receive_data(a.data_to_send())
    b.next_event()
    b.send_status("ok")
    a.receive_data(b.data_to_send())
    assert a.next_event() is NEED_DATA
    b.receive_data(a.data_to_send())
    with pytest.raises(HandshakeError) as exc:
        b.next_event()
    assert (exc.value.step, exc.value.reason) == ("recv_challenge_reply", "bad cookie")
    assert b.data_to_send() == b""  # no ack for a bad reply
    with pytest.raises(HandshakeError):  # the failure sticks
        b.next_event()


def test_wrong_ack_digest_is_caught_by_the_initiator() -> None:
    a = initiator()
    name_b = B_NAME.encode()
    a.receive_data(packet(b"sok"))
    a.receive_data(packet(b"N" + struct.pack(">QIIH", B_FLAGS, CH_B, 1, len(name_b)) + name_b))
    assert a.next_event() is NEED_DATA
    a.receive_data(packet(b"a" + gen_digest(CH_A, "OTHER")))
    with pytest.raises(HandshakeError) as exc:
        a.next_event()
    assert (exc.value.step, exc.value.reason) == ("recv_challenge_ack", "bad cookie")


def test_latin1_cookie_hashes_as_bytes_like_the_beam() -> None:
    assert gen_digest(1, "é") == hashlib.md5(b"\xe91").digest()


# -- flags and names ---------------------------------------------------------------------


def test_acceptor_refuses_a_peer_without_mandatory_flags() -> None:
    a = initiator(flags=DFlag(MANDATORY_OTP25 & ~DFlag.UTF8_ATOMS & ~DFlag.MAP_TAG))
    b = acceptor()
    b.receive_data(a.data_to_send())
    with pytest.raises(HandshakeError) as exc:
        b.next_event()
    assert exc.value.step == "recv_name"
    assert "mandatory flags missing: [UTF8_ATOMS, MAP_TAG]" in exc.value.reason
    assert b.data_to_send() == packet(b"snot_allowed")


def test_initiator_refuses_a_peer_without_mandatory_flags() -> None:
    a = initiator()
    b = acceptor(flags=DFlag(MANDATORY_OTP25 & ~DFlag.BIG_CREATION))
    b.receive_data(a.data_to_send())
    b.next_event()
    b.send_status("ok")
    a.receive_data(b.data_to_send())
    with pytest.raises(HandshakeError, match=r"mandatory flags missing: \[BIG_CREATION\]") as exc:
        a.next_event()
    assert exc.value.step == "recv_challenge"


def test_initiator_checks_the_name_of_the_node_it_dialled() -> None:
    a = initiator(peer_name="c@127.0.0.1")
    b = acceptor()
    b.receive_data(a.data_to_send())
    b.next_event()
    b.send_status("ok")
    a.receive_data(b.data_to_send())
    with pytest.raises(HandshakeError, match="peer name mismatch") as exc:
        a.next_event()
    assert exc.value.step == "recv_challenge"


def test_acceptor_refuses_dynamic_names() -> None:
    a = initiator(flags=DEFAULT_FLAGS | DFlag.NAME_ME, our_name="127.0.0.1@127.0.0.1")
    b = acceptor()
    b.receive_data(a.data_to_send())
    with pytest.raises(HandshakeError, match="NAME_ME"):
        b.next_event()
    assert b.data_to_send() == packet(b"snot_allowed")


# -- version 5 and malformed packets -----------------------------------------------------


def test_acceptor_rejects_version_5_name() -> None:
    b = acceptor()
    b.receive_data(packet(b"n\x00\x05" + struct.pack(">I", MANDATORY_OTP25) + A_NAME.encode()))
    with pytest.raises(HandshakeError, match="version 5") as exc:
        b.next_event()
    assert exc.value.step == "recv_name"


def test_initiator_rejects_version_5_challenge() -> None:
    a = initiator()
    a.receive_data(packet(b"sok"))
    a.receive_data(packet(b"n\x00\x05" + struct.pack(">II", MANDATORY_OTP25, 1) + B_NAME.encode()))
    with pytest.raises(HandshakeError, match="version 5") as exc:
        a.next_event()
    assert exc.value.step == "recv_challenge"


NAME_OK = b"N" + struct.pack(">QIH", DEFAULT_FLAGS, 1, len(A_NAME)) + A_NAME.encode()


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\x00", "0 bytes"),  # empty packet
        (b"\xff\xff" + b"x" * 10, "65535 bytes"),  # absurd length
        (packet(b"N"), "malformed name"),
        (packet(NAME_OK[:10]), "malformed name"),
        (packet(NAME_OK[:-1]), "name length"),
        (packet(NAME_OK + b"x"), "name length"),
        (packet(b"X" + NAME_OK[1:]), "malformed name"),
        (packet(b"N" + struct.pack(">QIH", DEFAULT_FLAGS, 1, 4) + b"\xff\xfe@x"), "not UTF-8"),
        (packet(b"N" + struct.pack(">QIH", DEFAULT_FLAGS, 1, 5) + b"nohost"[:5]), "not a node name"),
        (packet(b"N" + struct.pack(">QIH", DEFAULT_FLAGS, 1, 2) + b"a@"), "not a node name"),
    ],
)
def test_acceptor_rejects_malformed_name_packets(raw: bytes, match: str) -> None:
    b = acceptor()
    b.receive_data(raw)
    with pytest.raises(HandshakeError, match=match):
        b.next_event()


CHALLENGE_OK = b"N" + struct.pack(">QIIH", B_FLAGS, CH_B, 1, len(B_NAME)) + B_NAME.encode()


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (packet(CHALLENGE_OK[:12]), "malformed challenge"),
        (packet(CHALLENGE_OK[:-2]), "name length"),
        (packet(b"r" + CHALLENGE_OK[1:]), "malformed challenge"),
    ],
)
def test_initiator_rejects_malformed_challenges(raw: bytes, match: str) -> None:
    a = initiator()
    a.receive_data(packet(b"sok") + raw)
    with pytest.raises(HandshakeError, match=match) as exc:
        a.next_event()
    assert exc.value.step == "recv_challenge"


@pytest.mark.parametrize("ack", [b"a" + b"\x00" * 15, b"a" + b"\x00" * 17, b"r" + b"\x00" * 16])
def test_initiator_rejects_malformed_acks(ack: bytes) -> None:
    a = initiator()
    a.receive_data(packet(b"sok") + packet(CHALLENGE_OK))
    assert a.next_event() is NEED_DATA
    a.receive_data(packet(ack))
    with pytest.raises(HandshakeError, match="malformed challenge ack"):
        a.next_event()


@pytest.mark.parametrize("reply", [b"r" + b"\x00" * 19, b"r" + b"\x00" * 21, b"a" + b"\x00" * 20])
def test_acceptor_rejects_malformed_replies(reply: bytes) -> None:
    b = acceptor()
    b.receive_data(initiator().data_to_send())
    b.next_event()
    b.send_status("ok")
    b.receive_data(packet(reply))
    with pytest.raises(HandshakeError, match="malformed challenge reply") as exc:
        b.next_event()
    assert exc.value.step == "recv_challenge_reply"


def test_partial_packet_waits() -> None:
    b = acceptor()
    data = initiator().data_to_send()
    b.receive_data(data[:1])
    assert b.next_event() is NEED_DATA
    b.receive_data(data[1:-1])
    assert b.next_event() is NEED_DATA
    b.receive_data(data[-1:])
    assert isinstance(b.next_event(), PeerNamed)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_only_ever_raises_handshake_error(data: bytes) -> None:
    for side in (acceptor(), initiator()):
        side.receive_data(data)
        for _ in range(5):
            try:
                event = side.next_event()
            except HandshakeError:
                break
            if event is NEED_DATA:
                break
            if isinstance(event, PeerNamed):
                assert isinstance(side, HandshakeAcceptor)
                side.send_status("ok")
            elif isinstance(event, AliveQuery):
                assert isinstance(side, HandshakeInitiator)
                side.answer_alive(True)


def test_eof_names_the_step() -> None:
    a = initiator()
    with pytest.raises(HandshakeError) as exc:
        a.receive_eof()
    assert exc.value.step == "recv_status"
    a = initiator()
    a.receive_data(packet(b"sok") + packet(CHALLENGE_OK))
    assert a.next_event() is NEED_DATA
    with pytest.raises(HandshakeError) as exc:
        a.receive_eof()
    assert (exc.value.step, exc.value.reason.endswith("bad cookie")) == ("recv_challenge_ack", True)
    with pytest.raises(HandshakeError):  # sticky
        a.next_event()


def test_eof_after_completion_is_not_a_handshake_matter() -> None:
    a, b = initiator(), acceptor()
    run(a, b)
    assert a.done
    a.receive_eof()
    b.receive_eof()
