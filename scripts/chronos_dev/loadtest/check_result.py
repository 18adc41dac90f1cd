"""The result of one invariant check, and the collector of the problems it finds."""

from __future__ import annotations

from dataclasses import dataclass

EXAMPLES_MAX = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


class Problems:
    """Counts every problem a check finds and keeps the first ``EXAMPLES_MAX`` of them."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES_MAX:
            self.examples.append(text)

    def add_counted(self, count: int, examples: list[str]) -> None:
        """Adds ``count`` problems known by their first ``examples``."""
        for text in examples[:count]:
            self.add(text)
        self.count += max(0, count - len(examples))

    def result(self, name: str, detail: str) -> CheckResult:
        """The check's result: passed when no problem was found; the detail leads with
        the first problems otherwise."""
        if self.count:
            detail = f"{self.count} problems: " + "; ".join(self.examples[:3]) + f" ({detail})"
        return CheckResult(name=name, passed=self.count == 0, detail=detail)
