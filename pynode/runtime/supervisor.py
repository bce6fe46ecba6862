"""A one-for-one supervisor, as OTP's: children restarted under their names when they die.

The supervisor traps exits and is linked to each child it starts. A child that
ends is restarted according to its restart type (``permanent``: always;
``transient``: unless it ended normally, i.e. with ``normal``, ``shutdown`` or
``{shutdown, _}``; ``temporary``: never), unless restarts come too fast: more
than ``max_restarts`` within ``period`` seconds and the supervisor gives up,
ending its children with ``shutdown`` and then itself with ``shutdown``, as
OTP's does on reaching its restart intensity. Whoever owns the supervisor
decides what its end means (for the ``pynode`` command: the node stops).

The restart-intensity rule is a pure function of the times restarts happened
(:class:`RestartIntensity`); the supervisor passes in the loop's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from pynode.etf.pretty import format_term
from pynode.etf.types import Atom, Pid, Term
from pynode.runtime.genserver import CallReply, From, GenServer
from pynode.runtime.process import NORMAL, SHUTDOWN, Process

__all__ = [
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_RESTART_PERIOD",
    "ChildSpec",
    "Restart",
    "RestartIntensity",
    "Supervisor",
    "is_normal_exit",
]

log = logging.getLogger("pynode.supervisor")

Restart: TypeAlias = Literal["permanent", "transient", "temporary"]

DEFAULT_MAX_RESTARTS: Final = 10
"""Restarts allowed within :data:`DEFAULT_RESTART_PERIOD` before the supervisor gives up.

OTP's default (1 in 5 s) suits a tree of supervisors where a deeper one gives up
first; here one supervisor holds every agent, so a few crashes of different agents
must not stop the node, while a crash loop still does.
"""
DEFAULT_RESTART_PERIOD: Final = 10.0
"""Seconds over which restarts are counted."""

_EXIT: Final = Atom("EXIT")
_WHICH_CHILDREN: Final = Atom("which_children")
_COUNT_CHILDREN: Final = Atom("count_children")
_WORKER: Final = Atom("worker")
_RESTARTING: Final = Atom("restarting")
_UNDEFINED: Final = Atom("undefined")
_ERROR: Final = Atom("error")
_BAD_REQUEST: Final = Atom("bad_request")


def is_normal_exit(reason: Term) -> bool:
    """``normal``, ``shutdown`` and ``{shutdown, _}``: the ends a transient child is not restarted after."""
    if reason in (NORMAL, SHUTDOWN):
        return True
    return type(reason) is tuple and len(reason) == 2 and reason[0] == SHUTDOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """How to start one child, under which name, and when to start it again."""

    name: str
    """The registered name the child gets, the first time and after every restart."""
    start: Callable[[], Process]
    """Makes a fresh process for the child (not yet spawned; the supervisor spawns and links it)."""
    restart: Restart = "permanent"
    started: Callable[[Process], None] | None = None
    """Told of each process started for this child, the first one and every restart."""
    gone: Callable[[Process, Term], None] | None = None
    """Told when the child ended for good (not restarted), with its exit reason."""


class RestartIntensity:
    """OTP's restart intensity: at most ``max_restarts`` restarts in any ``period`` seconds."""

    __slots__ = ("_times", "max_restarts", "period")

    def __init__(self, max_restarts: int = DEFAULT_MAX_RESTARTS, period: float = DEFAULT_RESTART_PERIOD) -> None:
        if max_restarts < 0 or period <= 0:
            raise ValueError("max_restarts must be >= 0 and period > 0")
        self.max_restarts = max_restarts
        self.period = period
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a restart at ``now``; False when it is one too many (the supervisor gives up)."""
        times = self._times
        times.append(now)
        while times and times[0] <= now - self.period:
            times.popleft()
        return len(times) <= self.max_restarts

    def __repr__(self) -> str:
        return f"RestartIntensity({self.max_restarts} in {self.period} s)"


@dataclass(frozen=True, slots=True)
class _Retry:
    """Try to start child ``name`` again: a message no peer can forge (it is no term)."""

    name: str


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    process: Process | None = None


class Supervisor(GenServer):
    """One-for-one supervision of named children; answers ``which_children`` and ``count_children``.

    Start it with ``node.spawn(Supervisor(...), name=...)``, then add children with
    :meth:`start_child` (synchronous: the child is registered when it returns).
    """

    def __init__(self, *, intensity: RestartIntensity | None = None, label: str = "supervisor") -> None:
        super().__init__()
        self.trap_exit = True
        self.intensity = intensity or RestartIntensity()
        self.label = label
        self._children: dict[str, _Child] = {}
        self._by_pid: dict[Pid, _Child] = {}
        self.gave_up = False
        """True once the restart intensity was reached and the children were ended."""

    # -- the children ------------------------------------------------------------------

    def start_child(self, spec: ChildSpec) -> Process:
        """Start ``spec``'s process, registered under its name and linked to the supervisor."""
        if not self.alive or self.gave_up:
            raise RuntimeError(f"{self.label} has ended; it starts no child")
        existing = self._children.get(spec.name)
        if existing is not None and existing.process is not None and existing.process.exit_reason is not None:
            # It has ended and its EXIT is still on its way here: settle it now (gone, or restarted).
            assert existing.process.pid is not None
            self.child_exited(existing.process.pid, existing.process.exit_reason)
        if spec.name in self._children:
            raise ValueError(f"{self.label} already has a child named {spec.name}")
        child = _Child(spec)
        process = self._spawn(child)
        self._children[spec.name] = child
        return process

    def terminate_child(self, name: str, reason: Term = SHUTDOWN) -> Process | None:
        """End a child for good (``supervisor:terminate_child`` then ``delete_child``): it is not restarted.

        The name is free when this returns, as after OTP's (synchronous) ``terminate_child``:
        a new child may take it at once, while the old process finishes ending.
        """
        child = self._children.pop(name, None)
        if child is None:
            return None
        process = child.process
        child.process = None
        if process is not None and process.pid is not None:
            self._by_pid.pop(process.pid, None)
            if process.alive:
                self.unlink(process.pid)
                if process.name == name:
                    self._node().unregister(name)
                process.exit(reason)
        return process

    def child(self, name: str) -> Process | None:
        """The running process of the child ``name`` (None while it is being restarted)."""
        child = self._children.get(name)
        return child.process if child is not None else None

    def children(self) -> dict[str, Process | None]:
        """Every child by name, with its running process (None while it is being restarted)."""
        return {name: child.process for name, child in self._children.items()}

    def _spawn(self, child: _Child) -> Process:
        node = self._node()
        process = child.spec.start()
        node.spawn(process, name=child.spec.name, link=self.pid)
        assert process.pid is not None
        child.process = process
        self._by_pid[process.pid] = child
        if child.spec.started is not None:
            child.spec.started(process)
        return process

    # -- exits and restarts ------------------------------------------------------------

    async def handle_info(self, message: Term) -> None:
        if type(message) is tuple and len(message) == 3 and message[0] == _EXIT:
            self.child_exited(message[1], message[2])
        elif isinstance(message, _Retry):
            self._restart(message.name)
        else:
            log.debug("%s ignores %s", self.label, format_term(message, limit=200))

    def child_exited(self, pid: Term, reason: Term) -> None:
        """A linked process ended: restart it if it is a child that should come back."""
        child = self._by_pid.pop(pid, None) if type(pid) is Pid else None
        if child is None:
            return  # an exit signal from a process that is no child (exit/2 from a peer): trapped, ignored
        process = child.process
        child.process = None
        spec = child.spec
        if self.kill_reason is not None or self.gave_up:
            return
        if not self._restarts(spec.restart, reason):
            self._children.pop(spec.name, None)
            if spec.gone is not None and process is not None:
                spec.gone(process, reason)
            return
        log.warning("%s: %s exited (%s); restarting it", self.label, spec.name, format_term(reason, limit=500))
        self._restart(spec.name)

    @staticmethod
    def _restarts(restart: Restart, reason: Term) -> bool:
        if restart == "permanent":
            return True
        if restart == "transient":
            return not is_normal_exit(reason)
        return False

    def _restart(self, name: str) -> None:
        child = self._children.get(name)
        if child is None or child.process is not None or self.gave_up:
            return  # deleted meanwhile, or already back
        if not self.intensity.allow(asyncio.get_running_loop().time()):
            self.give_up()
            return
        try:
            self._spawn(child)
        except Exception as exc:
            # OTP tries again through its own mailbox; each attempt counts towards the intensity.
            log.error("%s: restarting %s failed: %s: %s", self.label, name, type(exc).__name__, exc)
            self.mailbox.put(_Retry(name))

    def give_up(self) -> None:
        """The restart intensity was reached: end every child, then the supervisor, with ``shutdown``."""
        self.gave_up = True
        log.error(
            "%s reached its restart intensity (%d restarts within %s s); ending its children and itself",
            self.label,
            self.intensity.max_restarts,
            self.intensity.period,
        )
        for child in reversed(list(self._children.values())):
            process = child.process
            child.process = None
            if process is not None and process.alive:
                process.exit(SHUTDOWN)
        self._by_pid.clear()
        self.stop(SHUTDOWN)

    # -- requests ----------------------------------------------------------------------

    def handle_call_now(self, request: Term, caller: From) -> Term:
        if request == _WHICH_CHILDREN:
            return [(Atom(name), _pid_or_restarting(child), _WORKER, []) for name, child in self._children.items()]
        if request == _COUNT_CHILDREN:
            active = sum(1 for child in self._children.values() if child.process is not None)
            return [
                (Atom("specs"), len(self._children)),
                (Atom("active"), active),
                (Atom("supervisors"), 0),
                (Atom("workers"), len(self._children)),
            ]
        text = f"the supervisor {self.label} does not understand {format_term(request, limit=200)}"
        return (_ERROR, (_BAD_REQUEST, text))

    async def handle_call(self, request: Term, caller: From) -> CallReply:
        return self.handle_call_now(request, caller)


def _pid_or_restarting(child: _Child) -> Term:
    process = child.process
    if process is None:
        return _RESTARTING
    return process.pid if process.pid is not None else _UNDEFINED
