"""The bench's results: the targets, the printed table and ``bench.json``.

Targets are reported, never enforced: a missed target is a finding, not a failure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chronos_dev.bench.components import COMPONENTS, OTHER
from chronos_dev.bench.cpu import TOTAL

RESULT_FILE = "bench.json"
SERVICE_RSS_MB_MAX = 200.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One target of the issue, with the measured value next to it."""

    name: str
    value: float | None
    comparison: str  # ">=" or "<="
    threshold: float
    unit: str

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.comparison == ">=":
            return self.value >= self.threshold
        return self.value <= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if self.value is None else round(self.value, 3),
            "target": f"{self.comparison} {self.threshold:g}{self.unit}",
            "met": self.met,
        }


def _get(results: dict[str, Any], *path: str) -> Any:
    """``results[path[0]][path[1]]...``, or None when any step is missing."""
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


@dataclass(frozen=True, slots=True)
class _CommandStage:
    """A closed-loop command stage, compared with pgbench (a)."""

    tag: str
    key: str
    what: str  # may name {batch_size}
    unit: str
    ratio_target: str
    p99_target: str

    @property
    def ratio_key(self) -> str:
        return f"{self.key}_over_pgbench"


_COMMAND_STAGES = (
    _CommandStage(
        "b",
        "transfer_funds",
        "TransferFunds max throughput",
        " /s",
        "TransferFunds / pgbench (b/a)",
        "TransferFunds p99 at max throughput (b)",
    ),
    _CommandStage(
        "bw",
        "transfer_funds_write_path",
        "TransferFunds, read side paused",
        " /s",
        "TransferFunds, read side paused / pgbench (bw/a)",
        "TransferFunds p99 at max throughput, read side paused (bw)",
    ),
    _CommandStage(
        "b'",
        "transfer_batches",
        "transfers in ExecuteBatch calls of {batch_size}",
        " transfers/s",
        "transfers in batches / pgbench (b'/a)",
        "ExecuteBatch call p99 at max throughput (b')",
    ),
)


# (stage with TLS and authentication on, the same stage with them off), and its target.
_SECURITY_PAIRS = (
    ("transfer_funds", "transfer_funds_security_off"),
    ("get_account", "get_account_security_off"),
)
_SECURITY_TARGETS = {
    "transfer_funds": "TransferFunds, TLS + authentication on / off (b/b-off)",
    "get_account": "GetAccount, TLS + authentication on / off (d/d-off)",
}
SECURITY_RATIO_MIN = 0.9


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if not isinstance(numerator, int | float) or not isinstance(denominator, int | float):
        return None
    return numerator / denominator if denominator > 0 else None


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """Each command stage over pgbench tps (b/a, ...) and d/c (GetAccount over the empty
    call)."""
    found = {
        stage.ratio_key: _ratio(
            _get(results, stage.key, "throughput_per_second"), _get(results, "pgbench", "tps")
        )
        for stage in _COMMAND_STAGES
    }
    found["get_account_over_empty_call"] = _ratio(
        _get(results, "get_account", "throughput_per_second"),
        _get(results, "empty_call", "throughput_per_second"),
    )
    found["get_account_over_query_server_empty_call"] = _ratio(
        _get(results, "get_account", "throughput_per_second"),
        _get(results, "empty_call_query_server", "throughput_per_second"),
    )
    for on, off in _SECURITY_PAIRS:
        found[f"{on}_security_on_over_off"] = _ratio(
            _get(results, on, "throughput_per_second"),
            _get(results, off, "throughput_per_second"),
        )
    return {key: None if value is None else round(value, 3) for key, value in found.items()}


def targets(results: dict[str, Any]) -> list[Target]:
    """The issue's targets, evaluated on ``results`` (None where a figure is missing)."""
    ratio = ratios(results)
    found: list[Target] = []
    for stage in _COMMAND_STAGES:
        found.append(
            Target(
                name=stage.ratio_target,
                value=ratio[stage.ratio_key],
                comparison=">=",
                threshold=1.5,
                unit="x",
            )
        )
        found.append(
            Target(
                name=stage.p99_target,
                value=_get(results, stage.key, "latency_ms", "p99_ms"),
                comparison="<=",
                threshold=25.0,
                unit=" ms",
            )
        )
    found += [
        Target(
            name="projection lag p99 at half load (e)",
            value=_get(results, "half_load", "projection_lag_ms", "p99_ms"),
            comparison="<=",
            threshold=250.0,
            unit=" ms",
        ),
        Target(
            name="outbox publish lag p99 at half load (e)",
            value=_get(results, "half_load", "outbox_publish_lag_ms", "p99_ms"),
            comparison="<=",
            threshold=50.0,
            unit=" ms",
        ),
        Target(
            name="GetAccount / empty call (d/c)",
            value=ratio["get_account_over_empty_call"],
            comparison=">=",
            threshold=0.75,
            unit="x",
        ),
        *(
            Target(
                name=_SECURITY_TARGETS[on],
                value=ratio[f"{on}_security_on_over_off"],
                comparison=">=",
                threshold=SECURITY_RATIO_MIN,
                unit="x",
            )
            for on, _ in _SECURITY_PAIRS
        ),
        Target(
            name="projection rebuild (f)",
            value=_get(results, "rebuild", "events_per_second"),
            comparison=">=",
            threshold=10_000,
            unit=" events/s",
        ),
    ]
    for name, memory in sorted((_get(results, "memory", "processes") or {}).items()):
        if memory.get("service"):
            found.append(
                Target(
                    name=f"peak memory of {name} (g)",
                    value=memory.get("peak_mb"),
                    comparison="<=",
                    threshold=SERVICE_RSS_MB_MAX,
                    unit=" MB",
                )
            )
    return found


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _latency_text(latency: Any) -> str:
    if not isinstance(latency, dict):
        return "-"
    return f"p50 {_number(latency.get('p50_ms'), 2)} / p99 {_number(latency.get('p99_ms'), 2)} ms"


def format_table(results: dict[str, Any]) -> str:
    """Every figure, with its target and verdict where the issue sets one."""
    by_name = {target.name: target for target in targets(results)}

    def verdict(name: str) -> tuple[str, str]:
        target = by_name.get(name)
        if target is None:
            return "", ""
        met = {True: "yes", False: "NO", None: "?"}[target.met]
        return f"{target.comparison} {target.threshold:g}{target.unit}", met

    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, value: str, target_name: str = "") -> None:
        target_text, met = verdict(target_name)
        rows.append((label, value, target_text, met))

    def stage(*path: str) -> Any:
        return _get(results, *path)

    row("(a) pgbench transfer, tps", _number(stage("pgbench", "tps")) + " /s")
    row("(a) pgbench latency", _latency_text(stage("pgbench", "latency_ms")))

    for command in _COMMAND_STAGES[:1]:
        _command_rows(row, stage, command)
    _security_rows(row, stage, "b-off", "transfer_funds")
    for command in _COMMAND_STAGES[1:]:
        _command_rows(row, stage, command)
    row(
        "(b'') the same, read side running",
        _number(stage("transfer_batches_pipeline", "throughput_per_second"))
        + " transfers/s, "
        + _latency_text(stage("transfer_batches_pipeline", "latency_ms")),
    )
    _hold_rows(row, stage)
    row("(c) empty call throughput", _number(stage("empty_call", "throughput_per_second")) + " /s")
    row("(c) empty call latency", _latency_text(stage("empty_call", "latency_ms")))
    row(
        "(c') empty call on the query server",
        _number(stage("empty_call_query_server", "throughput_per_second"))
        + " /s, "
        + _latency_text(stage("empty_call_query_server", "latency_ms")),
    )
    row("(d) GetAccount throughput", _number(stage("get_account", "throughput_per_second")) + " /s")
    row("(d) GetAccount latency", _latency_text(stage("get_account", "latency_ms")))
    row(
        "d/c",
        _number(stage("ratios", "get_account_over_empty_call"), 2),
        "GetAccount / empty call (d/c)",
    )
    row(
        "d/c' (same server)",
        _number(stage("ratios", "get_account_over_query_server_empty_call"), 2),
    )
    _security_rows(row, stage, "d-off", "get_account")
    probes = stage("sustainable_rate", "probes") or []
    row(
        "(s) sustainable rate (read side keeps up)",
        f"{_number(stage('sustainable_rate', 'sustainable_rate_per_second'))} /s "
        f"({len(probes)} probes between {_number(stage('sustainable_rate', 'low_per_second'))}"
        f" and {_number(stage('sustainable_rate', 'high_per_second'))} /s)",
    )
    row(
        "(e) half load: rate target / achieved",
        f"{_number(stage('half_load', 'rate_target_per_second'))} / "
        f"{_number(stage('half_load', 'rate_achieved_per_second'))} /s "
        f"({stage('half_load', 'rate_source') or '-'})",
    )
    row(
        "(e) command latency (open loop)",
        _latency_text(stage("half_load", "command", "latency_ms")),
    )
    row(
        "(e) projection lag (histogram)",
        _latency_text(stage("half_load", "projection_lag_ms")),
        "projection lag p99 at half load (e)",
    )
    row(
        "(e) search lag (histogram)",
        _latency_text(stage("half_load", "projection_search_lag_ms")),
    )
    row(
        "(e) outbox publish lag (histogram)",
        _latency_text(stage("half_load", "outbox_publish_lag_ms")),
        "outbox publish lag p99 at half load (e)",
    )
    row(
        "(e) read-your-writes lag (probes)",
        _latency_text(stage("half_load", "read_your_writes_lag_ms")),
    )
    row(
        "(f) projection rebuild",
        _number(stage("rebuild", "events_per_second"), 0) + " events/s",
        "projection rebuild (f)",
    )
    for name, memory in sorted((stage("memory", "processes") or {}).items()):
        label = f"(g) peak memory {name}"
        value = _number(memory.get("peak_mb")) + " MB"
        row(label, value, f"peak memory of {name} (g)" if memory.get("service") else "")

    return _columns(("figure", "value", "target", "met"), rows)


_Row = Callable[..., None]
_Stage = Callable[..., Any]


def _command_rows(row: _Row, stage: _Stage, command: _CommandStage) -> None:
    """A closed-loop command stage's rows: throughput, latencies, ratio to pgbench."""
    tag, key = command.tag, command.key
    what = command.what.format(batch_size=stage(key, "batch_size") or "-")
    row(f"({tag}) {what}", _number(stage(key, "throughput_per_second")) + command.unit)
    row(f"({tag}) latency", _latency_text(stage(key, "latency_ms")), command.p99_target)
    row(
        f"({tag}) server side (histogram)",
        _latency_text(stage(key, "server_side_latency_ms"))
        + f", {_number(stage(key, 'writer_commands_per_transaction_mean'), 1)}"
        " commands per transaction",
    )
    row(f"{tag}/a", _number(stage("ratios", command.ratio_key), 2), command.ratio_target)


def _hold_rows(row: _Row, stage: _Stage) -> None:
    """The hold stages: create + post pairs one per call (h) and in batches (h'), and
    the expiry job (x)."""
    row(
        "(h) hold pairs: CreatePendingTransfer + PostPendingTransfer",
        _number(stage("hold_pairs", "throughput_per_second"))
        + " pairs/s, pair "
        + _latency_text(stage("hold_pairs", "latency_ms")),
    )
    row(
        f"(h') hold pairs in ExecuteBatch ({stage('hold_pair_batches', 'batch_size') or '-'} "
        "creates, then their posts)",
        _number(stage("hold_pair_batches", "throughput_per_second"))
        + " pairs/s, both calls "
        + _latency_text(stage("hold_pair_batches", "latency_ms")),
    )
    row(
        "(x) hold expiry job, first due -> last expired",
        f"{_number(stage('hold_expiry', 'expired_per_second'))} holds/s "
        f"({_number(stage('hold_expiry', 'holds_expired'), 0)} holds, "
        f"{_number(stage('hold_expiry', 'first_due_to_last_expired_seconds'), 2)} s)",
    )


def _security_rows(row: _Row, stage: _Stage, tag: str, on: str) -> None:
    """The stage with TLS and authentication off, and on / off."""
    off = dict(_SECURITY_PAIRS)[on]
    row(
        f"({tag}) the same, TLS and authentication off",
        _number(stage(off, "throughput_per_second"))
        + " /s, "
        + _latency_text(stage(off, "latency_ms")),
    )
    row(
        f"{tag.removesuffix('-off')}/{tag} (security on / off)",
        _number(stage("ratios", f"{on}_security_on_over_off"), 2),
        _SECURITY_TARGETS[on],
    )


def _columns(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """``rows`` under ``header`` in left-aligned columns, with a rule under the header."""
    widths = [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def format_probes(results: dict[str, Any]) -> str:
    """The sustainable rate's search (s): every probe with its verdict."""
    search = results.get("sustainable_rate")
    if not isinstance(search, dict):
        return "(s) sustainable rate: not measured"
    rows = [
        (
            str(index),
            _number(probe.get("rate_per_second")),
            _number(probe.get("achieved_per_second")),
            _number(probe.get("projection_lag_p99_ms"), 0),
            _number(probe.get("drain_seconds"), 2),
            "pass" if probe.get("passed") else "FAIL",
        )
        for index, probe in enumerate(search.get("probes", []), start=1)
    ]
    header = ("probe", "rate /s", "achieved /s", "lag p99 ms", "drain s", "verdict")
    return "\n".join(
        [
            f"(s) sustainable rate {_number(search.get('sustainable_rate_per_second'))} /s; "
            f"pass when {search.get('pass_when', '-')}:",
            _columns(header, rows),
        ]
    )


def format_cpu_per_transfer(results: dict[str, Any]) -> str:
    """CPU milliseconds per transfer by component, one row per stage that moved
    transfers ("-": the component's processes were not watched)."""
    stages = _get(results, "cpu_ms_per_transfer", "stages") or {}
    if not stages:
        return "CPU ms per transfer: no stage with transfers and CPU figures"
    other = any(OTHER in entry for entry in stages.values())
    names = (*COMPONENTS, *((OTHER,) if other else ()), TOTAL)
    rows = [
        (stage, _number(entry.get("transfers"), 0), *(_number(entry.get(n), 3) for n in names))
        for stage, entry in stages.items()
    ]
    notes = [f"  {stage}: {entry['note']}" for stage, entry in stages.items() if "note" in entry]
    return "\n".join(
        [
            "CPU milliseconds per transfer by component (CPU seconds x 1000 / transfers "
            "completed in the stage):",
            _columns(("stage", "transfers", *names), rows),
            *notes,
        ]
    )


CPU_CONSUMERS_SHOWN = 6


def format_cpu(results: dict[str, Any]) -> str:
    """The biggest CPU consumers of each stage, in cores (CPU seconds per second)."""
    lines = [
        "cores used per stage (CPU seconds / wall seconds; the machine has "
        f"{_number(_get(results, 'machine', 'nproc'), 0)}):"
    ]
    for stage, used in (results.get("cpu_cores_used") or {}).items():
        total = used.get(TOTAL)
        processes = [(name, cores) for name, cores in used.items() if name != TOTAL]
        top = sorted(processes, key=lambda item: -item[1])[:CPU_CONSUMERS_SHOWN]
        text = ", ".join(f"{name} {cores:.2f}" for name, cores in top if cores >= 0.01)
        lines.append(f"  {stage}: total {_number(total, 2)} = {text or '-'}, ...")
    return "\n".join(lines)


def format_invariants(invariants: dict[str, Any] | None) -> str:
    if not invariants:
        return "invariants: not checked"
    lines = ["invariants:"]
    for check in invariants.get("checks", []):
        verdict = "PASS" if check["passed"] else "FAIL"
        lines.append(f"  {verdict}  {check['name']}: {check['detail']}")
    verdict = "all checks passed" if invariants.get("passed") else "SOME CHECKS FAILED"
    lines.append(f"invariants: {verdict}")
    return "\n".join(lines)


def write_result(output_dir: Path, results: dict[str, Any]) -> Path:
    path = output_dir / RESULT_FILE
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
