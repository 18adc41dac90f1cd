"""What TLS and authentication cost: TransferFunds and GetAccount with them on and off.

The bench's services run as the environment says (the local stack exports its CA,
server certificate and token signing key, so TLS and authentication are on). Beside
them the bench starts a second command server and query server on the same database
and indices with ``CHRONOS_INSECURE_NO_TLS=1`` and ``CHRONOS_INSECURE_NO_AUTH=1``
(:data:`chronos_dev.launcher.INSECURE_SETTINGS`): plaintext, no token. The first set's
outbox poller and projector carry both sets' events, so the two sets differ in their
security alone. (b-off) runs right after (b) and (d-off) right after (d), with the same
client, concurrency, duration and warm-up, so each pair is measured under nearly the
same conditions; ``b / b-off`` and ``d / d-off`` are the ratios (target >= 0.9). The
"off" stage always runs second: warmer caches favour it, a database grown by (b)'s
transfers slows (b-off) a little; with ``--quick``'s seconds-long stages on a busy
machine, noise outweighs both, so only a full run's ratios mean much.
"""

from __future__ import annotations

import contextlib
import dataclasses
from contextlib import AbstractContextManager

from chronos_dev.bench import stages
from chronos_dev.bench.clients import ThroughputResult
from chronos_dev.bench.options import BenchOptions
from chronos_dev.bench.resources import BenchResources, Infrastructure
from chronos_dev.client import ClientSecurity
from chronos_dev.launcher import SERVER_MODULES, Services, ServiceSet

TRANSFER_FUNDS_OFF = "transfer_funds_security_off"
GET_ACCOUNT_OFF = "get_account_security_off"
STAGES = (TRANSFER_FUNDS_OFF, GET_ACCOUNT_OFF)
# Names the second set's processes where the bench watches CPU and memory.
NAME_SUFFIX = " (security off)"
# The load test's phase, which names the stage's request ids.
TRANSFER_PHASE = "transfers-security-off"


def wanted(options: BenchOptions) -> bool:
    """Whether the run has a stage that needs the second set."""
    return not options.only or bool(options.only & set(STAGES))


def insecure_services(
    options: BenchOptions, infrastructure: Infrastructure, resources: BenchResources
) -> AbstractContextManager[ServiceSet | None]:
    """The second set (servers only, security off), or None when no stage needs it."""
    if not wanted(options):
        return contextlib.nullcontext()
    return Services(
        resources.backends(infrastructure),
        command_processes=options.command_processes,
        query_processes=options.query_processes,
        log_dir=options.output_dir / "logs-security-off",
        modules=SERVER_MODULES,
        insecure=True,
    )


def _aimed_at(context: stages.BenchContext, services: ServiceSet | None) -> stages.BenchContext:
    """``context`` aimed at the second set; the accounts, the run id and the outcomes
    (for the exactly-once check) stay shared."""
    assert services is not None, "the second set was not started"
    return dataclasses.replace(context, services=services)


def transfer_funds(context: stages.BenchContext, services: ServiceSet | None) -> ThroughputResult:
    """(b-off) (b) again, against the second set."""
    return stages.transfer_funds(_aimed_at(context, services), read_side=True, phase=TRANSFER_PHASE)


def get_account(context: stages.BenchContext, services: ServiceSet | None) -> ThroughputResult:
    """(d-off) (d) again, against the second set."""
    return stages.get_account(_aimed_at(context, services))


def describe(on: ServiceSet, off: ServiceSet | None) -> dict[str, dict[str, bool] | None]:
    """How the bench's clients talk to each set: TLS or not, a token or not."""

    def of(security: ClientSecurity) -> dict[str, bool]:
        return {"tls": security.ca_pem is not None, "authentication": security.token is not None}

    return {"on": of(on.security), "off": None if off is None else of(off.security)}
