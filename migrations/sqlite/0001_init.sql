-- ecert schema, SQLite. Forward-only; timestamps are Unix seconds (UTC).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- The CA certificates of the hierarchy; their keys live in the HSM under key_label.
CREATE TABLE cas (
    name       TEXT PRIMARY KEY NOT NULL,
    key_label  TEXT NOT NULL,
    cert_der   BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- One row per serial ever reserved. state: reserved -> issuing -> issued, or failed / abandoned.
CREATE TABLE certificates (
    serial          TEXT PRIMARY KEY NOT NULL,
    issuer          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('reserved', 'issuing', 'issued', 'failed', 'abandoned')),
    profile         TEXT NOT NULL,
    profile_version INTEGER NOT NULL,
    key_fp          BLOB NOT NULL,
    request         TEXT NOT NULL,
    renews          TEXT REFERENCES certificates (serial),
    renewed_by      TEXT REFERENCES certificates (serial),
    reserved_at     INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    not_before      INTEGER,
    not_after       INTEGER,
    linting_tbs     BLOB,
    cert_der        BLOB,
    failure         TEXT
);
CREATE INDEX certificates_key_fp ON certificates (key_fp);
CREATE INDEX certificates_state ON certificates (state);

-- Keys that may never be certified again (reported compromised).
CREATE TABLE blocked_keys (
    key_fp   BLOB PRIMARY KEY NOT NULL,
    reason   TEXT NOT NULL,
    added_at INTEGER NOT NULL
);

-- Append-only, hash-chained audit trail (docs/ISSUANCE-CYCLE.md, "Audit").
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY NOT NULL,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    subject   TEXT,
    detail    TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
