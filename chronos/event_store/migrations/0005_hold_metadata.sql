-- The metadata a hold was placed with (its CreatePendingTransfer's): every later event
-- of the hold (post, void, expiry) carries it, so the read side's hold document, built
-- from any one event, keeps it. Holds placed before this existed had none.
ALTER TABLE pending_transfers ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
