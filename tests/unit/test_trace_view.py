"""chronos trace renders a span tree with offsets and durations."""

from chronos.trace_view import render_trace


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
