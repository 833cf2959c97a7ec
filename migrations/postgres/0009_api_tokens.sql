-- JSON API tokens of staff members (docs/RA.md "JSON API"). Only the SHA-256 of a token is
-- stored; a token acts as its staff member (same outlet, same role) until it expires or is
-- revoked.
CREATE TABLE api_tokens (
    token_hash BYTEA PRIMARY KEY NOT NULL,
    staff      TEXT NOT NULL REFERENCES staff (id),
    label      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked    BIGINT NOT NULL DEFAULT 0
);
