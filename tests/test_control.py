"""Control messages: tuple shapes of DISTRIBUTION.md, validation, payload knowledge."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynode.errors import RemoteProtocolError
from pynode.etf.types import Atom, Pid, Reference
from pynode.wire import control as c

A = Pid(Atom("a@host"), 1, 0, 7)
B = Pid(Atom("b@host"), 2, 0, 9)
REF = Reference(Atom("a@host"), 7, (1, 2, 3))
NAME = Atom("net_kernel")
EMPTY = Atom("")

# (message, the exact tuple OTP puts on the wire, carries a payload)
CASES: list[tuple[c.ControlMessage, tuple[Any, ...], bool]] = [
    (c.Link(A, B), (1, A, B), False),
    (c.Send(B), (2, EMPTY, B), True),
    (c.Exit(A, B, Atom("normal")), (3, A, B, Atom("normal")), False),
    (c.Unlink(A, B), (4, A, B), False),
    (c.RegSend(A, NAME), (6, A, EMPTY, NAME), True),
    (c.GroupLeader(A, B), (7, A, B), False),
    (c.Exit2(A, B, Atom("kill")), (8, A, B, Atom("kill")), False),
    (c.SendTT(B, 42), (12, EMPTY, B, 42), True),
    (c.ExitTT(A, B, 42, Atom("x")), (13, A, B, 42, Atom("x")), False),
    (c.RegSendTT(A, NAME, 42), (16, A, EMPTY, NAME, 42), True),
    (c.Exit2TT(A, B, 42, Atom("x")), (18, A, B, 42, Atom("x")), False),
    (c.MonitorP(A, NAME, REF), (19, A, NAME, REF), False),
    (c.MonitorP(A, B, REF), (19, A, B, REF), False),
    (c.DemonitorP(A, NAME, REF), (20, A, NAME, REF), False),
    (c.MonitorPExit(NAME, A, REF, Atom("noproc")), (21, NAME, A, REF, Atom("noproc")), False),
    (c.SendSender(A, B), (22, A, B), True),
    (c.SendSenderTT(A, B, 42), (23, A, B, 42), True),
    (c.PayloadExit(A, B), (24, A, B), True),
    (c.PayloadExitTT(A, B, 42), (25, A, B, 42), True),
    (c.PayloadExit2(A, B), (26, A, B), True),
    (c.PayloadExit2TT(A, B, 42), (27, A, B, 42), True),
    (c.PayloadMonitorPExit(B, A, REF), (28, B, A, REF), True),
    (
        c.SpawnRequest(REF, A, B, (Atom("erpc"), Atom("execute_call"), 4), [Atom("monitor")]),
        (29, REF, A, B, (Atom("erpc"), Atom("execute_call"), 4), [Atom("monitor")]),
        True,
    ),
    (
        c.SpawnRequestTT(REF, A, B, (Atom("m"), Atom("f"), 0), [], 42),
        (30, REF, A, B, (Atom("m"), Atom("f"), 0), [], 42),
        True,
    ),
    (c.SpawnReply(REF, A, 2, B), (31, REF, A, 2, B), False),
    (c.SpawnReply(REF, A, 0, Atom("notsup")), (31, REF, A, 0, Atom("notsup")), False),
    (c.SpawnReplyTT(REF, A, 1, B, 42), (32, REF, A, 1, B, 42), False),
    (c.AliasSend(A, REF), (33, A, REF), True),
    (c.AliasSendTT(A, REF, 42), (34, A, REF, 42), True),
    (c.UnlinkId(5, A, B), (35, 5, A, B), False),
    (c.UnlinkIdAck(5, B, A), (36, 5, B, A), False),
]


@pytest.mark.parametrize(("message", "term", "payload"), CASES)
def test_to_term_and_parse_round_trip(message: c.ControlMessage, term: tuple[Any, ...], payload: bool) -> None:
    assert message.to_term() == term
    assert type(message.to_term()[0]) is int
    parsed = c.parse_control(term)
    assert parsed == message
    assert type(parsed) is type(message)
    assert c.has_payload(term[0]) is payload
    assert message.HAS_PAYLOAD is payload


def test_every_operation_of_the_protocol_has_a_class() -> None:
    ops = {term[0] for _, term, _ in CASES}
    assert ops == {int(op) for op in c.Op}


def test_field_names_are_the_obvious_ones() -> None:
    msg = c.parse_control((6, A, EMPTY, NAME))
    assert isinstance(msg, c.RegSend)
    assert (msg.from_pid, msg.to_name) == (A, NAME)
    mon = c.parse_control((19, A, NAME, REF))
    assert isinstance(mon, c.MonitorP)
    assert (mon.from_pid, mon.target, mon.ref) == (A, NAME, REF)
    spawn = c.parse_control((31, REF, A, 2, B))
    assert isinstance(spawn, c.SpawnReply)
    assert (spawn.req_id, spawn.to_pid, spawn.flags, spawn.result) == (REF, A, 2, B)


def test_unused_slot_accepts_what_otp_sends_and_is_rewritten_as_empty_atom() -> None:
    msg = c.parse_control((2, Atom("cookie"), B))
    assert msg == c.Send(B)
    assert msg.to_term() == (2, EMPTY, B)


def test_messages_are_frozen_and_hashable() -> None:
    msg = c.Link(A, B)
    with pytest.raises(AttributeError):
        msg.from_pid = B  # type: ignore[misc]
    assert {msg, c.Link(A, B)} == {msg}


@pytest.mark.parametrize(
    "term",
    [
        [1, A, B],  # not a tuple
        (),  # empty
        ("1", A, B),  # op not an integer
        (True, A, B),  # a boolean is not an op
        (99, A, B),  # unknown op
        (37, A, B),  # ALTACT_SIG: never negotiated
        (1, A),  # arity
        (1, A, B, B),
        (1, A, REF),  # to is not a pid
        (1, "a", B),
        (6, A, EMPTY, "name"),  # a str (binary) is not an atom
        (6, A, EMPTY, b"name"),
        (6, A, EMPTY, True),  # 'true' decodes to a bool: not a usable name
        (19, A, NAME, 5),  # ref
        (19, A, REF, REF),  # target neither pid nor atom
        (29, REF, A, B, (Atom("m"), Atom("f")), []),  # mfa arity
        (29, REF, A, B, (Atom("m"), Atom("f"), -1), []),
        (29, REF, A, B, (Atom("m"), "f", 1), []),
        (29, REF, A, B, (Atom("m"), Atom("f"), 1), ()),  # opts not a list
        (31, REF, A, "2", B),  # flags not an int
        (31, REF, A, 2, 7),  # result
        (33, A, A),  # alias must be a reference
        (35, True, A, B),  # id
        (35, 1.0, A, B),
    ],
)
def test_malformed_control_is_a_remote_protocol_error(term: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        c.parse_control(term)


def test_error_message_names_the_operation_and_element() -> None:
    with pytest.raises(RemoteProtocolError, match=r"REG_SEND element 3 .* expected an atom"):
        c.parse_control((6, A, EMPTY, b"x"))
    with pytest.raises(RemoteProtocolError, match=r"LINK control tuple has 2 elements, expected 3"):
        c.parse_control((1, A))


def test_has_payload_for_unknown_op_is_false() -> None:
    assert c.has_payload(99) is False


# -- the unrolled parsers of the usual operations ---------------------------------------------

ELEMENTS = [A, B, REF, NAME, EMPTY, 0, 7, True, 1.0, "a", b"a", (), [], (Atom("m"), Atom("f"), 1), None]


def outcome(parse: Any, term: Any) -> tuple[str, Any]:
    try:
        message = parse(term)
    except RemoteProtocolError as exc:
        return ("error", str(exc))
    return (type(message).__name__, message)


@pytest.mark.parametrize(("message", "term", "payload"), CASES)
def test_fast_and_checked_parsers_agree_on_every_operation(
    message: c.ControlMessage, term: tuple[Any, ...], payload: bool
) -> None:
    assert outcome(c.parse_control, term) == outcome(c._parse_checked, term) == (type(message).__name__, message)


def test_the_hot_operations_have_a_fast_parser() -> None:
    hot = {c.Op.SEND, c.Op.REG_SEND, c.Op.MONITOR_P, c.Op.DEMONITOR_P, c.Op.SEND_SENDER, c.Op.ALIAS_SEND, c.Op.LINK}
    assert hot <= set(c._FAST)


@given(st.sampled_from([int(op) for op in c.Op]), st.lists(st.sampled_from(ELEMENTS), max_size=6))
def test_fast_and_checked_parsers_agree_on_any_tuple(op: int, rest: list[Any]) -> None:
    term = (op, *rest)
    assert outcome(c.parse_control, term) == outcome(c._parse_checked, term)


def test_fast_built_messages_are_ordinary_frozen_dataclasses() -> None:
    msg = c.parse_control((19, A, NAME, REF))
    assert isinstance(msg, c.MonitorP)
    made = c.MonitorP(A, NAME, REF)
    assert (msg, hash(msg), repr(msg), msg.to_term()) == (made, hash(made), repr(made), made.to_term())
    with pytest.raises(AttributeError):
        msg.ref = REF  # type: ignore[misc]
    assert c.parse_control((2, EMPTY, B)) == c.Send(B)
