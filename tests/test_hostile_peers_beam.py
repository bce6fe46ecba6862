"""Wrong and hostile peers against a running ``python -m pynode``, while a real erl node keeps calling it.

Each test starts the node as a child process (its RSS is read from /proc, its
log counted), connects a real erl node whose ``pinger`` calls the registry
without pause, then plays one hostile peer by hand over 127.0.0.1. The bad
peer loses its connection (or its message) with one log line; the pinger's
calls go on being answered meanwhile.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from beam import BeamFactory, BeamNode
from hostile_peer import HostilePeer, PynodeChild

from pynode.errors import HandshakeError
from pynode.etf.decode import decode
from pynode.etf.encode import encode
from pynode.etf.types import Atom, Term
from pynode.wire import control as c
from pynode.wire.flags import DEFAULT_FLAGS, DFlag

pytestmark = pytest.mark.beam

HX = "hx@127.0.0.1"
MiB = 1 << 20

PINGER = (
    "Py = {pynode, 'hx@127.0.0.1'},"
    " Loop = fun L(N, Bad) -> receive"
    "   {count, To} -> To ! {count, N, Bad}, L(N, Bad)"
    "   after 0 -> case (catch gen_server:call(Py, {echo, N}, 20000)) of"
    "     {ok, N} -> timer:sleep(5), L(N + 1, Bad);"
    "     Other -> timer:sleep(5), L(N + 1, [Other | Bad]) end end end,"
    " register(pinger, spawn(fun() -> Loop(0, []) end)), ok"
)


class Pinger:
    """The erl node's ``pinger``: one registry call after another, counting answers and failures."""

    def __init__(self, erl: BeamNode) -> None:
        self.erl = erl

    async def count(self) -> int:
        got = decode(await self.erl.eval_term(
            "pinger ! {count, self()},"
            " receive {count, N, Bad} -> {N, lists:sublist(Bad, 3)} after 20000 -> timeout end",
            timeout=30,
        ))  # fmt: skip
        assert isinstance(got, tuple), got
        answered, failures = got
        assert failures == [], f"the pinger's calls failed: {failures}"
        return int(answered)

    async def answered_meanwhile(self, before: int, within: float = 30.0) -> int:
        """Wait (bounded) until the pinger got more answers than ``before``; how many now."""
        async with asyncio.timeout(within):
            while True:
                now = await self.count()
                if now > before:
                    return now
                await asyncio.sleep(0.05)


@asynccontextmanager
async def node_and_pinger(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path, *flags: str, ticktime: int | None = None
) -> AsyncIterator[tuple[PynodeChild, Pinger]]:
    async with PynodeChild.running(HX, cookie, epmd_port, tmp_path, *flags) as hx:
        erl = await beam("e1", net_ticktime=ticktime)
        assert await erl.eval(PINGER) == "ok"
        pinger = Pinger(erl)
        await pinger.answered_meanwhile(0)
        yield hx, pinger
        await pinger.count()  # no failures, to the end


def payload_frame(control: c.ControlMessage, payload: bytes) -> bytes:
    """``131, 68, 0, Control, Payload`` framed; ``payload`` is raw term bytes (no version byte)."""
    body = b"\x83\x44\x00" + encode(control.to_term())[1:] + payload
    return struct.pack(">I", len(body)) + body


async def test_a_published_peer_is_served_on_a_hidden_connection(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path) as (hx, pinger):
        before = await pinger.count()
        peer = await HostilePeer.dial(hx.port, cookie, HX, flags=DEFAULT_FLAGS | DFlag.PUBLISHED)
        assert not peer.flags & DFlag.PUBLISHED  # the AND of both sets: hidden, as OTP makes it
        assert await peer.call("pynode", (Atom("echo"), b"published")) == (Atom("ok"), b"published")
        assert await hx.logged("connected to hostile@127.0.0.1")
        await pinger.answered_meanwhile(before)
        peer.close()


async def test_a_second_name_packet_after_the_handshake_costs_that_connection_only(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path) as (hx, pinger):
        peer = await HostilePeer.dial(hx.port, cookie, HX)
        before = await pinger.count()
        name = b"hostile@127.0.0.1"
        again = b"N" + struct.pack(">QIH", int(DEFAULT_FLAGS), 7, len(name)) + name
        peer.send_frame(again)  # the name packet again, in a distribution frame
        assert await peer.closed_by_node(within=30)
        (line,) = await hx.logged("protocol error, closing")
        assert "hostile@127.0.0.1" in line and "bad distribution header" in line
        await pinger.answered_meanwhile(before)
        # A new connection from the same peer is served.
        again_peer = await HostilePeer.dial(hx.port, cookie, HX)
        assert await again_peer.call("pynode", (Atom("echo"), 2)) == (Atom("ok"), 2)
        again_peer.close()


async def test_data_before_the_handshake_ends_fails_the_handshake(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path) as (hx, pinger):
        before = await pinger.count()
        reader, writer = await asyncio.open_connection("127.0.0.1", hx.port)
        name = b"early@127.0.0.1"
        hello = b"N" + struct.pack(">QIH", int(DEFAULT_FLAGS), 7, len(name)) + name
        frame = payload_frame(c.RegSend(Atom("x"), Atom("pynode")), encode(Atom("too_soon"))[1:])  # type: ignore[arg-type]
        writer.write(struct.pack(">H", len(hello)) + hello + frame)  # no wait for the challenge
        async with asyncio.timeout(30):
            while await reader.read(65536):
                pass
        writer.close()
        (line,) = await hx.logged("handshake with early@127.0.0.1 failed")
        assert "recv_challenge_reply" in line
        await pinger.answered_meanwhile(before)


async def test_a_peer_that_never_ticks_is_dropped_after_net_ticktime(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path, "--net-ticktime", "2", ticktime=2) as (hx, pinger):
        peer = await HostilePeer.dial(hx.port, cookie, HX)
        before = await pinger.count()
        assert await peer.closed_by_node(within=30)  # silent: no ticks, no answers to the node's ticks
        (line,) = await hx.logged("hostile@127.0.0.1: no data within net_ticktime")
        assert "closing the connection" in line
        await pinger.answered_meanwhile(before)


def compressed_zeros(size: int, declared: int) -> bytes:
    """A compressed BINARY_EXT of ``size`` zero bytes (made in 1 MiB steps), declaring ``declared`` bytes."""
    packer = zlib.compressobj(9)
    parts = [packer.compress(b"m" + struct.pack(">I", size))]
    chunk = bytes(MiB)
    for _ in range(size // MiB):
        parts.append(packer.compress(chunk))
    parts.append(packer.flush())
    return b"P" + struct.pack(">I", declared) + b"".join(parts)


async def test_a_500_mib_compressed_term_is_refused_and_rss_stays_flat(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    bomb_size = 500 * MiB
    honest = compressed_zeros(bomb_size, bomb_size + 5)
    liar = honest[:1] + struct.pack(">I", 8 * MiB) + honest[5:]  # claims 8 MiB, holds 500 MiB
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path, "--max-message-size", "16M") as (hx, pinger):
        peer = await HostilePeer.dial(hx.port, cookie, HX)
        assert await peer.call("pynode", (Atom("echo"), 0)) == (Atom("ok"), 0)
        rss_before, peak_before = hx.rss(), hx.rss("VmHWM")
        before = await pinger.count()
        to_registry = c.RegSend(peer.me, Atom("pynode"))
        peer.send_raw(payload_frame(to_registry, honest) + payload_frame(to_registry, liar))
        assert await peer.call("pynode", (Atom("echo"), 1)) == (Atom("ok"), 1)  # the connection is still good
        lines = await hx.logged("could not be decoded", count=2)
        assert len(lines) == 2, lines
        assert f"declares {bomb_size + 5} bytes" in lines[0]
        assert "does not inflate to its declared 8388608 bytes" in lines[1]
        peak_growth = hx.rss("VmHWM") - peak_before
        print(f"500 MiB bomb: RSS {rss_before} KiB before, {hx.rss()} KiB after, peak grew {peak_growth} KiB")
        assert peak_growth < 64 * 1024, peak_growth  # the frames themselves (0.5 MiB each) and 8 MiB inflated
        await pinger.answered_meanwhile(before)
        peer.close()


@pytest.mark.parametrize(
    ("flags", "chunk", "refusal"),
    [
        (("--max-fragment-bytes", "32M"), 64 * 1024, "(max_fragment_bytes)"),
        (("--max-fragment-sequences", "500"), 1024, "(max_fragment_sequences)"),
    ],
)
async def test_1000_unfinished_fragment_sequences_are_capped_and_released(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path, flags: tuple[str, str], chunk: int, refusal: str
) -> None:
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path, *flags) as (hx, pinger):
        peer = await HostilePeer.dial(hx.port, cookie, HX)
        assert await peer.call("pynode", (Atom("echo"), 0)) == (Atom("ok"), 0)
        rss_before = hx.rss()
        before = await pinger.count()
        data = bytes(chunk)
        sent = 0
        try:
            for seq in range(1, 1001):  # each the first of 3 fragments; none ever finished
                body = b"\x83\x45" + struct.pack(">QQ", seq, 3) + b"\x00" + data
                peer.send_raw(struct.pack(">I", len(body)) + body)
                sent = seq
                if seq % 50 == 0:
                    await peer.writer.drain()
        except ConnectionError:
            pass  # the node closed it while we were still sending: what the cap is for
        assert await peer.closed_by_node(within=60)
        assert sent >= 500
        (line,) = await hx.logged("protocol error, closing")
        assert refusal in line, line
        await pinger.answered_meanwhile(before)
        await asyncio.sleep(0.5)
        rss_after = hx.rss()
        print(f"1000 unfinished sequences of {chunk} bytes: RSS {rss_before} KiB before, {rss_after} KiB after close,"
              f" peak {hx.rss('VmHWM')} KiB")  # fmt: skip
        assert rss_after - rss_before < 48 * 1024, (rss_before, rss_after)


async def test_10000_undecodable_messages_log_a_handful_of_lines_and_a_count(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path) as (hx, pinger):
        peer = await HostilePeer.dial(hx.port, cookie, HX)
        before = await pinger.count()
        bad = payload_frame(c.RegSend(peer.me, Atom("pynode")), b"\xff\x00")  # tag 255: no such term
        for _ in range(10):
            peer.send_raw(bad * 1000)
            await peer.writer.drain()
        assert await peer.call("pynode", (Atom("echo"), 3)) == (Atom("ok"), 3)  # after all 10,000, in order
        peer.close()
        (summary,) = await hx.logged("more like this were not logged")
        lines = hx.lines("could not be decoded")
        assert len(lines) == 10, lines
        assert "undecodable hostile@127.0.0.1: 9990 more like this were not logged" in summary
        await pinger.answered_meanwhile(before)


async def test_log_lines_and_log_interval_set_the_window(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    flags = ("--log-lines", "3", "--log-interval", "1")
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path, *flags) as (hx, _pinger):
        peer = await HostilePeer.dial(hx.port, cookie, HX)
        bad = payload_frame(c.RegSend(peer.me, Atom("pynode")), b"\xff\x00")
        peer.send_raw(bad * 10)
        assert await peer.call("pynode", (Atom("echo"), 1)) == (Atom("ok"), 1)  # all 10 were read
        await hx.logged("could not be decoded", count=3)
        assert len(hx.lines("could not be decoded")) == 3
        await asyncio.sleep(1.2)  # the window is over: the next line goes out with the count
        peer.send_raw(bad)
        assert await peer.call("pynode", (Atom("echo"), 2)) == (Atom("ok"), 2)
        (fourth,) = await hx.logged("(7 more like this were not logged)")
        assert "could not be decoded" in fourth
        assert len(hx.lines("could not be decoded")) == 4
        peer.close()


async def test_a_16_mib_unknown_request_from_erl_gets_a_short_bad_request_quickly(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path) as (_hx, pinger):
        e2 = await beam("e2")
        before = await pinger.count()
        got: Term = decode(await e2.eval_term(
            "Big = {no_such_request, #{blob => binary:copy(<<\"soon\">>, 4 bsl 20), list => lists:seq(1, 100000)}},"
            " T0 = erlang:monotonic_time(millisecond),"
            " R = gen_server:call({pynode, 'hx@127.0.0.1'}, Big, 60000),"
            " {R, erlang:monotonic_time(millisecond) - T0}",
            timeout=90,
        ))  # fmt: skip
        assert isinstance(got, tuple) and len(got) == 2, got
        got, elapsed_ms = got
        print(f"16 MiB unknown request: answered in {elapsed_ms} ms (sent, decoded, refused, replied)")
        assert isinstance(got, tuple) and got[0] == Atom("error"), got
        kind, text = got[1]
        assert kind == Atom("bad_request") and isinstance(text, bytes)
        assert len(text) <= 2100 and text.startswith(b"the pynode registry does not understand {no_such_request,#{")
        assert b'<<"soonsoonsoon' in text
        await pinger.answered_meanwhile(before)


async def test_an_integer_over_4300_digits_in_a_logged_term_is_written(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path) as (hx, pinger):
        got = await pinger.erl.eval(
            "{pynode_io, 'hx@127.0.0.1'} ! {io_request, self(), make_ref(),"
            '   {put_chars, unicode, io_lib, format, ["big ~p~n", [7 bsl 20000]]}},'
            " {error, {bad_request, T}} = gen_server:call({pynode, 'hx@127.0.0.1'}, {huge, -(7 bsl 20000)}), T"
        )
        assert got.startswith('<<"the pynode registry does not understand {huge,-16#'), got
        (line,) = await hx.logged("[e1@127.0.0.1] big 16#")
        assert len(line) < 11_000
        assert not hx.lines("Traceback") and not hx.lines("Exceeds the limit")


async def test_30_handshakes_with_a_wrong_cookie_log_10_lines(
    epmd_port: int, cookie: str, beam: BeamFactory, tmp_path: Path
) -> None:
    async with node_and_pinger(epmd_port, cookie, beam, tmp_path) as (hx, pinger):
        before = await pinger.count()
        for attempt in range(30):
            with pytest.raises(HandshakeError):
                await HostilePeer.dial(hx.port, "not-the-cookie", HX, name=f"guess{attempt}@127.0.0.1")
        await pinger.answered_meanwhile(before)
        lines = await hx.logged("failed: recv_challenge_reply: bad cookie", count=10)
        await asyncio.sleep(1.0)  # later lines, if any, would have arrived by now
        assert len(hx.lines("failed: recv_challenge_reply: bad cookie")) == 10, lines
        peer = await HostilePeer.dial(hx.port, cookie, HX)  # the right cookie still gets in
        assert await peer.call("pynode", (Atom("echo"), 4)) == (Atom("ok"), 4)
        peer.close()
