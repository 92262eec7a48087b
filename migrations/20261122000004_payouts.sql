-- Earnings and payouts. Additive: hubs without the payout code keep working.
--
-- Money flow: ticks -> (settlement, by the leader, after the round closed)
-- validator_ledger.earned -> (claim) payouts rows -> (batch) one Solana
-- transaction in payout_batches -> paid. See docs/ARCHITECTURE.md, "Payouts".

-- Tasks the round's owner replaced (their validator disconnected or missed
-- the task deadline), with when (Unix ms, the owner's clock), aligned by
-- index. A result for a replaced task received after its replacement is
-- stored but earns nothing; one received before it (say, still in a tick
-- writer's queue at the deadline) earns as usual.
ALTER TABLE rounds ADD COLUMN replaced_tasks uuid[] NOT NULL DEFAULT '{}';
ALTER TABLE rounds ADD COLUMN replaced_at_ms int8[] NOT NULL DEFAULT '{}';
-- Set once the round's ticks are credited to the ledger.
ALTER TABLE rounds ADD COLUMN settled_at timestamptz;
CREATE INDEX rounds_unsettled ON rounds (closed_at)
    WHERE settled_at IS NULL AND status <> 'open';

-- Every payout-side write carries the writer's fencing epoch; this trigger
-- refuses it unless it is the newest epoch handed out for 'payouts'. The
-- row lock (FOR SHARE) makes a new leader's epoch increment wait for the
-- writing transaction, so a write either commits before the new epoch
-- exists or is refused: the database itself rejects a stale leader.
CREATE FUNCTION check_payout_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    newest bigint;
BEGIN
    SELECT epoch INTO newest FROM fencing WHERE role = 'payouts' FOR SHARE;
    IF NEW.epoch IS DISTINCT FROM newest THEN
        RAISE EXCEPTION 'stale payout epoch % (newest is %)', NEW.epoch, newest
            USING ERRCODE = 'UP409';
    END IF;
    RETURN NEW;
END;
$$;

-- Per validator: what it earned (settled rounds), what has been claimed
-- into payouts, and how often it agreed with its rounds' majority.
CREATE TABLE validator_ledger (
    validator_id     bigint      PRIMARY KEY REFERENCES validators (id),
    earned_lamports  bigint      NOT NULL DEFAULT 0 CHECK (earned_lamports >= 0),
    claimed_lamports bigint      NOT NULL DEFAULT 0
                     CHECK (claimed_lamports >= 0 AND claimed_lamports <= earned_lamports),
    earning_ticks    bigint      NOT NULL DEFAULT 0,
    agreed           bigint      NOT NULL DEFAULT 0,
    disagreed        bigint      NOT NULL DEFAULT 0,
    epoch            bigint      NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER validator_ledger_epoch BEFORE INSERT OR UPDATE ON validator_ledger
FOR EACH ROW EXECUTE FUNCTION check_payout_epoch();

-- One Solana transaction carrying several transfers. Stored, signed,
-- before it is sent; `id` is its idempotency key.
CREATE TABLE payout_batches (
    id                      uuid        PRIMARY KEY,
    state                   text        NOT NULL
                            CHECK (state IN ('signed', 'sent', 'confirmed', 'failed', 'expired')),
    signature               text        NOT NULL UNIQUE,
    transaction             bytea       NOT NULL,
    blockhash               text        NOT NULL,
    last_valid_block_height bigint      NOT NULL,
    lamports                bigint      NOT NULL CHECK (lamports > 0),
    fee_lamports            bigint      NOT NULL CHECK (fee_lamports >= 0),
    payout_ids              uuid[]      NOT NULL CHECK (cardinality(payout_ids) > 0),
    sends                   integer     NOT NULL DEFAULT 0,
    slot                    bigint,
    error                   text,
    epoch                   bigint      NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    sent_at                 timestamptz,
    finished_at             timestamptz
);
CREATE INDEX payout_batches_unfinished ON payout_batches (created_at)
    WHERE state IN ('signed', 'sent');
CREATE TRIGGER payout_batches_epoch BEFORE INSERT OR UPDATE ON payout_batches
FOR EACH ROW EXECUTE FUNCTION check_payout_epoch();

-- One claim of a validator's unclaimed earnings; `id` is its idempotency
-- key. It rides in at most one live batch at a time and is paid exactly
-- once.
CREATE TABLE payouts (
    id           uuid        PRIMARY KEY,
    validator_id bigint      NOT NULL REFERENCES validators (id),
    lamports     bigint      NOT NULL CHECK (lamports > 0),
    state        text        NOT NULL
                 CHECK (state IN ('claimed', 'insufficient_funds', 'batched', 'paid', 'failed')),
    batch_id     uuid        REFERENCES payout_batches (id),
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    epoch        bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    paid_at      timestamptz,
    CHECK ((state = 'batched') = (batch_id IS NOT NULL) OR state IN ('paid', 'failed'))
);
-- At most one unfinished payout per validator: a transaction never carries
-- two transfers to one account, and claims never overlap.
CREATE UNIQUE INDEX payouts_one_open ON payouts (validator_id)
    WHERE state IN ('claimed', 'insufficient_funds', 'batched');
CREATE INDEX payouts_waiting ON payouts (created_at)
    WHERE state IN ('claimed', 'insufficient_funds');
CREATE INDEX payouts_by_batch ON payouts (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX payouts_by_validator ON payouts (validator_id, created_at DESC);
CREATE TRIGGER payouts_epoch BEFORE INSERT OR UPDATE ON payouts
FOR EACH ROW EXECUTE FUNCTION check_payout_epoch();
