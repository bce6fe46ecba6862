"""The bundled research agent, in-process: its corpus search, its search service, and whole runs."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_core import to_jsonable_python

from pynode.bridge.errors import BridgeError
from pynode.bridge.loader import scan_agents
from pynode.bridge.models import ModelCache
from pynode.bridge.runner import AgentDefinition, execute_run
from pynode.bridge.spec import RunOptions, ToolSpec
from pynode.bridge.tools import ToolReply
from pynode.etf.types import Atom

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_search_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNODE_SEARCH_URL", raising=False)


@pytest.fixture(scope="module")
def research_defn() -> AgentDefinition:
    scan = scan_agents(ROOT / "agents")
    (defn,) = [a for a in scan.agents if a.name == "research"]
    return defn


@pytest.fixture(scope="module")
def research(research_defn: AgentDefinition) -> ModuleType:
    return sys.modules["pynode_agents.research"]


async def no_beam_tools(tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
    raise AssertionError("the research agent has no BEAM tools")


def searching(query: str) -> tuple[FunctionModel, list[AgentInfo]]:
    """A model that searches for ``query``, then cites the sources the search returned."""
    seen: list[AgentInfo] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(info)
        returns = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart("search", {"query": query}, "s1")])
        hits = to_jsonable_python(returns[-1].content)  # SearchHit objects, in-process
        answer = {
            "topic": query,
            "summary": hits[0]["snippet"] if hits else "nothing found",
            "key_points": [h["title"] for h in hits],
            "sources": [h["source"] for h in hits],
        }
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, answer, "out")])

    return FunctionModel(respond), seen


# --- the corpus -------------------------------------------------------------------------------


def test_corpus_is_bundled(research: Any) -> None:
    assert 8 <= len(research.CORPUS) <= 15
    for doc in research.CORPUS:
        assert doc.title
        assert doc.source.startswith("https://")
        assert len(doc.body) > 200


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("how does a supervisor restart its children", "Supervisors and supervision trees"),
        ("hidden node cookie epmd", "Distributed Erlang"),
        ("gen_server call timeout", "gen_server, the generic server behaviour"),
        ("term_to_binary encoding of improper lists", "The external term format"),
        ("pydantic ValidationError model_dump", "Validation with pydantic"),
    ],
)
def test_search_finds_the_right_document_first(research: Any, query: str, title: str) -> None:
    hits = research.search_corpus(query)
    assert hits[0].title == title
    assert hits[0].score >= hits[-1].score
    assert len(hits) <= 3


def test_search_snippet_comes_from_the_document(research: Any) -> None:
    (hit,) = research.search_corpus("mailbox receive", limit=1)
    assert hit.title == "Message passing and mailboxes"
    assert "mailbox" in hit.snippet.lower()
    assert len(hit.snippet) <= research.SNIPPET_CHARS


def test_search_without_matches(research: Any) -> None:
    assert research.search_corpus("quantum chromodynamics") == []
    assert research.search_corpus("the of and") == []


# --- runs -------------------------------------------------------------------------------------


async def test_run_returns_a_research_result(research: Any, research_defn: AgentDefinition) -> None:
    result = await research.agent.run("What is a supervisor?", model=TestModel(), deps=research.ResearchDeps())
    assert isinstance(result.output, research.ResearchResult)


async def test_run_through_the_bridge_returns_a_map(research_defn: AgentDefinition) -> None:
    result = await execute_run(
        research_defn,
        "What is a supervisor?",
        RunOptions(model="test"),
        models=ModelCache(),
        dispatch=no_beam_tools,
        on_event=None,
        run_id="r1",
    )
    assert set(result[Atom("output")]) == {"topic", "summary", "key_points", "sources"}


async def test_the_search_tool_feeds_the_answer(research_defn: AgentDefinition) -> None:
    model, seen = searching("supervisor restart strategy")
    models = ModelCache(lambda name: model)
    result = await execute_run(
        research_defn,
        "How do supervisors restart children?",
        RunOptions(model="scripted", deps={"audience": "an Elixir beginner"}),
        models=models,
        dispatch=no_beam_tools,
        on_event=None,
        run_id="r2",
    )
    output = result[Atom("output")]
    assert output["key_points"][0] == "Supervisors and supervision trees"
    assert "https://www.erlang.org/doc/system/sup_princ.html" in output["sources"]
    instructions = seen[0].instructions or ""
    assert "Write the summary for an Elixir beginner." in instructions
    assert [t.name for t in seen[0].function_tools] == ["search"]


async def test_deps_limit_the_hits(research_defn: AgentDefinition) -> None:
    model, _ = searching("erlang processes messages")
    result = await execute_run(
        research_defn,
        "Tell me about Erlang",
        RunOptions(model="scripted", deps={"max_results": 1}),
        models=ModelCache(lambda name: model),
        dispatch=no_beam_tools,
        on_event=None,
        run_id="r3",
    )
    assert len(result[Atom("output")]["sources"]) == 1


async def test_deps_that_do_not_fit(research_defn: AgentDefinition) -> None:
    with pytest.raises(BridgeError) as exc:
        await execute_run(
            research_defn,
            "x",
            RunOptions(model="test", deps={"max_results": 0}),
            models=ModelCache(),
            dispatch=no_beam_tools,
            on_event=None,
            run_id="r4",
        )
    assert exc.value.kind == "bad_request"
    assert "max_results" in exc.value.message


async def test_system_prompt_is_dated(research: Any) -> None:
    result = await research.agent.run("x", model=TestModel(), deps=research.ResearchDeps())
    first = result.all_messages()[0]
    prompts = [p.content for p in first.parts if isinstance(p, SystemPromptPart)]
    assert f"Today is {datetime.date.today().isoformat()}." in prompts


# --- a configured search service ----------------------------------------------------------------


async def serve_once(answer: Any, requests: list[str]) -> tuple[asyncio.Server, str]:
    """A one-route HTTP server on 127.0.0.1 answering every GET with ``answer`` as JSON."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode()
        requests.append(request_line.split()[1])
        for _ in range(100):  # headers
            if (await reader.readline()) in (b"\r\n", b""):
                break
        body = json.dumps(answer).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/search"


@pytest.fixture
async def service() -> AsyncIterator[tuple[str, list[str]]]:
    requests: list[str] = []
    answer = {"results": [{"title": "Remote doc", "url": "https://example.org/doc", "snippet": "from afar"}]}
    server, url = await serve_once(answer, requests)
    async with server:
        yield url, requests


async def test_search_service_is_asked(research: Any, service: tuple[str, list[str]]) -> None:
    url, requests = service
    hits = await research.search_service(url, "hot code loading", 2)
    assert [(h.title, h.source, h.snippet) for h in hits] == [("Remote doc", "https://example.org/doc", "from afar")]
    query = parse_qs(urlsplit(requests[0]).query)
    assert query == {"q": ["hot code loading"], "limit": ["2"]}


async def test_search_tool_uses_the_configured_service(
    research_defn: AgentDefinition, service: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, requests = service
    monkeypatch.setenv("PYNODE_SEARCH_URL", url)
    model, _ = searching("anything")
    result = await execute_run(
        research_defn,
        "x",
        RunOptions(model="scripted"),
        models=ModelCache(lambda name: model),
        dispatch=no_beam_tools,
        on_event=None,
        run_id="r5",
    )
    assert result[Atom("output")]["sources"] == ["https://example.org/doc"]
    assert len(requests) == 1


async def test_unreachable_service_falls_back_to_the_corpus(
    research_defn: AgentDefinition, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PYNODE_SEARCH_URL", f"http://127.0.0.1:{port}/search")
    model, _ = searching("links monitors noconnection")
    result = await execute_run(
        research_defn,
        "x",
        RunOptions(model="scripted"),
        models=ModelCache(lambda name: model),
        dispatch=no_beam_tools,
        on_event=None,
        run_id="r6",
    )
    assert result[Atom("output")]["key_points"][0] == "Links and monitors"
