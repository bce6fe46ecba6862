"""The node's process table: pids and registered names."""

from __future__ import annotations

from collections.abc import Iterator

from pynode.etf.types import Atom, Pid
from pynode.runtime.memory import Table
from pynode.runtime.process import Process

__all__ = ["NameTaken", "ProcessTable"]


class NameTaken(ValueError):
    """``register/2`` of a name another live process holds."""


class ProcessTable:
    """Who lives here: by pid and by registered name."""

    __slots__ = ("by_name", "by_pid")

    def __init__(self) -> None:
        self.by_pid: dict[Pid, Process] = {}
        self.by_name: dict[str, Process] = {}

    def __len__(self) -> int:
        return len(self.by_pid)

    def compactable_tables(self) -> Iterator[Table]:
        """Both tables, for the node to compact after a burst (pynode.runtime.memory)."""
        yield self.by_pid
        yield self.by_name

    def add(self, process: Process) -> None:
        assert process.pid is not None
        self.by_pid[process.pid] = process

    def register(self, name: Atom, process: Process) -> None:
        holder = self.by_name.get(name)
        if holder is not None and holder is not process:
            raise NameTaken(f"the name {name} is already registered to {holder.pid}")
        if process.name is not None and process.name != name:
            raise NameTaken(f"{process.pid} is already registered as {process.name}")
        self.by_name[name] = process
        process.name = name

    def unregister(self, name: str) -> None:
        process = self.by_name.pop(name, None)
        if process is not None:
            process.name = None

    def remove(self, process: Process) -> None:
        if process.pid is not None:
            self.by_pid.pop(process.pid, None)
        if process.name is not None and self.by_name.get(process.name) is process:
            del self.by_name[process.name]

    def pid(self, pid: Pid) -> Process | None:
        return self.by_pid.get(pid)

    def name(self, name: str) -> Process | None:
        return self.by_name.get(name)
