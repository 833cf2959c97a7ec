-- A subscriber's report that a certificate's key is compromised, made online without proof of
-- possession of the private key (TLS BR and S/MIME BR §4.9.1.1 ask for verified evidence): the
-- subscriber's own certificates are revoked, the key is not blocked for others until an officer
-- confirms (docs/REVOCATION.md).
CREATE TABLE key_compromise_reports (
    key_fp      BYTEA NOT NULL,
    serial      TEXT NOT NULL REFERENCES certificates (serial),
    reporter    TEXT NOT NULL,
    reported_at BIGINT NOT NULL
);
CREATE INDEX key_compromise_reports_key ON key_compromise_reports (key_fp);
-- The challenge a subscriber signs with the certificate's key to prove possession when
-- reporting its compromise online (one at a time, good for ten minutes).
ALTER TABLE applications ADD COLUMN kc_challenge TEXT;
ALTER TABLE applications ADD COLUMN kc_challenge_expires BIGINT NOT NULL DEFAULT 0;
