"""``chronos trace``: prints traces from JSON-lines span files as indented trees.

The processes write those files when ``CHRONOS_TRACE_FILE`` is set (see
``chronos/telemetry.py``); this shows one request's path through every process with
each stage's start offset and duration, without a tracing backend.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def load_spans(paths: list[Path]) -> tuple[list[dict[str, Any]], int]:
    """The spans in ``paths`` and how many lines were not spans. A file still being
    written (or cut short by a killed process) may end in half a line: skipped, not
    fatal.

    Raises:
        OSError: a file cannot be read.
    """
    spans = []
    skipped = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                span = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if isinstance(span, dict) and span.keys() >= _SPAN_KEYS:
                spans.append(span)
            else:
                skipped += 1
    return spans, skipped


_SPAN_KEYS = frozenset(
    {"trace_id", "span_id", "parent_span_id", "name", "service", "start_ns", "end_ns"}
)


def render_trace(spans: list[dict[str, Any]], trace_id: str) -> str:
    """The spans of ``trace_id`` as a tree: offset from the root's start, duration."""
    in_trace = [span for span in spans if span["trace_id"] == trace_id]
    by_id = {span["span_id"]: span for span in in_trace}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for span in in_trace:
        parent = span["parent_span_id"] if span["parent_span_id"] in by_id else None
        children[parent].append(span)
    roots = sorted(children[None], key=lambda s: s["start_ns"])
    if not roots:
        return f"trace {trace_id}: no spans"
    origin_ns = roots[0]["start_ns"]
    lines = [f"trace {trace_id}"]

    def walk(span: dict[str, Any], depth: int) -> None:
        offset_ms = (span["start_ns"] - origin_ns) / 1e6
        duration_ms = (span["end_ns"] - span["start_ns"]) / 1e6
        lines.append(
            f"{'  ' * depth}{span['name']:<{52 - 2 * depth}} {span['service']:<15} "
            f"+{offset_ms:8.2f} ms  {duration_ms:8.2f} ms"
        )
        for child in sorted(children[span["span_id"]], key=lambda s: s["start_ns"]):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 1)
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("trace", help="print traces from span files as trees")
    parser.add_argument("files", nargs="+", type=Path, help="CHRONOS_TRACE_FILE outputs")
    parser.add_argument(
        "--root", default="TransferFunds", help="show traces whose root span name contains this"
    )
    parser.add_argument("--last", type=int, default=1, help="how many of the newest traces")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        spans, skipped = load_spans(args.files)
    except OSError as error:
        print(f"chronos trace: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    if skipped:
        print(f"chronos trace: skipped {skipped} lines that are not spans", file=sys.stderr)
    roots = sorted(
        (s for s in spans if not s["parent_span_id"] and args.root in s["name"]),
        key=lambda s: s["start_ns"],
    )
    if not roots:
        print(f"no trace with a root span matching {args.root!r}")
        return 1
    for root in roots[-args.last :]:
        print(render_trace(spans, root["trace_id"]))
    return 0
