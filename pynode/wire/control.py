"""Control messages: the first term of every distribution message, as dataclasses.

Each operation is one frozen dataclass whose fields follow the tuple of
DISTRIBUTION.md "Control messages" (the unused ``''`` slot of SEND and
REG_SEND is left out). :func:`parse_control` validates a decoded tuple (arity
and element types); a malformed one is a :class:`RemoteProtocolError`, on which
OTP drops the connection too. ``to_term()`` builds the tuple to encode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum
from operator import attrgetter
from typing import Any, ClassVar, Final, TypeVar

from pynode.errors import RemoteProtocolError
from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Pid, Reference, Term

__all__ = [
    "AliasSend",
    "AliasSendTT",
    "ControlMessage",
    "DemonitorP",
    "Exit",
    "Exit2",
    "Exit2TT",
    "ExitTT",
    "GroupLeader",
    "Link",
    "MonitorP",
    "MonitorPExit",
    "Op",
    "PayloadExit",
    "PayloadExit2",
    "PayloadExit2TT",
    "PayloadExitTT",
    "PayloadMonitorPExit",
    "RegSend",
    "RegSendTT",
    "Send",
    "SendSender",
    "SendSenderTT",
    "SendTT",
    "SpawnReply",
    "SpawnReplyTT",
    "SpawnRequest",
    "SpawnRequestTT",
    "Unlink",
    "UnlinkId",
    "UnlinkIdAck",
    "has_payload",
    "parse_control",
]


class Op(IntEnum):
    """Operation codes: the first element of a control tuple."""

    LINK = 1
    SEND = 2
    EXIT = 3
    UNLINK = 4
    REG_SEND = 6
    GROUP_LEADER = 7
    EXIT2 = 8
    SEND_TT = 12
    EXIT_TT = 13
    REG_SEND_TT = 16
    EXIT2_TT = 18
    MONITOR_P = 19
    DEMONITOR_P = 20
    MONITOR_P_EXIT = 21
    SEND_SENDER = 22
    SEND_SENDER_TT = 23
    PAYLOAD_EXIT = 24
    PAYLOAD_EXIT_TT = 25
    PAYLOAD_EXIT2 = 26
    PAYLOAD_EXIT2_TT = 27
    PAYLOAD_MONITOR_P_EXIT = 28
    SPAWN_REQUEST = 29
    SPAWN_REQUEST_TT = 30
    SPAWN_REPLY = 31
    SPAWN_REPLY_TT = 32
    ALIAS_SEND = 33
    ALIAS_SEND_TT = 34
    UNLINK_ID = 35
    UNLINK_ID_ACK = 36


_EMPTY_ATOM: Final = Atom("")

# Element kinds: a predicate on the element, or _UNUSED for the '' slot we drop.
_Check = Callable[[Term], bool]


def _is_pid(v: Term) -> bool:
    return type(v) is Pid


def _is_ref(v: Term) -> bool:
    return type(v) is Reference


def _is_name(v: Term) -> bool:
    return type(v) is Atom


def _is_proc(v: Term) -> bool:
    return type(v) is Pid or type(v) is Atom


def _is_int(v: Term) -> bool:
    return type(v) is int


def _is_any(v: Term) -> bool:
    return True


def _is_mfa(v: Term) -> bool:
    return (
        type(v) is tuple
        and len(v) == 3
        and type(v[0]) is Atom
        and type(v[1]) is Atom
        and type(v[2]) is int
        and v[2] >= 0
    )


def _is_list(v: Term) -> bool:
    return type(v) is list


def _is_spawn_result(v: Term) -> bool:
    return type(v) is Pid or type(v) is Atom


# The Python types a check accepts, for the checks that are a type test alone.
_KIND_TYPES: Final[dict[_Check, tuple[type, ...]]] = {
    _is_pid: (Pid,),
    _is_ref: (Reference,),
    _is_name: (Atom,),
    _is_proc: (Pid, Atom),
    _is_int: (int,),
    _is_spawn_result: (Pid, Atom),
}

_KIND_NAMES: Final[dict[_Check, str]] = {
    _is_pid: "a pid",
    _is_ref: "a reference",
    _is_name: "an atom",
    _is_proc: "a pid or an atom",
    _is_int: "an integer",
    _is_mfa: "{Module, Function, Arity}",
    _is_list: "a list",
    _is_spawn_result: "a pid or an atom",
}


class ControlMessage:
    """Base of every control message; subclasses are frozen slotted dataclasses."""

    __slots__ = ()
    OP: ClassVar[Op]
    HAS_PAYLOAD: ClassVar[bool]
    # Per element after the op: a check, or None for the unused '' slot (not a field).
    _SPEC: ClassVar[tuple[_Check | None, ...]]
    _FIELDS: ClassVar[tuple[str, ...]]
    _UNUSED_AT: ClassVar[int]  # index of the '' slot in the tuple, 0 when there is none
    _OP_CODE: ClassVar[int]  # OP as a plain int, which is what goes on the wire
    _VALUES: ClassVar[Callable[[ControlMessage], tuple[Term, ...]]]  # the fields, in order

    def to_term(self) -> tuple[Term, ...]:
        """The control tuple, ready for the encoder."""
        values = type(self)._VALUES(self)  # through the class: a plain function must not bind
        at = self._UNUSED_AT
        if at:
            return (self._OP_CODE, *values[: at - 1], _EMPTY_ATOM, *values[at - 1 :])
        return (self._OP_CODE, *values)


_BY_OP: dict[int, type[ControlMessage]] = {}
_MAKE: dict[int, Callable[..., ControlMessage]] = {}
_Parse = Callable[[tuple[Term, ...]], ControlMessage | None]
# Per op, when its checks are type tests alone on one to three fields: a parser
# unrolled for it, which returns None for anything it does not accept as is.
_FAST: dict[int, _Parse] = {}
_PAYLOAD_OPS: set[int] = set()
_C = TypeVar("_C", bound=type[ControlMessage])


def _op(op: Op, *spec: _Check | None, payload: bool = False) -> Callable[[_C], _C]:
    """Register a control class: its op code, element checks and whether a payload follows."""

    def register(cls: _C) -> _C:
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        if len(names) != sum(1 for check in spec if check is not None):
            raise TypeError(f"{cls.__name__}: spec does not match its fields")
        cls.OP = op
        cls.HAS_PAYLOAD = payload
        cls._SPEC = spec
        cls._FIELDS = names
        cls._UNUSED_AT = spec.index(None) + 1 if None in spec else 0
        cls._OP_CODE = int(op)
        cls._VALUES = _getter(names)
        _BY_OP[op] = cls
        _MAKE[op] = cls
        fast = _fast_parser(cls, spec)
        if fast is not None:
            _FAST[int(op)] = fast
        if payload:
            _PAYLOAD_OPS.add(op)
        return cls

    return register


def _getter(names: tuple[str, ...]) -> Callable[[ControlMessage], tuple[Term, ...]]:
    """The values of fields ``names`` of a message, as a tuple even for one field."""
    if len(names) > 1:
        return attrgetter(*names)
    (name,) = names
    return lambda message: (getattr(message, name),)


def _fast_parser(cls: type[ControlMessage], spec: tuple[_Check | None, ...]) -> _Parse | None:
    """The parser of :func:`parse_control` for one op, if the op is simple enough for one.

    It checks the tuple size and the type of each field (the '' slot is not
    checked on either path) and fills the slots directly: the dataclass
    ``__init__`` does the same for these classes, at twice the cost.
    """
    checks = [check for check in spec if check is not None]
    if not all(check in _KIND_TYPES for check in checks) or not 1 <= len(checks) <= 3:
        return None
    if "__post_init__" in vars(cls):
        raise TypeError(f"{cls.__name__}: the fast parser would skip __post_init__")
    size = len(spec) + 1
    at = [index for index, check in enumerate(spec, 1) if check is not None]
    kinds = [frozenset(_KIND_TYPES[check]) for check in checks]
    put: list[Any] = [vars(cls)[name].__set__ for name in cls._FIELDS]  # slot descriptors
    new = object.__new__

    if len(at) == 1:
        (i,), (ki,), (pi,) = at, kinds, put

        def parse1(term: tuple[Term, ...]) -> ControlMessage | None:
            if len(term) != size or type(term[i]) not in ki:
                return None
            message = new(cls)
            pi(message, term[i])
            return message

        return parse1
    if len(at) == 2:
        (i, j), (ki, kj), (pi, pj) = at, kinds, put

        def parse2(term: tuple[Term, ...]) -> ControlMessage | None:
            if len(term) != size or type(term[i]) not in ki or type(term[j]) not in kj:
                return None
            message = new(cls)
            pi(message, term[i])
            pj(message, term[j])
            return message

        return parse2
    (i, j, k), (ki, kj, kk), (pi, pj, pk) = at, kinds, put

    def parse3(term: tuple[Term, ...]) -> ControlMessage | None:
        if len(term) != size or type(term[i]) not in ki or type(term[j]) not in kj or type(term[k]) not in kk:
            return None
        message = new(cls)
        pi(message, term[i])
        pj(message, term[j])
        pk(message, term[k])
        return message

    return parse3


P, R, N, PROC, INT, ANY = _is_pid, _is_ref, _is_name, _is_proc, _is_int, _is_any


@_op(Op.LINK, P, P)
@dataclass(frozen=True, slots=True)
class Link(ControlMessage):
    from_pid: Pid
    to_pid: Pid


@_op(Op.SEND, None, P, payload=True)
@dataclass(frozen=True, slots=True)
class Send(ControlMessage):
    to_pid: Pid


@_op(Op.EXIT, P, P, ANY)
@dataclass(frozen=True, slots=True)
class Exit(ControlMessage):
    from_pid: Pid
    to_pid: Pid
    reason: Term


@_op(Op.UNLINK, P, P)
@dataclass(frozen=True, slots=True)
class Unlink(ControlMessage):
    """The pre-UNLINK_ID unlink; still accepted from peers that send it."""

    from_pid: Pid
    to_pid: Pid


@_op(Op.REG_SEND, P, None, N, payload=True)
@dataclass(frozen=True, slots=True)
class RegSend(ControlMessage):
    from_pid: Pid
    to_name: Atom


@_op(Op.GROUP_LEADER, P, P)
@dataclass(frozen=True, slots=True)
class GroupLeader(ControlMessage):
    from_pid: Pid
    to_pid: Pid


@_op(Op.EXIT2, P, P, ANY)
@dataclass(frozen=True, slots=True)
class Exit2(ControlMessage):
    from_pid: Pid
    to_pid: Pid
    reason: Term


@_op(Op.SEND_TT, None, P, ANY, payload=True)
@dataclass(frozen=True, slots=True)
class SendTT(ControlMessage):
    to_pid: Pid
    token: Term


@_op(Op.EXIT_TT, P, P, ANY, ANY)
@dataclass(frozen=True, slots=True)
class ExitTT(ControlMessage):
    from_pid: Pid
    to_pid: Pid
    token: Term
    reason: Term


@_op(Op.REG_SEND_TT, P, None, N, ANY, payload=True)
@dataclass(frozen=True, slots=True)
class RegSendTT(ControlMessage):
    from_pid: Pid
    to_name: Atom
    token: Term


@_op(Op.EXIT2_TT, P, P, ANY, ANY)
@dataclass(frozen=True, slots=True)
class Exit2TT(ControlMessage):
    from_pid: Pid
    to_pid: Pid
    token: Term
    reason: Term


@_op(Op.MONITOR_P, P, PROC, R)
@dataclass(frozen=True, slots=True)
class MonitorP(ControlMessage):
    """``from_pid`` monitors ``target``: a pid or a name registered on the receiving node."""

    from_pid: Pid
    target: Pid | Atom
    ref: Reference


@_op(Op.DEMONITOR_P, P, PROC, R)
@dataclass(frozen=True, slots=True)
class DemonitorP(ControlMessage):
    from_pid: Pid
    target: Pid | Atom
    ref: Reference


@_op(Op.MONITOR_P_EXIT, PROC, P, R, ANY)
@dataclass(frozen=True, slots=True)
class MonitorPExit(ControlMessage):
    """The monitored ``target`` (as it was named in MONITOR_P) went away."""

    target: Pid | Atom
    to_pid: Pid
    ref: Reference
    reason: Term


@_op(Op.SEND_SENDER, P, P, payload=True)
@dataclass(frozen=True, slots=True)
class SendSender(ControlMessage):
    from_pid: Pid
    to_pid: Pid


@_op(Op.SEND_SENDER_TT, P, P, ANY, payload=True)
@dataclass(frozen=True, slots=True)
class SendSenderTT(ControlMessage):
    from_pid: Pid
    to_pid: Pid
    token: Term


@_op(Op.PAYLOAD_EXIT, P, P, payload=True)
@dataclass(frozen=True, slots=True)
class PayloadExit(ControlMessage):
    """EXIT whose reason travels as the payload term."""

    from_pid: Pid
    to_pid: Pid


@_op(Op.PAYLOAD_EXIT_TT, P, P, ANY, payload=True)
@dataclass(frozen=True, slots=True)
class PayloadExitTT(ControlMessage):
    from_pid: Pid
    to_pid: Pid
    token: Term


@_op(Op.PAYLOAD_EXIT2, P, P, payload=True)
@dataclass(frozen=True, slots=True)
class PayloadExit2(ControlMessage):
    """EXIT2 (``exit(Pid, Reason)``) whose reason travels as the payload term."""

    from_pid: Pid
    to_pid: Pid


@_op(Op.PAYLOAD_EXIT2_TT, P, P, ANY, payload=True)
@dataclass(frozen=True, slots=True)
class PayloadExit2TT(ControlMessage):
    from_pid: Pid
    to_pid: Pid
    token: Term


@_op(Op.PAYLOAD_MONITOR_P_EXIT, PROC, P, R, payload=True)
@dataclass(frozen=True, slots=True)
class PayloadMonitorPExit(ControlMessage):
    target: Pid | Atom
    to_pid: Pid
    ref: Reference


@_op(Op.SPAWN_REQUEST, R, P, P, _is_mfa, _is_list, payload=True)
@dataclass(frozen=True, slots=True)
class SpawnRequest(ControlMessage):
    """Spawn ``mfa`` on the receiver; the argument list is the payload."""

    req_id: Reference
    from_pid: Pid
    group_leader: Pid
    mfa: tuple[Atom, Atom, int]
    opts: list[Term]


@_op(Op.SPAWN_REQUEST_TT, R, P, P, _is_mfa, _is_list, ANY, payload=True)
@dataclass(frozen=True, slots=True)
class SpawnRequestTT(ControlMessage):
    req_id: Reference
    from_pid: Pid
    group_leader: Pid
    mfa: tuple[Atom, Atom, int]
    opts: list[Term]
    token: Term


@_op(Op.SPAWN_REPLY, R, P, INT, _is_spawn_result)
@dataclass(frozen=True, slots=True)
class SpawnReply(ControlMessage):
    """``result`` is the new pid or an error atom; ``flags`` 1 = linked, 2 = monitored."""

    req_id: Reference
    to_pid: Pid
    flags: int
    result: Pid | Atom


@_op(Op.SPAWN_REPLY_TT, R, P, INT, _is_spawn_result, ANY)
@dataclass(frozen=True, slots=True)
class SpawnReplyTT(ControlMessage):
    req_id: Reference
    to_pid: Pid
    flags: int
    result: Pid | Atom
    token: Term


@_op(Op.ALIAS_SEND, P, R, payload=True)
@dataclass(frozen=True, slots=True)
class AliasSend(ControlMessage):
    from_pid: Pid
    alias: Reference


@_op(Op.ALIAS_SEND_TT, P, R, ANY, payload=True)
@dataclass(frozen=True, slots=True)
class AliasSendTT(ControlMessage):
    from_pid: Pid
    alias: Reference
    token: Term


@_op(Op.UNLINK_ID, INT, P, P)
@dataclass(frozen=True, slots=True)
class UnlinkId(ControlMessage):
    id: int
    from_pid: Pid
    to_pid: Pid


@_op(Op.UNLINK_ID_ACK, INT, P, P)
@dataclass(frozen=True, slots=True)
class UnlinkIdAck(ControlMessage):
    id: int
    from_pid: Pid
    to_pid: Pid


del P, R, N, PROC, INT, ANY


def has_payload(op: int) -> bool:
    """Whether a message term follows the control term for operation ``op``."""
    return op in _PAYLOAD_OPS


def parse_control(term: Term) -> ControlMessage:
    """The control message for a decoded control tuple; RemoteProtocolError if malformed."""
    if type(term) is tuple and term and type(term[0]) is int:
        fast = _FAST.get(term[0])
        if fast is not None:
            message = fast(term)
            if message is not None:
                return message
    return _parse_checked(term)


def _parse_checked(term: Term) -> ControlMessage:
    """parse_control element by element, saying what is wrong."""
    if type(term) is not tuple or not term:
        raise RemoteProtocolError(f"control message is not a tuple: {format_term(term, limit=200)}")
    op = term[0]
    cls = _BY_OP.get(op) if type(op) is int else None
    if cls is None:
        raise RemoteProtocolError(f"unknown control operation {format_term(op, limit=200)}")
    spec = cls._SPEC
    if len(term) != len(spec) + 1:
        raise RemoteProtocolError(f"{cls.OP.name} control tuple has {len(term)} elements, expected {len(spec) + 1}")
    args: list[Term] = []
    for index, check in enumerate(spec, 1):
        if check is None:
            continue
        value = term[index]
        if not check(value):
            raise RemoteProtocolError(
                f"{cls.OP.name} element {index} is {format_term(value, limit=200)}, expected {_KIND_NAMES[check]}"
            )
        args.append(value)
    return _MAKE[cls.OP](*args)
