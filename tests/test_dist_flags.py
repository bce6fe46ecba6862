"""Distribution flags: the values OTP uses, the mandatory sets, and their names in logs."""

from pynode.wire.flags import (
    DEFAULT_FLAGS,
    MANDATORY_OTP25,
    MANDATORY_OTP26,
    REQUIRED_FLAGS,
    DFlag,
    describe,
    missing_mandatory,
)


def test_bit_positions_as_read_from_running_nodes() -> None:
    assert DFlag.MANDATORY_25_DIGEST == 1 << 26
    assert DFlag.ALTACT_SIG == 1 << 37
    assert DFlag.SPAWN == 1 << 32
    assert DFlag.NAME_ME == 1 << 33
    assert DFlag.V4_NC == 1 << 34
    assert DFlag.ALIAS == 1 << 35
    assert int(DFlag.FRAGMENTS) == 0x800000
    assert int(DFlag.HANDSHAKE_23) == 0x1000000


def test_mandatory_sets() -> None:
    assert MANDATORY_OTP25 == 0x1070F94
    assert MANDATORY_OTP26 == 0x403070F94
    assert MANDATORY_OTP26 == MANDATORY_OTP25 | DFlag.UNLINK_ID | DFlag.V4_NC
    assert REQUIRED_FLAGS == MANDATORY_OTP25


def test_default_flags_are_a_hidden_node_that_otp_25_to_28_accept() -> None:
    assert DEFAULT_FLAGS == 0xC07DF5FBC
    assert not DEFAULT_FLAGS & DFlag.PUBLISHED
    assert not DEFAULT_FLAGS & DFlag.DIST_HDR_ATOM_CACHE
    assert not DEFAULT_FLAGS & DFlag.SPAWN
    assert not missing_mandatory(DEFAULT_FLAGS, MANDATORY_OTP26)
    assert DEFAULT_FLAGS & DFlag.FRAGMENTS


def test_missing_mandatory() -> None:
    assert missing_mandatory(MANDATORY_OTP25, MANDATORY_OTP26) == DFlag.UNLINK_ID | DFlag.V4_NC
    assert missing_mandatory(MANDATORY_OTP26) == DFlag(0)
    assert missing_mandatory(0) == MANDATORY_OTP25
    assert missing_mandatory(int(MANDATORY_OTP25)) == DFlag(0)


def test_describe_names_flags_like_otp_logs() -> None:
    assert describe(missing_mandatory(MANDATORY_OTP25, MANDATORY_OTP26)) == "[UNLINK_ID, V4_NC]"
    assert describe(0) == "[]"
    assert describe(DFlag.PUBLISHED | DFlag.ALTACT_SIG) == "[PUBLISHED, ALTACT_SIG]"


def test_unknown_bits_survive_and_are_shown() -> None:
    flags = DFlag((1 << 40) | 1)
    assert int(flags) == (1 << 40) | 1
    assert describe(flags) == "[PUBLISHED, 0x10000000000]"
