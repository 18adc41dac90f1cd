"""chronos trace renders a span tree with offsets and durations."""

import json
from pathlib import Path

import pytest

from chronos.cli import main
from chronos.trace_view import load_spans, render_trace


def span(name: str, span_id: str, parent: str | None, start_ms: float, end_ms: float) -> dict:
    return {
        "name": name,
        "trace_id": "t1",
        "span_id": span_id,
        "parent_span_id": parent,
        "start_ns": int(start_ms * 1e6),
        "end_ns": int(end_ms * 1e6),
        "service": "svc",
    }


def test_tree_is_indented_with_offsets_and_durations() -> None:
    spans = [
        span("outbox.publish", "c", "b", 5, 7),
        span("/chronos.v1.CommandService/TransferFunds", "a", None, 0, 4),
        span("postgres.transaction", "b", "a", 1, 3.5),
        span("other", "z", None, 0, 1) | {"trace_id": "t2"},
    ]
    lines = render_trace(spans, "t1").splitlines()
    assert lines[0] == "trace t1"
    assert [line.split()[0] for line in lines[1:]] == [
        "/chronos.v1.CommandService/TransferFunds",
        "postgres.transaction",
        "outbox.publish",
    ]
    assert lines[2].startswith("    postgres.transaction")
    assert "+    1.00 ms" in lines[2] and "2.50 ms" in lines[2]


def test_a_half_written_line_is_skipped_and_a_missing_file_is_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spans = tmp_path / "spans.jsonl"
    whole = json.dumps(span("/chronos.v1.QueryService/GetAccount", "a", None, 0, 2))
    # A killed process leaves half a line; a stray line is no span either.
    spans.write_text(whole + "\n" + '["not a span"]\n' + whole[:20])
    assert load_spans([spans]) == ([json.loads(whole)], 2)
    assert main(["trace", str(spans), "--root", "GetAccount"]) == 0
    out, err = capsys.readouterr()
    assert "GetAccount" in out
    assert "skipped 2 lines that are not spans" in err
    assert main(["trace", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
