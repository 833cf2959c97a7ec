-- Registration authority (docs/RA.md): outlets, staff, applications, approvals.
-- Personal fields are stored only sealed (crate::pii): *_sealed columns hold AES-256-GCM
-- ciphertexts bound to their column and row; *_index columns hold HSM-keyed HMAC blind indexes.
CREATE TABLE outlets (
    id         TEXT PRIMARY KEY NOT NULL,
    name_en    TEXT NOT NULL,
    name_zh    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE staff (
    id             TEXT PRIMARY KEY NOT NULL,
    username       TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    outlet         TEXT NOT NULL REFERENCES outlets (id),
    role           TEXT NOT NULL CHECK (role IN ('clerk', 'supervisor', 'officer', 'admin')),
    password_hash  TEXT NOT NULL,
    totp_sealed    BLOB NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    failed_logins  INTEGER NOT NULL DEFAULT 0,
    locked_until   INTEGER NOT NULL DEFAULT 0,
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);
-- Sessions are found by the SHA-256 of the cookie's random token, never by the token itself.
CREATE TABLE staff_sessions (
    token_hash BLOB PRIMARY KEY NOT NULL,
    staff      TEXT NOT NULL REFERENCES staff (id),
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE TABLE applications (
    id                  TEXT PRIMARY KEY NOT NULL,
    reference           TEXT NOT NULL UNIQUE,
    secret_hash         BLOB NOT NULL,
    revocation_hash     TEXT NOT NULL,
    profile             TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('submitted', 'approved', 'issued', 'rejected')),
    version             INTEGER NOT NULL,
    outlet              TEXT NOT NULL REFERENCES outlets (id),
    language            TEXT NOT NULL,
    surname             TEXT NOT NULL,
    given_name          TEXT NOT NULL,
    name_zh             TEXT NOT NULL,
    email               TEXT NOT NULL,
    hkid_sealed         BLOB NOT NULL,
    hkid_index          BLOB NOT NULL,
    dob_sealed          BLOB NOT NULL,
    phone_sealed        BLOB NOT NULL,
    address_sealed      BLOB NOT NULL,
    consent_notices     INTEGER NOT NULL,
    consent_wording     TEXT NOT NULL,
    consent_at          INTEGER NOT NULL,
    csr                 BLOB NOT NULL,
    email_code_hash     BLOB,
    email_code_expires  INTEGER NOT NULL DEFAULT 0,
    email_code_attempts INTEGER NOT NULL DEFAULT 0,
    email_confirmed_at  INTEGER,
    identity_by         TEXT REFERENCES staff (id),
    identity_at         INTEGER,
    identity_version    INTEGER,
    fee_amount          INTEGER,
    fee_method          TEXT,
    fee_receipt         TEXT,
    fee_by              TEXT REFERENCES staff (id),
    fee_at              INTEGER,
    rejected_reason     TEXT,
    certificate         TEXT REFERENCES certificates (serial),
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX applications_hkid_index ON applications (hkid_index);
CREATE INDEX applications_outlet_state ON applications (outlet, state);
-- One decision per staff member per application version. An approval counts only for the
-- version it names and until it expires; one rejection rejects.
CREATE TABLE approvals (
    application TEXT NOT NULL REFERENCES applications (id),
    version     INTEGER NOT NULL,
    staff       TEXT NOT NULL REFERENCES staff (id),
    decision    TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    at          INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (application, version, staff)
);
