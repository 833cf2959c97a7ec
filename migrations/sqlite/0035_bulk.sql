-- Bulk enrolment (issue 16, docs/BULK.md). An organisation verified at the counter (from an
-- issued organisational application) proves control of its mail domains by DNS; an officer
-- gives it a batch token; its batches of staff rows are approved by two officers and issued.
CREATE TABLE organisations (
    id             TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL,
    register       TEXT NOT NULL,
    org_id         TEXT,
    application_id TEXT NOT NULL,
    -- When the counter checked its registration and representative (S/MIME BR §4.2.1: reused
    -- for 825 days at most).
    verified_at    INTEGER NOT NULL,
    registered_by  TEXT NOT NULL,
    registered_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX organisations_register ON organisations (register, COALESCE(org_id, ''), name);

CREATE TABLE organisation_domains (
    organisation_id TEXT NOT NULL,
    domain          TEXT NOT NULL,
    dcv_token       TEXT NOT NULL,
    token_at        INTEGER NOT NULL,
    validated_at    INTEGER,
    PRIMARY KEY (organisation_id, domain)
);

CREATE TABLE batch_tokens (
    token_sha256    BLOB PRIMARY KEY NOT NULL,
    organisation_id TEXT NOT NULL,
    profiles        TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);

-- state: submitted -> approved -> done (every row issued, failed or refused)
CREATE TABLE batches (
    id              TEXT PRIMARY KEY NOT NULL,
    organisation_id TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('submitted', 'approved', 'done')),
    rows_total      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    approved_at     INTEGER
);

-- state: invalid (refused on arrival, error says why) | duplicate (its client row id was
-- submitted before: never issued twice) | pending (awaits the batch's approval) | queued |
-- issuing (serial reserved) | issued | failed (error says why)
CREATE TABLE batch_rows (
    batch_id        TEXT NOT NULL,
    row_no          INTEGER NOT NULL,
    organisation_id TEXT NOT NULL,
    client_row_id   TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('invalid', 'duplicate', 'pending', 'queued', 'issuing', 'issued', 'failed')),
    error           TEXT,
    profile         TEXT,
    surname         TEXT,
    given_name      TEXT,
    email           TEXT,
    title           TEXT,
    csr             BLOB,
    serial          TEXT,
    -- Issuances of this row that did not complete (an HSM or store failure): at 5 it fails.
    attempts        INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (batch_id, row_no)
);
-- A client row id is issued once per organisation, whatever batch carries it again.
CREATE UNIQUE INDEX batch_rows_client ON batch_rows (organisation_id, client_row_id)
    WHERE state NOT IN ('invalid', 'duplicate');
CREATE INDEX batch_rows_state ON batch_rows (state, batch_id);
