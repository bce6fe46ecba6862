"""The pytest plugin ``pynode.testing.plugin``: real BEAM nodes for agent tests.

Opt-in, so that installing pynode adds no fixtures to a project's own: a project asks for it
with ``pytest_plugins = ["pynode.testing.plugin"]`` in its top-level ``conftest.py`` (or
``pytest -p pynode.testing.plugin``). Loading it imports neither pydantic-ai nor the agent bridge;
``pynode_node`` and ``py_node`` do, when a test first uses them.

Fixtures (each ended when its test ends; every OS process by its pid):

- ``epmd``: a private ``epmd -port N`` (an :class:`~pynode.testing.Epmd`); ``epmd_port`` is its
  port, also in ``$ERL_EPMD_PORT`` for the test; ``cookie``: a fresh random cookie.
- ``beam``: a :class:`~pynode.testing.Beam`. ``await beam("e1", kind="elixir")`` starts a node;
  ``beam.call``, ``beam.send``, ``beam.receive`` and ``beam.eval`` drive a default erl node.
- ``pynode_node``: a :class:`~pynode.testing.PynodeNode`, ``pynode@127.0.0.1`` in the test's
  event loop, with the registry and the Python agents of ``pynode_agents_dir``.
- ``pynode_agents_dir``: the ini option ``pynode_agents_dir`` (relative to the ini file), else
  ``agents/`` of the rootdir if it exists (else no Python agents, with a warning); override the
  fixture to choose per test. A folder named in the ini file that is missing fails the test.
- ``otp``: the Erlang/OTP release BEAM nodes start on (``None``: the ``erl`` on PATH);
  parametrize it (:func:`~pynode.testing.on_otp`) to run a test on several releases.
- ``py_node`` and ``erl``: the project's own pair, an in-loop node ``py@127.0.0.1`` with its
  registry and no Python agents, and an erl node ``e1@127.0.0.1`` already connected to it.
- ``fake_openai`` and ``fake_anthropic``: a :class:`~pynode.testing.FakeProvider` each, a scripted
  provider server on 127.0.0.1 (``fake_openai.openai_url``, ``fake_anthropic.anthropic_url`` are
  the ``base_url`` of a model map). pydantic-ai sends model requests only when allowed: mark such
  tests as the project does (pynode's own tests: ``@pytest.mark.model_requests``).

Async tests need pytest-asyncio: ``asyncio_mode = "auto"``, or ``@pytest.mark.asyncio`` on each.
"""

from __future__ import annotations

import functools
import secrets
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

from pynode.testing import otp as otp_runtimes
from pynode.testing.beam import BeamNode
from pynode.testing.cluster import Beam
from pynode.testing.epmd import Epmd, running_epmd
from pynode.testing.fake_provider import FakeProvider, running_fake_provider

if TYPE_CHECKING:
    from pynode import Node
    from pynode.testing.local import PynodeNode

try:
    import pytest_asyncio
except ImportError:  # pynode[testing] brings it; without it the async fixtures say so
    pytest_asyncio = None  # type: ignore[assignment]

_F = TypeVar("_F", bound=Callable[..., Any])

AGENTS_DIR_INI = "pynode_agents_dir"
PYNODE_NODE_NAME = "pynode@127.0.0.1"


def _async_fixture(function: _F) -> _F:
    """An async fixture through pytest-asyncio, or one that says how to get it."""
    if pytest_asyncio is not None:
        return cast(_F, pytest_asyncio.fixture(function))

    @functools.wraps(function)
    def missing(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("pynode's test fixtures need pytest-asyncio: pip install 'pynode[testing]'")

    return cast(_F, pytest.fixture(missing))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        AGENTS_DIR_INI,
        "folder of the Python agents the pynode_node fixture loads (default: agents/, if there)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "beam: needs real erl/elixir nodes and epmd")
    otp_runtimes.add_search_root(config.rootpath / ".cache")


@pytest.fixture
def epmd() -> Iterator[Epmd]:
    """A private epmd (`epmd -port N`, a child of the test run), ended by its pid after the test."""
    with running_epmd() as server:
        yield server


@pytest.fixture
def epmd_port(epmd: Epmd, monkeypatch: pytest.MonkeyPatch) -> int:
    """The private epmd's port, also in $ERL_EPMD_PORT for the test's duration."""
    monkeypatch.setenv("ERL_EPMD_PORT", str(epmd.port))
    return epmd.port


@pytest.fixture
def cookie() -> str:
    """A fresh random cookie for the test."""
    return "pynode_" + secrets.token_hex(12)


@pytest.fixture
def otp(request: pytest.FixtureRequest) -> str | None:
    """The OTP release the test's BEAM nodes start on; ``None`` (not parametrized): the erl on PATH.

    A release whose runtime is missing fails the test (it is never skipped nor run on another).
    """
    release: str | None = getattr(request, "param", None)
    if release is not None:
        found = otp_runtimes.erl_executable(release)
        actual = otp_runtimes.release_of(found)
        if actual != release:
            pytest.fail(
                f"no Erlang/OTP {release} runtime: looked in {otp_runtimes.where_looked(release)}"
                f" ({found} is OTP {actual or 'not runnable'}); scripts/_setup.sh fetches OTP 28"
            )
    return release


@_async_fixture
async def beam(epmd_port: int, cookie: str, otp: str | None) -> AsyncIterator[Beam]:
    """Start BEAM nodes with the test's cookie and epmd, or drive a default one; all are halted at teardown."""
    nodes = Beam(cookie=cookie, epmd_port=epmd_port, otp=otp)
    try:
        yield nodes
    finally:
        await nodes.stop_all()


@pytest.fixture
def pynode_agents_dir(request: pytest.FixtureRequest) -> Path | None:
    """The folder of Python agents ``pynode_node`` loads (see the module docstring)."""
    config = request.config
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    named = str(config.getini(AGENTS_DIR_INI))
    if named:
        path = (base / named).resolve()
        if not path.is_dir():
            pytest.fail(f"{AGENTS_DIR_INI} = {named!r}: {path} is not a directory")
        return path
    default = base / "agents"
    if default.is_dir():
        return default
    warnings.warn(
        f"pynode_node starts with no Python agents: no folder {default}"
        f" (set the ini option {AGENTS_DIR_INI}, or override the fixture)",
        stacklevel=1,
    )
    return None


@_async_fixture
async def pynode_node(epmd_port: int, cookie: str, pynode_agents_dir: Path | None) -> AsyncIterator[PynodeNode]:
    """A pynode node ``pynode@127.0.0.1`` in the test's loop, serving the agents of ``pynode_agents_dir``."""
    from pynode.testing.local import AgentsNotLoaded, running_pynode

    try:
        async with running_pynode(
            PYNODE_NODE_NAME, cookie=cookie, epmd_port=epmd_port, agents_dir=pynode_agents_dir
        ) as running:
            yield running
    except AgentsNotLoaded as exc:
        pytest.fail(str(exc))


@_async_fixture
async def py_node(epmd_port: int, cookie: str) -> AsyncIterator[Node]:
    """A pynode node ``py@127.0.0.1`` in this test's event loop, with its registry ``pynode``."""
    from pynode.testing.local import running_pynode

    async with running_pynode("py@127.0.0.1", cookie=cookie, epmd_port=epmd_port, agents_dir=None) as running:
        yield running.node


@_async_fixture
async def erl(py_node: Node, beam: Beam) -> AsyncIterator[BeamNode]:
    """An erl node ``e1@127.0.0.1`` already connected to ``py_node``."""
    node = await beam("e1")
    assert await node.eval("net_adm:ping('py@127.0.0.1')") == "pong"
    yield node


@_async_fixture
async def fake_openai() -> AsyncIterator[FakeProvider]:
    """A scripted OpenAI-compatible server (Chat Completions and Responses) on 127.0.0.1."""
    async with running_fake_provider() as provider:
        yield provider


@_async_fixture
async def fake_anthropic() -> AsyncIterator[FakeProvider]:
    """A scripted Anthropic Messages server on 127.0.0.1."""
    async with running_fake_provider() as provider:
        yield provider
