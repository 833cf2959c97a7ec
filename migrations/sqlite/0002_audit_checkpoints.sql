-- Audit checkpoints: (seq, hash) of the audit chain head, signed by the audit key in the HSM.
-- A truncation of the log (even with audit_head rewritten) is found by the first checkpoint
-- that names a record no longer there.
CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY NOT NULL,
    at        INTEGER NOT NULL,
    hash      BLOB NOT NULL,
    signature BLOB NOT NULL
);
