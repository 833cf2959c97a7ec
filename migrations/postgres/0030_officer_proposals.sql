-- Decisions two officers take together (issue 14): a mass revocation, blocking a key, revoking
-- an issuing CA. One officer proposes (what exactly: a query is resolved to its serials when
-- proposed), another confirms within a day, and only then is it carried out.
CREATE TABLE officer_proposals (
    id          TEXT PRIMARY KEY NOT NULL,
    -- mass_revocation, key_block or ca_revocation.
    kind        TEXT NOT NULL,
    -- What is to be done, as JSON (serials and reason; key SHA-256 and reason; CA and reason).
    params      TEXT NOT NULL,
    -- One line a person reads before confirming.
    summary     TEXT NOT NULL,
    proposed_by TEXT NOT NULL REFERENCES staff (id),
    proposed_at BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    -- pending, confirming (being carried out), done, failed or withdrawn.
    state       TEXT NOT NULL,
    decided_by  TEXT REFERENCES staff (id),
    decided_at  BIGINT,
    outcome     TEXT
);
CREATE INDEX officer_proposals_state ON officer_proposals (state, proposed_at);
