-- Certificate Problem Reports (TLS BR and S/MIME BR §4.9.3, §4.9.5): anyone may report a key
-- compromise, misissuance, misuse or another problem with a certificate, at any hour; the CA
-- owes the reporter and the subscriber a preliminary report within 24 hours and a revocation
-- within 24 hours (key compromise) or 5 days (the rest). The reporter's mailbox and words are
-- personal data: sealed by the HSM-held vault (docs/SECURITY.md), never in clear.
CREATE TABLE problem_reports (
    id                 TEXT PRIMARY KEY NOT NULL,
    reference          TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL,            -- key_compromise, misissuance, misuse, other
    serial             TEXT NOT NULL REFERENCES certificates (serial),
    reporter_sealed    BLOB NOT NULL,            -- the reporter's mailbox
    description_sealed BLOB NOT NULL,
    proof_verified     INTEGER NOT NULL DEFAULT 0, -- a CSR signed by the certificate's key
    source             TEXT NOT NULL,            -- the client address (rate limits, not shown)
    received_at        INTEGER NOT NULL,
    preliminary_due    INTEGER NOT NULL,
    revocation_due     INTEGER NOT NULL,
    preliminary_at     INTEGER,
    preliminary_by     TEXT,
    findings           TEXT,                     -- the CA's preliminary findings (no personal data)
    decided_at         INTEGER,
    decided_by         TEXT,
    outcome            TEXT,                     -- revoked, rejected
    outcome_note       TEXT
);
CREATE INDEX problem_reports_open ON problem_reports (decided_at, received_at);
CREATE INDEX problem_reports_source ON problem_reports (source, received_at);
