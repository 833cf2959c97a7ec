-- Cross-certificates (issue 15, TLS BR §7.1.2.2): one root certifies another root's name and
-- key, signed in a key ceremony. Served at /ca/<subject>-by-<issuer>.crt (the newest of a pair).
CREATE TABLE cross_certificates (
    serial     TEXT PRIMARY KEY NOT NULL,
    subject    TEXT NOT NULL,
    issuer     TEXT NOT NULL,
    cert_der   BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX cross_certificates_pair ON cross_certificates (subject, issuer, created_at);
