"""Command-line options of ``scripts/loadtest``, parsed once into a frozen dataclass."""

from __future__ import annotations

import argparse
import enum
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chronos.rpc import parse_address
from chronos_dev.client import ClientSecurity, client_security

SCENARIOS = ("setup", "transfers", "mixed", "duplicates", "holds")
# The scenarios that re-send a share of their requests (--duplicate-fraction).
DUPLICATING_SCENARIOS = ("duplicates", "holds")


class Distribution(enum.Enum):
    UNIFORM = "uniform"
    # 80 % of the picks go to the first 20 % of the accounts.
    HOT = "hot"


HOT_ACCOUNT_FRACTION = 0.2
HOT_PICK_FRACTION = 0.8

_COUNT_MAX = 100_000_000
_DURATION_SECONDS_MAX = 24 * 3600.0
_CONCURRENCY_MAX = 10_000
_PROCESSES_MAX = 64
_ACCOUNTS_MAX = 10_000_000
_RATE_MAX = 1_000_000.0
HOLD_TIMEOUT_SECONDS_DEFAULT = 2
HOLD_EXPIRY_WAIT_SECONDS_MAX_DEFAULT = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """Everything a run needs; picklable, so client processes get a copy."""

    scenario: str
    duration_seconds: float | None
    count: int | None
    concurrency: int
    rate_per_second: float
    accounts: int
    seed: int
    processes: int
    command_addr: str
    query_addr: str
    pg_dsn: str
    es_url: str
    index_prefix: str
    output_dir: Path
    plot: bool
    distribution: Distribution
    read_fraction: float
    duplicate_fraction: float
    currency: str
    initial_balance_minor: int
    overdraft_limit_minor: int
    amount_max_minor: int
    rpc_timeout_seconds: float
    lag_sample_fraction: float
    lag_wait_seconds_max: float
    lag_probes_in_flight_max: int
    catch_up_wait_seconds_max: float
    plot_samples_max: int
    progress_interval_seconds: float
    # holds: the short timeout of the holds meant to expire, and how long after the last
    # timeout the checks wait at most for the command server's expiry job.
    # (Defaults here too: the bench builds Options without them.)
    hold_timeout_seconds: int = HOLD_TIMEOUT_SECONDS_DEFAULT
    hold_expiry_wait_seconds_max: float = HOLD_EXPIRY_WAIT_SECONDS_MAX_DEFAULT
    # The CA the servers' certificates are checked against and the token every call
    # carries (see chronos_dev.client); kept out of the repr, which must not show a token.
    security: ClientSecurity = field(repr=False)


def positive_int(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not 0 < value <= maximum:
            raise argparse.ArgumentTypeError(f"must be 1..{maximum}, got {value}")
        return value

    return parse


def float_in(minimum: float, maximum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be {minimum:g}..{maximum:g}, got {value:g}")
        return value

    return parse


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/loadtest",
        description=(
            "Load test of the Chronos gRPC API. Every scenario but `setup` first opens and "
            "funds --accounts accounts (closed loop, not measured with the scenario). After "
            "the run the bank invariants are checked through the query service and the "
            "event store; the exit status is 1 when any fails (2 for bad arguments)."
        ),
    )
    parser.add_argument(
        "scenario",
        choices=SCENARIOS,
        help=(
            "setup: open and fund the accounts; transfers: random transfers; mixed: reads "
            "(GetAccount/ListTransactions) and transfers; duplicates: transfers of which "
            "some are re-sent with the same request_id; holds: holds posted, partly "
            "posted, voided, raced or left to expire, and transfers reversed, with "
            "duplicates (and the hold and reversal invariants checked)"
        ),
    )
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument(
        "--duration-seconds",
        type=float_in(0.1, _DURATION_SECONDS_MAX),
        help="run length (default 30 s unless --count is given)",
    )
    bound.add_argument(
        "--count",
        type=positive_int(_COUNT_MAX),
        help="number of operations (setup: defaults to --accounts)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int(_CONCURRENCY_MAX),
        default=32,
        help="operations in flight at most, over all processes (default 32)",
    )
    parser.add_argument(
        "--rate",
        type=float_in(0.0, _RATE_MAX),
        default=0.0,
        help=(
            "target operations/s, open loop (latency from the scheduled time); "
            "0 = closed loop, as fast as possible (default)"
        ),
    )
    parser.add_argument(
        "--accounts", type=positive_int(_ACCOUNTS_MAX), default=1000, help="(default 1000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the operation mix")
    parser.add_argument(
        "--processes",
        type=positive_int(_PROCESSES_MAX),
        default=1,
        help="client processes (default 1; raise it when one process is the bottleneck)",
    )
    _add_endpoints(parser)
    _add_mix(parser)
    _add_bounds(parser)
    return parser


def _add_endpoints(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--command-addr",
        type=_address,
        default=os.environ.get("CHRONOS_COMMAND_ADDR", "127.0.0.1:50051"),
        help="default $CHRONOS_COMMAND_ADDR or 127.0.0.1:50051",
    )
    parser.add_argument(
        "--query-addr",
        type=_address,
        default=os.environ.get("CHRONOS_QUERY_ADDR", "127.0.0.1:50052"),
        help="default $CHRONOS_QUERY_ADDR or 127.0.0.1:50052",
    )
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("CHRONOS_PG_DSN", ""),
        help="event store for the invariant checks (default $CHRONOS_PG_DSN)",
    )
    parser.add_argument(
        "--es-url",
        default=os.environ.get("CHRONOS_ES_URL", ""),
        help=(
            "Elasticsearch, for `chronos reconcile`'s comparison of the projection with the "
            "event store (default $CHRONOS_ES_URL; skipped when empty)"
        ),
    )
    parser.add_argument(
        "--index-prefix",
        default=os.environ.get("CHRONOS_INDEX_PREFIX", "chronos"),
        help="read-side index prefix (default $CHRONOS_INDEX_PREFIX or chronos)",
    )
    parser.add_argument("--output-dir", type=Path, help="default loadtest-results/<timestamp>")
    parser.add_argument("--no-plot", action="store_true", help="skip latency.png")


def _add_mix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--distribution",
        choices=[d.value for d in Distribution],
        default=Distribution.UNIFORM.value,
        help="account choice: uniform, or hot (80 %% of picks on 20 %% of the accounts)",
    )
    parser.add_argument(
        "--read-fraction",
        type=float_in(0.0, 1.0),
        default=0.5,
        help="mixed: share of reads, half GetAccount, half ListTransactions (default 0.5)",
    )
    parser.add_argument(
        "--duplicate-fraction",
        type=float_in(0.0, 1.0),
        default=0.2,
        help=(
            "duplicates, holds: share of commands re-sent with the same request_id (default 0.2)"
        ),
    )
    parser.add_argument(
        "--hold-timeout-seconds",
        type=positive_int(3600),
        default=HOLD_TIMEOUT_SECONDS_DEFAULT,
        help="holds: the timeout of the holds left to expire (default %(default)s)",
    )
    parser.add_argument(
        "--hold-expiry-wait-seconds-max",
        type=float_in(0.0, 3600.0),
        default=HOLD_EXPIRY_WAIT_SECONDS_MAX_DEFAULT,
        help=(
            "holds: bound on waiting, past the last timeout, until the command server's "
            "expiry job has ended every due hold (default %(default)g)"
        ),
    )
    parser.add_argument("--currency", default="EUR", help="(default EUR)")
    parser.add_argument(
        "--initial-balance-minor",
        type=positive_int(10**15),
        default=1_000_000,
        help="deposit per account in setup (default 1000000)",
    )
    parser.add_argument(
        "--overdraft-limit-minor",
        type=_non_negative_int,
        default=10_000,
        help="overdraft limit of every account opened (default 10000)",
    )
    parser.add_argument(
        "--amount-max-minor",
        type=positive_int(10**15),
        default=20_000,
        help="transfers move 1..this many minor units (default 20000)",
    )


def _add_bounds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rpc-timeout-seconds",
        type=float_in(0.01, 600.0),
        default=10.0,
        help="deadline of every RPC (default 10)",
    )
    parser.add_argument(
        "--lag-sample-fraction",
        type=float_in(0.0, 1.0),
        default=0.02,
        help="share of accepted commands whose projection lag is measured (default 0.02)",
    )
    parser.add_argument(
        "--lag-wait-seconds-max",
        type=float_in(0.1, 600.0),
        default=30.0,
        help="give up measuring one command's lag after this long (default 30)",
    )
    parser.add_argument(
        "--catch-up-wait-seconds-max",
        type=float_in(0.0, 3600.0),
        default=120.0,
        help="bound on waiting for the read side to reach the event store head (default 120)",
    )
    parser.add_argument(
        "--plot-samples-max",
        type=positive_int(10_000_000),
        default=200_000,
        help="latency points kept for the plot, over all processes (default 200000)",
    )


def parse_options(argv: list[str] | None = None) -> Options:
    """Parses the command line; exits with status 2 and a message on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.pg_dsn:
        parser.error("--pg-dsn (or $CHRONOS_PG_DSN) is required for the invariant checks")
    if len(args.currency) != 3 or not args.currency.isalpha() or not args.currency.isupper():
        parser.error(f"--currency must be three upper-case letters, got {args.currency!r}")
    if args.scenario != "setup" and args.accounts < 2:
        parser.error("transfers need at least 2 accounts")
    if args.processes > args.concurrency:
        parser.error("--concurrency must be at least --processes (each process needs a slot)")
    duration = args.duration_seconds
    count = args.count
    if duration is None and count is None and args.scenario != "setup":
        duration = 30.0
    output_dir = args.output_dir
    if output_dir is None:
        output_dir = Path("loadtest-results") / time.strftime("%Y%m%d-%H%M%S")
    return Options(
        scenario=args.scenario,
        duration_seconds=duration,
        count=count,
        concurrency=args.concurrency,
        rate_per_second=args.rate,
        accounts=args.accounts,
        seed=args.seed,
        processes=args.processes,
        command_addr=args.command_addr,
        query_addr=args.query_addr,
        pg_dsn=args.pg_dsn,
        es_url=args.es_url,
        index_prefix=args.index_prefix,
        output_dir=output_dir,
        plot=not args.no_plot,
        distribution=Distribution(args.distribution),
        read_fraction=args.read_fraction if args.scenario == "mixed" else 0.0,
        duplicate_fraction=(
            args.duplicate_fraction if args.scenario in DUPLICATING_SCENARIOS else 0.0
        ),
        currency=args.currency,
        initial_balance_minor=args.initial_balance_minor,
        overdraft_limit_minor=args.overdraft_limit_minor,
        amount_max_minor=args.amount_max_minor,
        rpc_timeout_seconds=args.rpc_timeout_seconds,
        lag_sample_fraction=args.lag_sample_fraction,
        lag_wait_seconds_max=args.lag_wait_seconds_max,
        lag_probes_in_flight_max=16,
        catch_up_wait_seconds_max=args.catch_up_wait_seconds_max,
        plot_samples_max=args.plot_samples_max,
        progress_interval_seconds=0.5,
        hold_timeout_seconds=args.hold_timeout_seconds,
        hold_expiry_wait_seconds_max=args.hold_expiry_wait_seconds_max,
        security=client_security(),
    )
