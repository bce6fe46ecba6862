"""A research agent: searches, then answers with a structured ``ResearchResult``.

Registered by the node as the process ``research``. Its ``search`` tool reads a small bundled corpus
(``agents/data/*.md``: Erlang/OTP, the BEAM, pydantic) unless ``PYNODE_SEARCH_URL`` names a search
service (an HTTP endpoint answering ``GET ?q=...&limit=N`` with JSON hits); the model comes from
``PYNODE_MODEL`` and is the offline ``test`` model by default.

From Elixir::

    GenServer.call({:research, :"py@127.0.0.1"}, {:run, "How do supervisors restart children?", %{}}, 30_000)
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, Field
from pydantic_ai import Agent, RunContext

logger = logging.getLogger(__name__)

DATA_DIR: Final = Path(__file__).parent / "data"
SEARCH_URL_ENV: Final = "PYNODE_SEARCH_URL"
MODEL_ENV: Final = "PYNODE_MODEL"
SNIPPET_CHARS: Final = 240
_WORD: Final = re.compile(r"[a-z0-9_]+")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS: Final = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "in", "is", "it",
        "its", "of", "on", "or", "that", "the", "their", "them", "then", "this", "to", "was", "what", "when",
        "where", "which", "who", "why", "with",
    }
)  # fmt: skip


class ResearchDeps(BaseModel):
    """What a caller may set per run (the ``deps`` run option)."""

    max_results: int = Field(default=3, ge=1, le=10)
    """Hits per search."""
    audience: str = "a software engineer"
    """Who the summary is written for."""


class SearchHit(BaseModel):
    """One search result as the model sees it."""

    title: str
    source: str
    snippet: str
    score: float


class ResearchResult(BaseModel):
    """The agent's answer, returned to the BEAM as a map with binary keys."""

    topic: str
    summary: str
    key_points: list[str]
    sources: list[str]


@dataclass(frozen=True, slots=True)
class Document:
    """One corpus file: ``# Title``, ``source:`` and ``tags:`` lines, then the text."""

    title: str
    source: str
    tags: tuple[str, ...]
    body: str
    terms: Counter[str]


def _tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in _STOPWORDS]


def parse_document(text: str, fallback_title: str) -> Document:
    """A corpus document from its markdown text."""
    title, source = fallback_title, ""
    tags: tuple[str, ...] = ()
    body_lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("# ") and title == fallback_title and not body_lines:
            title = line[2:].strip()
        elif line.startswith("source:") and not body_lines:
            source = line.removeprefix("source:").strip()
        elif line.startswith("tags:") and not body_lines:
            tags = tuple(t.strip() for t in line.removeprefix("tags:").split(",") if t.strip())
        elif line.strip() or body_lines:
            body_lines.append(line)
    body = " ".join(" ".join(body_lines).split())
    # Title and tags weigh more than the body: they say what the document is about.
    terms = Counter(_tokens(body)) + Counter(_tokens(title) * 3) + Counter(_tokens(" ".join(tags)) * 2)
    return Document(title=title, source=source, tags=tags, body=body, terms=terms)


def load_corpus(directory: Path = DATA_DIR) -> list[Document]:
    """Every ``*.md`` document of ``directory``, by file name."""
    return [parse_document(p.read_text(encoding="utf-8"), p.stem) for p in sorted(directory.glob("*.md"))]


CORPUS: Final = load_corpus()


def search_corpus(query: str, limit: int = 3, corpus: Iterable[Document] = CORPUS) -> list[SearchHit]:
    """The best matching documents for ``query`` (TF-IDF over words), best first; none if nothing matches."""
    documents = list(corpus)
    words = set(_tokens(query))
    if not words or not documents:
        return []
    frequency = {w: sum(1 for d in documents if w in d.terms) for w in words}
    scored: list[tuple[float, Document]] = []
    for doc in documents:
        score = sum(
            (1 + math.log(doc.terms[w])) * math.log(1 + len(documents) / frequency[w]) for w in words if doc.terms[w]
        )
        if score > 0:
            scored.append((score, doc))
    scored.sort(key=lambda pair: (-pair[0], pair[1].title))
    return [
        SearchHit(title=d.title, source=d.source, snippet=_snippet(d.body, words), score=round(s, 3))
        for s, d in scored[:limit]
    ]


def _snippet(body: str, words: set[str]) -> str:
    """The sentence sharing most words with the query, cut to a readable length."""
    sentences = _SENTENCE_END.split(body)
    best = max(sentences, key=lambda s: len(words & set(_tokens(s))))
    return best if len(best) <= SNIPPET_CHARS else best[: SNIPPET_CHARS - 3].rstrip() + "..."


async def search_service(url: str, query: str, limit: int) -> list[SearchHit]:
    """Ask the configured search service: ``GET url?q=query&limit=N``, JSON hits (a list or ``results``)."""
    import httpx2  # pydantic-ai's own HTTP client; imported only when a service is configured

    async with httpx2.AsyncClient(timeout=15.0) as client:
        response = await client.get(url, params={"q": query, "limit": limit})
        response.raise_for_status()
        payload: Any = response.json()
    items = payload.get("results", []) if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise ValueError("the search service did not answer a list of hits")
    return [_service_hit(item, rank) for rank, item in enumerate(items[:limit]) if isinstance(item, dict)]


def _service_hit(item: dict[str, Any], rank: int) -> SearchHit:
    snippet = str(item.get("snippet") or item.get("content") or item.get("description") or "")
    return SearchHit(
        title=str(item.get("title") or item.get("url") or f"result {rank + 1}"),
        source=str(item.get("url") or item.get("source") or ""),
        snippet=snippet[:SNIPPET_CHARS],
        score=float(item.get("score") or 1.0 / (rank + 1)),
    )


agent: Agent[ResearchDeps, ResearchResult] = Agent(
    os.environ.get(MODEL_ENV, "test"),
    deps_type=ResearchDeps,
    output_type=ResearchResult,
    name="research",
    instructions=(
        "You are a careful research assistant. Use the `search` tool before answering, base the summary on "
        "what it finds, list the key points, and cite the sources of the documents you used."
    ),
)


@agent.system_prompt
def dated() -> str:
    """Today's date, so the model can tell how recent its sources are."""
    return f"Today is {date.today().isoformat()}."


@agent.instructions
def audience(ctx: RunContext[ResearchDeps]) -> str:
    deps = ctx.deps if ctx.deps is not None else ResearchDeps()
    return f"Write the summary for {deps.audience}."


@agent.tool
async def search(ctx: RunContext[ResearchDeps], query: str) -> list[SearchHit]:
    """Search for documents about `query`; returns titles, sources and matching snippets."""
    limit = (ctx.deps if ctx.deps is not None else ResearchDeps()).max_results
    url = os.environ.get(SEARCH_URL_ENV)
    if url:
        try:
            return await search_service(url, query, limit)
        except Exception:
            logger.warning("search service %s failed; searching the bundled corpus", url, exc_info=True)
    return search_corpus(query, limit)
