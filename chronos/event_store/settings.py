"""The writer's limits and names."""

from __future__ import annotations

from dataclasses import dataclass

from chronos.outbox import contract
from chronos.retry import Backoff


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterSettings:
    """Limits and names of a :class:`LedgerWriter`.

    Attributes:
        topic: The Kafka topic the outbox rows go to.
        lanes: Concurrent transactions (one connection each). One lane per process
            measured best: concurrent transactions of one process mostly wait on each
            other's account locks, and one lane makes fewer, larger transactions.
        batch_size_max: Commands per transaction (soft: whole calls only).
        retries_max: Retries of a batch after a transient conflict or a lock timeout.
        retry_backoff_seconds_max: The longest wait between two attempts.
        idempotency_retention_seconds: How long a request_id's answer is kept.
        connection_timeout_seconds: The longest wait for a pooled connection.
    """

    topic: str = contract.DEFAULT_TOPIC
    lanes: int = 1
    batch_size_max: int = 256
    retries_max: int = 5
    retry_backoff_seconds_max: float = 0.05
    idempotency_retention_seconds: int = 24 * 3600
    connection_timeout_seconds: float = 5.0

    def backoff(self) -> Backoff:
        """The waits between a batch's attempts. The first step is a quarter of the cap,
        so that a conflict between two batches is retried soon, and the steps reach the
        cap by the third retry."""
        return Backoff(
            base_seconds=self.retry_backoff_seconds_max / 4,
            cap_seconds=self.retry_backoff_seconds_max,
            retries_max=self.retries_max,
        )
