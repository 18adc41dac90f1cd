"""Who asked for a command: the caller's ids, stored as event metadata."""

from __future__ import annotations

from dataclasses import dataclass

from chronos.outbox import contract

# The event metadata travels as the Kafka headers of the same names, so the principal's
# keys are the contract's header names.
METADATA_PRINCIPAL = contract.HEADER_PRINCIPAL
METADATA_PRINCIPAL_TOKEN_ID = contract.HEADER_PRINCIPAL_TOKEN_ID


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandContext:
    """Who asked, stored as event metadata for tracing and audit.

    Attributes:
        request_id: The client's idempotency key; it is scoped by ``principal``.
        principal: The authenticated caller's token subject; "" when authentication is
            turned off for development (then no principal is recorded).
        token_id: The id (``jti``) of the token the caller presented; "" when none.
    """

    request_id: str
    correlation_id: str = ""
    causation_id: str = ""
    traceparent: str = ""
    principal: str = ""
    token_id: str = ""

    @property
    def idempotency_key(self) -> tuple[str, str]:
        """What identifies the command's idempotency record: two principals may use the
        same request_id, each for a command of its own."""
        return (self.principal, self.request_id)

    def metadata(self) -> dict[str, str]:
        """The metadata of the command's events; empty values are left out."""
        values = {
            "request_id": self.request_id,
            "correlation_id": self.correlation_id or self.request_id,
            "causation_id": self.causation_id or self.request_id,
            "traceparent": self.traceparent,
            METADATA_PRINCIPAL: self.principal,
            METADATA_PRINCIPAL_TOKEN_ID: self.token_id,
        }
        return {key: value for key, value in values.items() if value}
