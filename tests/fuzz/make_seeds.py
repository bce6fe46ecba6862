"""Valid inputs for each target, from which the fuzzer starts: ``python tests/fuzz/make_seeds.py OUT``.

The corpus under ``corpus/`` grew from these and was minimised with
``-merge=1``; this script is kept so that it can be grown again.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from targets import COOKIE, OUR_CHALLENGE, PEER, US

from pynode.etf.encode import encode
from pynode.etf.types import Atom, BitBinary, Export, ImproperList, MapKey, Pid, Port, Reference
from pynode.wire import control as c
from pynode.wire.flags import DEFAULT_FLAGS, MANDATORY_OTP25, DFlag
from pynode.wire.framing import DistWriter
from pynode.wire.handshake import gen_digest

THEM = Pid(Atom(PEER), 40, 0, 5)
ME = Pid(Atom(US), 1, 0, 0)
REF = Reference(Atom(PEER), 5, (1, 2, 3))
CALL_TAG = ImproperList((Atom("alias"),), REF)

TERMS = [
    1, 300, -(2**31), 2**64, -(2**200), 1.5, Atom("ok"), Atom("é"), True, b"bin", "text", [], [1, 2, 3],
    ImproperList((1,), 2), (), (1, Atom("a")), tuple(range(300)), {Atom("k"): [b"v"]},
    {MapKey(1.0): 2, MapKey((1, [2])): 3},
    THEM, REF, Port(Atom(PEER), 7, 1), Export(Atom("m"), Atom("f"), 2), BitBinary(b"\xf0", 4), list(b"charlist"),
    [[[[[]]]]], {Atom("deep"): {Atom("er"): (THEM, REF)}},
]  # fmt: skip


def compressed(term: object) -> bytes:
    inner = encode(term)[1:]
    return b"\x83P" + struct.pack(">I", len(inner)) + zlib.compress(inner)


def messages() -> list[tuple[c.ControlMessage, object]]:
    call = (Atom("$gen_call"), (THEM, CALL_TAG), (Atom("is_auth"), Atom(PEER)))
    return [
        (c.RegSend(THEM, Atom("net_kernel")), call),
        (c.RegSend(THEM, Atom("nobody")), Atom("hello")),
        (c.MonitorP(THEM, Atom("net_kernel"), REF), None),
        (c.DemonitorP(THEM, Atom("net_kernel"), REF), None),
        (c.MonitorP(THEM, ME, REF), None),
        (c.Link(THEM, ME), None),
        (c.UnlinkId(9, THEM, ME), None),
        (c.SendSender(THEM, ME), Atom("hi")),
        (c.PayloadExit2(THEM, ME), Atom("kill")),
        (c.AliasSend(THEM, REF), Atom("late")),
        (c.SpawnRequest(REF, THEM, THEM, (Atom("erlang"), Atom("node"), 0), []), []),
        (c.RegSend(THEM, Atom("rex")), (THEM, (Atom("call"), Atom("os"), Atom("cmd"), [b"id"], THEM))),
    ]


def main(out: Path) -> None:
    seeds: dict[str, list[bytes]] = {name: [] for name in
                                     ("decode", "framing", "control", "connection",
                                      "handshake_acceptor", "handshake_initiator")}  # fmt: skip
    for term in TERMS:
        seeds["decode"].append(encode(term))
    seeds["decode"].append(compressed([Atom("x")] * 100))
    for flags, mode in ((DEFAULT_FLAGS, 0x80), (DFlag(MANDATORY_OTP25), 0x00)):
        writer = DistWriter(flags, fragment_size=64)
        stream = b"\x00\x00\x00\x00"
        for control, payload in messages():
            frames = writer.encode(control, payload) if control.HAS_PAYLOAD else writer.encode(control)
            seeds["framing"].append(bytes([mode]) + b"".join(frames))
            stream += b"".join(frames)
            if mode:
                seeds["connection"].append(b"".join(frames))
        big = writer.encode(c.SendSender(THEM, ME), b"y" * 300)
        seeds["framing"].append(bytes([mode]) + b"".join(big[:2]) + stream + b"".join(big[2:]))
    for control, payload in messages():
        seeds["control"].append(encode(control.to_term())[1:] + (encode(payload)[1:] if control.HAS_PAYLOAD else b""))
    name = PEER.encode()
    reply = b"r" + struct.pack(">I", 99) + gen_digest(OUR_CHALLENGE, COOKIE)
    for selector in (0x00, 0x10, 0x30, 0x70, 0x74, 0x80):
        tail = b"\x00\x00\x00\x00" if selector & 0x20 else b""
        seeds["handshake_acceptor"].append(bytes([selector]) + tail)
    raw_name = struct.pack(">H", 15 + len(name)) + b"N" + struct.pack(">QIH", int(DEFAULT_FLAGS), 7, len(name)) + name
    seeds["handshake_acceptor"].append(b"\x00" + raw_name + struct.pack(">H", len(reply)) + reply)
    for selector in (0x00, 0x10, 0x20, 0x30, 0x60, 0xB0):
        seeds["handshake_initiator"].append(bytes([selector]) + (b"\x00\x00\x00\x00" if selector & 0x10 else b""))
    for target, items in seeds.items():
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        for index, item in enumerate(items):
            (folder / f"seed-{index:03d}").write_bytes(item)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
