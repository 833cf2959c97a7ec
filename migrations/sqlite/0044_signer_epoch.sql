-- The signer's epoch (issue 17, hot standby): each process that takes the signer lock adds one
-- and remembers the value; every transaction it begins checks the value is still its own, so a
-- signer that lost the lock (a standby took over) can never write again — not a stale `good`
-- OCSP response over a fresher `revoked` one (Boulder #2995), not a certificate, not a CRL.
CREATE TABLE signer_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    holder TEXT,
    taken_at BIGINT NOT NULL
);
INSERT INTO signer_epoch (id, epoch, holder, taken_at) VALUES (1, 0, NULL, 0);
