"""The fixtures (epmd, epmd_port, cookie, otp, beam, py_node, erl, pynode_node) come from the
pytest plugin ``pynode.testing.plugin``, which a project asks for by name, as here.

No test reaches a model provider: pydantic-ai refuses every real model request unless the test
is marked ``model_requests`` (the tests that talk to the scripted provider servers on 127.0.0.1).
"""

from collections.abc import Iterator

import pydantic_ai.models
import pytest
from agent_support import run_log  # noqa: F401 (a fixture shared by the run tests)

pytest_plugins = ["pynode.testing.plugin"]


@pytest.fixture(autouse=True)
def _no_model_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    # Set and restored by hand, not with monkeypatch: asking for monkeypatch here would set it
    # up before every other fixture, and its environment undo would then run after theirs.
    before = pydantic_ai.models.ALLOW_MODEL_REQUESTS
    pydantic_ai.models.ALLOW_MODEL_REQUESTS = request.node.get_closest_marker("model_requests") is not None
    try:
        yield
    finally:
        pydantic_ai.models.ALLOW_MODEL_REQUESTS = before
