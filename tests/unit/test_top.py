"""chronos top's arithmetic on scraped samples (rates and quantiles over an interval)."""

from chronos.top import Snapshot, quantile, rate, render


def snapshot(at: float, buckets: dict[str, float], requests: float) -> Snapshot:
    taken = Snapshot(taken_monotonic=at)
    for bound, count in buckets.items():
        labels = (("le", bound), ("method", "Deposit"), ("service", "command"))
        taken.samples["chronos_grpc_request_duration_seconds_bucket"][labels] = count
    labels = (("code", "OK"), ("method", "Deposit"), ("service", "command"))
    taken.samples["chronos_grpc_requests_total"][labels] = requests
    return taken


def test_rate_and_quantile_use_the_interval_only() -> None:
    # Before: 100 old fast requests. During the interval: 98 at <=5 ms, 2 at <=50 ms.
    before = snapshot(10.0, {"0.005": 100, "0.05": 100, "+Inf": 100}, 100)
    after = snapshot(12.0, {"0.005": 198, "0.05": 200, "+Inf": 200}, 200)
    assert rate(before, after, "chronos_grpc_requests_total") == 50.0
    assert quantile(before, after, "chronos_grpc_request_duration_seconds", 0.5) == 0.005
    assert quantile(before, after, "chronos_grpc_request_duration_seconds", 0.99) == 0.05
    assert quantile(before, before, "chronos_grpc_request_duration_seconds", 0.99) is None


def test_render_reports_missing_processes() -> None:
    before = snapshot(0.0, {"+Inf": 0}, 0)
    after = snapshot(1.0, {"0.005": 10, "+Inf": 10}, 10)
    endpoints = {
        p: f"127.0.0.1:{n}"
        for p, n in (("command", 1), ("query", 2), ("poller", 3), ("projector", 4))
    }
    screen = render({"command": before}, {"command": after}, endpoints)
    assert "10.0 req/s" in screen
    assert "query      not answering at 127.0.0.1:2" in screen
    assert "projector  not answering at 127.0.0.1:4" in screen
