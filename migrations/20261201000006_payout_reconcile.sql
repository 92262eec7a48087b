-- Reconciling the ledger with the treasury's on-chain history, so that a
-- ledger restored from an older backup never pays twice (docs/ARCHITECTURE.md,
-- "Payouts", "After a restore"). The payout leader reads, every cycle, the
-- treasury's finalized transactions newer than `payout_chain_cursor.slot`;
-- a successful one that no `payout_batches` row knows was signed by a ledger
-- this database no longer remembers: its transfers are recorded as paid
-- (`Store::record_found_batch`) before anything is claimed or paid. The
-- cursor lives in this database, so a restore rolls it back together with
-- the ledger, and the next cycle reads exactly the history the restore lost.
-- Additive: hubs without this code ignore the table and the column.

-- One row. `slot`: every treasury transaction finalized at or before it has
-- been reconciled; `signature`: the newest of them, if any (a listing that
-- does not reach back to it, or to an older entry, is incomplete: a node
-- with a shorter history answered). NULL slot until the first cycle: then
-- the history is read back to `since` (the treasury's transactions from
-- before this database existed are not its payouts). A database that paid
-- before this migration starts after its newest batch: a transaction it does
-- not know was signed after that.
CREATE TABLE payout_chain_cursor (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    slot       bigint      CHECK (slot >= 0),
    signature  text,
    since      timestamptz NOT NULL DEFAULT now(),
    epoch      bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO payout_chain_cursor (slot)
SELECT GREATEST(max(COALESCE(signed_slot, GREATEST(last_valid_block_height - 300, 0))) - 1, 0)
  FROM payout_batches
HAVING count(*) > 0
UNION ALL
SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM payout_batches);
CREATE TRIGGER payout_chain_cursor_epoch BEFORE INSERT OR UPDATE ON payout_chain_cursor
FOR EACH ROW EXECUTE FUNCTION check_payout_epoch();

-- A batch recorded from the chain rather than signed here: when it was
-- found. Its `last_valid_block_height` and `signed_slot` are the slot it
-- landed in (the real ones are unknown), its `created_at` its block time.
ALTER TABLE payout_batches ADD COLUMN found_on_chain_at timestamptz;

-- Transfers found on chain may exceed what the restored ledger says was
-- earned (the earnings of rounds the restore lost, or of rounds it will
-- settle again): `claimed` may then exceed `earned`, and the validator's
-- next earnings fill the difference before anything more is claimed.
ALTER TABLE validator_ledger DROP CONSTRAINT validator_ledger_check;
ALTER TABLE validator_ledger ADD CONSTRAINT validator_ledger_claimed_lamports_check
    CHECK (claimed_lamports >= 0);
