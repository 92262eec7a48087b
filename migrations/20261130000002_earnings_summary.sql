-- Cheap attacks on the hub (issue 10, section 4). Additive.

-- A hello records the validator (its id is in `welcome`). A key that never
-- had a result stored is deleted again once not seen for a while
-- (`Store::forget_unused_validators`, HUB_UNUSED_VALIDATOR_TTL_SECS), so a
-- flood of fresh keys leaves nothing behind. `retained` marks rows that
-- pass cleanup once found in use (a tick, a ledger row or a payout refers
-- to them): they are never looked at again, so cleanup reads only rows that
-- may go.
ALTER TABLE validators ADD COLUMN retained boolean NOT NULL DEFAULT false;
CREATE INDEX validators_unretained ON validators (last_seen) WHERE NOT retained;

-- What `GET /v1/validators/{key}/earnings` would otherwise compute per
-- request from ticks: the rewards of stored ticks whose rounds are not
-- settled yet. Rewritten by the payout leader after each settlement (one
-- aggregate over the unsettled rounds for all validators), read with one
-- primary-key lookup. Derived data: not fenced, any refresh may overwrite
-- any other. No foreign key: ticks carry no foreign key either, and a
-- refresh must never fail for one row.
CREATE TABLE validator_earnings_summary (
    validator_id      bigint      PRIMARY KEY,
    settling_lamports bigint      NOT NULL DEFAULT 0,
    refreshed_at      timestamptz NOT NULL DEFAULT now()
);
