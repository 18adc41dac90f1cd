"""``scripts/bench``: the whole ledger benchmarked in one run on one machine.

Run ``scripts/bench`` (``--help`` for the options; ``--quick`` for a few-second smoke
run). It uses the running local stack (``chronos-dev infra``), or starts it and stops it
again afterwards; creates a fresh database ``bench_<timestamp>_<tag>`` (migrated), events
topic, consumer group and index prefix; starts the four services itself on free ports
(metrics on free ports too, the command server with ``--command-processes`` SO_REUSEPORT
processes, default 2); runs the stages below; stops the services and removes what it
created (unless ``--keep``). It prints a table of every figure with the targets next to
it and writes everything to ``bench-results/<timestamp>/bench.json`` (the service logs
to ``logs/`` beside it).

Client: ghz
-----------
The closed-loop gRPC stages use ghz when it is installed, because it needs several
times less CPU per call than a Python client, and the client shares the machine with
the servers it measures. Install it through the Go module proxy::

    go install github.com/bojand/ghz/cmd/ghz@v0.120.0

(it lands in ``~/go/bin``, where the bench looks, besides ``PATH`` and ``--ghz``).
Without ghz, or with ``--no-ghz``, the Python load test (:mod:`chronos_dev.loadtest`,
``--client-processes`` processes) drives TransferFunds and
:mod:`chronos_dev.bench.pyclient` the two read stages. ``--concurrency`` (default 64) calls
are in flight in every closed-loop stage; ghz spreads them over ``--connections``
(default 16) HTTP/2 connections, since the kernel balances SO_REUSEPORT by connection.

How each figure is measured
---------------------------
(a) **pgbench ceiling** (:mod:`chronos_dev.bench.pgbench`): the hand-written SQL of ONE
    transfer (idempotency row; both accounts updated in id order; two events with their
    stream versions and two outbox rows; commit) on ``pgb_*`` tables of the bench
    database, on the same server and so with its durability settings (recorded under
    ``environment.postgres_settings``), ``--pgbench-clients`` (32) clients,
    ``--pgbench-threads`` (2) threads, ``--duration-seconds``. Figures: pgbench's tps;
    latency percentiles from its per-transaction log (``--log``); per-statement averages
    from ``-r``. It runs before the services start, so it has the server to itself.
(b) **TransferFunds**: closed loop for ``--duration-seconds`` after ``--accounts``
    accounts were opened and funded (by the load test's setup phase). Throughput = OK
    answers / wall time; p50/p99 of the OK answers' latencies. The command workers'
    metrics add the server-side latency and the mean commands per group-commit
    transaction (``chronos_writer_batch_commands``).
(c) **Empty call**: ``grpc.health.v1.Health/Check`` on the command server with the same
    client, concurrency and connections: the cost of the gRPC stack alone. (c') is the
    same call on the query server: d/c' compares GetAccount with the empty call on the
    same single process, whereas (c) runs on ``--command-processes`` processes.
(d) **GetAccount** on the query server, round-robin over the funded accounts, after
    waiting for the projection to reach the event store's head (so every read finds its
    account) and ``stages.GET_ACCOUNT_WARM_UP_SECONDS`` (20 s) of the same calls,
    unmeasured (Elasticsearch warms up to the reads of the run's fresh indices). d/c says
    how close reads come to the empty call.
(s) **Sustainable rate** (:mod:`chronos_dev.bench.sustainable`, the search in
    :mod:`chronos_dev.bench.rate_search`): the highest open-loop TransferFunds rate at which
    the read side keeps up. A probe runs the load test's open-loop runner at rate R for
    ``--probe-seconds`` (15), waits for the projection to catch up with its last event,
    and passes when the projector's ``chronos_projection_lag_seconds`` p99 over the probe
    and its drain (bucket deltas, as in (e)) is at most 1 s and the runner completed at
    least 95 % of R per second. The search probes a tenth of (b)'s closed-loop
    throughput first (it must pass; when it fails the report says so and names no
    rate), then bisects between the highest passing rate and (b)'s throughput (taken as
    failing: an open loop cannot beat the closed loop) with at most ``--probes-max`` (5)
    probes, stopping once the bracket is narrower than 5 % of (b). Every probe (rate,
    achieved, lag p99, drain, verdict) is reported: the bisection assumes that passing
    is monotone in the rate, which noise can break.
(e) **Lags at half load** (:mod:`chronos_dev.bench.open_loop`): the load test's open-loop
    runner sends TransferFunds at half of the sustainable rate (s) (``--half-load-rate``
    overrides it; half of the search's low end when even that failed) for
    ``--duration-seconds`` (latency from each request's scheduled time, so queueing
    shows up). Not half of (b): (b) is a closed loop that saturates the machine, and
    half of it can already leave the read side behind, so the lags would measure a
    backlog instead of the pipeline. The
    projector's ``chronos_projection_lag_seconds`` (commit -> written, readable by id),
    ``chronos_projection_search_lag_seconds`` (commit -> searchable) and the poller's
    ``chronos_outbox_publish_latency_seconds`` (commit -> broker ack) are scraped before
    the run and after the projection caught up with its end; p50/p99 come from the
    bucket deltas (:func:`chronos.top.quantile`: the upper bound of the bucket, so they
    read "at most"), the mean from sum/count. The runner's probes measure
    read-your-writes lag end to end (``GetAccount`` with ``min_position`` right after
    the answer) on ``--lag-sample-fraction`` of the transfers. The command's
    server-side latency comes from the command workers' own histograms.
(b-off), (d-off) **Security on vs off** (:mod:`chronos_dev.bench.security`): the bench's
    services serve as the environment says (the local stack's CA, certificate and
    token signing key: TLS, and a bearer token on every call, ghz's included). A
    second command server and query server on the same database and indices run with
    ``CHRONOS_INSECURE_NO_TLS=1`` and ``CHRONOS_INSECURE_NO_AUTH=1``; (b) and (d) run
    again against them, each right after its secured twin with the same client and
    settings. ``b/b-off`` and ``d/d-off`` say what TLS and authentication cost
    (``environment.services.security`` says how each set was reached).
(f) **Projection rebuild**: ``chronos projection rebuild --index-prefix <bench prefix>``
    on the bench database, i.e. over every event the stages above wrote; events/s is the
    replay rate it prints.
(g) **Peak memory** (:mod:`chronos_dev.bench.memory`): every process sampled from ``/proc``
    every ``--memory-interval-seconds`` (0.5) during the whole run: each service process
    (each command worker separately) by ``max(VmHWM, sampled VmRSS)``; PostgreSQL as the
    postmaster plus all its children, the peak of the sum of their PSS (shared memory
    counted once; the RSS sum, which counts ``shared_buffers`` once per backend, is
    reported beside it); Kafka and Elasticsearch (pids from ``.stack/state.json``) by
    their sampled RSS peak during the run.

Besides, every stage records the cores each process used (``cpu_cores_used``, from
``/proc/<pid>/stat`` and ``getrusage``; :mod:`chronos_dev.bench.cpu`), and the total: on a
small machine that says whether a stage was CPU-bound and who had the cores. The same
CPU seconds (``cpu_seconds_used``) give, for every stage that completed transfers
(warm-up, b, bw, b', b'', s, e), the **CPU milliseconds per transfer by component**
(``cpu_ms_per_transfer``; :mod:`chronos_dev.bench.components`): the CPU seconds of the
command server (its workers and supervisor), PostgreSQL (postmaster and children), the
outbox poller, Kafka, the projector, Elasticsearch, the query server and the clients
(ghz, pgbench, the load test's client processes and the bench process itself) over the
stage x 1000 / the transfers it completed, and their total. In bw and b' the read side
is paused, so its share of those transfers is spent in the drain after them. Servers
given by address only (``CHRONOS_*``) are found by their listening port when they run
on this machine (:mod:`chronos_dev.bench.local_pids`), else their components read "not
measured". A component's idle and background work during the stage counts too, so the
figures rise at low rates, and a server shared with other work counts that work too.

Every percentile of the bench, whichever tool measured it, is computed by the load
test's :class:`~chronos_dev.loadtest.stats.LatencyHistogram` (nearest rank, within 0.8 %),
except the service histograms of (e), which only have their buckets.

Afterwards the load test's invariant checks (:mod:`chronos_dev.loadtest.invariants`) run on
the bench database: conservation, limits, exactly-once for the Python client's
requests, and projection equals recompute (``GetAccount`` of every account and
``chronos reconcile``). The exit status is 1 when an invariant fails or a stage could not
run; a missed performance target is reported, never a failure. Targets: TransferFunds
>= 1.5 x pgbench tps, TransferFunds p99 <= 25 ms at that throughput, projection lag p99
<= 250 ms at half load, outbox publish lag p99 <= 50 ms, GetAccount >= 0.75 x the empty
call, rebuild >= 10,000 events/s, each service <= 200 MB, TransferFunds and GetAccount
with TLS and authentication >= 0.9 x without. The sustainable rate and the
CPU per transfer have no target: they say where the machine's limits are.

Modules: ``options`` (command line), ``resources`` (stack, database, topic, indices),
``local_pids`` (pids of servers given by address), ``services`` (the four processes),
``pgbench`` (a), ``ghz`` and ``pyclient`` (the closed-loop clients), ``clients`` (their
common result), ``security`` (b-off, d-off: the second set of servers),
``service_metrics`` (the services' histograms over a stage), ``stages`` (b-d, f),
``open_loop`` (e, and the probes' runs), ``rate_search`` (the search for the
sustainable rate, pure) and ``sustainable`` (its probes, stage s), ``memory`` (g),
``cpu`` (CPU seconds and cores per stage), ``components`` (CPU per transfer by
component), ``machine`` (the machine description), ``report`` (targets, tables, JSON)
and ``cli`` (the composition root).
"""
