-- Holds (two-phase transfers). An account's open holds are two sums on its row, folded
-- from its events like the balance: the money reserved on it (pending debits) and the
-- money promised to it (pending credits). The limit binds the available balance
-- (posted less pending debits); pending credits never count as available.
ALTER TABLE accounts
    ADD COLUMN pending_debits_minor  bigint NOT NULL DEFAULT 0 CHECK (pending_debits_minor >= 0),
    ADD COLUMN pending_credits_minor bigint NOT NULL DEFAULT 0 CHECK (pending_credits_minor >= 0);
-- No row check repeats the limit on the available balance: a forced reversal may take
-- an account below it (see 0003_entry_reversals.sql), so the rule is the ledger's alone.

-- Each hold's state, the fold of its events. Guarded by its two accounts' advisory
-- locks: every command that changes a hold holds both.
CREATE TABLE pending_transfers (
    pending_id      uuid        PRIMARY KEY,
    from_account_id uuid        NOT NULL,
    to_account_id   uuid        NOT NULL,
    currency        char(3)     NOT NULL,
    amount_minor    bigint      NOT NULL CHECK (amount_minor > 0),
    state           text        NOT NULL
                                CHECK (state IN ('PENDING', 'POSTED', 'VOIDED', 'EXPIRED')),
    posted_minor    bigint      NOT NULL DEFAULT 0
                                CHECK (posted_minor >= 0 AND posted_minor <= amount_minor),
    -- NULL: never expires.
    expires_at      timestamptz,
    description     text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- Until when an expiry runner has claimed the hold (see the expiry job): another
    -- runner skips it meanwhile, so runners share the work instead of repeating it.
    expiry_claimed_until timestamptz
);
-- The expiry job's scan: only the open holds that can expire, in due order.
CREATE INDEX pending_transfers_due ON pending_transfers (expires_at)
    WHERE state = 'PENDING' AND expires_at IS NOT NULL;
