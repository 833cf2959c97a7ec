-- OCSP (RFC 6960 with the RFC 5019 profile; docs/OCSP.md).
-- Delegated responders (RFC 6960 §4.2.2.2): one key per responder in the HSM under key_label,
-- its certificate issued by the CA it answers for (and also a row of `certificates`). The newest
-- one of a CA signs; it is replaced before responses it signs would outlive it.
CREATE TABLE ocsp_responders (
    serial     TEXT PRIMARY KEY NOT NULL,
    issuer     TEXT NOT NULL,
    key_label  TEXT NOT NULL,
    cert_der   BLOB NOT NULL,
    not_after  INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
-- Serials whose response must be (re)signed, queued in the same transaction as the change that
-- makes it stale (issued, revoked, held, released, abandoned). version counts the changes, so the
-- signer removes an entry only if no newer change arrived while it signed.
CREATE TABLE ocsp_pending (
    serial  TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
);
-- Pre-signed responses: one per serial for each CertID hash algorithm. seq orders the writes
-- (one writer: the signer); every serving instance follows it to stay current.
CREATE TABLE ocsp_responses (
    serial      TEXT PRIMARY KEY NOT NULL,
    issuer      TEXT NOT NULL,
    this_update INTEGER NOT NULL,
    next_update INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    der_sha1    BLOB NOT NULL,
    der_sha256  BLOB NOT NULL
);
CREATE INDEX ocsp_responses_seq ON ocsp_responses (seq);
CREATE INDEX ocsp_responses_this_update ON ocsp_responses (this_update);
-- Certificates issued before this migration get their first response.
INSERT INTO ocsp_pending (serial, version)
    SELECT serial, 1 FROM certificates WHERE state IN ('issued', 'abandoned');
