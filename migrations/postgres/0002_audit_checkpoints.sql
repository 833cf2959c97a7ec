-- Audit checkpoints: see migrations/sqlite/0002_audit_checkpoints.sql.
CREATE TABLE audit_checkpoints (
    seq       BIGINT PRIMARY KEY NOT NULL,
    at        BIGINT NOT NULL,
    hash      BYTEA NOT NULL,
    signature BYTEA NOT NULL
);
