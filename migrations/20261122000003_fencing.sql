-- Fencing epochs for singleton roles (the payout leader). A leader takes
-- the next epoch from here after winning the Redis lock; the counter only
-- goes up, so a Redis that restarts empty cannot reset it, and every write
-- a leader makes can be checked against the newest epoch.
CREATE TABLE fencing (
    role  text   PRIMARY KEY,
    epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0)
);
INSERT INTO fencing (role) VALUES ('payouts');
