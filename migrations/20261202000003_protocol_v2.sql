-- Protocol 2 (docs/protocol.md, "Version negotiation"). Additive: hubs of
-- an older release write and read none of it.

-- What a result's evidence says, as the validator signed it: a digest of the
-- first `evidence_bytes` bytes of the final response's body, and the address
-- the check connected to. NULL for protocol 1 results (and in a protocol 2
-- result, digest and address are NULL when no response or connection came).
ALTER TABLE ticks ADD COLUMN evidence_sha256 bytea CHECK (octet_length(evidence_sha256) = 32),
                  ADD COLUMN evidence_bytes  integer CHECK (evidence_bytes >= 0),
                  ADD COLUMN remote_ip       inet;

-- Where a validator's earnings go when not to its signing key (protocol 2
-- hello). Every address a validator has named is kept, with the validator
-- it belongs to, so a transfer found on chain after a restore is attributed
-- even if the validator has named another address since; an address
-- belongs to one validator only, and never to another validator's key.
ALTER TABLE validators ADD COLUMN payout_address text;
CREATE TABLE validator_payout_addresses (
    address      text        PRIMARY KEY,
    validator_id bigint      NOT NULL REFERENCES validators (id) ON DELETE CASCADE,
    first_named  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX validator_payout_addresses_validator ON validator_payout_addresses (validator_id);
