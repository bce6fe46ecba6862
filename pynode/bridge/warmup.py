"""One run of the node's own before it serves anyone, so that pydantic-ai's first-run work is done.

pydantic-ai does part of its set-up on the first run of an agent, not when it is imported: it imports
anyio's asyncio backend and builds the schemas and graph parts a run needs (some 3,000 objects, tens
of milliseconds). On a node that work would fall on its first caller, and under a burst of runs it
lands in the middle of the burst's memory: the objects it leaves, spread over hundreds of pymalloc's
1 MiB arenas, keep every one of them from going back to the system once the burst is over.

So before the node joins, it makes one run of a private agent built the way a caller's is (a
``create_agent`` spec on ``TestModel`` with one BEAM tool, answered here; streamed events taken),
through :func:`~pynode.bridge.runner.execute_run`, and encodes its Result as a reply would be. The
agent is not instrumented, so a node that traces sends no span for it, and ``info`` counts no run.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from pynode.bridge.models import ModelCache
from pynode.bridge.runner import RunEvent, build_agent, execute_run
from pynode.bridge.spec import ToolSpec, parse_agent_spec, parse_run_options
from pynode.bridge.tools import ToolOk, ToolReply
from pynode.etf import Atom, decode, encode
from pynode.etf.types import Term

__all__ = ["warm_up"]

log = logging.getLogger("pynode.warmup")

_SPEC: Term = {
    Atom("model"): b"test",
    Atom("instructions"): b"Answer with the lookup's result.",
    Atom("tools"): [
        {
            Atom("name"): b"lookup",
            Atom("description"): b"Looks a word up",
            Atom("parameters"): {b"type": b"object", b"properties": {b"word": {b"type": b"string"}}},
        }
    ],
}


async def warm_up() -> dict[Atom, Term]:
    """Make one run of a private agent and encode its reply; return its Result (for the tests).

    Raises what the run raises: the caller logs it and starts anyway, since a node that skipped
    its warm-up only serves its first run more slowly.
    """
    started = time.perf_counter()
    models = ModelCache()  # the user's models (providers, keys) are not touched
    spec = parse_agent_spec(decode(encode(_SPEC)))
    definition = build_agent(spec, models, name="pynode_warm_up")
    definition.agent.instrument = False
    events: list[RunEvent] = []

    async def answer(tool: ToolSpec, call_id: str, args: dict[str, Any]) -> ToolReply:
        return ToolOk({"word": args.get("word"), "found": True})

    result = await execute_run(
        definition,
        "Warm up",
        parse_run_options(decode(encode({Atom("events"): True}))),
        models=models,
        dispatch=answer,
        on_event=events.append,
        run_id=uuid.uuid4().hex,
    )
    decode(encode((Atom("pynode_result"), Atom("warm_up"), (Atom("ok"), result))))
    log.debug("warmed up in %.1f ms (%d events)", (time.perf_counter() - started) * 1000, len(events))
    return result
