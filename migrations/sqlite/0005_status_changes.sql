-- When each CA's revocation status last changed (revoke, hold, release, abandon): the CRL
-- publisher compares it with its newest CRL's thisUpdate to republish within a minute.
CREATE TABLE status_changes (
    issuer     TEXT PRIMARY KEY NOT NULL,
    changed_at INTEGER NOT NULL
);
