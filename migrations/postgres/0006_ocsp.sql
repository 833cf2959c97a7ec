-- OCSP: see migrations/sqlite/0006_ocsp.sql.
CREATE TABLE ocsp_responders (
    serial     TEXT PRIMARY KEY NOT NULL,
    issuer     TEXT NOT NULL,
    key_label  TEXT NOT NULL,
    cert_der   BYTEA NOT NULL,
    not_after  BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- Serials whose response must be (re)signed, queued in the same transaction as the change that
-- makes it stale (issued, revoked, held, released, abandoned). version counts the changes, so the
-- signer removes an entry only if no newer change arrived while it signed.
CREATE TABLE ocsp_pending (
    serial  TEXT PRIMARY KEY NOT NULL,
    version BIGINT NOT NULL
);
-- Pre-signed responses: one per serial for each CertID hash algorithm. seq orders the writes
-- (one writer: the signer); every serving instance follows it to stay current.
CREATE TABLE ocsp_responses (
    serial      TEXT PRIMARY KEY NOT NULL,
    issuer      TEXT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    der_sha1    BYTEA NOT NULL,
    der_sha256  BYTEA NOT NULL
);
CREATE INDEX ocsp_responses_seq ON ocsp_responses (seq);
CREATE INDEX ocsp_responses_this_update ON ocsp_responses (this_update);
-- Certificates issued before this migration get their first response.
INSERT INTO ocsp_pending (serial, version)
    SELECT serial, 1 FROM certificates WHERE state IN ('issued', 'abandoned');
