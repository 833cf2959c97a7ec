-- A per-CA counter of revocation-status changes (revoke, hold, release, abandon), bumped in the
-- same transaction as the change. Each CRL records the counter it was built after; the CRL
-- publisher republishes when the counter moved (a counter, not a clock: no missed change when
-- a transaction commits late or hosts' clocks differ).
CREATE TABLE status_changes (
    issuer  TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
);
ALTER TABLE crls ADD COLUMN status_version INTEGER NOT NULL DEFAULT 0;
