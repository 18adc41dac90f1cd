"""``chronos top``: a terminal view of the live metrics of the running processes.

It scrapes each process's ``/metrics`` every ``--interval-seconds`` and shows rates and
p99 latencies over the last interval (from histogram bucket deltas), the outbox
backlog, consumer and projection lag: the numbers an operator looks at first, for
people without Prometheus and Grafana.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from chronos.metrics import (
    COMMAND_METRICS_PORT,
    POLLER_METRICS_PORT,
    PROJECTOR_METRICS_PORT,
    QUERY_METRICS_PORT,
)
from chronos.settings import ConfigError, Setting

# The processes' own port settings: each is read when ``chronos top`` runs, unless its
# host:port option is given.
METRICS_PORTS: dict[str, Setting[int]] = {
    "command": COMMAND_METRICS_PORT,
    "query": QUERY_METRICS_PORT,
    "poller": POLLER_METRICS_PORT,
    "projector": PROJECTOR_METRICS_PORT,
}
_SCRAPE_TIMEOUT_SECONDS = 2.0

Labels = tuple[tuple[str, str], ...]


@dataclass
class Snapshot:
    """Samples of one scrape: name -> labels -> value."""

    taken_monotonic: float
    samples: dict[str, dict[Labels, float]] = field(default_factory=lambda: defaultdict(dict))

    def total(self, name: str, **match: str) -> float:
        return sum(
            value
            for labels, value in self.samples.get(name, {}).items()
            if all(dict(labels).get(k) == v for k, v in match.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        result: dict[str, float] = defaultdict(float)
        for labels, value in self.samples.get(name, {}).items():
            result[dict(labels).get(label, "")] += value
        return dict(result)


def scrape(endpoint: str) -> Snapshot | None:
    """Reads ``http://endpoint/metrics``; None when the process does not answer."""
    try:
        with urllib.request.urlopen(
            f"http://{endpoint}/metrics", timeout=_SCRAPE_TIMEOUT_SECONDS
        ) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    snapshot = Snapshot(taken_monotonic=time.monotonic())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            snapshot.samples[sample.name][labels] = sample.value
    return snapshot


def rate(before: Snapshot, after: Snapshot, name: str, **match: str) -> float:
    elapsed = after.taken_monotonic - before.taken_monotonic
    if elapsed <= 0:
        return 0.0
    return max(0.0, after.total(name, **match) - before.total(name, **match)) / elapsed


def quantile(before: Snapshot, after: Snapshot, name: str, q: float, **match: str) -> float | None:
    """The q-quantile over the interval from ``<name>_bucket`` deltas (upper bound of the
    bucket it falls in, as Prometheus' histogram_quantile does without interpolation)."""
    deltas: dict[float, float] = defaultdict(float)
    for labels, value in after.samples.get(f"{name}_bucket", {}).items():
        label_map = dict(labels)
        if not all(label_map.get(k) == v for k, v in match.items()):
            continue
        earlier = before.samples.get(f"{name}_bucket", {}).get(labels, 0.0)
        deltas[float(label_map["le"])] += value - earlier
    if not deltas:
        return None
    bounds = sorted(deltas)
    count = deltas[bounds[-1]]
    if count <= 0:
        return None
    for bound in bounds:
        if deltas[bound] >= q * count:
            return bound
    return math.inf


def _milliseconds(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return ">10s"
    return f"{value * 1000:.1f} ms"


def render(
    before: dict[str, Snapshot | None], after: dict[str, Snapshot | None], endpoints: dict[str, str]
) -> str:
    lines = [f"chronos top — {time.strftime('%H:%M:%S')}", ""]
    for process in ("command", "query"):
        old, new = before.get(process), after.get(process)
        if old is None or new is None:
            lines.append(f"{process:<10} not answering at {endpoints[process]}")
            continue
        requests = rate(old, new, "chronos_grpc_requests_total")
        errors = requests - rate(old, new, "chronos_grpc_requests_total", code="OK")
        p50 = quantile(old, new, "chronos_grpc_request_duration_seconds", 0.5)
        p99 = quantile(old, new, "chronos_grpc_request_duration_seconds", 0.99)
        lines.append(
            f"{process:<10} {requests:8.1f} req/s  {errors:7.1f} err/s  "
            f"p50 {_milliseconds(p50):>9}  p99 {_milliseconds(p99):>9}"
        )
        if process == "command":
            reasons_before = old.by_label("chronos_commands_rejected_total", "reason")
            reasons_after = new.by_label("chronos_commands_rejected_total", "reason")
            moving = {
                reason: value - reasons_before.get(reason, 0.0)
                for reason, value in sorted(reasons_after.items())
                if value > reasons_before.get(reason, 0.0)
            }
            if moving:
                text = ", ".join(f"{reason} {int(delta)}" for reason, delta in moving.items())
                lines.append(f"{'':<10} rejected in interval: {text}")
    old, new = before.get("poller"), after.get("poller")
    if old is None or new is None:
        lines.append(f"{'poller':<10} not answering at {endpoints['poller']}")
    else:
        lines.append(
            f"{'poller':<10} {rate(old, new, 'chronos_outbox_published_total'):8.1f} ev/s  "
            f"backlog {new.total('chronos_outbox_backlog_rows'):7.0f} rows  "
            f"oldest {new.total('chronos_outbox_oldest_unpublished_age_seconds'):6.2f} s  "
            f"publish p99 "
            f"{_milliseconds(quantile(old, new, 'chronos_outbox_publish_latency_seconds', 0.99))}"
            f"  leader {int(new.total('chronos_outbox_leader'))}"
        )
    old, new = before.get("projector"), after.get("projector")
    if old is None or new is None:
        lines.append(f"{'projector':<10} not answering at {endpoints['projector']}")
    else:
        lags = new.by_label("chronos_kafka_consumer_lag_messages", "partition")
        lag_text = " ".join(f"p{p}:{int(v)}" for p, v in sorted(lags.items())) or "-"
        lines.append(
            f"{'projector':<10} {rate(old, new, 'chronos_projected_events_total'):8.1f} ev/s  "
            f"lag p99 {_milliseconds(quantile(old, new, 'chronos_projection_lag_seconds', 0.99))}"
            f"  consumer lag {lag_text}  watermark "
            f"{int(new.total('chronos_projection_watermark_position'))}"
        )
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("top", help="live view of the services' metrics")
    for process, setting in METRICS_PORTS.items():
        parser.add_argument(
            f"--{process}",
            help=f"{process} metrics host:port "
            f"(default: 127.0.0.1:${setting.name}, else 127.0.0.1:{setting.default})",
        )
    parser.add_argument("--interval-seconds", type=float, default=1.0)
    parser.add_argument(
        "--iterations", type=int, default=0, help="stop after N refreshes (0: until Ctrl-C)"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        endpoints = {
            process: getattr(args, process) or f"127.0.0.1:{setting.read()}"
            for process, setting in METRICS_PORTS.items()
        }
    except ConfigError as error:
        print(f"chronos top: {error}", file=sys.stderr)
        return 2
    interval = max(0.1, args.interval_seconds)
    before = {p: scrape(e) for p, e in endpoints.items()}
    iteration = 0
    interactive = sys.stdout.isatty()
    try:
        while args.iterations == 0 or iteration < args.iterations:
            time.sleep(interval)
            after = {p: scrape(e) for p, e in endpoints.items()}
            screen = render(before, after, endpoints)
            if interactive:
                sys.stdout.write("\x1b[H\x1b[2J")
            sys.stdout.write(screen + "\n")
            sys.stdout.flush()
            before = after
            iteration += 1
    except KeyboardInterrupt:
        pass
    return 0
