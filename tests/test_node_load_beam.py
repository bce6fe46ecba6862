"""Volume against a real OTP node: 10 MB messages, message order, and 100,000 calls without a leak."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import secrets

import pytest
from beam import BeamFactory, BeamNode
from test_node_beam import E1, PY, beam_term, evals_to, eventually, idle_process

from pynode.etf import Atom, decode
from pynode.node import Node

pytestmark = pytest.mark.beam

BIG = 10 * 1024 * 1024
SMALL_COUNT = 200


async def registered(erl: BeamNode, name: str) -> None:
    await eventually(lambda: evals_to(erl.eval(f"is_pid(whereis({name}))"), "true"), what=f"{name} registered")


async def test_ten_megabytes_echo_through_the_registry(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    expr = (
        f"B = crypto:strong_rand_bytes({BIG}), "
        f"{{ok, Back}} = gen_server:call({{pynode, {PY}}}, {{echo, B}}, 60000), "
        "{byte_size(Back), Back =:= B}"
    )
    assert await erl.eval(expr, timeout=90) == f"{{{BIG},true}}"


async def test_ten_megabytes_to_python_with_small_messages_alongside(py_node: Node, beam: BeamFactory) -> None:
    sink = idle_process(py_node, name="sink")
    erl = await beam("e1")
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    # One BEAM process sends the big binary; the evaluating process sends small ones meanwhile.
    expr = (
        f"B = crypto:strong_rand_bytes({BIG}), Parent = self(), "
        f"spawn(fun() -> {{sink, {PY}}} ! {{big, B}}, Parent ! sent end), "
        f"[{{sink, {PY}}} ! {{small, I}} || I <- lists:seq(1, {SMALL_COUNT})], "
        "receive sent -> ok after 30000 -> timeout end, erlang:md5(B)"
    )
    digest = await beam_term(erl, expr, timeout=90)
    small: list[int] = []
    big: bytes | None = None
    while big is None or len(small) < SMALL_COUNT:
        message = await sink.receive(timeout=30)
        if message[0] == Atom("big"):
            big = message[1]
        else:
            small.append(message[1])
    assert len(big) == BIG and hashlib.md5(big).digest() == digest
    assert small == list(range(1, SMALL_COUNT + 1))


async def test_ten_megabytes_from_python_with_small_messages_alongside(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    await py_node.connect(E1)
    big_rx = asyncio.create_task(
        erl.eval_term(
            "register(big_rx, self()), receive {big, B} -> {byte_size(B), erlang:md5(B)} after 60000 -> timeout end",
            timeout=90,
        )
    )
    small_rx = asyncio.create_task(
        erl.eval(
            "register(small_rx, self()), "
            f"[receive {{small, I}} -> I after 60000 -> timeout end || I <- lists:seq(1, {SMALL_COUNT})] "
            f"=:= lists:seq(1, {SMALL_COUNT})",
            timeout=90,
        )
    )
    await registered(erl, "big_rx")
    await registered(erl, "small_rx")
    data = secrets.token_bytes(BIG)
    sender = idle_process(py_node)
    sender.send(("big_rx", E1), (Atom("big"), data))
    for i in range(1, SMALL_COUNT + 1):
        sender.send(("small_rx", E1), (Atom("small"), i))
    assert decode(await big_rx) == (BIG, hashlib.md5(data).digest())
    assert await small_rx == "true"


async def test_a_thousand_messages_arrive_in_order_each_way(py_node: Node, beam: BeamFactory) -> None:
    inbox = idle_process(py_node, name="inbox")
    erl = await beam("e1")
    sent = await erl.eval(f"[{{inbox, {PY}}} ! {{n, I}} || I <- lists:seq(1, 1000)], ok")
    assert sent == "ok"
    received = [await inbox.receive(timeout=10) for _ in range(1000)]
    assert received == [(Atom("n"), i) for i in range(1, 1001)]

    in_order = asyncio.create_task(
        erl.eval(
            "register(rx, self()), "
            "Loop = fun L(I) when I > 1000 -> in_order; "
            "L(I) -> receive {n, I} -> L(I + 1); {n, J} -> {out_of_order, I, J} "
            "after 10000 -> {timeout, I} end end, Loop(1)",
            timeout=30,
        )
    )
    await registered(erl, "rx")
    rx = await beam_term(erl, "whereis(rx)")
    for i in range(1, 1001):  # alternate name and pid: one sender, one receiver, one order
        inbox.send(("rx", E1) if i % 2 else rx, (Atom("n"), i))
    assert await in_order == "in_order"


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_hundred_thousand_calls_leave_nothing_behind(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    registry = py_node.processes.name("pynode")
    assert registry is not None

    def calls(per_process: int, processes: int) -> str:
        return (
            "Parent = self(), "
            f"Call = fun C(0) -> ok; C(K) -> pong = gen_server:call({{pynode, {PY}}}, ping), C(K - 1) end, "
            f"Pids = [spawn_link(fun() -> Call({per_process}), Parent ! {{done, self()}} end) "
            f"|| _ <- lists:seq(1, {processes})], "
            "[receive {done, P} -> ok after 120000 -> timeout end || P <- Pids]"
        )

    assert await erl.eval(calls(500, 4), timeout=60) == "[ok,ok,ok,ok]"  # warm up caches and buffers
    conn = py_node.connections[E1]
    gc.collect()
    processes_before = len(py_node.processes)
    tasks_before = len(asyncio.all_tasks())
    rss_before = _rss_bytes()

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await erl.eval(calls(25_000, 4), timeout=120) == "[ok,ok,ok,ok]"
    elapsed = loop.time() - started

    gc.collect()
    assert not registry.monitored_by
    assert not conn.signals.monitors_in and not conn.signals.monitors_out and not conn.signals.links
    assert len(py_node.processes) == processes_before
    assert len(asyncio.all_tasks()) == tasks_before
    grown = _rss_bytes() - rss_before
    assert grown < 8 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB over 100,000 calls"
    assert elapsed < 60, f"100,000 calls took {elapsed:.1f} s"
    assert len(registry.mailbox) == 0
