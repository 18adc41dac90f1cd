"""``scripts/loadtest``: load test of the gRPC API, with the bank invariants checked after.

Modules: ``options`` (command line), ``scenarios`` (what is sent and how answers are
recorded), ``runner`` (client processes, open-loop schedule, progress line), ``stats``
(latency histogram, schedule arithmetic), ``outcomes`` (what became of each request_id),
``invariants`` (checks against the event store and the query service), ``report``
(summary, ``result.json``, ``latency.png``) and ``cli`` (the composition root).
"""
