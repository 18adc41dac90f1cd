"""Composition root of the load test: parse, run the phases, check, report, exit status.

Exit status: 0 when the run completed and every invariant held; 1 when an invariant
failed, no operation succeeded, or the run could not complete; 2 for bad arguments.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from chronos.errors import ChronosError
from chronos_dev.loadtest import invariants, report
from chronos_dev.loadtest.options import Options, parse_options
from chronos_dev.loadtest.outcomes import Outcomes
from chronos_dev.loadtest.runner import LoadTestError, PhasePlan, PhaseReport, run_phase


def _phases(options: Options, run_id: str) -> list[PhaseReport]:
    setup_count = options.accounts
    if options.scenario == "setup" and options.count is not None:
        setup_count = min(options.accounts, options.count)
    setup = PhasePlan(
        phase="setup",
        run_id=run_id,
        account_indices=tuple(range(setup_count)),
        count_total=setup_count,
        # The setup scenario is the measured load itself; as preparation for another
        # scenario it runs closed loop and unbounded in time (its count bounds it).
        duration_seconds=options.duration_seconds if options.scenario == "setup" else None,
        rate_per_second=options.rate_per_second if options.scenario == "setup" else 0.0,
    )
    print(f"run {run_id}: opening and funding {setup_count} accounts", file=sys.stderr)
    reports = [run_phase(options, setup)]
    if options.scenario == "setup":
        return reports
    funded = tuple(reports[0].funded_account_indices)
    if len(funded) < 2:
        raise LoadTestError(
            f"only {len(funded)} of {setup_count} accounts could be opened and funded; "
            "see the errors above"
        )
    main_phase = PhasePlan(
        phase=options.scenario,
        run_id=run_id,
        account_indices=funded,
        count_total=options.count,
        duration_seconds=options.duration_seconds,
        rate_per_second=options.rate_per_second,
    )
    print(f"run {run_id}: {options.scenario} on {len(funded)} accounts", file=sys.stderr)
    reports.append(run_phase(options, main_phase))
    return reports


def run(options: Options) -> int:
    """Runs the load test described by ``options``; returns the exit status."""
    options.output_dir.mkdir(parents=True, exist_ok=True)
    run_id = str(uuid.uuid4())
    start_position = invariants.start_position(options.pg_dsn)
    phases = _phases(options, run_id)
    merged_outcomes = Outcomes()
    for phase in phases:
        merged_outcomes.merge(phase.outcomes)
    print("checking invariants (waiting for the read side to catch up)...", file=sys.stderr)
    checks = invariants.check_all(
        pg_dsn=options.pg_dsn,
        outcomes=merged_outcomes,
        request_id_prefix=f"lt-{run_id}-",
        start_position=start_position,
        query_addr=options.query_addr,
        security=options.security,
        es_url=options.es_url,
        index_prefix=options.index_prefix,
        wait_seconds_max=options.catch_up_wait_seconds_max,
        rpc_timeout_seconds=options.rpc_timeout_seconds,
        holds=options.scenario == "holds",
        hold_expiry_wait_seconds_max=options.hold_expiry_wait_seconds_max,
    )
    measured = phases[-1]
    plot_path: Path | None = None
    if options.plot:
        plot_path = report.plot(
            measured,
            options.output_dir / report.PLOT_FILE,
            f"{options.scenario}: {measured.operations} operations, "
            f"{measured.throughput_per_second:.0f} ops/s, concurrency {options.concurrency}, "
            f"rate {options.rate_per_second or 'closed loop'}",
        )
    result = report.result_to_json(options, run_id, phases, checks, plot_path)
    result_path = report.write_result(options.output_dir, result)
    for index, phase in enumerate(phases):
        print(report.format_phase(phase, measured=index == len(phases) - 1))
    print(report.format_checks(checks))
    print(f"result: {result_path}" + (f", plot: {plot_path}" if plot_path else ""))
    if measured.operations == measured.operation_errors:
        print("FAIL: no operation succeeded", file=sys.stderr)
        return 1
    return 0 if all(check.passed for check in checks) else 1


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        return run(options)
    except (LoadTestError, ChronosError) as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return 130
