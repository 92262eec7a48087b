-- Payouts against a pooled or history-less RPC (docs/ARCHITECTURE.md,
-- "Payouts"). Additive: hubs without this code ignore both columns.

-- The finalized slot read just before the batch was signed: the batch cannot
-- have landed before it, so a status lookup can trust "unknown" only from a
-- node whose history reaches back to it (minimumLedgerSlot <= signed_slot).
-- NULL for batches stored before this migration (the payer then uses its
-- last valid block height minus 300 as a lower bound).
ALTER TABLE payout_batches ADD COLUMN signed_slot bigint;

-- Set when a batch carrying this payout failed on chain: it is retried alone,
-- one payout per transaction, so a transfer that always fails is found and
-- marked failed without failing the others again.
ALTER TABLE payouts ADD COLUMN solo boolean NOT NULL DEFAULT false;
