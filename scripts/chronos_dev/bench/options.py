"""Command-line options of ``scripts/bench``, parsed once into a frozen dataclass."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from chronos.domain import limits
from chronos_dev.loadtest.options import float_in, positive_int

_T = TypeVar("_T", int, float)

# Bounds on every knob: a typo must not start a day-long run or a million clients.
_DURATION_SECONDS_MAX = 3600.0
_ACCOUNTS_MAX = 1_000_000
_PROCESSES_MAX = 16
_CONCURRENCY_MAX = 4096
_CONNECTIONS_MAX = 256
_PGBENCH_CLIENTS_MAX = 150
# The sustainable rate's search: each probe lasts seconds plus its drain.
_PROBE_SECONDS_MAX = 600.0
_PROBES_MAX_LIMIT = 20

# --quick: a few seconds per stage and a tiny data set, for the end-to-end test.
QUICK_DURATION_SECONDS = 2.0
QUICK_ACCOUNTS = 20
QUICK_PGBENCH_CLIENTS = 4
QUICK_CONCURRENCY = 8
QUICK_CONNECTIONS = 4
QUICK_BATCH_SIZE = 10
QUICK_BATCH_CONCURRENCY = 2
QUICK_WARM_UP_SECONDS = 1.0
PROBE_SECONDS_DEFAULT = 15.0
PROBES_MAX_DEFAULT = 5
QUICK_PROBE_SECONDS = 2.0
QUICK_PROBES_MAX = 2
# (x) the hold expiry job: holds placed to fall due together.
EXPIRY_HOLDS_DEFAULT = 10_000
QUICK_EXPIRY_HOLDS = 100
_EXPIRY_HOLDS_MAX = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchOptions:
    """Everything a bench run needs."""

    quick: bool
    duration_seconds: float
    accounts: int
    command_processes: int
    query_processes: int
    concurrency: int
    connections: int
    client_processes: int
    # (b') ExecuteBatch: transfers per call and calls in flight.
    batch_size: int
    batch_concurrency: int
    pgbench_clients: int
    pgbench_threads: int
    use_ghz: bool
    ghz_path: str | None
    pgbench_path: str | None
    output_dir: Path
    keep_resources: bool
    remove_leftovers: bool
    lag_sample_fraction: float
    catch_up_wait_seconds_max: float
    rpc_timeout_seconds: float
    memory_interval_seconds: float
    seed: int
    # Stage keys to run (empty: all).
    only: frozenset[str] = frozenset()
    # Seconds of transfers through the whole pipeline before the first measured stage.
    warm_up_seconds: float = 0.0
    # Rate of stage (e); None: half of the sustainable rate (s).
    half_load_rate: float | None = None
    # (s) the sustainable rate's search: seconds of each probe, and at most this many.
    probe_seconds: float
    probes_max: int
    # (x) holds placed to fall due together for the expiry job.
    expiry_holds: int = EXPIRY_HOLDS_DEFAULT


def _chosen(value: _T | None, default: _T, quick_default: _T, quick: bool) -> _T:
    """The explicit value if given, else the --quick or the normal default."""
    if value is not None:
        return value
    return quick_default if quick else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=(
            "One-command benchmark of the whole ledger on this machine: pgbench ceiling, "
            "TransferFunds throughput, empty-call ceiling, GetAccount throughput, the "
            "sustainable rate (the highest open-loop rate at which the read side keeps up), "
            "the lags at half of it, hold create + post pairs (one per call and in "
            "ExecuteBatch) and the hold expiry job's rate, projection rebuild speed, peak "
            "memory and CPU per "
            "transfer by component, followed by the load "
            "test's invariant checks. Writes bench-results/<timestamp>/bench.json. Exit "
            "status 1 when a stage fails or an invariant does not hold (a missed "
            "performance target is not a failure), 2 for bad arguments."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            f"tiny run for tests: {QUICK_DURATION_SECONDS:g} s per stage, "
            f"{QUICK_ACCOUNTS} accounts, {QUICK_PGBENCH_CLIENTS} pgbench clients "
            "(explicit options still win)"
        ),
    )
    parser.add_argument(
        "--duration-seconds",
        type=float_in(0.5, _DURATION_SECONDS_MAX),
        help="length of each measured stage (default 20)",
    )
    parser.add_argument(
        "--accounts",
        type=positive_int(_ACCOUNTS_MAX),
        help="accounts opened and funded, and seeded for pgbench (default 1000)",
    )
    parser.add_argument(
        "--command-processes",
        type=positive_int(_PROCESSES_MAX),
        default=2,
        help="command server processes sharing the port (SO_REUSEPORT; default 2)",
    )
    parser.add_argument(
        "--query-processes",
        type=positive_int(_PROCESSES_MAX),
        default=2,
        help="query server processes sharing the port (SO_REUSEPORT; default 2)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int(_CONCURRENCY_MAX),
        help="requests in flight in the closed-loop gRPC stages (default 64)",
    )
    parser.add_argument(
        "--connections",
        type=positive_int(_CONNECTIONS_MAX),
        help=(
            "ghz connections per stage (default 16): the kernel spreads connections, not "
            "requests, over the command server processes"
        ),
    )
    parser.add_argument(
        "--client-processes",
        type=positive_int(_PROCESSES_MAX),
        default=2,
        help="processes of the Python client (default 2)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int(limits.BATCH_COMMANDS_MAX),
        help="transfers per ExecuteBatch call in stage (b') (default 200)",
    )
    parser.add_argument(
        "--batch-concurrency",
        type=positive_int(_CONCURRENCY_MAX),
        help="ExecuteBatch calls in flight in stage (b') (default 8)",
    )
    parser.add_argument(
        "--pgbench-clients",
        type=positive_int(_PGBENCH_CLIENTS_MAX),
        help="pgbench -c (default 32)",
    )
    parser.add_argument(
        "--pgbench-threads", type=positive_int(64), default=2, help="pgbench -j (default 2)"
    )
    parser.add_argument(
        "--no-ghz",
        action="store_true",
        help="use the Python client (chronos_dev.loadtest) even when ghz is installed",
    )
    parser.add_argument("--ghz", dest="ghz_path", help="path of ghz (default: PATH, ~/go/bin)")
    parser.add_argument(
        "--pgbench", dest="pgbench_path", help="path of pgbench (default: the embedded server's)"
    )
    parser.add_argument("--output-dir", type=Path, help="default bench-results/<timestamp>")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the bench database, topic, consumer group and indices afterwards",
    )
    parser.add_argument(
        "--remove-leftovers",
        action="store_true",
        help=(
            "first remove what earlier runs stopped before their end left on the servers "
            "(bench_* databases, their topics, consumer groups and indices)"
        ),
    )
    parser.add_argument(
        "--lag-sample-fraction",
        type=float_in(0.0, 1.0),
        default=0.05,
        help="share of half-load transfers whose read-your-writes lag is probed (default 0.05)",
    )
    parser.add_argument(
        "--catch-up-wait-seconds-max",
        type=float_in(1.0, 7200.0),
        default=600.0,
        help="bound on waiting for the projection to catch up between stages (default 600)",
    )
    parser.add_argument(
        "--rpc-timeout-seconds",
        type=float_in(0.1, 600.0),
        default=10.0,
        help="deadline of every RPC (default 10)",
    )
    parser.add_argument(
        "--memory-interval-seconds",
        type=float_in(0.05, 10.0),
        default=0.5,
        help="how often memory is sampled (default 0.5)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated requests")
    parser.add_argument(
        "--warm-up-seconds",
        type=float_in(0.0, 600.0),
        help=(
            "transfers through the whole pipeline before (b), unmeasured, so that the "
            "JVMs of Kafka and Elasticsearch have compiled their hot paths (default 20; 0 skips)"
        ),
    )
    parser.add_argument(
        "--half-load-rate",
        type=float_in(1.0, 1_000_000.0),
        help="rate of stage (e) in transfers/s (default: half of the sustainable rate (s))",
    )
    parser.add_argument(
        "--probe-seconds",
        type=float_in(0.5, _PROBE_SECONDS_MAX),
        help=(
            "length of each open-loop probe of the sustainable rate's search (s) "
            f"(default {PROBE_SECONDS_DEFAULT:g}; each probe then waits for the projection "
            "to drain)"
        ),
    )
    parser.add_argument(
        "--probes-max",
        type=positive_int(_PROBES_MAX_LIMIT),
        help=f"most probes of the sustainable rate's search (s) (default {PROBES_MAX_DEFAULT})",
    )
    parser.add_argument(
        "--expiry-holds",
        type=positive_int(_EXPIRY_HOLDS_MAX),
        help=(
            "holds placed to fall due together in stage (x), the hold expiry job's rate "
            f"(default {EXPIRY_HOLDS_DEFAULT:,})"
        ),
    )
    parser.add_argument(
        "--only",
        type=lambda text: frozenset(filter(None, text.split(","))),
        default=frozenset(),
        help=(
            "run only these stages (comma-separated keys of bench.json, e.g. "
            "transfer_batches,drain); the setup always runs. Default: all"
        ),
    )
    return parser


def parse_options(argv: list[str] | None = None) -> BenchOptions:
    """Parses the command line; exits with status 2 and a message on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    accounts = _chosen(args.accounts, 1000, QUICK_ACCOUNTS, quick)
    if accounts < 2:
        parser.error("--accounts must be at least 2 (a transfer needs two accounts)")
    concurrency = _chosen(args.concurrency, 64, QUICK_CONCURRENCY, quick)
    if args.client_processes > concurrency:
        parser.error("--concurrency must be at least --client-processes")
    output_dir = args.output_dir
    if output_dir is None:
        output_dir = Path("bench-results") / time.strftime("%Y%m%d-%H%M%S")
    # Absolute, because tools run with other working directories get paths inside it.
    output_dir = output_dir.resolve()
    return BenchOptions(
        quick=quick,
        duration_seconds=_chosen(args.duration_seconds, 20.0, QUICK_DURATION_SECONDS, quick),
        accounts=accounts,
        command_processes=args.command_processes,
        query_processes=args.query_processes,
        concurrency=concurrency,
        connections=_chosen(args.connections, 16, QUICK_CONNECTIONS, quick),
        client_processes=args.client_processes,
        batch_size=_chosen(args.batch_size, 200, QUICK_BATCH_SIZE, quick),
        batch_concurrency=_chosen(args.batch_concurrency, 8, QUICK_BATCH_CONCURRENCY, quick),
        pgbench_clients=_chosen(args.pgbench_clients, 32, QUICK_PGBENCH_CLIENTS, quick),
        pgbench_threads=args.pgbench_threads,
        use_ghz=not args.no_ghz,
        ghz_path=args.ghz_path,
        pgbench_path=args.pgbench_path,
        output_dir=output_dir,
        keep_resources=bool(args.keep),
        remove_leftovers=bool(args.remove_leftovers),
        lag_sample_fraction=args.lag_sample_fraction,
        catch_up_wait_seconds_max=args.catch_up_wait_seconds_max,
        rpc_timeout_seconds=args.rpc_timeout_seconds,
        memory_interval_seconds=args.memory_interval_seconds,
        seed=args.seed,
        only=args.only,
        warm_up_seconds=_chosen(args.warm_up_seconds, 20.0, QUICK_WARM_UP_SECONDS, quick),
        half_load_rate=args.half_load_rate,
        probe_seconds=_chosen(
            args.probe_seconds, PROBE_SECONDS_DEFAULT, QUICK_PROBE_SECONDS, quick
        ),
        probes_max=_chosen(args.probes_max, PROBES_MAX_DEFAULT, QUICK_PROBES_MAX, quick),
        expiry_holds=_chosen(args.expiry_holds, EXPIRY_HOLDS_DEFAULT, QUICK_EXPIRY_HOLDS, quick),
    )
