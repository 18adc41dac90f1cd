"""The connections the writer runs its transactions on."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from chronos.event_store import sql
from chronos.event_store.sessions import SessionBounds


def writer_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    name: str | None = None,
    application_name: str = "",
    bounds: SessionBounds | None = None,
) -> AsyncConnectionPool:
    """A pool (not yet open) of the connections the writer needs: autocommit,
    because the writer sends BEGIN and COMMIT itself, inside a pipeline; a planner that
    only looks rows up by key; and ``bounds`` (by default ``SessionBounds()``) on every
    wait, so that a stalled peer holding an account's lock costs the commands on that
    account a lock timeout instead of holding up the whole lane.

    Every statement of the writer finds a batch's rows by primary key. With statistics
    taken while a table was small (a new ledger, before autoanalyze catches up), the
    planner chose to scan the whole idempotency table into a hash join once per commit,
    and its prepared plan kept doing so as the table grew (auto_explain showed a
    sequential scan of idempotency long after it held many rows, at a cost in
    PostgreSQL CPU on every transaction).
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        **(bounds or SessionBounds()).connection_kwargs(extra_options=sql.PLANNER_OPTIONS),
    }
    if application_name:
        kwargs["application_name"] = application_name
    return AsyncConnectionPool(
        dsn, min_size=min_size, max_size=max_size, open=False, name=name, kwargs=kwargs
    )
