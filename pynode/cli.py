"""The ``pynode`` command: start a node, its registry and its agents; stop on a signal."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from pynode import epmd
from pynode._version import __version__
from pynode.allocator import ALLOCATORS, DEFAULT_ALLOCATOR, AllocatorUnavailable, restart_on_allocator
from pynode.errors import EpmdError, PynodeError
from pynode.etf.pretty import format_term
from pynode.limits import DEFAULT_LIMITS, Limits, MiB
from pynode.logformat import LOG_FORMATS, TEXT_FORMAT, JsonFormatter, NodeFilter
from pynode.net.busywait import DEFAULT_BUSY_WAIT_US, BusyWaitSelector
from pynode.net.tls import TlsConfigError, TlsTransport
from pynode.net.transport import DistTransport
from pynode.runtime.pgscope import DEFAULT_SCOPE
from pynode.runtime.supervisor import DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_PERIOD, RestartIntensity

if TYPE_CHECKING:
    from pynode.bridge.models import ModelCache
    from pynode.bridge.registry import Registry
    from pynode.bridge.tracing import Tracing
    from pynode.runtime.supervisor import Supervisor

__all__ = [
    "agents_folder",
    "configure_logging",
    "configure_tracing",
    "limits_from",
    "main",
    "parse_size",
    "resolve_cookie",
]

log = logging.getLogger("pynode")


def resolve_cookie(explicit: str | None) -> str:
    """``--cookie``, else ``$PYNODE_COOKIE``, else ``~/.erlang.cookie``, as ``erl`` does."""
    if explicit:
        return explicit
    env = os.environ.get("PYNODE_COOKIE")
    if env:
        return env
    path = Path.home() / ".erlang.cookie"
    try:
        cookie = path.read_text().strip()
    except OSError as exc:
        raise SystemExit(
            f"pynode: no cookie: pass --cookie, set PYNODE_COOKIE, or create {path} ({exc.strerror})"
        ) from None
    if not cookie:
        raise SystemExit(f"pynode: {path} is empty; pass --cookie or set PYNODE_COOKIE")
    return cookie


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """A byte count: ``1048576``, ``512k``, ``16M``, ``1G`` (powers of 1024); at least 1."""
    raw = text.strip().lower().removesuffix("b").removesuffix("i")
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in _UNITS else (raw, "")
    try:
        value = int(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (say 1048576, 512k, 16M or 1G)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a size must be at least 1 byte, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _microseconds(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be 0 to 1000000 microseconds, not {text}")
    return value


def _log_format(text: str) -> str:
    # A type rather than choices: argparse checks a default from $PYNODE_LOG_FORMAT only through its type.
    if text not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"not a log format: {text!r} (say {' or '.join(LOG_FORMATS)})")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


# One row per flag that sets a ``Limits`` field: (field, parse, metavar, help before "(default ...)").
# The flag is the field's name in dashes; ``limits_from`` reads the same rows back.
_LIMIT_FLAGS: Final[tuple[tuple[str, Callable[[str], object], str, str], ...]] = (
    (
        "net_setuptime",
        _positive_float,
        "S",
        "seconds a connection has to finish its handshake, in and out, as the kernel's net_setuptime",
    ),
    (
        "max_connections",
        _positive_int,
        "N",
        "connections at once, established or in their handshake; more are closed at once",
    ),
    (
        "max_message_size",
        parse_size,
        "BYTES",
        "largest message, fragments joined and compressed terms inflated; a bigger frame closes the"
        " connection, a payload inflating past it is dropped",
    ),
    (
        "max_fragment_bytes",
        parse_size,
        "BYTES",
        "bytes of unfinished fragmented messages per connection; more closes it",
    ),
    (
        "max_fragment_sequences",
        _positive_int,
        "N",
        "unfinished fragmented messages per connection; more closes it",
    ),
    (
        "log_lines",
        _positive_int,
        "N",
        "repeated warnings of one kind per peer logged per --log-interval; the rest are counted",
    ),
    (
        "log_interval",
        _positive_float,
        "S",
        "seconds of the window --log-lines counts in; a count of the lines dropped closes each window",
    ),
)


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    for field, parse, metavar, text in _LIMIT_FLAGS:
        default = getattr(DEFAULT_LIMITS, field)
        shown = f"{default // MiB}M" if parse is parse_size else f"{default:g}"
        parser.add_argument(
            f"--{field.replace('_', '-')}",
            type=parse,
            default=default,
            metavar=metavar,
            help=f"{text} (default {shown})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pynode",
        description="pydantic-ai agents as named processes on a hidden Erlang distribution node.",
    )
    names = parser.add_mutually_exclusive_group(required=True)
    parser.add_argument("--version", action="version", version=f"pynode {__version__}")
    names.add_argument("--sname", help="short node name (name, or name@host)")
    names.add_argument("--name", help="long node name, e.g. py@127.0.0.1")
    parser.add_argument("--cookie", help="the cluster's cookie (else $PYNODE_COOKIE, else ~/.erlang.cookie)")
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1 for loopback names, else all)")
    parser.add_argument("--port", type=int, default=0, help="distribution port (default: any free port)")
    parser.add_argument("--epmd-port", type=int, help="EPMD port (else $ERL_EPMD_PORT, else 4369)")
    parser.add_argument("--start-epmd", action="store_true", help="start EPMD if none answers")
    tls = parser.add_argument_group("TLS distribution (as erl -proto_dist inet_tls)")
    tls.add_argument(
        "--proto-dist",
        choices=("inet_tcp", "inet_tls"),
        default="inet_tcp",
        help="carrier of every distribution connection, in and out (default inet_tcp; EPMD stays plain)",
    )
    tls.add_argument("--tls-certfile", type=Path, help="this node's certificate (PEM; may hold the key too)")
    tls.add_argument("--tls-keyfile", type=Path, help="the certificate's private key (PEM)")
    tls.add_argument("--tls-cacertfile", type=Path, help="the CA certificates that sign the peers (PEM)")
    tls.add_argument(
        "--tls-verify",
        choices=("peer", "none"),
        default="peer",
        help="peer: verify every peer's certificate (default); none: encrypt without authenticating",
    )
    parser.add_argument("--connect", action="append", default=[], metavar="NODE", help="connect to NODE at start")
    agents = parser.add_mutually_exclusive_group()
    agents.add_argument("--agents", type=Path, help="folder of Python-defined agents (default: ./agents)")
    agents.add_argument(
        "--no-agents",
        action="store_true",
        help="no Python-defined agents: ./agents is not looked for (agents come from the BEAM)",
    )
    parser.add_argument(
        "--models",
        type=Path,
        metavar="FILE",
        help="TOML file of named provider models ([models.NAME] provider, name, base_url, api_key_env, ...)"
        " that agents and runs name as model (else $PYNODE_MODELS)",
        default=Path(os.environ["PYNODE_MODELS"]) if os.environ.get("PYNODE_MODELS") else None,
    )
    parser.add_argument(
        "--mcp-command",
        action="append",
        default=[],
        metavar="PATH",
        help="a program that agents' stdio MCP toolsets may start (repeatable; default: none, so a spec's"
        " command is refused): the node runs no program a remote spec names on its own",
    )
    pg = parser.add_mutually_exclusive_group()
    pg.add_argument(
        "--pg-scope",
        default=os.environ.get("PYNODE_PG_SCOPE", DEFAULT_SCOPE),
        metavar="NAME",
        help=f"the :pg scope the agents join, a group per agent name (default {DEFAULT_SCOPE}, or $PYNODE_PG_SCOPE)",
    )
    pg.add_argument("--no-pg", action="store_true", help="take part in no :pg scope")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds the runs in flight get to end once the node drains (the first SIGTERM, or the"
        " registry's drain request) before they are cancelled and the node stops (default 30)",
    )
    parser.add_argument("--net-ticktime", type=float, default=60.0, help="seconds, as net_ticktime (default 60)")
    parser.add_argument("--max-runs", type=int, default=1000, help="agent runs in flight on the node (default 1000)")
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=DEFAULT_MAX_RESTARTS,
        help="restarts of the node's own processes and agents allowed within --restart-period"
        f" before the node gives up and stops with exit status 1 (default {DEFAULT_MAX_RESTARTS})",
    )
    parser.add_argument(
        "--restart-period",
        type=float,
        default=DEFAULT_RESTART_PERIOD,
        help=f"seconds over which --max-restarts counts (default {DEFAULT_RESTART_PERIOD:g})",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default=os.environ.get("PYNODE_LOOP", "asyncio"),
        help="event loop (uvloop: the 'fast' extra; default asyncio, or $PYNODE_LOOP)",
    )
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default=os.environ.get("PYNODE_ALLOCATOR", DEFAULT_ALLOCATOR),
        help="what serves Python's small objects: malloc (glibc's, whose free pages the node gives back"
        " after a burst of runs), pymalloc (the interpreter's own: faster, but a burst's arenas stay) or"
        " jemalloc (the system's libjemalloc.so.2: nearly as fast as pymalloc, and gives back most of what"
        f" malloc does); $PYTHONMALLOC wins when set (default {DEFAULT_ALLOCATOR}, or $PYNODE_ALLOCATOR)",
    )
    parser.add_argument(
        "--busy-wait",
        type=_microseconds,
        default=DEFAULT_BUSY_WAIT_US,
        metavar="MICROSECONDS",
        help="how long the asyncio loop keeps polling its sockets after the last one was ready before"
        " it sleeps, as the BEAM's schedulers busy-wait: a caller's next request then finds the node"
        f" awake (0: sleep at once; not used with uvloop; default {DEFAULT_BUSY_WAIT_US})",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("PYNODE_LOG_LEVEL", "info"),
        help="debug, info, warning, error or critical (default info, or $PYNODE_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-format",
        type=_log_format,
        default=os.environ.get("PYNODE_LOG_FORMAT", "text"),
        metavar="|".join(LOG_FORMATS),
        help="text: lines with a timestamp and level, for a person (default, or $PYNODE_LOG_FORMAT);"
        " json: one JSON object a line (level, logger, message, node, agent, run_id), for a program",
    )
    parser.add_argument(
        "--trace-content",
        action="store_true",
        default=os.environ.get("PYNODE_TRACE_CONTENT") == "1",
        help="record prompts, completions and tool arguments and results in the runs' spans (off: left"
        " out); spans are exported when OpenTelemetry's OTEL_* variables say where (the 'otel' extra)"
        " (or $PYNODE_TRACE_CONTENT=1)",
    )
    parser.add_argument(
        "--stop-on-eof",
        action="store_true",
        default=os.environ.get("PYNODE_STOP_ON_EOF") == "1",
        help="stop, as on SIGTERM, when standard input closes: the BEAM that started this node"
        " through a Port went away (or $PYNODE_STOP_ON_EOF=1)",
    )
    _limit_flags(parser)
    return parser


def limits_from(args: argparse.Namespace) -> Limits:
    """The node's limits as the command line sets them; the rest keep their defaults."""
    return dataclasses.replace(DEFAULT_LIMITS, **{field: getattr(args, field) for field, *_ in _LIMIT_FLAGS})


def node_name(args: argparse.Namespace) -> str:
    if args.name:
        if "@" not in args.name:
            raise SystemExit("pynode: --name takes name@host (a long name), e.g. py@127.0.0.1")
        return str(args.name)
    sname = str(args.sname)
    if "@" in sname:
        return sname
    import socket

    return f"{sname}@{socket.gethostname().split('.')[0]}"


def dist_transport(args: argparse.Namespace, limits: Limits = DEFAULT_LIMITS) -> DistTransport | None:
    """The transport ``--proto-dist`` asks for (None: the node's default, plain TCP), or exit with why not."""
    tls_flags = [
        flag
        for flag, value in (
            ("--tls-certfile", args.tls_certfile),
            ("--tls-keyfile", args.tls_keyfile),
            ("--tls-cacertfile", args.tls_cacertfile),
        )
        if value is not None
    ]
    if args.proto_dist != "inet_tls":
        if tls_flags or args.tls_verify != "peer":
            given = ", ".join(tls_flags or ["--tls-verify"])
            raise SystemExit(f"pynode: {given} only apply with --proto-dist inet_tls")
        return None
    if args.tls_certfile is None:
        raise SystemExit(
            "pynode: --proto-dist inet_tls needs --tls-certfile (and --tls-keyfile unless it holds the key)"
        )
    if args.tls_verify == "peer" and args.tls_cacertfile is None:
        raise SystemExit("pynode: --proto-dist inet_tls verifies peers: pass --tls-cacertfile (or --tls-verify none)")
    try:
        return TlsTransport(
            certfile=args.tls_certfile,
            keyfile=args.tls_keyfile,
            cacertfile=args.tls_cacertfile,
            verify=args.tls_verify,
            handshake_timeout=limits.net_setuptime,
            max_handshakes=limits.max_connections,
        )
    except TlsConfigError as exc:
        raise SystemExit(f"pynode: --tls-{exc.option}: {exc}") from None


def agents_folder(explicit: Path | None) -> Path | None:
    """``--agents DIR`` (which must be a directory), else ``./agents`` when there is one.

    A missing default is only warned about (a node serves agents created from the BEAM too);
    a folder the user named and that is not there stops the command before it starts anything.
    """
    if explicit is not None:
        if not explicit.is_dir():
            what = "is not a directory" if explicit.exists() else "no such directory"
            raise SystemExit(f"pynode: --agents {explicit}: {what} ({explicit.resolve()})")
        return explicit
    default = Path("agents")
    if not default.is_dir():
        log.warning("no Python agents: there is no folder %s (pass --agents DIR)", default.resolve())
        return None
    return default


def mcp_commands(paths: Sequence[str]) -> frozenset[str]:
    """The programs of ``--mcp-command``, as real paths; one that is not an executable stops the command."""
    from pynode.bridge.mcp import resolve_commands

    try:
        commands = resolve_commands(paths)
    except ValueError as exc:
        raise SystemExit(f"pynode: --mcp-command {exc}") from None
    if commands:
        log.info("MCP toolsets may start: %s", ", ".join(sorted(commands)))
    return commands


def model_cache(models_file: Path | None) -> ModelCache:
    """The node's models, with the named ones of ``--models``; a bad file stops the command."""
    from pynode.bridge.model_file import ModelsFileError, load_models_file
    from pynode.bridge.models import ModelCache

    if models_file is None:
        return ModelCache()
    try:
        named = load_models_file(models_file)
    except ModelsFileError as exc:
        raise SystemExit(f"pynode: --models {exc}") from None
    log.info("models from %s: %s", models_file, ", ".join(f"{n} ({c.label})" for n, c in named.items()))
    return ModelCache(named=named)


async def serve(args: argparse.Namespace) -> int:
    from pynode.bridge.registry import start_registry
    from pynode.bridge.tracing import observe_node
    from pynode.bridge.warmup import warm_up
    from pynode.node import Node
    from pynode.runtime.services import node_supervisor

    models = model_cache(args.models)
    commands = mcp_commands(args.mcp_command)
    agents_dir = None if args.no_agents else agents_folder(args.agents)
    cookie = resolve_cookie(args.cookie)
    limits = limits_from(args)
    transport = dist_transport(args, limits)
    epmd_port = epmd.epmd_port_from_env(args.epmd_port)
    if args.start_epmd and await epmd.ensure_epmd(epmd_port):
        log.info("started EPMD on port %d", epmd_port)
    try:
        intensity = RestartIntensity(args.max_restarts, args.restart_period)
    except ValueError as exc:
        raise SystemExit(f"pynode: --max-restarts/--restart-period: {exc}") from None
    node = Node(
        node_name(args),
        cookie,
        listen_host=args.host,
        listen_port=args.port,
        epmd_port=epmd_port,
        net_ticktime=args.net_ticktime,
        restart_intensity=intensity,
        transport=transport,
        limits=limits,
    )
    try:
        await warm_up()  # pydantic-ai's first-run work, done before the first caller comes
    except Exception:
        log.warning("could not warm up the run path: the first run will take longer", exc_info=True)
    try:
        await node.start()
    except EpmdError as exc:
        print(f"pynode: {exc}", file=sys.stderr)
        return 2
    supervisor = node_supervisor(node)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stdin_watch = await _watch_stdin(stop) if args.stop_on_eof else None
    registry = await start_registry(
        node,
        agents_dir=agents_dir,
        max_runs=args.max_runs,
        models=models,
        pg_scope=None if args.no_pg else args.pg_scope,
    )
    registry.limits.mcp_commands = commands  # until now none was allowed: a stdio toolset fails closed
    observe_node(registry.limits)  # info's totals as OpenTelemetry metrics, when metrics are exported
    # From here the first SIGTERM drains (docs/protocol.md section 9); a second one stops at once.
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.set() if registry.limits.draining else registry.drain())
    for peer in args.connect:
        try:
            await node.connect(peer)
        except (PynodeError, OSError) as exc:
            log.error("could not connect to %s: %s", peer, exc)
    print(f"pynode {node.name} ready (port {node.port}, epmd {epmd_port}, {node.transport.name})", flush=True)
    status = await _until_stopped(stop, supervisor, registry.limits.drain_requested)
    if status is None:
        status = await _drain(registry, stop, supervisor, args.drain_timeout)
    log.info("stopping: cancelling runs in flight")
    if stdin_watch is not None:
        stdin_watch.close()
    # The registry process may be a later one than ``registry``; they share the agents and runs.
    await registry.shutdown()
    await node.stop()
    return status


async def _until_stopped(stop: asyncio.Event, supervisor: Supervisor, drain: asyncio.Event | None = None) -> int | None:
    """0 after a stop (SIGINT, a SIGTERM while draining); ``None`` when draining starts; 1 when the
    node's supervisor has ended (it gave up, or was killed).

    Without its supervisor the node has lost its own processes for good, as a BEAM node whose
    kernel supervisor ends halts: better stopped, and restarted from outside, than half alive.
    """
    signalled = asyncio.ensure_future(stop.wait())
    supervised = asyncio.ensure_future(supervisor.join())
    waits = {signalled, supervised}
    if drain is not None:
        waits.add(asyncio.ensure_future(drain.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    if stop.is_set():
        return 0
    if drain is not None and drain.is_set() and supervisor.alive:
        return None
    reason = format_term(supervisor.exit_reason, limit=200)
    log.error("the node's supervisor %s ended (%s); stopping the node", supervisor.label, reason)
    print(f"pynode: the node's supervisor ended ({reason}); stopping", file=sys.stderr, flush=True)
    return 1


async def _drain(registry: Registry, stop: asyncio.Event, supervisor: Supervisor, timeout: float) -> int:
    """The runs in flight end (at most ``timeout`` s, or until a stop); then the node stops (0)."""
    log.info("draining: waiting up to %g s for %d runs in flight", timeout, registry.limits.in_flight)
    drained = asyncio.ensure_future(registry.drained(timeout))
    status = asyncio.ensure_future(_until_stopped(stop, supervisor))
    try:
        await asyncio.wait({drained, status}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (drained, status):
            task.cancel()
        await asyncio.gather(drained, status, return_exceptions=True)
    if status.done() and not status.cancelled() and status.result() == 1:
        return 1
    if not (drained.done() and not drained.cancelled() and drained.result()):
        log.warning("draining: %d runs still in flight are cancelled", registry.limits.in_flight)
    return 0


class _StdinWatch(asyncio.Protocol):
    """Sets ``stop`` when standard input reaches its end; what is read is ignored."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def eof_received(self) -> bool:
        log.info("standard input closed: the process that started this node is gone; stopping")
        self.stop.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


async def _watch_stdin(stop: asyncio.Event) -> asyncio.BaseTransport:
    """A Port's owner that dies closes the pipe of the node's stdin: stop with it instead of staying."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(lambda: _StdinWatch(stop), sys.stdin)
    return transport


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pynode`` command; ``argv``: its arguments, for a node run inside this interpreter (which
    then keeps the allocator it has: only the command line starts itself again on ``--allocator``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.allocator not in ALLOCATORS:  # argparse checks no default, and $PYNODE_ALLOCATOR gives one
        parser.error(f"$PYNODE_ALLOCATOR: {args.allocator!r} is not one of {', '.join(ALLOCATORS)}")
    try:
        allocator = restart_on_allocator(args.allocator) if argv is None else None
    except AllocatorUnavailable as exc:
        parser.error(str(exc))
    configure_logging(args)
    if allocator is not None:
        log.info("small objects served by %s", allocator)
    tracing = configure_tracing(args)
    try:
        return run_loop(serve(args), args.loop, busy_wait=args.busy_wait / 1e6)
    except KeyboardInterrupt:
        return 130
    finally:
        if tracing is not None:
            tracing.shutdown()  # the spans still batched leave before the process does


def configure_tracing(args: argparse.Namespace) -> Tracing | None:
    """OpenTelemetry as the ``OTEL_*`` variables ask (``None``: they ask for nothing, or the extra is missing)."""
    from pynode.bridge.tracing import configure

    return configure(include_content=args.trace_content, node_name=node_name(args))


def configure_logging(args: argparse.Namespace, stream: TextIO | None = None) -> None:
    """The root logger as ``--log-level`` and ``--log-format`` ask, to ``stream`` (default stderr).

    Every record is stamped with the node's name (shown by ``--log-format json``), and no root
    handler writes the node's API keys.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(args.log_level).upper(), logging.INFO))
    _redact_logs()
    node = NodeFilter(node_name(args))
    for each in root.handlers:
        each.addFilter(node)


def _redact_logs() -> None:
    """Every handler of the root logger drops the node's API keys from what it writes."""
    from pynode.bridge.secrets import RedactingFilter

    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def run_loop(main: Coroutine[Any, Any, int], loop: str, *, busy_wait: float = 0.0) -> int:
    """Run ``main`` on asyncio's own event loop, or on uvloop (the ``fast`` extra) when asked.

    ``busy_wait``: seconds asyncio's loop polls after the last ready socket before it sleeps
    (:class:`~pynode.net.busywait.BusyWaitSelector`); uvloop's own poller has no such setting.
    """
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            main.close()
            raise SystemExit("pynode: --loop uvloop needs uvloop: pip install 'pynode[fast]'") from None
        return uvloop.run(main)
    if busy_wait <= 0:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(BusyWaitSelector(busy_wait))) as runner:
        return runner.run(main)
