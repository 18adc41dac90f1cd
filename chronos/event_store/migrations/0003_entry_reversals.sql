-- ReverseEntry (issue 17): finding a posted entry's lines by its id, and recording that
-- an entry was reversed. Both tables are written in the transaction of the events they
-- describe and never changed afterwards.

-- One row per line event: the entry's lines are events in several account streams, and
-- their payloads are protobuf, so the database cannot find them by entry id otherwise.
-- Lines recorded before this migration are not listed: their entries cannot be reversed
-- (ReverseEntry answers ENTRY_NOT_FOUND).
CREATE TABLE entry_lines (
    entry_id       uuid    NOT NULL,
    line_index     integer NOT NULL,
    stream_id      uuid    NOT NULL,
    stream_version bigint  NOT NULL,
    PRIMARY KEY (entry_id, line_index)
);

-- At most one reversal per entry, enforced by the key as well as by the rule that
-- reads this table under the entry's account locks.
CREATE TABLE entry_reversals (
    entry_id          uuid        PRIMARY KEY,
    reversal_entry_id uuid        NOT NULL UNIQUE,
    recorded_at       timestamptz NOT NULL
);

-- A forced reversal (ReverseEntry with force, journal:write scope) may take a user
-- account below its overdraft limit: the one sanctioned exception to the floor, which
-- a row check cannot tell from a bug. The floor stays a ledger rule, checked on every
-- other posting by the domain, and reconcile recomputes every balance from the events.
ALTER TABLE accounts DROP CONSTRAINT accounts_balance_floor;
