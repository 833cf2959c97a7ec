-- ecert schema, PostgreSQL. Same semantics as migrations/sqlite; timestamps are Unix seconds.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE cas (
    name       TEXT PRIMARY KEY NOT NULL,
    key_label  TEXT NOT NULL,
    cert_der   BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE certificates (
    serial          TEXT PRIMARY KEY NOT NULL,
    issuer          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('reserved', 'issuing', 'issued', 'failed', 'abandoned')),
    profile         TEXT NOT NULL,
    profile_version BIGINT NOT NULL,
    key_fp          BYTEA NOT NULL,
    request         TEXT NOT NULL,
    renews          TEXT REFERENCES certificates (serial),
    renewed_by      TEXT REFERENCES certificates (serial),
    reserved_at     BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    not_before      BIGINT,
    not_after       BIGINT,
    linting_tbs     BYTEA,
    cert_der        BYTEA,
    failure         TEXT
);
CREATE INDEX certificates_key_fp ON certificates (key_fp);
CREATE INDEX certificates_state ON certificates (state);

CREATE TABLE blocked_keys (
    key_fp   BYTEA PRIMARY KEY NOT NULL,
    reason   TEXT NOT NULL,
    added_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY NOT NULL,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    subject   TEXT,
    detail    TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL
);
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
