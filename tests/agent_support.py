"""What the agent tests share: the node's name as erl writes it, a tool spec, the registry process."""

from __future__ import annotations

from pynode.bridge.registry import Registry
from pynode.node import Node

PY = "'py@127.0.0.1'"
REG = f"{{pynode, {PY}}}"

ASK_HUMAN_SPEC = (
    '#{model => <<"test">>, tools => [#{name => <<"ask_human">>,'
    ' description => <<"Ask a person">>,'
    ' parameters => #{<<"type">> => <<"object">>,'
    '   <<"properties">> => #{<<"question">> => #{<<"type">> => <<"string">>}},'
    '   <<"required">> => [<<"question">>]}}]}'
)
"""An agent whose one tool has no handler: its calls go to tool_handler or the start_run caller."""


def registry_of(node: Node) -> Registry:
    process = node.processes.name("pynode")
    assert isinstance(process, Registry)
    return process
