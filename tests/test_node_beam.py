"""The node against real OTP nodes: handshake both ways, calls, monitors, links, exits."""

import pytest
from beam import BeamFactory

from pynode.node import Node

pytestmark = pytest.mark.beam

PY = "'py@127.0.0.1'"


async def test_erl_pings_and_calls_the_registry(py_node: Node, beam: BeamFactory) -> None:
    erl = await beam("e1")
    assert await erl.eval(f"net_adm:ping({PY})") == "pong"
    assert await erl.eval(f"gen_server:call({{pynode, {PY}}}, ping)") == "pong"
    assert await erl.eval(f"lists:member({PY}, nodes(hidden))") == "true"
    assert await erl.eval(f"lists:member({PY}, nodes())") == "false"
