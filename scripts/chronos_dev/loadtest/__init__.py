"""``scripts/loadtest``: load test of the gRPC API, with the bank invariants checked after.

Modules: ``options`` (command line), ``scenarios`` (what is sent and how answers are
recorded), ``scenarios_holds`` (the holds scenario), ``runner`` (client processes,
open-loop schedule), ``progress`` (the progress line), ``stats`` (latency histogram,
schedule arithmetic), ``outcomes`` (what became of each request_id), ``invariants``
(checks against the event store), ``invariants_holds`` (holds and reversals),
``invariants_projection`` (the read side against the recompute), ``check_result``
(a check's result), ``report``
(summary, ``result.json``, ``latency.png``), ``channels`` (TLS channels, the token as
call metadata) and ``cli`` (the composition root).

Its clients are secured as the environment says (:mod:`chronos_dev.client`): TLS with
``CHRONOS_TLS_CA_FILE``, an admin token signed with ``CHRONOS_AUTH_SIGNING_KEY_FILE``.
"""
