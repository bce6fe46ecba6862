"""An agent's MCP servers (docs/protocol.md section 3, ``toolsets``): a session with each, held by the agent process.

pydantic-ai's ``MCPToolset`` speaks to each server. Its session lives in anyio task groups and
cancel scopes, which must be exited by the task that entered them (pydantic-ai issue 2818), and a
stdio server is an OS process that must end with its agent: so the agent process opens every
session in its own task when it starts and closes them there when it ends. Runs only borrow them:
entering and exiting the toolset in a run does nothing, and a call to a server that has gone
fails that call (the model is told), never the agent.

A ``command`` runs a program on the node's host, so it must be one the node was started with
(``--mcp-command PATH``). On Linux the program starts with a parent-death signal, so that it
dies with the node even when the node is killed with SIGKILL and cannot close its stdin.

The MCP client is the ``mcp`` extra (``pynode[mcp]``), imported only when an agent has toolsets.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Self

from pydantic_ai import RunContext
from pydantic_ai import exceptions as pai
from pydantic_ai.toolsets import AbstractToolset, PrefixedToolset, WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from pynode.bridge.errors import BridgeError, quoted
from pynode.bridge.spec import MCPServerSpec

__all__ = ["INSTALL_HINT", "McpServerToolset", "McpSessions", "resolve_commands"]

log = logging.getLogger("pynode.mcp")

INSTALL_HINT: Final = "pip install 'pynode[mcp]'"
INIT_TIMEOUT: Final = 10.0
"""Seconds a server has to start (a stdio program) and answer the ``initialize`` handshake."""
CONNECTION_CLOSED: Final = -32000
"""The MCP client's error code for a session whose server has gone."""

# Runs before the server's own program, replacing itself with it (execv keeps the signal): the
# kernel sends SIGKILL to the program when the node that started it dies, however it dies.
_PARENT_DEATH_GUARD: Final = (
    "import ctypes, os, signal, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) != 0:\n"  # PR_SET_PDEATHSIG
    "    sys.exit('pynode: prctl(PR_SET_PDEATHSIG) failed: ' + os.strerror(ctypes.get_errno()))\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('pynode: the node ended before its MCP server started')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
_TOOL_CONTROL: Final = (
    pai.ModelRetry,
    pai.ToolFailed,
    pai.CallDeferred,
    pai.ApprovalRequired,
    pai.SkipToolExecution,
    pai.SkipToolValidation,
)
"""What a tool call raises to tell pydantic-ai something: it goes through as it is."""


def resolve_commands(paths: Iterable[str]) -> frozenset[str]:
    """The programs of ``--mcp-command PATH`` as their real paths; ``ValueError`` for one that is not executable."""
    resolved: set[str] = set()
    for path in paths:
        found = shutil.which(path)
        if found is None:
            raise ValueError(f"{path}: no such executable")
        resolved.add(os.path.realpath(found))
    return frozenset(resolved)


@dataclass
class McpServerToolset(WrapperToolset[Any]):
    """One MCP server of an agent process, as runs see it: its tools (prefixed), approval, failures as values.

    ``wrapped`` is pydantic-ai's ``MCPToolset`` (inside a ``PrefixedToolset`` with a prefix); its
    session is the agent process's to open and close, so entering this toolset does not touch it.
    """

    spec: MCPServerSpec = field(kw_only=True)
    server: Any = field(kw_only=True)
    """The ``MCPToolset`` itself, whose session the agent process enters and exits."""
    index: int = field(kw_only=True)
    agent: str = field(kw_only=True)
    tool_names: list[str] = field(default_factory=list, kw_only=True)
    """The names the model calls the server's tools by, once its session is open."""
    failure: str | None = field(default=None, kw_only=True)
    """Why its session could not be opened (a restarted agent whose server has gone)."""

    @property
    def where(self) -> str:
        return f"toolsets[{self.index}] (MCP server {self.spec.label})"

    def check_connected(self) -> None:
        """``BridgeError(tool_error)`` unless the session is open and usable: a run fails at once, naming it."""
        if self.failure is not None or not self.server.is_running:
            why = f": {self.failure}" if self.failure else ""
            raise BridgeError("tool_error", f"agent {self.agent}: {self.where} is not connected{why}")

    async def __aenter__(self) -> Self:
        return self  # the session is the agent process's: a run only borrows it

    async def __aexit__(self, *args: Any) -> bool | None:
        return None

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        self.check_connected()  # checked before the run too; a session never opened must not be opened here
        return await super().get_tools(ctx)

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        if self.spec.requires_approval and not ctx.tool_call_approved:
            raise pai.ApprovalRequired  # the run's approver decides (runs.py), as for a BEAM tool
        try:
            return await super().call_tool(name, tool_args, ctx, tool)
        except pai.ModelRetry as exc:
            if _connection_closed(exc.__cause__):
                raise pai.ToolFailed(f"tool {quoted(name)} failed: the MCP server closed the connection") from None
            raise
        except _TOOL_CONTROL:
            raise
        except Exception as exc:  # the server went away mid-call, or its transport broke
            log.warning(
                "agent %s: call of %s to %s failed",
                self.agent,
                name,
                self.where,
                exc_info=True,
                extra={"agent": self.agent},
            )
            raise pai.ToolFailed(f"tool {quoted(name)} failed: {server_words(exc)}") from None


class McpSessions:
    """The sessions of one agent process with its MCP servers, opened and closed in that process's task."""

    def __init__(self, agent: str, specs: Sequence[MCPServerSpec], *, allowed: frozenset[str]) -> None:
        self.agent = agent
        self.specs = tuple(specs)
        self.allowed = allowed
        self.toolsets: list[McpServerToolset] = []
        self._open: list[McpServerToolset] = []

    async def open(self, taken: Sequence[str] = ()) -> None:
        """Start every session, in order; ``BridgeError(bad_spec)`` with the first server's words that failed.

        Every server is tried, so that a restarted agent keeps those it can reach. ``taken``: the
        agent's other tool names, which no server's tool may reuse. What opened is closed by
        :meth:`close`, whatever happened here.
        """
        self.toolsets = [self._toolset(index, spec) for index, spec in enumerate(self.specs)]
        names = {name: "the agent's tools" for name in taken}
        first: BridgeError | None = None
        for toolset in self.toolsets:
            try:
                await self._open_one(toolset, names)
            except BridgeError as exc:
                toolset.failure = toolset.failure or exc.message
                first = first or exc
        if first is not None:
            raise first

    async def _open_one(self, toolset: McpServerToolset, names: dict[str, str]) -> None:
        try:
            await toolset.server.__aenter__()
            self._open.append(toolset)
            tools = await toolset.server.list_tools()
        except Exception as exc:
            toolset.failure = server_words(exc)
            raise BridgeError("bad_spec", f"{toolset.where} could not be reached: {toolset.failure}") from None
        prefix = toolset.spec.prefix
        toolset.tool_names = [f"{prefix}_{tool.name}" if prefix else tool.name for tool in tools]
        for name in toolset.tool_names:
            if name in names:
                raise BridgeError(
                    "bad_spec",
                    f"the tool {quoted(name)} of {toolset.where} has the name of one of {names[name]};"
                    " give the toolset a prefix",
                )
            names[name] = toolset.where
        log.info(
            "agent %s: %s connected, tools %s",
            self.agent,
            toolset.where,
            ", ".join(toolset.tool_names) or "none",
            extra={"agent": self.agent},
        )

    async def close(self) -> None:
        """End every open session, the last opened first; a server that fails to close is logged, never raised.

        A stdio server's stdin is closed, and the program is ended if it does not exit (the MCP client
        allows it 2 s, then SIGTERM, then SIGKILL).
        """
        while self._open:
            toolset = self._open.pop()
            try:
                await toolset.server.__aexit__(None, None, None)
            except Exception as exc:
                log.info(
                    "agent %s: closing %s: %s",
                    self.agent,
                    toolset.where,
                    server_words(exc),
                    extra={"agent": self.agent},
                )

    def _toolset(self, index: int, spec: MCPServerSpec) -> McpServerToolset:
        mcp = _mcp_client()
        transport = mcp.StreamableHttpTransport(spec.url) if spec.url is not None else self._stdio(index, spec, mcp)
        server = mcp.MCPToolset(
            transport,
            id=spec.prefix or f"mcp{index}",
            tool_error_behavior="failed",  # a tool's own error is a failure the model is told about
            init_timeout=INIT_TIMEOUT,
        )
        wrapped: AbstractToolset[Any] = PrefixedToolset(server, spec.prefix) if spec.prefix else server
        return McpServerToolset(wrapped, spec=spec, server=server, index=index, agent=self.agent)

    def _stdio(self, index: int, spec: MCPServerSpec, mcp: _Client) -> Any:
        assert spec.command is not None
        found = shutil.which(spec.command) or spec.command
        if os.path.realpath(found) not in self.allowed:
            allowed = ", ".join(sorted(self.allowed)) or "none"
            raise BridgeError(
                "bad_spec",
                f"toolsets[{index}].mcp.command {quoted(spec.command)}: this node runs no program a spec names"
                f" unless it was started with --mcp-command PATH naming it (it allows: {allowed})",
            )
        command, args = guarded_command(found, list(spec.args))
        return mcp.StdioTransport(command, args, env=dict(spec.env) or None, keep_alive=False)


def guarded_command(program: str, args: list[str]) -> tuple[str, list[str]]:
    """The command line that starts ``program``: through the parent-death guard on Linux, else as it is."""
    if not sys.platform.startswith("linux"):
        return program, args
    return sys.executable, ["-I", "-S", "-c", _PARENT_DEATH_GUARD, str(os.getpid()), program, *args]


def server_words(exc: BaseException) -> str:
    """What went wrong, in the words of the server or its transport: the innermost errors of a group."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(server_words(inner) for inner in exc.exceptions))
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _connection_closed(cause: BaseException | None) -> bool:
    """Whether pydantic-ai's retry hides the client's "connection closed": the server has gone, retrying is vain."""
    code = getattr(getattr(cause, "error", None), "code", getattr(cause, "code", None))
    return code == CONNECTION_CLOSED


@dataclass(frozen=True, slots=True)
class _Client:
    """The classes of the optional MCP client, imported on first use."""

    MCPToolset: Any
    StdioTransport: Any
    StreamableHttpTransport: Any


_client: _Client | None = None


def _mcp_client() -> _Client:
    """pydantic-ai's ``MCPToolset`` and fastmcp's transports; ``bad_spec`` naming the extra when absent."""
    global _client
    if _client is None:
        try:
            from fastmcp.client.transports import StdioTransport, StreamableHttpTransport
            from pydantic_ai.mcp import MCPToolset
        except ImportError as exc:
            raise BridgeError(
                "bad_spec", f"toolsets need the MCP client, which this node lacks ({exc}): {INSTALL_HINT}"
            ) from None
        _client = _Client(MCPToolset, StdioTransport, StreamableHttpTransport)
    return _client
