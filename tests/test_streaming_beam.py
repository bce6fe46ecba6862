"""Stream events reach the BEAM in order, before the result (docs/protocol.md §5), from real erl nodes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest
from agent_support import ASK_HUMAN_SPEC as TOOL_SPEC
from agent_support import create, registry_of, term
from beam import BeamFactory, BeamNode
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pynode.etf.types import Atom, Term
from pynode.node import Node

pytestmark = pytest.mark.beam


# Collects a run's stream: {Events in arrival order, Result}; the receive is bounded.
COLLECT = (
    "Collect = fun Loop(Ref, Acc) -> receive"
    " {pynode_event, Ref, E} -> Loop(Ref, [E | Acc]);"
    " {pynode_result, Ref, R} -> {lists:reverse(Acc), R}"
    " after 15000 -> {lists:reverse(Acc), timeout} end end,"
)


def deltas(events: list[Term]) -> list[bytes]:
    out: list[bytes] = []
    for event in events:
        assert isinstance(event, tuple)
        if event[0] == Atom("text_delta"):
            assert isinstance(event[1], bytes)
            out.append(event[1])
    return out


async def test_start_run_streams_text_deltas_then_the_result(
    erl: BeamNode, py_node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="pynode.run")
    await create(erl, "talker", '#{model => <<"test">>}')
    got = await term(
        erl,
        COLLECT + "{ok, Ref} = gen_server:call({talker, 'py@127.0.0.1'}, {start_run, <<\"hi\">>, #{}}),"
        " Collect(Ref, [])",
    )
    assert isinstance(got, tuple)
    events, result = got
    assert isinstance(events, list) and isinstance(result, tuple)
    assert result[0] == Atom("ok")
    output = result[1][Atom("output")]
    chunks = deltas(events)
    assert len(chunks) == len(events) > 1  # TestModel streams word by word, the first chunk included
    assert chunks[0] == b"success "  # the first chunk (the PartStartEvent) is not lost
    assert b"".join(chunks) == output == b"success (no tool calls)"
    assert registry_of(py_node).limits.in_flight == 0
    assert [r.getMessage().endswith(" ended: ok") for r in caplog.records if " ended: " in r.getMessage()] == [True]


async def test_tool_call_and_tool_result_events_come_before_the_text(erl: BeamNode) -> None:
    await create(erl, "asker", TOOL_SPEC)
    got = await term(
        erl,
        "{ok, Ref} = gen_server:call({asker, 'py@127.0.0.1'}, {start_run, <<\"ask\">>, #{}}),"
        " Loop = fun L(Acc) -> receive"
        "   {pynode_event, Ref, E} -> L([{event, E} | Acc]);"
        "   {pynode_tool_call, Ref, #{call_id := Id, reply_to := To} = C} ->"
        '     To ! {tool_result, Id, {ok, #{<<"answer">> => 42}}}, L([{call, C} | Acc]);'
        "   {pynode_result, Ref, R} -> {lists:reverse(Acc), R}"
        " after 15000 -> {lists:reverse(Acc), timeout} end end,"
        " Loop([])",
    )
    assert isinstance(got, tuple)
    seen, result = got
    assert isinstance(seen, list) and isinstance(result, tuple) and result[0] == Atom("ok")
    kinds = [item[1][0] if item[0] == Atom("event") else Atom("handler") for item in seen]
    assert kinds[:3] == [Atom("tool_call"), Atom("handler"), Atom("tool_result")]
    assert set(kinds[3:]) == {Atom("text_delta")}
    _, (_, name, args, call_id) = seen[0]
    _, call = seen[1]
    _, (_, rname, content, rcall_id) = seen[2]
    assert name == rname == b"ask_human"
    assert isinstance(args, dict) and isinstance(args.get(b"question"), bytes)
    assert call_id == rcall_id == call[Atom("call_id")]
    assert content == {b"answer": 42}
    text = b"".join(item[1][1] for item in seen[3:])
    assert text == result[1][Atom("output")] == b'{"ask_human":{"answer":42}}'


async def test_stream_to_another_pid_on_a_synchronous_run(erl: BeamNode) -> None:
    await create(erl, "talker", '#{model => <<"test">>}')
    got = await term(
        erl,
        "Self = self(),"
        " Listener = spawn(fun() -> Acc = fun L(A) -> receive"
        "   {pynode_event, _, E} -> L([E | A]); stop -> Self ! {heard, lists:reverse(A)}"
        "   after 15000 -> Self ! {heard, timeout} end end, Acc([]) end),"
        " Reply = gen_server:call({talker, 'py@127.0.0.1'}, {run, <<\"hi\">>, #{stream_to => Listener}}),"
        # The events were sent before the reply, on the same connection: they are in Listener's mailbox.
        " timer:sleep(100), Listener ! stop,"
        " Heard = receive {heard, H} -> H after 5000 -> none end,"
        " Mine = receive {pynode_event, _, _} = M -> M after 200 -> none end,"
        " {Reply, Heard, Mine}",
    )
    assert isinstance(got, tuple)
    reply, heard, mine = got
    assert isinstance(reply, tuple) and reply[0] == Atom("ok")
    assert isinstance(heard, list) and len(heard) > 1
    assert b"".join(deltas(heard)) == reply[1][Atom("output")]
    assert mine == Atom("none")  # the caller of a synchronous run gets the reply only


def chunked_model(chunks: list[str]) -> FunctionModel:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for chunk in chunks:
            yield chunk

    return FunctionModel(stream_function=stream)


async def test_streaming_function_model_chunks_arrive_in_order(erl: BeamNode, py_node: Node) -> None:
    chunks = [f"chunk {i:03d}; " for i in range(50)]
    registry_of(py_node).models.register("chunky", chunked_model(chunks))
    await create(erl, "chunky", '#{model => <<"chunky">>}')
    got = await term(
        erl,
        COLLECT + "{ok, Ref} = gen_server:call({chunky, 'py@127.0.0.1'}, {start_run, <<\"go\">>, #{}}),"
        " Collect(Ref, [])",
    )
    assert isinstance(got, tuple)
    events, result = got
    assert isinstance(events, list) and isinstance(result, tuple) and result[0] == Atom("ok")
    assert deltas(events) == [c.encode() for c in chunks]
    assert result[1][Atom("output")] == "".join(chunks).encode()


async def test_a_suspended_reader_holds_the_run_and_memory_stays_bounded(erl: BeamNode, py_node: Node) -> None:
    """20,000 chunks to a suspended ``stream_to``: nothing is lost or reordered, memory stays bounded.

    A suspended process still gets messages (the BEAM queues them in its mailbox), so the
    node's socket only backs up when the BEAM stops reading: the test also stops the erl OS
    process (SIGSTOP) for a moment and checks that the run then waits on the connection's
    drain instead of buffering the stream in Python.
    """
    count = 20_000
    payload = "x" * 1000
    produced = 0
    release = asyncio.Event()

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        nonlocal produced
        await release.wait()
        for i in range(count):
            produced += 1
            yield f"{i:05d}{payload}"

    registry_of(py_node).models.register("firehose", FunctionModel(stream_function=stream))
    await create(erl, "firehose", '#{model => <<"firehose">>}')
    # The reader checks the order and counts; the run's result is forwarded to it by the caller.
    started = await erl.eval(
        "Reader = spawn(fun() -> Check = fun L(N, Bytes) -> receive"
        "   {pynode_event, _, {text_delta, <<I:5/binary, _/binary>> = B}} ->"
        "     N = binary_to_integer(I), L(N + 1, Bytes + byte_size(B));"
        "   {pynode_result, _, {ok, _}} -> exit({done, N, Bytes})"
        " after 60000 -> exit({stalled, N}) end end, receive go -> Check(0, 0) end end),"
        " register(reader, Reader), Self = self(),"
        # A suspension lasts as long as the process that made it: this one holds it until told.
        " Holder = spawn(fun() -> erlang:suspend_process(Reader), Self ! suspended,"
        "   receive resume -> erlang:resume_process(Reader) after 120000 -> ok end end),"
        " register(holder, Holder), receive suspended -> ok after 5000 -> exit(not_suspended) end,"
        " {status, suspended} = erlang:process_info(Reader, status),"
        " Starter = spawn(fun() ->"
        "   {ok, Ref} = gen_server:call({firehose, 'py@127.0.0.1'},"
        '     {start_run, <<"go">>, #{stream_to => Reader}}),'
        "   Self ! {started, Ref},"
        "   receive {pynode_result, Ref, R} -> Reader ! {pynode_result, Ref, R} after 120000 -> ok end end),"
        " receive {started, _} -> started after 5000 -> timeout end"
    )
    assert started == "started"
    conn = py_node.connections["e1@127.0.0.1"]
    loop = asyncio.get_running_loop()
    rss_before = _rss_bytes()
    os.kill(erl.os_pid, signal.SIGSTOP)
    try:
        release.set()
        stalled_at = -1
        deadline = loop.time() + 20
        while loop.time() < deadline:
            before = produced
            await asyncio.sleep(0.3)
            # Stalled: nothing produced for a while, with the socket backed up past its low-water mark.
            if produced == before and produced > 0 and conn.transport.get_write_buffer_size() > 1 << 20:
                stalled_at = produced
                break
        assert 0 < stalled_at < count, f"the run never waited for the reader (produced {produced})"
        # Python holds at most the transport's high-water mark (4 MiB) plus one message.
        assert conn.transport.get_write_buffer_size() <= (4 << 20) + 64 * 1024
        await asyncio.sleep(0.5)
        assert produced == stalled_at  # waiting, not buffering
        assert _rss_bytes() - rss_before < 32 << 20
    finally:
        os.kill(erl.os_pid, signal.SIGCONT)
    got = await erl.eval(
        "Reader = whereis(reader), MRef = monitor(process, Reader),"
        " {status, Status} = erlang:process_info(Reader, status),"
        " holder ! resume, Reader ! go,"
        " {Status, receive {'DOWN', MRef, process, _, Why} -> Why after 60000 -> timeout end}",
        timeout=70,
    )
    # Still suspended until now: every event waited in its mailbox, and all arrive in order.
    assert got == f"{{suspended,{{done,{count},{count * (5 + len(payload))}}}}}"
    assert produced == count
    assert registry_of(py_node).limits.in_flight == 0


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_run_stuck_on_a_stopped_reader_still_times_out(erl: BeamNode, py_node: Node, beam: BeamFactory) -> None:
    """The run waits on the reader's connection, but its ``timeout`` still ends it: no hang."""
    # Big events: the socket buffers fill within the run's timeout even on a busy machine.
    registry_of(py_node).models.register("endless", chunked_model(["y" * 10_000] * 20_000))
    await create(erl, "endless", '#{model => <<"endless">>}')
    await erl.eval("register(reader, spawn(fun() -> timer:sleep(120000) end)), ok")
    caller = await beam("e2")
    assert (
        await caller.eval(
            "persistent_term:put(reader, rpc:call('e1@127.0.0.1', erlang, whereis, [reader])),"
            " is_pid(persistent_term:get(reader))"
        )
        == "true"
    )
    os.kill(erl.os_pid, signal.SIGSTOP)
    try:
        got = await term(
            caller,
            "T0 = erlang:monotonic_time(millisecond),"
            " R = gen_server:call({endless, 'py@127.0.0.1'},"
            '   {run, <<"go">>, #{stream_to => persistent_term:get(reader), timeout => 1500}}, 20000),'
            " {R, erlang:monotonic_time(millisecond) - T0}",
        )
        conn = py_node.connections["e1@127.0.0.1"]
        assert conn.transport.get_write_buffer_size() > 0  # the reader's node really was not reading
    finally:
        os.kill(erl.os_pid, signal.SIGCONT)
    assert isinstance(got, tuple), got
    result, elapsed = got
    assert result == (
        Atom("error"),
        (Atom("timeout"), b"the run of endless did not end within 1500 ms; it was cancelled"),
    )
    assert isinstance(elapsed, int) and 1500 <= elapsed < 3000
    assert registry_of(py_node).limits.in_flight == 0
