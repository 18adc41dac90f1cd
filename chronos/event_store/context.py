"""Who asked for a command: the caller's ids, stored as event metadata."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandContext:
    """Who asked, stored as event metadata for tracing and audit."""

    request_id: str
    correlation_id: str = ""
    causation_id: str = ""
    traceparent: str = ""

    def metadata(self) -> dict[str, str]:
        """The metadata of the command's events; empty values are left out."""
        values = {
            "request_id": self.request_id,
            "correlation_id": self.correlation_id or self.request_id,
            "causation_id": self.causation_id or self.request_id,
            "traceparent": self.traceparent,
        }
        return {key: value for key, value in values.items() if value}
