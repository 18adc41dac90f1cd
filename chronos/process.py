"""What every service process does around its own work: read the config, set up
telemetry, serve metrics, run, flush telemetry. One place, so the four composition
roots (``*/__main__.py``) differ only in what they build."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

from chronos import telemetry
from chronos.config import ConfigError
from chronos.metrics import serve_metrics


class ServiceConfig(Protocol):
    @property
    def metrics_port(self) -> int: ...


ConfigT = TypeVar("ConfigT", bound=ServiceConfig)


def run_service(
    service: str, load_config: Callable[[], ConfigT], body: Callable[[ConfigT], int]
) -> int:
    """Runs ``body(config)`` as the process named ``service``; returns its exit code.

    A configuration error exits with code 2 and one line on stderr, before anything
    starts.
    """
    try:
        config = load_config()
    except ConfigError as error:
        print(f"{service}: {error}", file=sys.stderr)
        return 2
    telemetry.configure(service)
    serve_metrics(config.metrics_port)
    try:
        return body(config)
    finally:
        telemetry.shutdown()
