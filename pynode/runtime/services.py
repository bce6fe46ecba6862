"""The node's own processes: ``net_kernel`` (for ``net_adm:ping``), an io server, and their supervisor.

The io server is the group leader of functions this node runs on BEAM nodes
with ``erpc``: it answers io requests as a group leader would, so that
``io:format`` or ``IO.puts`` there neither hangs nor fails, and it writes
what they print to this node's log.

Both run under the node's supervisor ``pynode_sup`` (docs/protocol.md section 1):
killed, they come back under their names. The registry and the agents are
added to the same supervisor when the bridge starts.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Final, Protocol

from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, ImproperList, Pid, Term
from pynode.runtime.genserver import CallReply, From, GenServer
from pynode.runtime.process import Process
from pynode.runtime.supervisor import ChildSpec, RestartIntensity, Supervisor
from pynode.runtime.table import ProcessTable

if TYPE_CHECKING:
    from pynode.runtime.kernel import Kernel

__all__ = [
    "SUPERVISOR_NAME",
    "IoServer",
    "NetKernel",
    "node_supervisor",
    "render_chars",
    "show_term",
    "start_services",
]

log = logging.getLogger("pynode.io")

_IO_REQUEST: Final = Atom("io_request")
_IO_REPLY: Final = Atom("io_reply")
_PUT_CHARS: Final = Atom("put_chars")
_REQUESTS: Final = Atom("requests")
_OK: Final = Atom("ok")
_ERROR: Final = Atom("error")
_ENOTSUP: Final = Atom("enotsup")
_EOF: Final = Atom("eof")
SUPERVISOR_NAME: Final = "pynode_sup"
"""The registered name of the supervisor of the node's own processes."""
_GETS: Final = frozenset(map(Atom, ("get_chars", "get_line", "get_until", "get_password")))


class NetKernel(GenServer):
    """Answers ``{is_auth, Node}`` with ``yes``: that is all ``net_adm:ping`` asks."""

    async def handle_call(self, request: Term, caller: From) -> CallReply:
        if type(request) is tuple and len(request) == 2 and request[0] == Atom("is_auth"):
            return Atom("yes")
        return Atom("ignored")


def render_chars(chars: Term) -> str:
    """Characters as the io protocol carries them (binary, charlist, iolist) as text."""
    if isinstance(chars, bytes | bytearray):
        return bytes(chars).decode("utf-8", "replace")
    if isinstance(chars, str):
        return chars
    if isinstance(chars, int):
        return chr(chars) if 0 <= chars <= 0x10FFFF else ""
    if isinstance(chars, list):
        return "".join(render_chars(part) for part in chars)
    if isinstance(chars, ImproperList):
        return "".join(render_chars(part) for part in chars.elements) + render_chars(chars.tail)
    return format_term(chars, limit=_SHOWN_CHARS)


# ~[Width][.Precision[.Pad]][Modifiers]Control, as io:format reads a control sequence.
_DIRECTIVE = re.compile(r"~(-?(?:\d+|\*))?(?:\.(\d+|\*)?(?:\.(.))?)?[tlkK]*([~ncfegswpWPBX#bx+i])", re.S)
_TAKES_TWO: Final = frozenset("WPXx")  # a depth or a prefix follows the value
_SHOWN_CHARS: Final = 10_000


def _render_format(fmt: Term, args: Term) -> str:
    """A best-effort rendering of ``io_lib:format(Fmt, Args)`` for the log."""
    text = render_chars(fmt)
    values = list(args) if isinstance(args, list) else [args]

    def directive(match: re.Match[str]) -> str:
        width, precision, _pad, kind = match.groups()
        for part in (width, precision):
            if part is not None and part.endswith("*") and values:
                values.pop(0)  # a '*' takes the number from the arguments
        if kind == "~":
            return "~"
        if kind == "n":
            return "\n"
        if not values:
            return match.group(0)
        value = values.pop(0)
        if kind in _TAKES_TWO and values:
            values.pop(0)
        if kind == "s":
            return render_chars(value)
        if kind == "c" and isinstance(value, int):
            return render_chars(value)
        return show_term(value)

    return _DIRECTIVE.sub(directive, text)


def show_term(term: Term) -> str:
    """A term written as ``~p`` writes it, for log lines (within a budget: it comes from a peer)."""
    return format_term(term, limit=_SHOWN_CHARS)


class IoServer(Process):
    """A group leader for remote functions this node calls; output goes to the log."""

    async def run(self) -> None:
        while True:
            message = await self.receive()
            if type(message) is tuple and len(message) == 4 and message[0] == _IO_REQUEST:
                _, sender, reply_as, request = message
                reply = self.handle_request(request, sender)
                if type(sender) is Pid:
                    self.send(sender, (_IO_REPLY, reply_as, reply))

    def handle_request(self, request: Term, sender: Term) -> Term:
        if type(request) is not tuple or not request:
            return (_ERROR, Atom("request"))
        op = request[0]
        if op == _PUT_CHARS:
            if len(request) == 3:
                self.emit(sender, render_chars(request[2]))
                return _OK
            if len(request) == 5:
                args = request[4]
                text = _render_format(*args) if type(args) is list and len(args) == 2 else show_term(request)
                self.emit(sender, text)
                return _OK
        if op == _REQUESTS and len(request) == 2 and isinstance(request[1], list):
            reply: Term = _OK
            for sub in request[1]:
                reply = self.handle_request(sub, sender)
            return reply
        if op in _GETS:
            return _EOF
        return (_ERROR, _ENOTSUP)

    def emit(self, sender: Term, text: str) -> None:
        origin = sender.node if type(sender) is Pid else "?"
        for line in text.rstrip("\n").split("\n"):
            log.info("[%s] %s", origin, line)


def start_services(node: Kernel[Process], intensity: RestartIntensity | None = None) -> Process:
    """Start the node's own processes under its supervisor; return the one that sends on the node's behalf."""
    supervisor = Supervisor(intensity=intensity, label=SUPERVISOR_NAME)
    node.spawn(supervisor, name=SUPERVISOR_NAME)
    supervisor.start_child(ChildSpec(name="net_kernel", start=NetKernel))
    supervisor.start_child(ChildSpec(name="pynode_io", start=IoServer))
    return node.spawn(Process())


class _ProcessOwner(Protocol):
    """What :func:`node_supervisor` looks in: the node's process table."""

    @property
    def name(self) -> Atom: ...

    @property
    def processes(self) -> ProcessTable: ...


def node_supervisor(node: _ProcessOwner) -> Supervisor:
    """The supervisor of ``node``'s own processes (an error once it has ended)."""
    supervisor = node.processes.name(SUPERVISOR_NAME)
    if not isinstance(supervisor, Supervisor):
        raise LookupError(f"{node.name} has no running {SUPERVISOR_NAME}")
    return supervisor
