-- The ledger's write side: the event store (source of truth), the write-side account
-- state kept in the same transaction, the transactional outbox and idempotency records.

-- One row holds the head of the global log. Every committing transaction takes its
-- positions from it as its last step, under the row lock, so positions are gapless and
-- in commit order: a reader never sees position N+1 before N. recorded_at advances
-- with it, so time order and position order agree (needed for balance-at-time).
CREATE TABLE ledger_head (
    id          smallint    PRIMARY KEY CHECK (id = 1),
    position    bigint      NOT NULL,
    recorded_at timestamptz NOT NULL
);
INSERT INTO ledger_head (id, position, recorded_at) VALUES (1, 0, '-infinity');

CREATE TABLE events (
    position       bigint      PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      uuid        NOT NULL,
    stream_version bigint      NOT NULL CHECK (stream_version >= 1),
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL CHECK (schema_version >= 1),
    payload        bytea       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL,
    -- Optimistic concurrency: two writers can never both append version N to a stream.
    CONSTRAINT events_stream_version_unique UNIQUE (stream_id, stream_version)
);

-- Events are facts: the database itself refuses to change or remove one, whoever asks.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on events is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Write-side state: the fold of each account's stream, updated in the same transaction
-- as the events so invariants are checked against current state without replaying.
CREATE TABLE accounts (
    account_id            uuid        PRIMARY KEY,
    kind                  text        NOT NULL CHECK (kind IN ('USER', 'SYSTEM')),
    owner_name            text        NOT NULL,
    currency              char(3)     NOT NULL,
    overdraft_limit_minor bigint      NOT NULL CHECK (overdraft_limit_minor >= 0),
    status                text        NOT NULL CHECK (status IN ('ACTIVE', 'FROZEN', 'CLOSED')),
    balance_minor         bigint      NOT NULL,
    version               bigint      NOT NULL,
    metadata              jsonb       NOT NULL DEFAULT '{}',
    opened_at             timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    -- A second line of defence behind the domain rules.
    CONSTRAINT accounts_balance_floor
        CHECK (kind = 'SYSTEM' OR balance_minor >= -overdraft_limit_minor)
);

-- One row per event, written in the event's transaction; the poller publishes rows in
-- position order and marks them. The partial index keeps the "unpublished" scan small
-- however long published rows are retained.
CREATE TABLE outbox (
    position     bigint      PRIMARY KEY,
    event_id     uuid        NOT NULL,
    topic        text        NOT NULL,
    key          text        NOT NULL,
    payload      bytea       NOT NULL,
    headers      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- The stored answer to each accepted command, keyed by the client's request_id.
CREATE TABLE idempotency (
    request_id   text        PRIMARY KEY,
    command_type text        NOT NULL,
    payload_hash bytea       NOT NULL,
    response     jsonb,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX idempotency_expires_at ON idempotency (expires_at);
