"""Prometheus metrics of every Chronos process, defined in one place.

Names follow Prometheus conventions: ``chronos_`` prefix, base units, ``_seconds`` and
``_total`` suffixes. Each process exposes the ones it updates on its own ``/metrics``
port (``serve_metrics``); ``chronos top`` and the Grafana dashboard read them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

from chronos.settings import port, text

# Each process's /metrics port, declared here rather than in its config.py because
# `chronos top` scrapes the same ports.
_PORT_DOC = "Port of `/metrics` (0 disables it)."
COMMAND_METRICS_PORT = port("CHRONOS_COMMAND_METRICS_PORT", 9101, doc=_PORT_DOC)
QUERY_METRICS_PORT = port("CHRONOS_QUERY_METRICS_PORT", 9102, doc=_PORT_DOC)
POLLER_METRICS_PORT = port("CHRONOS_POLLER_METRICS_PORT", 9103, doc=_PORT_DOC)
PROJECTOR_METRICS_PORT = port("CHRONOS_PROJECTOR_METRICS_PORT", 9104, doc=_PORT_DOC)
METRICS_HOST = text(
    "CHRONOS_METRICS_HOST",
    "127.0.0.1",
    length_max=255,
    type_name="host",
    doc="Address `/metrics` binds to (containers set 0.0.0.0 to be scraped).",
)

# Latency buckets from 0.5 ms to 10 s: the interesting range for a ledger on one machine.
# The targets (25, 50, 250 ms) are bounds, so whether a p99 meets one is exact; the
# bounds between 50 ms and 1 s say how far a missed one is.
_LATENCY_BUCKETS_SECONDS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4,
    0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

GRPC_REQUESTS = Counter(
    "chronos_grpc_requests_total", "gRPC requests handled.", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "chronos_grpc_request_duration_seconds",
    "gRPC request handling time.",
    ["service", "method"],
    buckets=_LATENCY_BUCKETS_SECONDS,
)
AUTH_REFUSALS = Counter(
    "chronos_auth_refusals_total",
    "Calls refused before they ran: not authenticated, not permitted, rate-limited.",
    ["server", "reason"],
)
COMMANDS_REJECTED = Counter(
    "chronos_commands_rejected_total", "Commands refused, by reason.", ["reason"]
)
WRITER_COMMANDS_ABANDONED = Counter(
    "chronos_writer_commands_abandoned_total",
    "Commands left out before their transaction because their caller gave up (deadline).",
)
WRITER_BATCH_SIZE = Histogram(
    "chronos_writer_batch_commands",
    "Commands per group-commit transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
# Summed over the live workers when a server runs several (see serve_metrics_of_workers).
DB_POOL_IN_USE = Gauge(
    "chronos_db_pool_connections_in_use",
    "Pool connections lent out.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "chronos_db_pool_requests_waiting",
    "Requests waiting for a pool connection.",
    ["pool"],
    multiprocess_mode="livesum",
)
OUTBOX_BACKLOG = Gauge("chronos_outbox_backlog_rows", "Outbox rows not yet published.")
OUTBOX_OLDEST_AGE = Gauge(
    "chronos_outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished row."
)
OUTBOX_PUBLISHED = Counter("chronos_outbox_published_total", "Outbox rows published and marked.")
OUTBOX_PUBLISH_LATENCY = Histogram(
    "chronos_outbox_publish_latency_seconds",
    "From the event's commit to the broker's acknowledgement.",
    buckets=_LATENCY_BUCKETS_SECONDS,
)
OUTBOX_LEADER = Gauge("chronos_outbox_leader", "1 while this poller holds leadership.")
CHECKPOINT_AGE = Gauge(
    "chronos_checkpoint_age_seconds",
    "Seconds since the leader's last signed checkpoint was acknowledged by Kafka.",
)
CHECKPOINT_LAG = Gauge(
    "chronos_checkpoint_lag_events",
    "Events recorded (ledger_head) beyond the position of the last signed checkpoint.",
)
KAFKA_CONSUMER_LAG = Gauge(
    "chronos_kafka_consumer_lag_messages", "Messages behind the partition's end.", ["partition"]
)
PROJECTION_LAG = Histogram(
    "chronos_projection_lag_seconds",
    "From the event's commit to its documents being written (readable by id).",
    buckets=_LATENCY_BUCKETS_SECONDS,
)
PROJECTION_SEARCH_LAG = Histogram(
    "chronos_projection_search_lag_seconds",
    "From the event's commit to its documents being visible to searches.",
    buckets=_LATENCY_BUCKETS_SECONDS,
)
PROJECTED_EVENTS = Counter("chronos_projected_events_total", "Events applied to the read model.")
ES_BULK_LATENCY = Histogram(
    "chronos_elasticsearch_bulk_duration_seconds",
    "Elasticsearch bulk request time.",
    buckets=_LATENCY_BUCKETS_SECONDS,
)
ES_BULK_FAILURES = Counter(
    "chronos_elasticsearch_bulk_failures_total", "Bulk requests that failed and were retried."
)
PROJECTION_WATERMARK = Gauge(
    "chronos_projection_watermark_position", "Highest position visible on the read side."
)
PROJECTION_RETENTION_GAPS = Counter(
    "chronos_projection_retention_gaps_total",
    "Partitions whose events Kafka deleted before the projector read them (it stops).",
)
PROJECTION_GAPS_FILLED = Counter(
    "chronos_projection_gaps_filled_total",
    "Accounts whose events arrived with a version missing, folded from the event store.",
)


def serve_metrics(port: int) -> None:
    """Serves ``/metrics`` on ``port`` from a daemon thread (0: disabled).

    Binds 127.0.0.1 unless ``CHRONOS_METRICS_HOST`` says otherwise (containers set
    0.0.0.0 so that Prometheus in another container can scrape them).
    """
    if port:
        start_http_server(port, addr=METRICS_HOST.read())


def serve_metrics_of_workers(port: int, directory: str) -> None:
    """Serves on ``port`` the metrics of every worker process that records them in
    ``directory`` (their ``PROMETHEUS_MULTIPROC_DIR``), added up: one scrape target per
    server, however many processes it runs. Counters and histograms are summed over
    all workers, dead ones included, so totals never go back; pool gauges over the
    live ones."""
    if port:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        start_http_server(port, addr=METRICS_HOST.read(), registry=registry)


def forget_worker(pid: int, directory: str) -> None:
    """Drops an exited worker's live gauges (its counters stay in the totals)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every unary call by method and final status code."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        service = self._service

        async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            code = "UNKNOWN"
            try:
                response = await inner(request, context)
                code = "OK"
                return response
            except grpc.aio.AbortError:
                status = context.code()
                code = status.name if status is not None else "UNKNOWN"
                raise
            finally:
                GRPC_REQUESTS.labels(service, method, code).inc()
                GRPC_LATENCY.labels(service, method).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
