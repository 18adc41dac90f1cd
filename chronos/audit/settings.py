"""The signed checkpoints' settings, declared once for every process that reads them
(the outbox poller publishes, the projector stores, ``chronos verify`` checks)."""

from __future__ import annotations

from chronos.settings import integer, number, text

CHECKPOINTS_TOPIC = text(
    "CHRONOS_CHECKPOINTS_TOPIC",
    "",
    length_max=249,
    doc="The Kafka topic of the signed chain checkpoints (created with unlimited "
    "retention); empty: the events topic's name followed by `.checkpoints`.",
)


def checkpoints_topic(events_topic: str, configured: str = "") -> str:
    """The checkpoints topic: ``configured``, else the events topic's name followed by
    ``.checkpoints`` (so every ledger, and every test's, has its own)."""
    return configured or f"{events_topic}.checkpoints"


CHECKPOINT_INTERVAL_EVENTS = integer(
    "CHRONOS_CHECKPOINT_INTERVAL_EVENTS",
    10_000,
    minimum=1,
    maximum=10**9,
    doc="The poller's leader signs a checkpoint once this many events were published since "
    "the last one.",
)
CHECKPOINT_INTERVAL_SECONDS = number(
    "CHRONOS_CHECKPOINT_INTERVAL_SECONDS",
    60.0,
    minimum=0.1,
    maximum=86400.0,
    doc="... or once this long passed since the last one, when events were published since.",
)
CHECKPOINT_SIGNING_KEY_FILE = text(
    "CHRONOS_CHECKPOINT_SIGNING_KEY_FILE",
    "",
    doc="Ed25519 private key (PEM) the poller signs checkpoints with; empty: no "
    "checkpoints (a warning at start).",
)
CHECKPOINT_JWKS_FILE = text(
    "CHRONOS_CHECKPOINT_JWKS_FILE",
    "",
    doc="JWKS of the checkpoint signing keys `chronos verify` trusts; empty: checkpoints "
    "are not checked.",
)
