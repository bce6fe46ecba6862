"""An OTLP/HTTP receiver for tests: what a collector on 127.0.0.1 would be sent, decoded.

It answers ``POST /v1/traces`` and ``/v1/metrics`` (``/v1/logs`` too, undecoded) with 200, over
HTTP/1.1 with keep-alive, as the SDK's exporters speak it: protobuf bodies, gzip when the
exporter compresses. The bodies are read with the ``opentelemetry-proto`` package, so what a test
sees is what any collector would. Everything runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["ExportedPoint", "ExportedSpan", "OtlpReceiver"]


@dataclass(frozen=True, slots=True)
class ExportedSpan:
    """One span as the node exported it; ids in lowercase hex, as ``traceparent`` writes them."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    """``""`` for a root span."""
    trace_state: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    scope: str
    status: str
    """``unset``, ``ok`` or ``error``."""

    def texts(self) -> list[str]:
        """Every string this span carries (attributes, events, its name), to look for leaked content."""
        found: list[str] = [self.name]
        for attributes in (self.attributes, *(a for _, a in self.events)):
            found.extend(str(value) for value in attributes.values())
        found.extend(name for name, _ in self.events)
        return found


@dataclass(frozen=True, slots=True)
class ExportedPoint:
    """One data point of a metric as the node exported it (a sum's, a gauge's or a histogram's)."""

    name: str
    unit: str
    kind: str
    """``sum``, ``gauge`` or ``histogram``."""
    monotonic: bool
    """For a sum: a counter (``True``) or an up-down counter."""
    cumulative: bool
    attributes: dict[str, Any]
    value: float
    """A sum's or a gauge's value; a histogram's sum."""
    count: int = 0
    """A histogram's count."""
    bounds: tuple[float, ...] = ()
    """A histogram's explicit bucket boundaries."""


_STATUS = {0: "unset", 1: "ok", 2: "error"}
_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return None if kind is None else getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass
class OtlpReceiver:
    """A collector stand-in; :meth:`running` starts it on a free port of 127.0.0.1."""

    port: int = 0
    spans: list[ExportedSpan] = field(default_factory=list)
    """Every span received, in arrival order."""
    metrics: list[str] = field(default_factory=list)
    """The name of every metric received, in arrival order."""
    points: dict[tuple[str, tuple[tuple[str, Any], ...]], ExportedPoint] = field(default_factory=dict)
    """The latest data point of each metric and attribute set, by ``(name, sorted attributes)``."""
    posts: dict[str, int] = field(default_factory=dict)
    """Requests received, by path."""
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator[OtlpReceiver]:
        receiver = cls()
        server = await asyncio.start_server(receiver._serve, "127.0.0.1", 0)
        receiver.port = server.sockets[0].getsockname()[1]
        try:
            yield receiver
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    @property
    def endpoint(self) -> str:
        """What ``OTEL_EXPORTER_OTLP_ENDPOINT`` names: the exporter adds ``/v1/traces``."""
        return f"http://127.0.0.1:{self.port}"

    def latest(self, name: str) -> list[ExportedPoint]:
        """The latest data point of metric ``name`` for each attribute set received."""
        return [point for (n, _), point in self.points.items() if n == name]

    def trace(self, trace_id: str) -> list[ExportedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]

    async def wait_for(self, check: Callable[[], bool], within: float = 20.0, what: str = "spans") -> None:
        """Until ``check()`` holds after some export; fails with what arrived when it does not within ``within``."""
        try:
            async with asyncio.timeout(within):
                while not check():
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            seen = [(s.name, s.trace_id[:8], s.span_id[:8], s.parent_span_id[:8]) for s in self.spans]
            raise AssertionError(f"{what} did not arrive within {within} s; received {seen}") from None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
        if not head:
            return False
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        status = "200 OK" if method == "POST" and path.startswith("/v1/") else "404 Not Found"
        if status.startswith("200"):
            self.posts[path] = self.posts.get(path, 0) + 1
            if path == "/v1/traces":
                self._keep(body)
            elif path == "/v1/metrics":
                self._keep_metrics(body)
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        self._arrived.set()
        return headers.get("connection", "").lower() != "close"

    def _keep_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    self.metrics.append(metric.name)
                    for point in _points(metric):
                        self.points[(point.name, tuple(sorted(point.attributes.items())))] = point

    def _keep(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ExportedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            trace_state=span.trace_state,
                            attributes=_attributes(span.attributes),
                            events=[(e.name, _attributes(e.attributes)) for e in span.events],
                            resource=resource,
                            scope=scope_spans.scope.name,
                            status=_STATUS.get(span.status.code, str(span.status.code)),
                        )
                    )


def _points(metric: Any) -> list[ExportedPoint]:
    kind = metric.WhichOneof("data")
    if kind in ("sum", "gauge"):
        data = getattr(metric, kind)
        monotonic = kind == "sum" and data.is_monotonic
        cumulative = kind == "gauge" or data.aggregation_temporality == _CUMULATIVE
        return [
            ExportedPoint(
                metric.name,
                metric.unit,
                kind,
                monotonic,
                cumulative,
                _attributes(p.attributes),
                getattr(p, p.WhichOneof("value")),
            )
            for p in data.data_points
        ]
    if kind == "histogram":
        data = metric.histogram
        return [
            ExportedPoint(
                metric.name,
                metric.unit,
                kind,
                False,
                data.aggregation_temporality == _CUMULATIVE,
                _attributes(p.attributes),
                p.sum,
                p.count,
                tuple(p.explicit_bounds),
            )
            for p in data.data_points
        ]
    return []
