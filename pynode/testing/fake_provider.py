"""A scripted model provider on a real socket: OpenAI Chat Completions and Responses, Anthropic Messages.

The provider SDKs inside pydantic-ai talk to it over HTTP exactly as they talk to the real services,
so a test proves the whole provider path (requests, JSON answers, server-sent events, HTTP errors,
stalls, dropped connections) without a network. It is not a mock of pynode: it only knows the
providers' published wire formats.

    provider = FakeProvider()
    await provider.start()
    provider.script(Turn(tool_calls=[ToolCall("weather", {"city": "Lisbon"})]), Turn(text="Sunny."))
    # a model map: #{provider => openai, name => <<"gpt-4o">>, base_url => provider.openai_url}
    ...
    provider.requests[1].tool_results()   # what the model was sent back

Each request takes the next scripted :class:`Turn` (or asks ``responder``, when the script is empty);
every request is recorded (:class:`Recorded`), with the moment the client closed its connection
if it did so while the answer was still being sent. Run it apart from pytest with
``python -m pynode.testing.fake_provider --port 0``: it prints its URL, and answers every
request with an echo of the last user message (or turns from ``--script FILE``, a JSON list).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["STAMP", "FakeProvider", "Recorded", "ToolCall", "Turn", "running_fake_provider"]

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 503: "overloaded_error"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the scripted model makes: ``args`` are sent as JSON, in pieces when streamed."""

    name: str
    args: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """One scripted answer.

    ``text`` and ``tool_calls`` make a normal answer; ``status`` other than 200 makes an error answer
    with ``error`` as the provider's message (and ``retry_after`` seconds in ``Retry-After``).
    ``delay`` passes before the first byte, ``chunk_delay`` between streamed events; a streamed
    text goes out ``chunk_chars`` characters per event, tool arguments ``args_chunk_chars`` at a time.
    ``drop_after`` closes the connection after that many streamed events (mid-stream).
    """

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] | list[ToolCall] = ()
    status: int = 200
    error: str = "scripted error"
    retry_after: float | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_chars: int = 4
    args_chunk_chars: int = 5
    drop_after: int | None = None
    input_tokens: int = 11
    output_tokens: int = 7
    stamp_chunks: bool = False
    """Each ``%STAMP%`` in a streamed event becomes the wall-clock time, in microseconds, at which
    that event is written: a benchmark's receiver subtracts it from its own clock (one clock)."""
    output: dict[str, Any] | None = None
    """Structured output, answered as the request asks for it: JSON text when it asks for a JSON
    schema format (native structured output), else a call of its output tool (``final_result``)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Turn:
        """A turn from the JSON the command line reads: the same fields, tool calls as objects."""
        calls = [ToolCall(c["name"], c.get("args", {}), c.get("id")) for c in data.get("tool_calls", [])]
        return cls(**{**{k: v for k, v in data.items() if k != "tool_calls"}, "tool_calls": calls})


@dataclass
class Recorded:
    """One request as the server received it."""

    api: str
    """``chat`` (Chat Completions), ``responses`` or ``anthropic``."""
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float
    """``time.monotonic()`` when its body had arrived."""
    turn: Turn | None = None
    closed_by_client_at: float | None = None
    """When the client closed the connection while this answer was still being sent (else ``None``)."""
    events_sent: int = 0

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def texts(self) -> list[str]:
        """Every text the model was sent, in order (instructions, user prompts, earlier answers)."""
        return list(_strings(self.body.get("messages", self.body.get("input", []))))

    def tool_results(self) -> list[str]:
        """The tool results the model was sent back, as the JSON or text they were sent as."""
        found: list[str] = []
        if self.api == "chat":
            for message in self.body.get("messages", []):
                if message.get("role") == "tool":
                    found.append(_content_text(message.get("content")))
        elif self.api == "responses":
            for item in self.body.get("input", []):
                if isinstance(item, dict) and item.get("type") == "function_call_output":
                    found.append(_content_text(item.get("output")))
        else:
            for message in self.body.get("messages", []):
                for block in message.get("content", []) if isinstance(message.get("content"), list) else []:
                    if block.get("type") == "tool_result":
                        found.append(_content_text(block.get("content")))
        return found

    def instructions(self) -> str:
        """The system prompt the model was sent (all of it, joined)."""
        if self.api == "anthropic":
            return _content_text(self.body.get("system"))
        if self.api == "responses" and self.body.get("instructions"):
            return str(self.body["instructions"])
        messages = self.body.get("messages", self.body.get("input", []))
        return "\n".join(
            _content_text(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        )

    def last_user_text(self) -> str:
        messages = self.body.get("messages", self.body.get("input", []))
        for message in reversed(messages if isinstance(messages, list) else []):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list) and any(
                    isinstance(b, dict) and b.get("type") == "tool_result" for b in content
                ):
                    continue
                return _content_text(content)
        return ""


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_content_text(part) for part in content)
    if isinstance(content, dict):
        for key in ("text", "content", "output"):
            if key in content:
                return _content_text(content[key])
    return json.dumps(content)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key in ("content", "text", "output", "arguments", "input"):
            if key in value:
                yield from _strings(value[key])


STAMP: Final = "%STAMP%"
"""What :attr:`Turn.stamp_chunks` replaces with the time an event is sent."""


def echo_responder(request: Recorded) -> Turn:
    """The answer when nothing is scripted: the last user message, echoed."""
    return Turn(text=f"echo: {request.last_user_text()}")


class _ClientGone(Exception):
    """The client closed the connection while its answer was being sent."""


class FakeProvider:
    """The server: :meth:`start` it on 127.0.0.1, :meth:`script` its answers, read :attr:`requests`."""

    def __init__(self, responder: Callable[[Recorded], Turn] = echo_responder) -> None:
        self.responder = responder
        self.requests: list[Recorded] = []
        self.connections_opened = 0
        self.in_flight = 0
        """Requests whose answer is being prepared or sent now."""
        self.most_in_flight = 0
        """The most requests ever answered at once (what a model's ``max_concurrency`` bounds)."""
        self._turns: deque[Turn] = deque()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._arrived = asyncio.Event()
        self._ids = itertools.count(1)
        self.port = 0

    # -- what a test uses ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """The ``base_url`` for the OpenAI SDK (and any OpenAI-compatible client)."""
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        """The ``base_url`` for the Anthropic SDK."""
        return self.url

    def script(self, *turns: Turn) -> None:
        """Answer the next requests with these turns, in order (then ``responder`` again)."""
        self._turns.extend(turns)

    @property
    def unanswered(self) -> int:
        """Scripted turns no request has taken yet."""
        return len(self._turns)

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, limit=_MAX_HEADER_BYTES, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end every connection (aborted; its handler then ends by itself)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            _, stuck = await asyncio.wait(set(self._handlers), timeout=5)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def wait_for_requests(self, count: int, timeout: float = 10) -> list[Recorded]:
        """Wait until ``count`` requests have arrived (TimeoutError after ``timeout`` s)."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.requests

    # -- HTTP/1.1 ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections_opened += 1
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    keep_alive = await self._answer(request, reader, writer)
                except OSError:  # the client left while its answer was being written
                    if request.closed_by_client_at is None:
                        request.closed_by_client_at = time.monotonic()
                    raise
                finally:
                    self.in_flight -= 1
                if not keep_alive:
                    return
        except (OSError, asyncio.IncompleteReadError, _ClientGone):
            return
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> Recorded | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        _method, path, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > _MAX_BODY_BYTES:
            raise ConnectionError("request body too large")
        raw = await reader.readexactly(length) if length else b""
        body = json.loads(raw) if raw else {}
        api = "responses" if path.endswith("/responses") else "anthropic" if path.endswith("/messages") else "chat"
        recorded = Recorded(api=api, path=path, headers=headers, body=body, received_at=time.monotonic())
        self.requests.append(recorded)
        self._arrived.set()
        return recorded

    async def _answer(self, request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        turn = _as_requested(request, self._turns.popleft() if self._turns else self.responder(request))
        request.turn = turn
        watcher = asyncio.create_task(self._watch_close(reader, request))
        try:
            if turn.delay:
                await self._sleep(turn.delay, request, watcher)
            if turn.status != 200:
                await self._send_json(writer, turn.status, self._error_body(request, turn), self._error_headers(turn))
                return True
            if request.stream:
                await self._send_stream(writer, request, turn, watcher)
                return turn.drop_after is None
            await self._send_json(writer, 200, self._answer_body(request, turn))
            return True
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch_close(self, reader: asyncio.StreamReader, request: Recorded) -> None:
        """The client sends nothing while it waits for an answer: a read that ends (or is reset) means it left."""
        try:
            data = await reader.read(1)
        except OSError:  # ConnectionResetError: a client that aborts sends RST
            data = b""
        if not data:
            request.closed_by_client_at = time.monotonic()

    async def _sleep(self, seconds: float, request: Recorded, watcher: asyncio.Task[None]) -> None:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
        if done and request.closed_by_client_at is not None:
            raise _ClientGone

    async def _send_json(
        self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        headers = {"content-type": "application/json", "content-length": str(len(payload)), **(extra or {})}
        writer.write(_head(status, headers) + payload)
        await writer.drain()

    async def _send_stream(
        self, writer: asyncio.StreamWriter, request: Recorded, turn: Turn, watcher: asyncio.Task[None]
    ) -> None:
        headers = {"content-type": "text/event-stream", "transfer-encoding": "chunked", "cache-control": "no-cache"}
        writer.write(_head(200, headers))
        await writer.drain()
        for index, (event, data) in enumerate(self._events(request, turn)):
            if turn.drop_after is not None and index >= turn.drop_after:
                writer.transport.abort()  # mid-stream, without the chunked terminator
                return
            if index and turn.chunk_delay:
                await self._sleep(turn.chunk_delay, request, watcher)
            if request.closed_by_client_at is not None:
                raise _ClientGone
            text = (
                f"event: {event}\n" if event else ""
            ) + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
            if turn.stamp_chunks:
                text = text.replace(STAMP, str(time.time_ns() // 1000))
            chunk = text.encode()
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            request.events_sent += 1
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    # -- the providers' formats ----------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def _call_ids(self, turn: Turn, prefix: str) -> list[str]:
        return [call.id or self._next_id(prefix) for call in turn.tool_calls]

    def _error_headers(self, turn: Turn) -> dict[str, str]:
        # Retry-After holds whole seconds (RFC 9110); the providers add retry-after-ms for finer waits.
        if turn.retry_after is None:
            return {}
        return {
            "retry-after": str(math.ceil(turn.retry_after)),
            "retry-after-ms": str(round(turn.retry_after * 1000)),
        }

    def _error_body(self, request: Recorded, turn: Turn) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(turn.status, "api_error")
        if request.api == "anthropic":
            return {"type": "error", "error": {"type": kind, "message": turn.error}}
        return {"error": {"message": turn.error, "type": kind, "param": None, "code": None}}

    def _answer_body(self, request: Recorded, turn: Turn) -> dict[str, Any]:
        model = str(request.body.get("model", "fake"))
        if request.api == "chat":
            ids = self._call_ids(turn, "call_")
            message: dict[str, Any] = {"role": "assistant", "content": turn.text}
            if turn.tool_calls:
                message["tool_calls"] = [
                    {"id": i, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.args)}}
                    for i, c in zip(ids, turn.tool_calls, strict=True)
                ]
            return {
                "id": self._next_id("chatcmpl-"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": "tool_calls" if turn.tool_calls else "stop"}
                ],
                "usage": _chat_usage(turn),
            }
        if request.api == "responses":
            return self._response_object(model, turn, self._responses_output(turn), "completed")
        ids = self._call_ids(turn, "toolu_")
        content: list[dict[str, Any]] = [{"type": "text", "text": turn.text}] if turn.text is not None else []
        content += [
            {"type": "tool_use", "id": i, "name": c.name, "input": c.args}
            for i, c in zip(ids, turn.tool_calls, strict=True)
        ]
        return {
            "id": self._next_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if turn.tool_calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens},
        }

    def _responses_output(self, turn: Turn) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = []
        if turn.text is not None:
            output.append(_responses_message(self._next_id("msg_"), turn.text))
        for call_id, call in zip(self._call_ids(turn, "call_"), turn.tool_calls, strict=True):
            output.append(_responses_call(self._next_id("fc_"), call_id, call.name, json.dumps(call.args)))
        return output

    def _response_object(self, model: str, turn: Turn, output: list[dict[str, Any]], status: str) -> dict[str, Any]:
        usage = {
            "input_tokens": turn.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": turn.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": turn.input_tokens + turn.output_tokens,
        }
        return {
            "id": self._next_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage if status == "completed" else None,  # the service counts once, at the end
        }

    def _events(self, request: Recorded, turn: Turn) -> Iterator[tuple[str | None, Any]]:
        model = str(request.body.get("model", "fake"))
        if request.api == "chat":
            yield from self._chat_events(model, turn)
        elif request.api == "responses":
            yield from self._responses_events(model, turn)
        else:
            yield from self._anthropic_events(model, turn)

    def _chat_events(self, model: str, turn: Turn) -> Iterator[tuple[str | None, Any]]:
        base = {
            "id": self._next_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield None, chunk({"role": "assistant", "content": ""})
        for piece in _pieces(turn.text or "", turn.chunk_chars):
            yield None, chunk({"content": piece})
        for index, (call_id, call) in enumerate(zip(self._call_ids(turn, "call_"), turn.tool_calls, strict=True)):
            head = {"index": index, "id": call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            yield None, chunk({"tool_calls": [head]})
            for piece in _pieces(json.dumps(call.args), turn.args_chunk_chars):
                yield None, chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield None, chunk({}, "tool_calls" if turn.tool_calls else "stop")
        yield None, {**base, "choices": [], "usage": _chat_usage(turn)}
        yield None, "[DONE]"

    def _responses_events(self, model: str, turn: Turn) -> Iterator[tuple[str | None, Any]]:
        sequence = itertools.count()
        created = self._response_object(model, turn, [], "in_progress")

        def event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
            return kind, {"type": kind, "sequence_number": next(sequence), **fields}

        yield event("response.created", response=created)
        yield event("response.in_progress", response=created)
        output: list[dict[str, Any]] = []
        if turn.text is not None:
            item_id = self._next_id("msg_")
            index = len(output)
            item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}
            yield event("response.output_item.added", output_index=index, item=item)
            part = {"type": "output_text", "text": "", "annotations": []}
            yield event("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=part)
            for piece in _pieces(turn.text, turn.chunk_chars):
                yield event(
                    "response.output_text.delta",
                    item_id=item_id, output_index=index, content_index=0, delta=piece, logprobs=[],
                )  # fmt: skip
            yield event(
                "response.output_text.done",
                item_id=item_id, output_index=index, content_index=0, text=turn.text, logprobs=[],
            )  # fmt: skip
            done_part = {"type": "output_text", "text": turn.text, "annotations": []}
            yield event(
                "response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=done_part
            )
            message = _responses_message(item_id, turn.text)
            output.append(message)
            yield event("response.output_item.done", output_index=index, item=message)
        for call_id, call in zip(self._call_ids(turn, "call_"), turn.tool_calls, strict=True):
            item_id = self._next_id("fc_")
            index = len(output)
            arguments = json.dumps(call.args)
            started = {**_responses_call(item_id, call_id, call.name, ""), "status": "in_progress"}
            yield event("response.output_item.added", output_index=index, item=started)
            for piece in _pieces(arguments, turn.args_chunk_chars):
                yield event("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
            yield event(
                "response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments
            )
            done = _responses_call(item_id, call_id, call.name, arguments)
            output.append(done)
            yield event("response.output_item.done", output_index=index, item=done)
        yield event("response.completed", response=self._response_object(model, turn, output, "completed"))

    def _anthropic_events(self, model: str, turn: Turn) -> Iterator[tuple[str | None, Any]]:
        message: dict[str, Any] = {
            "id": self._next_id("msg_"), "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": turn.input_tokens, "output_tokens": 1},
        }  # fmt: skip
        yield "message_start", {"type": "message_start", "message": message}
        index = 0
        if turn.text is not None:
            block: dict[str, Any] = {"type": "text", "text": ""}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            for piece in _pieces(turn.text, turn.chunk_chars):
                delta = {"type": "text_delta", "text": piece}
                yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
            index += 1
        for call_id, call in zip(self._call_ids(turn, "toolu_"), turn.tool_calls, strict=True):
            use: dict[str, Any] = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": use}
            for piece in _pieces(json.dumps(call.args), turn.args_chunk_chars):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
            index += 1
        stop = {"stop_reason": "tool_use" if turn.tool_calls else "end_turn", "stop_sequence": None}
        yield "message_delta", {"type": "message_delta", "delta": stop, "usage": {"output_tokens": turn.output_tokens}}
        yield "message_stop", {"type": "message_stop"}


def _as_requested(request: Recorded, turn: Turn) -> Turn:
    """A turn with ``output`` made into what the request asked for (see :attr:`Turn.output`)."""
    if turn.output is None:
        return turn
    body = request.body
    native = (
        (body.get("output_config") or {}).get("format")
        or (body.get("response_format") or {}).get("type") == "json_schema"
        or ((body.get("text") or {}).get("format") or {}).get("type") == "json_schema"
    )
    if native:
        return dataclasses.replace(turn, text=json.dumps(turn.output), output=None)
    names = [(t.get("function") or t).get("name", "") for t in body.get("tools", []) if isinstance(t, dict)]
    tool = next((n for n in names if n.startswith("final_result")), "final_result")
    return dataclasses.replace(turn, tool_calls=[*turn.tool_calls, ToolCall(tool, turn.output)], output=None)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _chat_usage(turn: Turn) -> dict[str, int]:
    return {
        "prompt_tokens": turn.input_tokens,
        "completion_tokens": turn.output_tokens,
        "total_tokens": turn.input_tokens + turn.output_tokens,
    }


def _responses_message(item_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _responses_call(item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


@contextlib.asynccontextmanager
async def running_fake_provider(responder: Callable[[Recorded], Turn] = echo_responder) -> AsyncIterator[FakeProvider]:
    """A :class:`FakeProvider` on a free port of 127.0.0.1 for the block."""
    provider = FakeProvider(responder)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.stop()


async def _serve_forever(port: int, script: list[Turn]) -> None:
    provider = FakeProvider()
    provider.script(*script)
    await provider.start(port)
    print(provider.url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await provider.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A scripted OpenAI/Anthropic-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one; the URL is printed)")
    parser.add_argument("--script", type=Path, help="a JSON list of turns to answer with, in order, before echoing")
    args = parser.parse_args(argv)
    script = [Turn.from_json(t) for t in json.loads(args.script.read_text())] if args.script else []
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port, script))
    return 0


if __name__ == "__main__":
    sys.exit(main())
