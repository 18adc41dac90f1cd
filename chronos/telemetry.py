"""Logs, traces and metrics for every Chronos process, configured once at start.

* Logs: JSON lines on stderr with ``trace_id``/``span_id`` of the current span and any of
  ``request_id``, ``account_id``, ``entry_id`` passed as ``extra``. No payloads at INFO.
* Traces (OpenTelemetry SDK): OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; else a
  JSON-lines file when ``CHRONOS_TRACE_FILE`` is set; else tracing is off (no-op spans,
  empty ``traceparent``, nothing on the hot path). ``CHRONOS_TRACE_SAMPLE_RATIO``
  (default 1.0) samples root spans; children follow their parent's decision.
* Metrics (prometheus-client): each process serves ``/metrics`` on 127.0.0.1 at the port
  given by its own variable (see docs/configuration.md); the metric objects live in
  ``chronos/metrics.py``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

from chronos.metrics import MetricsInterceptor
from chronos.security.caller import current_caller
from chronos.settings import choice, number, text

_CONTEXT_FIELDS = ("request_id", "account_id", "entry_id", "event_id", "position")
# The span attribute naming the authenticated caller (OpenTelemetry's semantic
# convention); the log field of the same is ``principal``. Never the token itself.
SPAN_ENDUSER_ID = "enduser.id"
_configured = False
_tracing_enabled = False

_LEVELS = sorted(logging.getLevelNamesMapping().items(), key=lambda item: (item[1], item[0]))
LOG_LEVEL = choice(
    "CHRONOS_LOG_LEVEL",
    "INFO",
    {name: name for name, _ in _LEVELS},
    ignore_case=True,
    doc="Level of the JSON log lines on stderr (any case).",
)
TRACE_FILE = text(
    "CHRONOS_TRACE_FILE",
    "",
    type_name="path",
    doc="Write spans as JSON lines to this file (unless OTLP is configured); "
    "empty: tracing off. `chronos trace` reads them.",
)
TRACE_SAMPLE_RATIO = number(
    "CHRONOS_TRACE_SAMPLE_RATIO",
    1.0,
    minimum=0.0,
    maximum=1.0,
    doc="Share of root spans sampled when tracing is on; children follow their parent.",
)


class Throttle:
    """Lets a repeated log line through at most once per ``interval_seconds``: an outage
    makes every call fail the same way, and one line per call would bury the log.

    :meth:`admit` returns None while throttled, else how many were held back since the
    last line it let through (counted, so the log still says how often it happened).
    """

    def __init__(self, interval_seconds: float, clock: Callable[[], float] = time.monotonic):
        self._interval_seconds = interval_seconds
        self._clock = clock
        self._next_at = float("-inf")
        self._held_back = 0

    def admit(self) -> int | None:
        now = self._clock()
        if now < self._next_at:
            self._held_back += 1
            return None
        held_back, self._held_back = self._held_back, 0
        self._next_at = now + self._interval_seconds
        return held_back


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace and span ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for field in _CONTEXT_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = value
        # The subject of the call being served, when one was authenticated.
        subject = current_caller().subject
        if subject:
            entry["principal"] = subject
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object per line (for tests and for
    people without a collector)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context = span.get_span_context()
            assert context is not None
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": format(context.trace_id, "032x"),
                        "span_id": format(context.span_id, "016x"),
                        "parent_span_id": format(span.parent.span_id, "016x")
                        if span.parent is not None
                        else None,
                        "links": [format(link.context.span_id, "016x") for link in span.links],
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "service": span.resource.attributes.get("service.name"),
                        "attributes": dict(span.attributes or {}),
                    },
                    default=str,
                )
            )
        with self._lock, open(self._path, "a", encoding="utf-8") as file:
            file.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def configure(service: str) -> None:
    """Sets up logging and tracing for this process. Call once, from ``main``.

    Raises:
        ConfigError: a telemetry setting is malformed (before anything is set up).
    """
    level, trace_file, ratio = LOG_LEVEL.read(), TRACE_FILE.read(), TRACE_SAMPLE_RATIO.read()
    global _configured
    assert not _configured, "telemetry configured twice"
    _configured = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # These libraries log every request at INFO: too much for a hot path.
    for noisy in ("elastic_transport.transport", "elasticsearch", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    exporter: SpanExporter | None = None
    processor_type: type[BatchSpanProcessor] | type[SimpleSpanProcessor] = BatchSpanProcessor
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif trace_file:
        exporter = JsonLinesSpanExporter(trace_file)
        processor_type = SimpleSpanProcessor
    if exporter is None:
        return  # tracing off: the API's no-op tracer
    global _tracing_enabled
    _tracing_enabled = True
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBasedTraceIdRatio(ratio),
    )
    provider.add_span_processor(processor_type(exporter))
    trace.set_tracer_provider(provider)


def server_interceptors(service: str) -> list[Any]:
    """gRPC server interceptors: metrics always, OpenTelemetry only when tracing is on
    (its interceptor costs a visible share of a command's CPU even with no-op spans)."""
    interceptors: list[Any] = []
    if _tracing_enabled:
        interceptors.append(aio_server_interceptor())  # type: ignore[no-untyped-call]
    interceptors.append(MetricsInterceptor(service))
    return interceptors


def shutdown() -> None:
    """Flushes spans still buffered (call at process exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the current span, or "" when not traced."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str) -> otel_context.Context | None:
    if not traceparent:
        return None
    return extract({"traceparent": traceparent})


def traceparent_of(span: trace.Span) -> str:
    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def record_span(
    name: str,
    traceparent: str,
    start_time_ns: int,
    end_time_ns: int,
    attributes: Mapping[str, Any] | None = None,
) -> str:
    """Records a finished span (child of ``traceparent``) with explicit times; returns its
    own traceparent so the next stage can continue from it ("" when not traced).

    Used where one batch operation serves many traces (group commit, Kafka publish,
    Elasticsearch bulk): each trace gets a span with the batch's timing.
    """
    parent = context_from_traceparent(traceparent)
    if parent is None:
        return ""
    span = tracer("chronos").start_span(
        name, context=parent, attributes=dict(attributes or {}), start_time=start_time_ns
    )
    span.end(end_time=end_time_ns)
    return traceparent_of(span) if span.get_span_context().is_valid else ""
