"""The SQL text of the write path, in the order a batch's transaction sends it.

Lists travel to PostgreSQL as one JSON text each rather than as arrays: psycopg formats
array parameters element by element in Python, which profiling showed as the writer's
largest cost at high batch sizes (and COPY cannot be pipelined).
"""

from __future__ import annotations

from chronos.event_store import mapper
from chronos.outbox import contract

# The channel the outbox poller LISTENs on.
NOTIFY_CHANNEL = "chronos_outbox"

# Every statement of the writer finds a batch's rows by primary key (see writer_pool).
PLANNER_OPTIONS = "-c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off"

# The advisory lock key of an account id ``a`` (its canonical text), the same in the
# writer's lock statement and in the probe of who holds it.
_LOCK_KEY = "hashtextextended(a, 0)"

# 1. Idempotency placeholders, in (principal, request_id) order (the caller sorts them),
# so that concurrent duplicates serialize: ON CONFLICT waits for the other copy to
# finish. A record is the principal's own: the same request_id of another principal is
# another record.
PLACE_IDEMPOTENCY = """INSERT INTO idempotency
                   (principal, request_id, command_type, payload_hash, created_at, expires_at)
               SELECT u.e->>0, u.e->>1, u.e->>2, decode(u.e->>3, 'hex'), now(),
                      now() + make_interval(secs => %s)
               FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS u(e, n)
               ORDER BY u.n
               ON CONFLICT (principal, request_id) DO NOTHING
               RETURNING principal, request_id"""

# 2. Every touched account's advisory lock (existing or not), in one global order.
LOCK_ACCOUNTS = f"""SELECT pg_advisory_xact_lock(k) FROM (
                   SELECT DISTINCT {_LOCK_KEY} AS k
                   FROM jsonb_array_elements_text(%s::jsonb) AS a ORDER BY k) AS keys"""

# After a lock timeout: which of the accounts another session still holds. The keys
# taken here are released when the statement's transaction ends.
PROBE_HELD_LOCKS = f"""SELECT a FROM jsonb_array_elements_text(%s::jsonb) AS a
                    WHERE NOT pg_try_advisory_xact_lock({_LOCK_KEY})"""

# 3. The locked accounts' state. Not the metadata: it is written once, when the account
# opens, and no rule reads it (parsing it per account was a visible cost under load).
LOAD_ACCOUNTS = """SELECT account_id::text, kind, owner_name, currency, overdraft_limit_minor,
                           status, balance_minor, version, pending_debits_minor,
                           pending_credits_minor
                    FROM accounts WHERE account_id = ANY(%s::uuid[])"""

# The stored answers of the commands whose (principal, request_id) was already placed.
# The keys come as one JSON array of [principal, request_id] pairs.
READ_STORED_ANSWERS = """SELECT i.principal, i.request_id, i.payload_hash, i.response
                    FROM idempotency AS i
                    JOIN jsonb_array_elements(%s::jsonb) AS k(e)
                      ON i.principal = k.e->>0 AND i.request_id = k.e->>1"""

# Rejections write nothing: the same request_id may be retried later. The keys as in
# READ_STORED_ANSWERS.
FORGET_REJECTED = """DELETE FROM idempotency AS i
                    USING jsonb_array_elements(%s::jsonb) AS k(e)
                    WHERE i.principal = k.e->>0 AND i.request_id = k.e->>1"""

# 4. The accounts the batch opened, one JSON object each.
INSERT_OPENED_ACCOUNTS = """INSERT INTO accounts (account_id, kind, owner_name, currency,
                                         overdraft_limit_minor, status, balance_minor, version,
                                         metadata, opened_at, updated_at)
                   SELECT a.account_id, a.kind, a.owner_name, a.currency,
                          a.overdraft_limit_minor, a.status, a.balance_minor, a.version,
                          a.metadata, now(), now()
                   FROM jsonb_to_recordset(%s::jsonb)
                        AS a(account_id uuid, kind text, owner_name text, currency text,
                             overdraft_limit_minor bigint, status text, balance_minor bigint,
                             version bigint, metadata jsonb)"""

# 4. The columns that can change on an existing account.
UPDATE_ACCOUNTS = """UPDATE accounts AS a
                   SET status = u.status, balance_minor = u.balance_minor,
                       version = u.version, pending_debits_minor = u.pending_debits_minor,
                       pending_credits_minor = u.pending_credits_minor, updated_at = now()
                   FROM jsonb_to_recordset(%s::jsonb)
                        AS u(account_id uuid, status text, balance_minor bigint, version bigint,
                             pending_debits_minor bigint, pending_credits_minor bigint)
                   WHERE a.account_id = u.account_id"""

# The chain hash of the staged event ``s`` in the head's hashes.
_LINK = "substring(head.hashes FROM s.ordinal::integer * 32 - 31 FOR 32)"

# 5. Takes the batch's positions from the head row and writes the events, their outbox
# rows and the final answers in one statement. Positions are head + ordinal, so they are
# gapless and in commit order; recorded_at never goes backwards; each event's chain hash
# extends the head's, in position order (docs/audit.md). The events come as one
# JSON text (payloads in base64).
APPEND = f"""
WITH staged AS MATERIALIZED (
    SELECT e.n AS ordinal, (e.v->>0)::uuid AS event_id, (e.v->>1)::uuid AS stream_id,
           (e.v->>2)::bigint AS stream_version, e.v->>3 AS event_type,
           (e.v->>4)::integer AS schema_version, decode(e.v->>5, 'base64') AS payload,
           (e.v->>6)::jsonb AS metadata
    FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS e(v, n)
), head AS MATERIALIZED (
    -- Under the ledger_head row lock, held to the commit: the positions, the recorded
    -- time and the events' chain hashes, 32 bytes each in position order (migrations
    -- 0006 and 0007).
    SELECT a.base, a.stamped_at AS recorded_at, a.hashes,
           to_char(a.stamped_at AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') AS recorded_at_text
    FROM chronos_chain_advance(ARRAY(
        SELECT chronos_chain_body_utf8(s.stream_id, s.stream_version, t.event_type,
                                       s.schema_version, s.payload, t.metadata)
        FROM staged AS s
             -- OFFSET 0 keeps the planner from substituting these expressions into the
             -- inlined body, which uses each twice: each is computed once per event.
             CROSS JOIN LATERAL (SELECT convert_to(s.event_type, 'UTF8') AS event_type,
                                        convert_to(s.metadata::text, 'UTF8') AS metadata
                                 OFFSET 0) AS t
        ORDER BY s.ordinal)) AS a
), appended AS (
    INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                        schema_version, payload, metadata, recorded_at, chain_hash)
    SELECT head.base + s.ordinal, s.event_id, s.stream_id, s.stream_version, s.event_type,
           s.schema_version, s.payload, s.metadata, head.recorded_at, {_LINK}
    FROM staged AS s CROSS JOIN head
), outboxed AS (
    INSERT INTO outbox (position, event_id, topic, key, payload, headers, created_at)
    SELECT head.base + s.ordinal, s.event_id, %(topic)s, s.stream_id::text, s.payload,
           -- The Kafka headers (chronos.outbox.contract): the command's metadata
           -- (request_id, correlation_id, causation_id, traceparent, principal,
           -- principal_token_id) and the event's own.
           s.metadata || jsonb_build_object(
               '{contract.HEADER_EVENT_ID}', s.event_id::text,
               '{contract.HEADER_EVENT_TYPE}', s.event_type,
               '{contract.HEADER_SCHEMA}', '{mapper.PROTO_PACKAGE}.' || s.event_type,
               '{contract.HEADER_SCHEMA_VERSION}', s.schema_version::text,
               '{contract.HEADER_STREAM_VERSION}', s.stream_version::text,
               '{contract.HEADER_POSITION}', (head.base + s.ordinal)::text,
               '{contract.HEADER_RECORDED_AT}', head.recorded_at_text,
               '{contract.HEADER_CHAIN_HASH}', encode({_LINK}, 'hex')),
           head.recorded_at
    FROM staged AS s CROSS JOIN head
), answered AS (
    UPDATE idempotency AS i
    SET response = (r.e->1) || jsonb_build_object('position', head.base + (r.e->>2)::bigint)
    FROM jsonb_array_elements(%(answers)s::jsonb) AS r(e)
         CROSS JOIN head
    WHERE i.principal = r.e->>3 AND i.request_id = r.e->>0
)
-- Wakes the outbox poller when this transaction commits. A notifying commit takes a
-- lock that orders it among notifying commits; the ledger_head row lock, held from this
-- statement to the commit, orders the writers' commits already, so it adds no waiting.
-- (Sent after the commit instead, it cost a transaction of its own: three round trips.)
SELECT base, recorded_at, pg_notify('{NOTIFY_CHANNEL}', '') FROM head
"""

# ReverseEntry. Which of the named entries were reversed already: sent after the
# accounts' locks are taken, and every reversal of an entry locks the same accounts (the
# entry's), so two reversals of one entry see each other.
LOAD_REVERSALS = """SELECT entry_id::text, reversal_entry_id::text FROM entry_reversals
                    WHERE entry_id IN (SELECT e::uuid
                                       FROM jsonb_array_elements_text(%s::jsonb) AS e)"""

# The batch's accepted reversals. The primary key is the last line of defence of "at
# most once": a second row would fail the whole transaction.
INSERT_REVERSALS = """INSERT INTO entry_reversals (entry_id, reversal_entry_id, recorded_at)
                   SELECT (r.e->>0)::uuid, (r.e->>1)::uuid, now()
                   FROM jsonb_array_elements(%s::jsonb) AS r(e)"""

# Every line the batch appends, by entry: how ReverseEntry finds an entry's lines.
INSERT_ENTRY_LINES = """INSERT INTO entry_lines (entry_id, line_index, stream_id, stream_version)
                   SELECT (l.e->>0)::uuid, (l.e->>1)::integer, (l.e->>2)::uuid,
                          (l.e->>3)::bigint
                   FROM jsonb_array_elements(%s::jsonb) AS l(e)"""

# An entry's line events, in line order.
READ_ENTRY_LINES = """SELECT e.event_type, e.schema_version, e.payload
                    FROM entry_lines AS l
                    JOIN events AS e
                      ON e.stream_id = l.stream_id AND e.stream_version = l.stream_version
                    WHERE l.entry_id = %s::uuid ORDER BY l.line_index"""
