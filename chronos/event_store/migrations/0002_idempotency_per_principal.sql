-- Idempotency records are scoped per principal (the authenticated caller's token
-- subject): two callers may use the same request_id, each for a command of its own, and
-- none ever receives another's stored answer. The records written before authentication
-- existed belong to the empty principal, which is also what a call runs as when
-- authentication is turned off for development, so their retries keep replaying.
-- Apply it with the command servers stopped: a writer names the key in its ON CONFLICT,
-- so a server older than this migration fails every write against the new key (and a
-- newer one against the old). The table holds only the retention window's records, so
-- rebuilding its primary key index is short.
ALTER TABLE idempotency ADD COLUMN principal text NOT NULL DEFAULT '';
ALTER TABLE idempotency DROP CONSTRAINT idempotency_pkey;
ALTER TABLE idempotency ADD CONSTRAINT idempotency_pkey PRIMARY KEY (principal, request_id);
