"""Why the projector stops: a failure it cannot get past, or a stop it was asked for."""

from __future__ import annotations

from chronos.errors import ChronosError


class ProjectorError(ChronosError):
    """The projector cannot go on (undecodable event, topic missing, Kafka fatal error)."""


class ProjectorStopped(ChronosError):
    """A stop was requested while a batch was still waiting for Elasticsearch."""
