"""EPMD requests and replies on bytes alone: exact requests, whole / split / short / bad replies."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pynode.epmd.messages import (
    NEED_DATA,
    Alive2Reply,
    NamesReply,
    NodeAddress,
    Port2Reply,
    alive_name,
    encode_alive2_req,
    encode_names_req,
    encode_port_please2_req,
    parse_alive2_reply,
    parse_names_reply,
    parse_port2_reply,
)
from pynode.errors import LocalProtocolError, RemoteProtocolError

# What a real epmd (OTP 25) sent on this machine for "foo" at port 5555.
PORT2_FOO = b"w\x00\x15\xb3M\x00\x00\x06\x00\x05\x00\x03foo\x00\x00"
ALIVE2_X_OK = b"v\x00k\x05C\x9a"
ALIVE2_X_TAKEN = b"v\x01\x00\x00\x00c"
NAMES_FOO = b"\x00\x00\xaa\xacname foo at port 5555\n"


# -- requests ----------------------------------------------------------------------------


def test_alive2_req_bytes_match_what_an_otp_node_sends() -> None:
    expected_body = bytes([120, 0x15, 0xB3, 77, 0, 0, 6, 0, 5, 0, 3]) + b"foo" + b"\x00\x00"
    assert encode_alive2_req("foo", 5555) == struct.pack(">H", len(expected_body)) + expected_body


def test_alive2_req_strips_the_host_and_carries_extra() -> None:
    data = encode_alive2_req("bar@127.0.0.1", 1, extra=b"xy")
    assert data == b"\x00\x12" + bytes([120, 0, 1, 77, 0, 0, 6, 0, 5, 0, 3]) + b"bar" + b"\x00\x02xy"


def test_port_please2_req_bytes() -> None:
    assert encode_port_please2_req("foo@somehost") == b"\x00\x04zfoo"


def test_names_req_bytes() -> None:
    assert encode_names_req() == b"\x00\x01n"


def test_utf8_name_is_length_prefixed_in_bytes() -> None:
    assert encode_port_please2_req("é") == b"\x00\x03z\xc3\xa9"


@pytest.mark.parametrize("name", ["", "@host", "x" * 256])
def test_bad_names_are_refused_locally(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_port_please2_req(name)
    with pytest.raises(LocalProtocolError):
        encode_alive2_req(name, 5555)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_bad_ports_are_refused_locally(port: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode_alive2_req("foo", port)


def test_alive_name() -> None:
    assert alive_name("a@b@c") == "a"
    assert alive_name("short") == "short"


# -- ALIVE2 replies ----------------------------------------------------------------------


def test_alive2_x_resp_ok_has_a_32_bit_creation() -> None:
    assert parse_alive2_reply(ALIVE2_X_OK) == Alive2Reply(result=0, creation=0x6B05439A)


def test_alive2_x_resp_taken_name_has_nonzero_result() -> None:
    reply = parse_alive2_reply(ALIVE2_X_TAKEN)
    assert isinstance(reply, Alive2Reply)
    assert reply.result == 1


def test_old_alive2_resp_has_a_16_bit_creation() -> None:
    assert parse_alive2_reply(b"y\x00\x00\x03") == Alive2Reply(result=0, creation=3)


@pytest.mark.parametrize("reply", [ALIVE2_X_OK, b"y\x00\x00\x03"])
def test_alive2_reply_prefixes_need_data(reply: bytes) -> None:
    for end in range(len(reply)):
        assert parse_alive2_reply(reply[:end]) is NEED_DATA


def test_alive2_reply_accepts_bytearray_and_memoryview() -> None:
    assert parse_alive2_reply(bytearray(ALIVE2_X_OK)) == parse_alive2_reply(memoryview(ALIVE2_X_OK))


@pytest.mark.parametrize("data", [b"w", b"\x00\x00\x00\x00\x00\x00", ALIVE2_X_OK + b"!"])
def test_alive2_reply_bad_tag_or_trailing_bytes(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_alive2_reply(data)


# -- PORT2 replies -----------------------------------------------------------------------


def test_port2_resp_from_a_real_epmd() -> None:
    address = NodeAddress(
        name="foo", port=5555, node_type=77, protocol=0, highest_version=6, lowest_version=5, extra=b""
    )
    assert parse_port2_reply(PORT2_FOO) == Port2Reply(result=0, address=address)


def test_port2_resp_with_extra() -> None:
    data = PORT2_FOO[:-2] + b"\x00\x03abc"
    reply = parse_port2_reply(data)
    assert isinstance(reply, Port2Reply)
    assert reply.address is not None
    assert reply.address.extra == b"abc"


def test_port2_resp_unknown_name() -> None:
    assert parse_port2_reply(b"w\x01") == Port2Reply(result=1, address=None)


@pytest.mark.parametrize("reply", [PORT2_FOO, PORT2_FOO[:-2] + b"\x00\x03abc", b"w\x01"])
def test_port2_resp_prefixes_need_data(reply: bytes) -> None:
    for end in range(len(reply)):
        assert parse_port2_reply(reply[:end]) is NEED_DATA


def test_port2_resp_latin1_name() -> None:
    data = b"w\x00\x15\xb3M\x00\x00\x06\x00\x05\x00\x01\xe9\x00\x00"
    reply = parse_port2_reply(data)
    assert isinstance(reply, Port2Reply)
    assert reply.address is not None
    assert reply.address.name == "é"


@pytest.mark.parametrize("data", [b"v", b"v\x00\x00", PORT2_FOO + b"\x00", b"w\x01\x00"])
def test_port2_resp_bad_tag_or_trailing_bytes(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_port2_reply(data)


@given(
    name=st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters="@"), min_size=1),
    port=st.integers(1, 0xFFFF),
    extra=st.binary(max_size=40),
    cut=st.integers(0, 200),
)
def test_port2_resp_round_trip_any_split(name: str, port: int, extra: bytes, cut: int) -> None:
    encoded = name.encode()
    data = (
        struct.pack(">BBHBBHHH", 119, 0, port, 77, 0, 6, 5, len(encoded))
        + encoded
        + struct.pack(">H", len(extra))
        + extra
    )
    cut = min(cut, len(data) - 1)
    assert parse_port2_reply(data[:cut]) is NEED_DATA
    reply = parse_port2_reply(data)
    assert isinstance(reply, Port2Reply)
    assert reply.address == NodeAddress(name, port, 77, 0, 6, 5, extra)


# -- NAMES replies -----------------------------------------------------------------------


def test_names_reply_from_a_real_epmd() -> None:
    assert parse_names_reply(NAMES_FOO) == NamesReply(epmd_port=43692, nodes={"foo": 5555})


def test_names_reply_several_and_empty() -> None:
    data = b"\x00\x00\x11\x11name a at port 1\nname b at port 65535\nname c at port 7"
    assert parse_names_reply(data).nodes == {"a": 1, "b": 65535, "c": 7}
    assert parse_names_reply(b"\x00\x00\x11\x11") == NamesReply(epmd_port=0x1111, nodes={})


@pytest.mark.parametrize("cut", range(4))
def test_names_reply_shorter_than_its_port_is_an_error(cut: int) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_names_reply(NAMES_FOO[:cut])


@pytest.mark.parametrize(
    "line",
    [b"garbage", b"name  at port 1", b"name x at port", b"name x at port -1", b"nam x at port 1"],
)
def test_names_reply_malformed_line(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_names_reply(b"\x00\x00\x11\x11" + line + b"\n")
