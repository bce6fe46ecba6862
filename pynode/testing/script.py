"""Models scripted from a test: what the model says, turn by turn, and what it was sent.

The model is the contract's ``{function, Fun}`` (docs/protocol.md section 3): the fun lives on a
BEAM test node, as it would in an Elixir app, and the Python node calls it for every model
request. Build the turns with :func:`text`, :func:`tool_call` and :func:`output` (or a list of
them for one response with several parts)::

    script = await ScriptedModel.start(beam, [tool_call("lookup", {"sku": "A1"}), text("In stock.")])
    await beam.call(py.address("pynode"), (Atom("create_agent"), Atom("shop"), {Atom("model"): script.model}))
    ...
    first, second = await script.requests()
    assert first.info[Atom("tools")][0][Atom("name")] == b"lookup"

The fun runs on the node it was made on; a run that asks for more turns than the script holds
fails with ``model_error`` naming the turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pynode.etf import decode
from pynode.etf.types import Atom, Pid, Term
from pynode.testing.beam import BeamNode

__all__ = ["ScriptedModel", "ScriptedRequest", "output", "text", "tool_call"]


def text(content: str | Sequence[str]) -> Term:
    """A text response; a list of strings is streamed as that many ``text_delta`` events."""
    if isinstance(content, str):
        return (Atom("text"), content)
    return (Atom("text"), list(content))


def tool_call(name: str, args: Mapping[str, Any], call_id: str | None = None) -> Term:
    """The model calls tool ``name`` with ``args``."""
    if call_id is None:
        return (Atom("tool_call"), name, dict(args))
    return (Atom("tool_call"), name, dict(args), call_id)


def output(value: Mapping[str, Any]) -> Term:
    """The run's structured output (for an agent or run with an ``output_schema``)."""
    return (Atom("output"), dict(value))


@dataclass(frozen=True, slots=True)
class ScriptedRequest:
    """One model request as the fun got it: the conversation (terms) and what was offered."""

    messages: Term
    """The messages so far, as ``messages_as => terms`` gives them: maps with binary keys."""
    info: Term
    """``#{tools => [#{name, description, parameters}], output_schema, text_output, instructions}``."""


class ScriptedModel:
    """A ``{function, Fun}`` model whose turns a test sets; made on a BEAM node the test drives."""

    def __init__(self, beam: BeamNode, holder: Pid, model: Term) -> None:
        self.beam = beam
        self.holder = holder
        self.model = model
        """The model term: put it as ``model`` in an agent spec or in run options."""

    @classmethod
    async def start(cls, beam: BeamNode, turns: Sequence[Term] = ()) -> ScriptedModel:
        """A script on ``beam`` (a node started by the ``beam`` fixtures), holding ``turns``."""
        expr = "pynode_ctl:script()" if beam.kind == "erl" else ":pynode_ctl.script()"
        made = decode(await beam.eval_term(expr))
        assert type(made) is tuple and len(made) == 2 and isinstance(made[0], Pid), made
        script = cls(beam, made[0], made[1])
        if turns:
            await script.add(*turns)
        return script

    async def add(self, *turns: Term) -> None:
        """More turns, taken after those already there."""
        await self.beam.call(self.holder, (Atom("add"), list(turns)))

    async def requests(self) -> list[ScriptedRequest]:
        """Every model request so far, oldest first."""
        seen = await self.beam.call(self.holder, Atom("requests"))
        assert isinstance(seen, list), seen
        return [ScriptedRequest(messages, info) for messages, info in seen]
