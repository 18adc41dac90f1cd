"""The read side: the Elasticsearch projection of the event store.

``indices`` names and maps the indices, ``documents`` turns events into documents (the
one implementation the projector and the rebuild share), ``es_writer`` writes them,
``watermark`` says which positions are visible, ``rebuild`` and ``reconcile`` are the
operator tools behind ``chronos projection rebuild`` and ``chronos reconcile``. The query
server reads through ``queries`` (the Elasticsearch query DSL), ``watermark_cache`` (the
visible position, shared by concurrent calls) and ``coalesce`` (reads by id batched into
multi-gets).
"""

from __future__ import annotations

from chronos.errors import ChronosError


class ReadModelError(ChronosError):
    """Elasticsearch refused a read-model operation for a reason a retry will not fix."""


class ReadModelUnavailable(ChronosError):
    """Elasticsearch could not be reached or answered with a transient error."""
